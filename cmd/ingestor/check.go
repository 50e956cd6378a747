package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/sink"
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
    instance and its IP allowlist have been accepted. No user data is written.
Exit status: 0 all checks passed (warnings allowed), 1 a check failed, 2 bad configuration.
The API key is never printed.

Flags:
`

// checkPrinter prints one line per check.
type checkPrinter struct {
	w                 io.Writer
	okS, failS, warnS string
	failed            bool
}

func (p *checkPrinter) ok(format string, a ...any) {
	fmt.Fprintf(p.w, "%s %s\n", p.okS, fmt.Sprintf(format, a...))
}

func (p *checkPrinter) warn(hint, format string, a ...any) {
	fmt.Fprintf(p.w, "%s %s\n", p.warnS, fmt.Sprintf(format, a...))
	if hint != "" {
		fmt.Fprintf(p.w, "    fix: %s\n", hint)
	}
}

func (p *checkPrinter) fail(hint, format string, a ...any) {
	p.failed = true
	fmt.Fprintf(p.w, "%s %s\n", p.failS, fmt.Sprintf(format, a...))
	if hint != "" {
		fmt.Fprintf(p.w, "    fix: %s\n", hint)
	}
}

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
	p := &checkPrinter{w: stdout, okS: "✓", failS: "✗", warnS: "!"}
	if *plain {
		p.okS, p.failS, p.warnS = "ok  ", "FAIL", "WARN"
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	p.ok("config valid: %d source topic(s) %s, DLQ %s, group %s, Braze %s",
		len(cfg.KafkaTopics), strings.Join(cfg.KafkaTopics, ","), cfg.KafkaDLQTopic, cfg.KafkaGroupID, cfg.BrazeEndpoint)
	checkKafka(ctx, cfg, p, *dlqWrite)
	checkBraze(ctx, cfg, p)
	if p.failed {
		return 1
	}
	return 0
}

// ---- Kafka ----

func checkKafka(ctx context.Context, cfg *Config, p *checkPrinter, dlqWrite bool) {
	tlsCfg, mech, err := kafkaSecurity(cfg)
	if err != nil {
		p.fail("fix the KAFKA_TLS_*/KAFKA_SASL_* settings", "Kafka TLS/SASL setup: %v", err)
		return
	}
	security := "plaintext"
	if tlsCfg != nil {
		security = "TLS"
	}
	if mech != nil {
		security += ", SASL " + mech.Name()
	}
	dialer := kafkaDialer(tlsCfg, mech)
	var reachable []string
	type brokerErr struct {
		addr       string
		what, hint string
		auth       bool
	}
	var bad []brokerErr
	for _, b := range cfg.KafkaBrokers {
		if err := probeBroker(ctx, dialer, b); err != nil {
			what, hint, auth := explainKafkaErr(err, tlsCfg != nil, mech != nil)
			bad = append(bad, brokerErr{b, what, hint, auth})
			continue
		}
		reachable = append(reachable, b)
	}
	for _, e := range bad {
		// An unreachable bootstrap broker is survivable while another answers; a broker that
		// refuses our credentials or certificates is not.
		if e.auth || len(reachable) == 0 {
			p.fail(e.hint, "broker %s: %s", e.addr, e.what)
		} else {
			p.warn(e.hint, "broker %s: %s (other brokers answer; the worker can run)", e.addr, e.what)
		}
	}
	if len(reachable) == 0 {
		p.fail("", "topics: not checked (no broker usable)")
		return
	}
	p.ok("brokers reachable (%s): %s", security, strings.Join(reachable, ","))

	client := &kafka.Client{Addr: kafka.TCP(reachable...), Transport: kafkaTransport(tlsCfg, mech), Timeout: 15 * time.Second}
	topics := append(append([]string(nil), cfg.KafkaTopics...), cfg.KafkaDLQTopic)
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		what, hint, _ := explainKafkaErr(err, tlsCfg != nil, mech != nil)
		p.fail(hint, "topics: metadata request failed: %s", what)
		return
	}
	byName := map[string]kafka.Topic{}
	for _, t := range md.Topics {
		byName[t.Name] = t
	}
	checkTopic := func(kind, name, envName string) bool {
		t, found := byName[name]
		switch {
		case !found || errors.Is(t.Error, kafka.UnknownTopicOrPartition):
			p.fail(fmt.Sprintf("create the topic, or correct %s (topic names are case-sensitive)", envName),
				"%s topic %s: does not exist", kind, name)
			return false
		case errors.Is(t.Error, kafka.TopicAuthorizationFailed):
			p.fail("grant this principal Describe (and Read/Write) on the topic, or correct "+envName,
				"%s topic %s: not authorized to describe it", kind, name)
			return false
		case t.Error != nil:
			p.fail("", "%s topic %s: %v", kind, name, t.Error)
			return false
		}
		var leaderless []int
		for _, part := range t.Partitions {
			if part.Error != nil || part.Leader.Host == "" {
				leaderless = append(leaderless, part.ID)
			}
		}
		if len(leaderless) > 0 {
			p.fail("check the brokers hosting these partitions (offline or under-replicated)",
				"%s topic %s: %d partitions, %d without a leader: %v", kind, name, len(t.Partitions), len(leaderless), leaderless)
			return false
		}
		p.ok("%s topic %s: exists, %d partitions", kind, name, len(t.Partitions))
		return true
	}
	var sourceOK []string
	for _, t := range cfg.KafkaTopics {
		if checkTopic("source", t, "KAFKA_TOPICS") {
			sourceOK = append(sourceOK, t)
		}
	}
	checkGroup(ctx, cfg, client, byName, sourceOK, p)
	if !checkTopic("DLQ", cfg.KafkaDLQTopic, "KAFKA_DLQ_TOPIC") {
		return
	}
	if !dlqWrite {
		p.warn("", "DLQ topic %s: writability not tested (--dlq-write=false)", cfg.KafkaDLQTopic)
		return
	}
	offset, err := writePreflightMarker(ctx, client, cfg.KafkaDLQTopic)
	if err != nil {
		what, hint, _ := explainKafkaErr(err, tlsCfg != nil, mech != nil)
		p.fail(hint, "DLQ topic %s: not writable with acks=all: %s", cfg.KafkaDLQTopic, what)
		return
	}
	p.ok("DLQ topic %s: writable (acks=all; preflight_check marker at partition 0 offset %d, skipped by replay)", cfg.KafkaDLQTopic, offset)
}

// checkGroup reads the consumer group's committed offsets: it proves the principal may use the
// group (a missing Describe/Read ACL on the group fails here) and shows where the worker starts.
func checkGroup(ctx context.Context, cfg *Config, client *kafka.Client, topics map[string]kafka.Topic, sourceOK []string, p *checkPrinter) {
	req := &kafka.OffsetFetchRequest{GroupID: cfg.KafkaGroupID, Topics: map[string][]int{}}
	total := 0
	for _, name := range sourceOK {
		for _, part := range topics[name].Partitions {
			req.Topics[name] = append(req.Topics[name], part.ID)
			total++
		}
	}
	if total == 0 {
		return
	}
	res, err := client.OffsetFetch(ctx, req)
	if err == nil && res.Error != nil {
		err = res.Error
	}
	if errors.Is(err, kafka.GroupIdNotFound) {
		p.ok("consumer group %s: new (no committed offsets; starts at the %s offset)", cfg.KafkaGroupID, cfg.KafkaStartOffset)
		return
	}
	if err != nil {
		if errors.Is(err, kafka.GroupAuthorizationFailed) {
			p.fail("grant this principal Read (and Describe) on the consumer group, or correct KAFKA_GROUP_ID",
				"consumer group %s: not authorized: %v", cfg.KafkaGroupID, err)
			return
		}
		what, hint, _ := explainKafkaErr(err, false, false)
		p.fail(hint, "consumer group %s: cannot read committed offsets: %s", cfg.KafkaGroupID, what)
		return
	}
	committed := 0
	for _, parts := range res.Topics {
		for _, part := range parts {
			if part.Error != nil {
				p.fail("", "consumer group %s: partition %d: %v", cfg.KafkaGroupID, part.Partition, part.Error)
				return
			}
			if part.CommittedOffset >= 0 {
				committed++
			}
		}
	}
	if committed == 0 {
		p.ok("consumer group %s: new (no committed offsets; starts at the %s offset)", cfg.KafkaGroupID, cfg.KafkaStartOffset)
		return
	}
	p.ok("consumer group %s: usable, committed offsets on %d of %d source partitions", cfg.KafkaGroupID, committed, total)
}

// probeBroker dials one broker with TLS/SASL (the dialer authenticates) and asks for the
// cluster's brokers (a metadata request), which proves it speaks Kafka on this port with this
// security and accepts this client.
func probeBroker(ctx context.Context, d *kafka.Dialer, addr string) error {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = conn.Brokers()
	return err
}

// writePreflightMarker produces the marker record to partition 0 of the DLQ with acks=all.
func writePreflightMarker(ctx context.Context, client *kafka.Client, topic string) (int64, error) {
	host, _ := os.Hostname()
	now := time.Now().UTC()
	value := fmt.Sprintf(`{"preflight_check":{"note":"written by ingestor check to prove this DLQ topic is writable; not a dead letter; ingestor replay skips it","host":%q,"at":%q,"version":%q}}`,
		host, now.Format(time.RFC3339Nano), version)
	rec := kafka.Record{
		Time:  now,
		Key:   kafka.NewBytes([]byte("ingestor-preflight-check")),
		Value: kafka.NewBytes([]byte(value)),
		Headers: []kafka.Header{
			{Key: dlq.HeaderReason, Value: []byte(dlq.ReasonPreflightCheck)},
			{Key: dlq.HeaderError, Value: []byte("not a dead letter: marker written by `ingestor check` to prove the DLQ topic is writable")},
			{Key: dlq.HeaderFailedAt, Value: []byte(now.Format(time.RFC3339Nano))},
		},
	}
	res, err := client.Produce(ctx, &kafka.ProduceRequest{
		Topic: topic, Partition: 0, RequiredAcks: kafka.RequireAll, Records: kafka.NewRecordReader(rec),
	})
	if err != nil {
		return 0, err
	}
	if res.Error != nil {
		return 0, res.Error
	}
	for _, e := range res.RecordErrors {
		return 0, e
	}
	return res.BaseOffset, nil
}

// explainKafkaErr turns a dial/request error into what went wrong and how to fix it. auth is
// true for credential and certificate problems (as opposed to an unreachable address).
func explainKafkaErr(err error, useTLS, useSASL bool) (what, hint string, auth bool) {
	var kerr kafka.Error
	var dnsErr *net.DNSError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalidCert x509.CertificateInvalidError
	var verifyErr *tls.CertificateVerificationError
	var recHdr tls.RecordHeaderError
	var alert tls.AlertError
	switch {
	case errors.As(err, &kerr):
		switch kerr {
		case kafka.SASLAuthenticationFailed:
			return "authentication failed (SASL): " + err.Error(),
				"check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD(_FILE) and KAFKA_SASL_MECHANISM", true
		case kafka.UnsupportedSASLMechanism:
			return "the broker does not accept this SASL mechanism: " + err.Error(),
				"set KAFKA_SASL_MECHANISM to one the listener enables (plain, scram-sha-256, scram-sha-512)", true
		case kafka.IllegalSASLState:
			return "SASL handshake refused: " + err.Error(), "check KAFKA_SASL_MECHANISM and that this listener expects SASL", true
		case kafka.TopicAuthorizationFailed, kafka.ClusterAuthorizationFailed:
			return "not authorized: " + err.Error(), "grant this principal the ACLs it needs (Describe, Read, Write on the topics)", true
		case kafka.NotEnoughReplicas, kafka.NotEnoughReplicasAfterAppend:
			return "fewer in-sync replicas than min.insync.replicas: " + err.Error(),
				"bring the DLQ topic's replicas back in sync (dead letters are written with acks=all)", false
		}
		return err.Error(), "", false
	case errors.As(err, &unknownCA), errors.As(err, &invalidCert):
		return "TLS: broker certificate not trusted: " + err.Error(), "set KAFKA_TLS_CA_FILE to the CA that signed the broker certificates", true
	case errors.As(err, &hostErr):
		return "TLS: broker certificate does not match the address: " + err.Error(),
			"use the broker's certificate host name in KAFKA_BROKERS, or set KAFKA_TLS_SERVER_NAME", true
	case errors.As(err, &verifyErr):
		return "TLS: broker certificate rejected: " + err.Error(), "check KAFKA_TLS_CA_FILE and KAFKA_TLS_SERVER_NAME", true
	case errors.As(err, &recHdr):
		return "TLS handshake failed: the broker does not speak TLS on this port",
			"use the TLS listener's port, or set KAFKA_TLS_ENABLED=false for a plaintext listener", true
	case errors.As(err, &alert):
		return "TLS: the broker refused the handshake (" + err.Error() + ")",
			"check KAFKA_TLS_CERT_FILE/KAFKA_TLS_KEY_FILE (mutual TLS) and the TLS version", true
	case errors.As(err, &dnsErr):
		return "unreachable: cannot resolve the host: " + err.Error(), "check the host names in KAFKA_BROKERS and DNS", false
	case errors.Is(err, syscall.ECONNREFUSED):
		return "unreachable: connection refused", "check the host:port in KAFKA_BROKERS and that the broker is up", false
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.ErrUnexpectedEOF):
		hint := "the listener may require TLS (KAFKA_TLS_ENABLED=true) or SASL (KAFKA_SASL_MECHANISM)"
		if useTLS || useSASL {
			hint = "check that this listener's security (TLS/SASL) matches KAFKA_TLS_*/KAFKA_SASL_*"
		}
		return "the broker closed the connection: " + err.Error(), hint, true
	case isTimeout(err):
		hint := "check network access (firewall, NetworkPolicy, security groups) to KAFKA_BROKERS"
		if !useTLS {
			hint += "; if the port is reachable, the listener may require TLS (KAFKA_TLS_ENABLED=true)"
		}
		return "unreachable: timed out: " + err.Error(), hint, false
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return "unreachable: " + err.Error(), "check KAFKA_BROKERS and network access to it", false
	}
	return err.Error(), "", false
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// ---- Braze ----

// brazeProbeBody is refused by Braze for its content ("Valid data must be provided…"), which it
// checks only after the key, its permission and its IP allowlist: a 400 with that message
// proves everything else and writes nothing.
const brazeProbeBody = `{}`

func checkBraze(ctx context.Context, cfg *Config, p *checkPrinter) {
	client, err := sink.NewClient(sink.ClientConfig{
		Endpoint: cfg.BrazeEndpoint, APIKey: cfg.BrazeAPIKey, Timeout: cfg.BrazeHTTPTimeout, MaxIdleConns: 1,
		UserAgent: "braze-ingestor/" + version + " (check)",
	})
	if err != nil {
		p.fail("fix BRAZE_REST_ENDPOINT / BRAZE_API_KEY", "Braze: %v", err)
		return
	}
	var local string
	trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) {
		if ci.Conn != nil {
			if a, ok := ci.Conn.LocalAddr().(*net.TCPAddr); ok {
				local = a.IP.String()
			}
		}
	}}
	res := client.Track(httptrace.WithClientTrace(ctx, trace), []byte(brazeProbeBody))
	ep := cfg.BrazeEndpoint
	msg := redact(res.Message, cfg.BrazeAPIKey)
	ipNote := ""
	if local != "" {
		ipNote = fmt.Sprintf(" (this host's address %s; behind NAT or a proxy Braze sees the egress IP)", local)
	}
	lowerMsg := strings.ToLower(msg)
	aboutIP := strings.Contains(lowerMsg, "ip") && (strings.Contains(lowerMsg, "allow") || strings.Contains(lowerMsg, "whitelist"))
	switch {
	case res.Status == 0:
		what, hint := explainHTTPErr(res.Err)
		p.fail(hint, "Braze %s: endpoint unreachable: %s", ep, what)
	case res.Status == http.StatusBadRequest && strings.HasPrefix(res.Message, "Valid data must be provided"):
		p.ok("Braze %s: key accepted for users.track from this IP (probe {} refused for its content as expected; nothing written)", ep)
	case res.Status == http.StatusBadRequest:
		p.fail("check BRAZE_REST_ENDPOINT points at Braze's REST endpoint", "Braze %s: unexpected 400 for the probe: %s", ep, msg)
	case aboutIP && (res.Status == http.StatusUnauthorized || res.Status == http.StatusForbidden):
		p.fail("add this host's egress IP to the key's allowlist in Braze (Settings › APIs and Identifiers), or use a key without one",
			"Braze %s: HTTP %d: this IP is not allow-listed for the key: %q%s", ep, res.Status, msg, ipNote)
	case res.Status == http.StatusUnauthorized:
		p.fail("check BRAZE_API_KEY and BRAZE_REST_ENDPOINT (the key must belong to a workspace on this instance); "+
			"if the key has an IP allowlist, Braze may also answer 401 for an IP not on it",
			"Braze %s: HTTP 401: key invalid or from another instance/workspace", ep)
	case res.Status == http.StatusForbidden && (strings.Contains(lowerMsg, "rate plan") || strings.Contains(lowerMsg, "inactiv")):
		p.fail("contact Braze: the account or plan does not allow this API", "Braze %s: HTTP 403: %s", ep, msg)
	case res.Status == http.StatusForbidden:
		p.fail("create a key with the users.track permission (permissions cannot be edited; rotate the key); if it has it, check the key's IP allowlist",
			"Braze %s: HTTP 403: key lacks users.track or this IP is not allow-listed (Braze: %q)%s", ep, msg, ipNote)
	case res.Status == http.StatusNotFound:
		p.fail("set BRAZE_REST_ENDPOINT to your instance's REST endpoint, e.g. https://rest.iad-01.braze.com (no path)",
			"Braze %s: HTTP 404: wrong endpoint (no /users/track there)", ep)
	case res.Status == http.StatusUnsupportedMediaType:
		p.fail("a proxy between here and Braze may rewrite Content-Type", "Braze %s: HTTP 415: %s", ep, msg)
	case res.Status == http.StatusTooManyRequests:
		p.warn("", "Braze %s: HTTP 429 rate limited: endpoint reachable, key not fully verified; retry later", ep)
	case res.Status >= 500:
		p.fail("Braze or a proxy is failing; retry later", "Braze %s: HTTP %d: %s", ep, res.Status, msg)
	case res.Status/100 == 2:
		p.fail("BRAZE_REST_ENDPOINT does not look like Braze (it accepted an empty body)", "Braze %s: HTTP %d for an empty body", ep, res.Status)
	default:
		p.fail("", "Braze %s: unexpected HTTP %d: %s", ep, res.Status, msg)
	}
}

func explainHTTPErr(err error) (what, hint string) {
	if err == nil {
		return "no answer", ""
	}
	var dnsErr *net.DNSError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalidCert x509.CertificateInvalidError
	var verifyErr *tls.CertificateVerificationError
	var recHdr tls.RecordHeaderError
	switch {
	case errors.As(err, &unknownCA), errors.As(err, &hostErr), errors.As(err, &invalidCert), errors.As(err, &verifyErr):
		return "TLS certificate not trusted: " + err.Error(),
			"a TLS-intercepting proxy needs its CA in the system trust store; otherwise check BRAZE_REST_ENDPOINT"
	case errors.As(err, &recHdr):
		return "TLS handshake failed: " + err.Error(), "check the scheme and port of BRAZE_REST_ENDPOINT"
	case errors.As(err, &dnsErr):
		return "cannot resolve the host: " + err.Error(), "check BRAZE_REST_ENDPOINT (e.g. https://rest.iad-01.braze.com) and DNS"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused: " + err.Error(), "check BRAZE_REST_ENDPOINT and any egress proxy"
	case isTimeout(err):
		return "timed out: " + err.Error(), "allow egress to the Braze REST host (firewall, NetworkPolicy, proxy)"
	}
	return err.Error(), "check BRAZE_REST_ENDPOINT and network egress to it"
}

// redact removes the key from text Braze sent back, in case an answer echoes it.
func redact(s, key string) string {
	if key == "" {
		return s
	}
	return strings.ReplaceAll(s, key, "[redacted]")
}
