package main

import (
	"context"
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
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/braze-ingestor/braze-ingestor/brazesim"
	"github.com/braze-ingestor/braze-ingestor/sink"
	"github.com/braze-ingestor/braze-ingestor/synth"
)

// TestMain lets the end-to-end tests run the worker as a real child process (for kill -9
// and SIGTERM) by re-executing the test binary.
func TestMain(m *testing.M) {
	if os.Getenv("INGESTOR_TEST_CHILD") == "1" {
		os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// testKafka is the broker a test runs against: the in-process kfake cluster by default, or
// a real broker when KAFKA_TEST_BROKERS is set (then topics get unique names).
type testKafka struct {
	Brokers []string
	Topic   string
	DLQ     string
	Real    bool
	Cluster *kfake.Cluster
}

var topicSeq atomic.Int64

func newTestKafka(t *testing.T, partitions int) *testKafka {
	t.Helper()
	suffix := fmt.Sprintf("%s-%d-%d", strings.ReplaceAll(strings.ToLower(t.Name()), "/", "-"), time.Now().UnixNano()%1e9, topicSeq.Add(1))
	topic, dlq := "src-"+suffix, "dlq-"+suffix
	if b := os.Getenv("KAFKA_TEST_BROKERS"); b != "" {
		k := &testKafka{Brokers: strings.Split(b, ","), Topic: topic, DLQ: dlq, Real: true}
		createTopics(t, k.Brokers, kafka.TopicConfig{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1},
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

func createTopics(t *testing.T, brokers []string, topics ...kafka.TopicConfig) {
	t.Helper()
	conn, err := kafka.Dial("tcp", brokers[0])
	if err != nil {
		t.Fatalf("dial %s: %v", brokers[0], err)
	}
	defer conn.Close()
	ctrl, err := conn.Controller()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := kafka.Dial("tcp", net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if err := cc.CreateTopics(topics...); err != nil {
		t.Fatalf("create topics: %v", err)
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
	c := env.config(group)
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
	return c
}

// expectation accumulates what should happen to every produced record.
type expectation struct {
	msgs      []synth.Message
	deliver   int
	invalid   int // invalid_record
	badJSON   int // invalid_json (whole messages)
	rejected  int // braze_rejected
	total     int
	lastAttr  map[string]int   // user -> seq of the last deliverable attributes record
	wantSeqs  map[string][]int // user -> seqs of deliverable events and purchases, in order
	wantKinds map[string]map[int]string
}

func newExpectation() *expectation {
	return &expectation{lastAttr: map[string]int{}, wantSeqs: map[string][]int{}, wantKinds: map[string]map[int]string{}}
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
			if r.Kind == "attributes" {
				e.lastAttr[r.User] = r.Seq
			} else {
				e.wantSeqs[r.User] = append(e.wantSeqs[r.User], r.Seq)
				if e.wantKinds[r.User] == nil {
					e.wantKinds[r.User] = map[int]string{}
				}
				e.wantKinds[r.User][r.Seq] = r.Kind
			}
		}
	}
}

// produceN writes n generated messages and records their expectations.
func produceN(t *testing.T, k *testKafka, gen *synth.Generator, n int, exp *expectation) {
	t.Helper()
	var produced atomic.Int64
	if err := produce(context.Background(), k.Brokers, k.Topic, gen, n, 0, &produced, exp.add); err != nil {
		t.Fatal(err)
	}
}

// readDLQ reads every dead letter written so far.
func readDLQ(t *testing.T, k *testKafka) []kafka.Message {
	t.Helper()
	conn, err := kafka.Dial("tcp", k.Brokers[0])
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
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: k.Brokers, Topic: k.DLQ, Partition: p.ID, MaxWait: 100 * time.Millisecond})
		lc, err := kafka.DialLeader(context.Background(), "tcp", k.Brokers[0], k.DLQ, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		last, err := lc.ReadLastOffset()
		lc.Close()
		if err != nil {
			t.Fatal(err)
		}
		for i := int64(0); i < last; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			m, err := r.ReadMessage(ctx)
			cancel()
			if err != nil {
				t.Fatalf("read DLQ partition %d: %v", p.ID, err)
			}
			out = append(out, m)
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

var _ = sink.HeaderReason
var _ = rand.IntN
