package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/braze-ingestor/braze-ingestor/brazesim"
	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"github.com/braze-ingestor/braze-ingestor/synth"
)

// TestMain lets the end-to-end tests run the worker as a real child process (for kill -9
// and SIGTERM) by re-executing the test binary.
func TestMain(m *testing.M) {
	if os.Getenv("INGESTOR_TEST_CHILD") == "1" {
		inheritTestSecurity()
		os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// inheritTestSecurity gives a child worker the SASL_SSL settings of the test broker when
// its environment names the SASL_SSL listener but carries no Kafka security settings (a
// childEnv that does not yet append securityEnv(cfg)). Explicit settings always win.
func inheritTestSecurity() {
	if os.Getenv("KAFKA_TEST_SECURITY") != "sasl_ssl" || os.Getenv("KAFKA_BROKERS") == "" ||
		os.Getenv("KAFKA_BROKERS") != os.Getenv("KAFKA_TEST_SASL_BROKERS") {
		return
	}
	for _, v := range []string{"KAFKA_SASL_MECHANISM", "KAFKA_TLS_ENABLED", "KAFKA_TLS_CA_FILE"} {
		if os.Getenv(v) != "" {
			return
		}
	}
	for _, kv := range securityEnv(&Config{KafkaTLSEnabled: true, KafkaTLSCAFile: os.Getenv("KAFKA_TEST_CA_FILE"),
		KafkaSASLMechanism: os.Getenv("KAFKA_TEST_SCRAM_MECHANISM"), KafkaSASLUsername: os.Getenv("KAFKA_TEST_SASL_USER"),
		KafkaSASLPassword: os.Getenv("KAFKA_TEST_SASL_PASSWORD")}) {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
}

// testKafka is the broker a test runs against: the in-process kfake cluster by default, or
// a real broker when KAFKA_TEST_BROKERS is set (then topics get unique names). With
// KAFKA_TEST_SECURITY=sasl_ssl the real broker is reached on its SASL_SSL listener
// (KAFKA_TEST_SASL_BROKERS) with TLS (KAFKA_TEST_CA_FILE) and SCRAM
// (KAFKA_TEST_SCRAM_MECHANISM, KAFKA_TEST_SASL_USER/PASSWORD); every harness helper that
// talks to Kafka then goes through k.dialer(), k.transport(), k.writer() or k.client().
type testKafka struct {
	Brokers []string
	Topic   string
	DLQ     string
	Real    bool
	Cluster *kfake.Cluster
	// Security is how to reach Brokers (zero: PLAINTEXT).
	Security testSecurity

	tls  *tls.Config
	mech sasl.Mechanism
}

// testSecurity holds the Kafka security settings of the test broker, in worker Config terms.
type testSecurity struct {
	CAFile    string
	Mechanism string // e.g. SCRAM-SHA-512 (lower-cased by the worker)
	User      string
	Password  string
}

func (s testSecurity) Enabled() bool { return s.Mechanism != "" || s.CAFile != "" }

// apply copies the settings into a worker configuration.
func (s testSecurity) apply(c *Config) {
	if !s.Enabled() {
		return
	}
	c.KafkaTLSEnabled = true
	c.KafkaTLSCAFile = s.CAFile
	c.KafkaSASLMechanism = strings.ToLower(s.Mechanism)
	c.KafkaSASLUsername = s.User
	c.KafkaSASLPassword = s.Password
}

// testSecurityFromEnv reads KAFKA_TEST_SECURITY (plaintext, the default, or sasl_ssl) and
// returns the brokers to use and how to reach them.
func testSecurityFromEnv(t *testing.T) ([]string, testSecurity) {
	t.Helper()
	switch mode := strings.ToLower(os.Getenv("KAFKA_TEST_SECURITY")); mode {
	case "", "plaintext":
		return strings.Split(os.Getenv("KAFKA_TEST_BROKERS"), ","), testSecurity{}
	case "sasl_ssl":
		sec := testSecurity{CAFile: os.Getenv("KAFKA_TEST_CA_FILE"), Mechanism: os.Getenv("KAFKA_TEST_SCRAM_MECHANISM"),
			User: os.Getenv("KAFKA_TEST_SASL_USER"), Password: os.Getenv("KAFKA_TEST_SASL_PASSWORD")}
		if sec.Mechanism == "" {
			sec.Mechanism = "SCRAM-SHA-512"
		}
		b := os.Getenv("KAFKA_TEST_SASL_BROKERS")
		if b == "" || sec.CAFile == "" || sec.User == "" {
			t.Fatalf("KAFKA_TEST_SECURITY=sasl_ssl needs KAFKA_TEST_SASL_BROKERS, KAFKA_TEST_CA_FILE, KAFKA_TEST_SASL_USER and KAFKA_TEST_SASL_PASSWORD (eval \"$(scripts/kafka.sh env)\")")
		}
		return strings.Split(b, ","), sec
	default:
		t.Fatalf("KAFKA_TEST_SECURITY=%q: want plaintext or sasl_ssl", mode)
		return nil, testSecurity{}
	}
}

var topicSeq atomic.Int64

func newTestKafka(t *testing.T, partitions int) *testKafka {
	t.Helper()
	suffix := fmt.Sprintf("%s-%d-%d", strings.ReplaceAll(strings.ToLower(t.Name()), "/", "-"), time.Now().UnixNano()%1e9, topicSeq.Add(1))
	topic, dlq := "src-"+suffix, "dlq-"+suffix
	if os.Getenv("KAFKA_TEST_BROKERS") != "" {
		brokers, sec := testSecurityFromEnv(t)
		k := &testKafka{Brokers: brokers, Topic: topic, DLQ: dlq, Real: true, Security: sec}
		if sec.Enabled() {
			var c Config
			sec.apply(&c)
			var err error
			if k.tls, k.mech, err = kafkaSecurity(&c); err != nil {
				t.Fatalf("test broker security: %v", err)
			}
		}
		k.createTopics(t, kafka.TopicConfig{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1},
			kafka.TopicConfig{Topic: dlq, NumPartitions: 3, ReplicationFactor: 1})
		return k
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(partitions), topic), kfake.SeedTopics(3, dlq))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &testKafka{Brokers: c.ListenAddrs(), Topic: topic, DLQ: dlq, Cluster: c}
}

// dialer returns a kafka-go dialer for k's brokers (TLS and SASL when k.Security is set).
func (k *testKafka) dialer() *kafka.Dialer { return kafkaDialer(k.tls, k.mech) }

// transport returns a kafka-go transport for Writers and Clients on k's brokers.
func (k *testKafka) transport() *kafka.Transport { return kafkaTransport(k.tls, k.mech) }

// writer returns a producer for topic on k's brokers, keyed by kafka.Hash like the
// project's producers. The caller closes it.
func (k *testKafka) writer(topic string) *kafka.Writer {
	return &kafka.Writer{Addr: kafka.TCP(k.Brokers...), Topic: topic, Balancer: &kafka.Hash{}, BatchSize: 500,
		BatchTimeout: 5 * time.Millisecond, RequiredAcks: kafka.RequireAll, Transport: k.transport()}
}

// readerConfig returns a partition reader configuration for topic on k's brokers.
func (k *testKafka) readerConfig(topic string, partition int) kafka.ReaderConfig {
	return kafka.ReaderConfig{Brokers: k.Brokers, Topic: topic, Partition: partition, MaxWait: 100 * time.Millisecond, Dialer: k.dialer()}
}

// produce is dev.go's produce on k's transport: it writes n generated messages (0 = until
// ctx ends) to k.Topic at up to rate messages/s.
func (k *testKafka) produce(ctx context.Context, gen *synth.Generator, n, rate int, produced *atomic.Int64, onMsg func(synth.Message)) error {
	w := k.writer(k.Topic)
	defer w.Close()
	return produceWith(ctx, w, gen, n, rate, produced, onMsg)
}

// createTopics creates topics on k's brokers.
func (k *testKafka) createTopics(t *testing.T, topics ...kafka.TopicConfig) {
	t.Helper()
	createTopicsWith(t, k.dialer(), k.Brokers, topics...)
}

func createTopicsWith(t *testing.T, d *kafka.Dialer, brokers []string, topics ...kafka.TopicConfig) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		t.Fatalf("dial %s: %v", brokers[0], err)
	}
	defer conn.Close()
	ctrl, err := conn.Controller()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if err := cc.CreateTopics(topics...); err != nil {
		t.Fatalf("create topics: %v", err)
	}
	// CreateTopics returns once the controller has the topics; the broker's metadata (what
	// producers see) can lag, notably just after a broker start, and kafka-go's Writer does
	// not retry UNKNOWN_TOPIC_OR_PARTITION. Wait until every partition has a leader.
	for _, tc := range topics {
		var last string
		for {
			parts, err := conn.ReadPartitions(tc.Topic)
			ready := err == nil && len(parts) == tc.NumPartitions
			for _, p := range parts {
				ready = ready && p.Leader.Host != ""
			}
			if ready {
				break
			}
			last = fmt.Sprintf("%d of %d partitions, error %v", len(parts), tc.NumPartitions, err)
			if ctx.Err() != nil {
				t.Fatalf("topic %s created but not visible in metadata within 30s: %s", tc.Topic, last)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func newSim(t *testing.T, mut func(*brazesim.Config)) *brazesim.Server {
	t.Helper()
	cfg := brazesim.DefaultConfig()
	// A little latency makes overlapping same-user requests visible to the simulator.
	cfg.Latency = time.Millisecond
	if mut != nil {
		mut(&cfg)
	}
	s, err := brazesim.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func testConfig(k *testKafka, sim *brazesim.Server, group string) *Config {
	env := &devEnv{Brokers: k.Brokers, Topic: k.Topic, DLQ: k.DLQ, Sim: sim}
	// Group names carry the test's unique topic, so runs sharing a real broker never join
	// each other's groups.
	c := env.config(group + "-" + k.Topic)
	c.BatchLinger = 20 * time.Millisecond
	c.Lanes = 16
	c.KafkaCommitInterval = 200 * time.Millisecond
	c.KafkaSessionTimeout = 10 * time.Second
	// A dead member holds up a rebalance for up to the rebalance timeout; keep it short so
	// crash tests restart quickly.
	c.KafkaRebalanceTimeout = 8 * time.Second
	c.KafkaDrainTimeout = 5 * time.Second
	c.KafkaHeartbeatInterval = time.Second
	c.KafkaMaxWait = 100 * time.Millisecond
	c.RetryInitial = 20 * time.Millisecond
	c.RetryMax = 500 * time.Millisecond
	c.ShutdownTimeout = 10 * time.Second
	k.Security.apply(c)
	return c
}

// securityEnv renders cfg's Kafka security settings as worker environment variables (empty
// for PLAINTEXT). childEnv appends it so child workers reach a SASL_SSL broker.
func securityEnv(cfg *Config) []string {
	var env []string
	add := func(k, v string) {
		if v != "" {
			env = append(env, k+"="+v)
		}
	}
	if cfg.KafkaTLSEnabled {
		add("KAFKA_TLS_ENABLED", "true")
	}
	add("KAFKA_TLS_CA_FILE", cfg.KafkaTLSCAFile)
	add("KAFKA_TLS_CERT_FILE", cfg.KafkaTLSCertFile)
	add("KAFKA_TLS_KEY_FILE", cfg.KafkaTLSKeyFile)
	add("KAFKA_TLS_SERVER_NAME", cfg.KafkaTLSServerName)
	add("KAFKA_SASL_MECHANISM", cfg.KafkaSASLMechanism)
	add("KAFKA_SASL_USERNAME", cfg.KafkaSASLUsername)
	add("KAFKA_SASL_PASSWORD", cfg.KafkaSASLPassword)
	return env
}

// expectation accumulates what should happen to every produced record.
type expectation struct {
	msgs      []synth.Message
	deliver   int
	invalid   int // invalid_record
	badJSON   int // invalid_json (whole messages)
	rejected  int // braze_rejected
	total     int
	byKind    map[string]int   // deliverable records per kind
	lastAttr  map[string]int   // user -> seq of the last deliverable attributes record
	wantSeqs  map[string][]int // user -> seqs of deliverable events and purchases, in order
	wantKinds map[string]map[int]string

	// The kinds beyond /users/track (synth's LifecycleShare; lifecycle_test.go).
	byEndpoint [endpoint.Count]int          // deliverable records per endpoint
	tokens     map[string][]string          // user -> their records as checkLifecycle's tokens, in Kafka order
	deleted    map[string]bool              // users whose delete is deliverable
	subs       map[string]map[string]string // user -> subscription group -> last state
}

func newExpectation() *expectation {
	return &expectation{byKind: map[string]int{}, lastAttr: map[string]int{}, wantSeqs: map[string][]int{}, wantKinds: map[string]map[int]string{},
		tokens: map[string][]string{}, deleted: map[string]bool{}, subs: map[string]map[string]string{}}
}

// requireLifecycle fails the test unless the stream holds every kind beyond /users/track.
func (e *expectation) requireLifecycle(t *testing.T) {
	t.Helper()
	for k := endpoint.AliasNew; k < endpoint.Count; k++ {
		if e.byEndpoint[k] == 0 {
			t.Fatalf("the generator made no deliverable %s records: %v", k.Name(), e.lifecycleCounts())
		}
	}
}

// lifecycleCounts are the deliverable records per endpoint beyond /users/track.
func (e *expectation) lifecycleCounts() map[string]int {
	out := map[string]int{}
	for k := endpoint.AliasNew; k < endpoint.Count; k++ {
		out[k.Name()] = e.byEndpoint[k]
	}
	return out
}

// addLifecycle records a deliverable record that is not one of the user's own /users/track
// records: of an anonymous or duplicate profile, or of a kind beyond /users/track.
func (e *expectation) addLifecycle(r synth.Record) {
	if ep, ok := endpoint.Parse(r.Kind); ok {
		e.byEndpoint[ep]++
	}
	if r.Identity != "" {
		return // ordered by its own identifier, not with the user's records
	}
	switch r.Kind {
	case "identify", "merge":
		e.tokens[r.User] = append(e.tokens[r.User], r.Kind)
	case "subscription":
		e.tokens[r.User] = append(e.tokens[r.User], "sub:"+r.Group+" "+r.State)
		if e.subs[r.User] == nil {
			e.subs[r.User] = map[string]string{}
		}
		e.subs[r.User][r.Group] = r.State
	case "delete":
		e.tokens[r.User] = append(e.tokens[r.User], "delete")
		e.deleted[r.User] = true
		// A deleted user's events and attributes are gone with the profile.
		delete(e.lastAttr, r.User)
		delete(e.wantSeqs, r.User)
		delete(e.subs, r.User)
	}
}

func (e *expectation) add(m synth.Message) {
	e.msgs = append(e.msgs, m)
	if m.WholeInvalid {
		e.badJSON++
		e.total++
		return
	}
	for _, r := range m.Records {
		e.total++
		switch r.Outcome {
		case synth.Invalid:
			e.invalid++
		case synth.BrazeRejected:
			e.rejected++
		default:
			e.deliver++
			if r.Identity != "" || (r.Kind != "attributes" && r.Kind != "event" && r.Kind != "purchase") {
				e.addLifecycle(r)
				continue
			}
			e.byKind[r.Kind]++
			if r.Kind == "attributes" {
				e.lastAttr[r.User] = r.Seq
			} else {
				e.wantSeqs[r.User] = append(e.wantSeqs[r.User], r.Seq)
				if e.wantKinds[r.User] == nil {
					e.wantKinds[r.User] = map[int]string{}
				}
				e.wantKinds[r.User][r.Seq] = r.Kind
				e.tokens[r.User] = append(e.tokens[r.User], fmt.Sprintf("%c:%d", r.Kind[0], r.Seq))
			}
		}
	}
}

// produceN writes n generated messages and records their expectations.
func produceN(t *testing.T, k *testKafka, gen *synth.Generator, n int, exp *expectation) {
	t.Helper()
	var produced atomic.Int64
	if err := k.produce(context.Background(), gen, n, 0, &produced, exp.add); err != nil {
		t.Fatal(err)
	}
}

// readDLQ reads every dead letter written so far.
func readDLQ(t *testing.T, k *testKafka) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d := k.dialer()
	conn, err := d.DialContext(ctx, "tcp", k.Brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	parts, err := conn.ReadPartitions(k.DLQ)
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	var out []kafka.Message
	for _, p := range parts {
		lc, err := d.DialLeader(ctx, "tcp", k.Brokers[0], k.DLQ, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		last, err := lc.ReadLastOffset()
		lc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if last == 0 {
			continue
		}
		r := kafka.NewReader(k.readerConfig(k.DLQ, p.ID))
		// Read up to the high watermark by offset, not by count: a partition's offsets may have
		// gaps (a write retried after the broker dropped the connection mid-batch).
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			m, err := r.ReadMessage(ctx)
			cancel()
			if err != nil {
				r.Close()
				t.Fatalf("read DLQ partition %d (high watermark %d, read %d): %v", p.ID, last, len(out), err)
			}
			out = append(out, m)
			if m.Offset >= last-1 {
				break
			}
		}
		r.Close()
	}
	return out
}

func header(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// deliveries counts, per user, how many times each event/purchase seq reached the simulator,
// and checks per-user order: within a user's events (and purchases), first deliveries arrive
// in seq order.
type deliveryReport struct {
	missing    int
	duplicates int
	orderErrs  []string
	attrErrs   []string
}

func checkDeliveries(t *testing.T, sim *brazesim.Sim, exp *expectation) deliveryReport {
	t.Helper()
	var rep deliveryReport
	for user, seqs := range exp.wantSeqs {
		u, ok := sim.User("external_id", user)
		if !ok {
			rep.missing += len(seqs)
			continue
		}
		got := map[int]int{}
		check := func(list string, props []map[string]any) {
			last := -1
			for _, p := range props {
				f, ok := p["seq"].(float64)
				if !ok {
					continue
				}
				s := int(f)
				got[s]++
				if got[s] == 1 {
					if s < last && len(rep.orderErrs) < 10 {
						rep.orderErrs = append(rep.orderErrs, fmt.Sprintf("%s %s: seq %d arrived after %d", user, list, s, last))
					}
					last = s
				}
			}
		}
		var ev, pu []map[string]any
		for _, e := range u.Events {
			ev = append(ev, e.Properties)
		}
		for _, p := range u.Purchases {
			pu = append(pu, p.Properties)
		}
		check("events", ev)
		check("purchases", pu)
		for _, s := range seqs {
			switch n := got[s]; {
			case n == 0:
				rep.missing++
			case n > 1:
				rep.duplicates += n - 1
			}
		}
	}
	for user, seq := range exp.lastAttr {
		u, ok := sim.User("external_id", user)
		if !ok {
			rep.attrErrs = append(rep.attrErrs, user+": no profile")
			continue
		}
		if f, _ := u.Attributes["seq"].(float64); int(f) != seq && len(rep.attrErrs) < 10 {
			rep.attrErrs = append(rep.attrErrs, fmt.Sprintf("%s: last attributes seq %v, want %d", user, u.Attributes["seq"], seq))
		}
	}
	return rep
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var _ = dlq.HeaderReason
var _ = rand.IntN
