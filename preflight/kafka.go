package preflight

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/braze-ingestor/braze-ingestor/dlq"
)

// CheckKafka checks every broker (with the configured TLS/SASL), the source and DLQ topics,
// the consumer group and, with cfg.DLQWrite, that the DLQ takes a marker record with acks=all.
func CheckKafka(ctx context.Context, cfg Config, p *Printer) {
	security := "plaintext"
	if cfg.TLS {
		security = "TLS"
	}
	if cfg.Dialer.SASLMechanism != nil {
		security += ", SASL " + cfg.Dialer.SASLMechanism.Name()
	}
	useTLS, useSASL := cfg.TLS, cfg.Dialer.SASLMechanism != nil
	dialer := cfg.Dialer
	var reachable []string
	type brokerErr struct {
		addr       string
		what, hint string
		auth       bool
	}
	var bad []brokerErr
	for _, b := range cfg.Brokers {
		if err := probeBroker(ctx, dialer, b); err != nil {
			what, hint, auth := explainKafkaErr(err, useTLS, useSASL)
			bad = append(bad, brokerErr{b, what, hint, auth})
			continue
		}
		reachable = append(reachable, b)
	}
	for _, e := range bad {
		// An unreachable bootstrap broker is survivable while another answers; a broker that
		// refuses our credentials or certificates is not.
		if e.auth || len(reachable) == 0 {
			p.Fail(e.hint, "broker %s: %s", e.addr, e.what)
		} else {
			p.Warn(e.hint, "broker %s: %s (other brokers answer; the worker can run)", e.addr, e.what)
		}
	}
	if len(reachable) == 0 {
		p.Fail("", "topics: not checked (no broker usable)")
		return
	}
	p.OK("brokers reachable (%s): %s", security, strings.Join(reachable, ","))

	client := &kafka.Client{Addr: kafka.TCP(reachable...), Transport: cfg.Transport, Timeout: 15 * time.Second}
	topics := append(append([]string(nil), cfg.Topics...), cfg.DLQTopic)
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		what, hint, _ := explainKafkaErr(err, useTLS, useSASL)
		p.Fail(hint, "topics: metadata request failed: %s", what)
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
			p.Fail(fmt.Sprintf("create the topic, or correct %s (topic names are case-sensitive)", envName),
				"%s topic %s: does not exist", kind, name)
			return false
		case errors.Is(t.Error, kafka.TopicAuthorizationFailed):
			p.Fail("grant this principal Describe (and Read/Write) on the topic, or correct "+envName,
				"%s topic %s: not authorized to describe it", kind, name)
			return false
		case t.Error != nil:
			p.Fail("", "%s topic %s: %v", kind, name, t.Error)
			return false
		}
		var leaderless []int
		for _, part := range t.Partitions {
			if part.Error != nil || part.Leader.Host == "" {
				leaderless = append(leaderless, part.ID)
			}
		}
		if len(leaderless) > 0 {
			p.Fail("check the brokers hosting these partitions (offline or under-replicated)",
				"%s topic %s: %d partitions, %d without a leader: %v", kind, name, len(t.Partitions), len(leaderless), leaderless)
			return false
		}
		p.OK("%s topic %s: exists, %d partitions", kind, name, len(t.Partitions))
		return true
	}
	var sourceOK []string
	for _, t := range cfg.Topics {
		if checkTopic("source", t, "KAFKA_TOPICS") {
			sourceOK = append(sourceOK, t)
		}
	}
	checkGroup(ctx, cfg, client, byName, sourceOK, p)
	if !checkTopic("DLQ", cfg.DLQTopic, "KAFKA_DLQ_TOPIC") {
		return
	}
	if !cfg.DLQWrite {
		p.Warn("", "DLQ topic %s: writability not tested (--dlq-write=false)", cfg.DLQTopic)
		return
	}
	offset, err := writePreflightMarker(ctx, client, cfg.DLQTopic, cfg.Version)
	if err != nil {
		what, hint, _ := explainKafkaErr(err, useTLS, useSASL)
		p.Fail(hint, "DLQ topic %s: not writable with acks=all: %s", cfg.DLQTopic, what)
		return
	}
	p.OK("DLQ topic %s: writable (acks=all; preflight_check marker at partition 0 offset %d, skipped by replay)", cfg.DLQTopic, offset)
}

// checkGroup reads the consumer group's committed offsets: it proves the principal may use the
// group (a missing Describe/Read ACL on the group fails here) and shows where the worker starts.
func checkGroup(ctx context.Context, cfg Config, client *kafka.Client, topics map[string]kafka.Topic, sourceOK []string, p *Printer) {
	req := &kafka.OffsetFetchRequest{GroupID: cfg.GroupID, Topics: map[string][]int{}}
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
		p.OK("consumer group %s: new (no committed offsets; starts at the %s offset)", cfg.GroupID, cfg.StartOffset)
		return
	}
	if err != nil {
		if errors.Is(err, kafka.GroupAuthorizationFailed) {
			p.Fail("grant this principal Read (and Describe) on the consumer group, or correct KAFKA_GROUP_ID",
				"consumer group %s: not authorized: %v", cfg.GroupID, err)
			return
		}
		what, hint, _ := explainKafkaErr(err, false, false)
		p.Fail(hint, "consumer group %s: cannot read committed offsets: %s", cfg.GroupID, what)
		return
	}
	committed := 0
	for _, parts := range res.Topics {
		for _, part := range parts {
			if part.Error != nil {
				p.Fail("", "consumer group %s: partition %d: %v", cfg.GroupID, part.Partition, part.Error)
				return
			}
			if part.CommittedOffset >= 0 {
				committed++
			}
		}
	}
	if committed == 0 {
		p.OK("consumer group %s: new (no committed offsets; starts at the %s offset)", cfg.GroupID, cfg.StartOffset)
		return
	}
	p.OK("consumer group %s: usable, committed offsets on %d of %d source partitions", cfg.GroupID, committed, total)
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
func writePreflightMarker(ctx context.Context, client *kafka.Client, topic, version string) (int64, error) {
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
