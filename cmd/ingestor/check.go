package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/braze-ingestor/braze-ingestor/preflight"
)

const checkUsage = `ingestor check [flags]: preflight checks, e.g. as an init container.

Reads the configuration from the environment exactly like "ingestor run" (invalid
configuration: exit 2), then checks, one line each:
  - the configuration is valid;
  - every broker in KAFKA_BROKERS answers the Kafka protocol with the configured TLS/SASL
    (an unreachable broker is a warning while another one answers; an authentication or TLS
    failure is an error);
  - every source topic in KAFKA_TOPICS exists (with its partition count) and has leaders;
  - the consumer group KAFKA_GROUP_ID is usable (its committed offsets can be read);
  - the DLQ topic exists and is writable: one marker record is produced to its partition 0 with
    acks=all (headers dlq.reason=preflight_check, dlq.error explaining it; the value is a JSON
    object {"preflight_check":{...}}). "ingestor replay" always skips these records; DLQ alerts
    may want to ignore dlq.reason=preflight_check. --dlq-write=false checks existence only;
  - Braze: one POST /users/track with the body {}, which Braze refuses for its content (400
    "Valid data must be provided...") only after the key, its users.track permission, its
    instance and its IP allowlist have been accepted. No user data is written. A key that
    cannot be sent as an HTTP header is reported as a local error, not as an outage;
  - Braze, for every other endpoint in ENDPOINTS: one POST of {} (which names no user) proves
    the key's permission for it (users.alias.new, users.identify, users.merge,
    subscription.status.set, users.delete), one line each.
Exit status: 0 all checks passed (warnings allowed), 1 a check failed, 2 bad configuration.
The API key is never printed.

Flags:
`

// cmdCheck wires `ingestor check`: flags and configuration here, the checks in preflight.
func cmdCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, checkUsage); fs.PrintDefaults() }
	plain := fs.Bool("plain", false, "print ok/FAIL/WARN instead of ✓/✗/!")
	dlqWrite := fs.Bool("dlq-write", true, "prove the DLQ is writable by producing one preflight_check marker record")
	timeout := fs.Duration("timeout", 60*time.Second, "bound on the whole check")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ingestor check: unexpected arguments %q\n", fs.Args())
		return 2
	}
	cfg, err := LoadConfig()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	p := preflight.NewPrinter(stdout, *plain)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	p.OK("config valid: %d source topic(s) %s, DLQ %s, group %s, Braze %s, endpoints %s",
		len(cfg.KafkaTopics), strings.Join(cfg.KafkaTopics, ","), cfg.KafkaDLQTopic, cfg.KafkaGroupID, cfg.BrazeEndpoint, strings.Join(cfg.Endpoints, ","))
	pc := preflight.Config{
		Brokers: cfg.KafkaBrokers, Topics: cfg.KafkaTopics, GroupID: cfg.KafkaGroupID, DLQTopic: cfg.KafkaDLQTopic,
		StartOffset: cfg.KafkaStartOffset, DLQWrite: *dlqWrite,
		BrazeEndpoint: cfg.BrazeEndpoint, APIKey: cfg.BrazeAPIKey, HTTPTimeout: cfg.BrazeHTTPTimeout, Version: version,
		Endpoints: cfg.EnabledEndpoints(),
	}
	if tlsCfg, mech, err := kafkaSecurity(cfg); err != nil {
		p.Fail("fix the KAFKA_TLS_*/KAFKA_SASL_* settings", "Kafka TLS/SASL setup: %v", err)
	} else {
		pc.Dialer, pc.Transport, pc.TLS = kafkaDialer(tlsCfg, mech), kafkaTransport(tlsCfg, mech), tlsCfg != nil
		preflight.CheckKafka(ctx, pc, p)
	}
	preflight.CheckBraze(ctx, pc, p)
	if p.Failed() {
		return 1
	}
	return 0
}
