// Package preflight is `ingestor check`: it proves, before the worker starts, that the
// configuration reaches everything it needs (brokers with their TLS/SASL, topics, the consumer
// group, a writable DLQ, and a Braze key accepted from this host for users.track and for the
// permission of every other enabled endpoint), printing one line per check with how to fix
// what fails. cmd/ingestor only wires it.
package preflight
