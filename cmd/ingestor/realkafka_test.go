package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/braze-ingestor/braze-ingestor/brazesim"
	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/synth"
)

// The TestRealKafka* tests only mean something on Apache Kafka (scripts/kafka.sh): they use
// kcat, stop and start the broker, and run a rebalance through the real group coordinator.
// scripts/test.sh runs them with KAFKA_TEST_SECURITY=plaintext; they skip without a broker.
// Their consumer groups are named after the test's unique topic: the broker is shared, and a
// group shared between runs (or engineers) would rebalance with strangers.

func realKafka(t *testing.T, partitions int) *testKafka {
	t.Helper()
	if os.Getenv("KAFKA_TEST_BROKERS") == "" {
		t.Skip(`needs a real Kafka broker: scripts/kafka.sh start && eval "$(scripts/kafka.sh env)" (scripts/test.sh does both)`)
	}
	return newTestKafka(t, partitions)
}

// kafkaScript is scripts/kafka.sh, found from the package directory the test runs in.
func kafkaScript(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "scripts", "kafka.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("scripts/kafka.sh: %v", err)
	}
	return p
}

// kafkaCtl runs scripts/kafka.sh cmd and returns how long it took.
func kafkaCtl(t *testing.T, cmd string) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, kafkaScript(t), cmd)
	c.Env = append(os.Environ(), "KAFKA_SKIP_PREREQS=1")
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/kafka.sh %s: %v\n%s", cmd, err, out)
	}
	return time.Since(start)
}

// kcatArgs are kcat's connection arguments for k: PLAINTEXT, or SASL_SSL with PLAIN (Debian
// 12's librdkafka 2.0.2 cannot do SCRAM against Kafka 4.x, see scripts/README.md).
func kcatArgs(t *testing.T, k *testKafka) []string {
	t.Helper()
	if _, err := exec.LookPath("kcat"); err != nil {
		t.Fatalf("kcat not installed (scripts/prereqs.sh installs it): %v", err)
	}
	args := []string{"-b", strings.Join(k.Brokers, ",")}
	if k.Security.Enabled() {
		args = append(args, "-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanisms=PLAIN",
			"-X", "sasl.username="+k.Security.User, "-X", "sasl.password="+k.Security.Password,
			"-X", "ssl.ca.location="+k.Security.CAFile)
	}
	return args
}

func runKcat(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, "kcat", args...)
	c.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("kcat %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

// kcatMessage is one line of kcat -J output.
type kcatMessage struct {
	Topic     string   `json:"topic"`
	Partition int      `json:"partition"`
	Offset    int64    `json:"offset"`
	Headers   []string `json:"headers"` // key, value, key, value, ...
	Key       *string  `json:"key"`
	Payload   *string  `json:"payload"`
}

func (m kcatMessage) header(key string) (string, int) {
	var v string
	n := 0
	for i := 0; i+1 < len(m.Headers); i += 2 {
		if m.Headers[i] == key {
			v = m.Headers[i+1]
			n++
		}
	}
	return v, n
}

// TestRealKafkaKcatInterop: a non-Go producer (kcat/librdkafka) writes envelopes and bundles
// with headers, traceparent included; the worker delivers the valid records and dead-letters
// the bad ones; kcat reads the DLQ back and sees the reason, the source position and the
// producer's own headers, traceparent carried over unchanged.
func TestRealKafkaKcatInterop(t *testing.T) {
	k := realKafka(t, 3)
	sim := newSim(t, nil)
	conn := kcatArgs(t, k)

	type msg struct {
		key, value, traceparent string
		dlq                     []string // expected dead-letter reasons, in record order
		index                   []string // their dlq.source.record_index
	}
	msgs := []msg{
		{key: "kcat-u1", value: `{"type":"event","data":{"external_id":"kcat-u1","name":"kcat_event","time":"2026-11-25T10:00:00Z","properties":{"seq":0}},"id":"kcat-1"}`},
		{key: "kcat-u2", value: `{"attributes":[{"external_id":"kcat-u2","email":"kcat-u2@example.com","seq":0}],` +
			`"events":[{"external_id":"kcat-u2","name":"kcat_event","time":"2026-11-25T10:00:01Z","properties":{"seq":1}}],` +
			`"purchases":[{"external_id":"kcat-u2","product_id":"sku-1","currency":"USD","price":9.99,"quantity":1,"time":"2026-11-25T10:00:02Z","properties":{"seq":2}}]}`},
		{key: "kcat-u3", value: `{"type":"event","data":{"external_id":"kcat-u3","name":"kcat_event","time":"yesterday","properties":{"seq":0}}}`,
			dlq: []string{"invalid_record"}, index: []string{"0"}},
		{key: "kcat-u4", value: `{"events":[{"external_id":"kcat-u4","name":"kcat_event","time":"2026-11-25T10:00:03Z","properties":{"seq":0}},` +
			`{"external_id":"kcat-u4","name":"kcat_event","time":"yesterday","properties":{"seq":1}}]}`,
			dlq: []string{"invalid_record"}, index: []string{"1"}},
		{key: "kcat-u5", value: `{"type":"event","data":{"external_id":"kcat-u5"`, dlq: []string{"invalid_json"}, index: []string{"-1"}},
	}
	// One kcat run per message (-H applies to a whole run), all into partition 0 so that
	// message i has offset i.
	for i := range msgs {
		msgs[i].traceparent = fmt.Sprintf("00-4bf92f3577b34da6a3ce929d0e0e47%02d-00f067aa0ba902%02d-01", i, i)
		args := append(append([]string{}, conn...), "-P", "-t", k.Topic, "-p", "0", "-k", msgs[i].key,
			"-H", "traceparent="+msgs[i].traceparent, "-H", "producer=kcat", "-H", fmt.Sprintf("msg.no=%d", i))
		runKcat(t, []byte(msgs[i].value+"\n"), args...)
	}
	wantDLQ := 0
	for _, m := range msgs {
		wantDLQ += len(m.dlq)
	}

	p, stop := startWorker(t, testConfig(k, sim, "kcat-"+k.Topic))
	waitFor(t, 30*time.Second, "kcat records delivered or dead-lettered", func() bool {
		s := p.Stats().Snapshot()
		return s.RecordsDelivered+s.DeadLetteredAll >= 7
	})
	stop()
	s := p.Stats().Snapshot()
	if s.RecordsDelivered != 5 || s.DeadLetteredAll != int64(wantDLQ) {
		t.Errorf("worker delivered %d records and dead-lettered %d, want 5 and %d", s.RecordsDelivered, s.DeadLetteredAll, wantDLQ)
	}

	// Braze (the simulator) got the valid records.
	user := func(id string) brazesim.User {
		t.Helper()
		u, ok := sim.Sim.User("external_id", id)
		if !ok {
			t.Fatalf("user %s never reached Braze", id)
		}
		return u
	}
	if u := user("kcat-u1"); len(u.Events) != 1 || u.Events[0].Name != "kcat_event" {
		t.Errorf("kcat-u1 events: %+v", u.Events)
	}
	if u := user("kcat-u2"); u.Email != "kcat-u2@example.com" || len(u.Events) != 1 || len(u.Purchases) != 1 || u.Purchases[0].ProductID != "sku-1" {
		t.Errorf("kcat-u2 (bundle): email %q, events %+v, purchases %+v", u.Email, u.Events, u.Purchases)
	}
	if u := user("kcat-u4"); len(u.Events) != 1 || u.Events[0].Properties["seq"] != float64(0) {
		t.Errorf("kcat-u4: want only the valid event of the bundle, got %+v", u.Events)
	}
	for _, id := range []string{"kcat-u3", "kcat-u5"} {
		if u, ok := sim.Sim.User("external_id", id); ok && len(u.Events) > 0 {
			t.Errorf("%s: invalid record reached Braze: %+v", id, u.Events)
		}
	}

	// kcat reads the DLQ back with its headers.
	out := runKcat(t, nil, append(append([]string{}, conn...), "-C", "-t", k.DLQ, "-o", "beginning", "-e", "-q", "-J")...)
	var got []kcatMessage
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var m kcatMessage
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("kcat -J line %q: %v", line, err)
		}
		got = append(got, m)
	}
	if len(got) != wantDLQ {
		t.Fatalf("kcat read %d dead letters, want %d:\n%s", len(got), wantDLQ, out)
	}
	seen := map[int64]int{}
	for _, m := range got {
		h := func(key string) string {
			v, n := m.header(key)
			if n != 1 {
				t.Errorf("dead letter at DLQ %d/%d: header %s appears %d times (headers %q)", m.Partition, m.Offset, key, n, m.Headers)
			}
			return v
		}
		off, err := strconv.ParseInt(h(dlq.HeaderSourceOffset), 10, 64)
		if err != nil || off < 0 || off >= int64(len(msgs)) {
			t.Errorf("dlq.source.offset %q: not one of the produced offsets (headers %q)", h(dlq.HeaderSourceOffset), m.Headers)
			continue
		}
		src := msgs[off]
		i := seen[off]
		seen[off]++
		if i >= len(src.dlq) {
			t.Errorf("unexpected dead letter for source offset %d (%s): headers %q", off, src.key, m.Headers)
			continue
		}
		if r := h(dlq.HeaderReason); r != src.dlq[i] {
			t.Errorf("offset %d: dlq.reason %q, want %q", off, r, src.dlq[i])
		}
		if v := h(dlq.HeaderSourceTopic); v != k.Topic {
			t.Errorf("offset %d: dlq.source.topic %q, want %q", off, v, k.Topic)
		}
		if v := h(dlq.HeaderSourcePartition); v != "0" {
			t.Errorf("offset %d: dlq.source.partition %q, want 0", off, v)
		}
		if v := h(dlq.HeaderRecordIndex); v != src.index[i] {
			t.Errorf("offset %d: dlq.source.record_index %q, want %q", off, v, src.index[i])
		}
		if v := h("traceparent"); v != src.traceparent {
			t.Errorf("offset %d: traceparent %q, want the producer's %q", off, v, src.traceparent)
		}
		if v := h("producer"); v != "kcat" {
			t.Errorf("offset %d: producer header %q not carried over", off, v)
		}
		if v := h("msg.no"); v != strconv.FormatInt(off, 10) {
			t.Errorf("offset %d: msg.no header %q", off, v)
		}
		if h(dlq.HeaderError) == "" || h(dlq.HeaderFailedAt) == "" {
			t.Errorf("offset %d: dlq.error/dlq.failed_at missing: %q", off, m.Headers)
		}
		if m.Key == nil || *m.Key != src.key {
			t.Errorf("offset %d: DLQ key %v, want the source key %q", off, m.Key, src.key)
		}
		if m.Payload == nil {
			t.Errorf("offset %d: empty DLQ payload", off)
		} else if src.dlq[i] == "invalid_json" && *m.Payload != src.value {
			t.Errorf("offset %d: invalid_json dead letter should carry the original bytes, got %q", off, *m.Payload)
		} else if src.dlq[i] == "invalid_record" && !strings.Contains(*m.Payload, `"yesterday"`) {
			t.Errorf("offset %d: invalid_record dead letter should carry the record, got %q", off, *m.Payload)
		}
	}
	t.Logf("kcat produced %d messages (5 records deliverable, %d bad); worker delivered %d, dead-lettered %d; kcat read %d dead letters with reason, source position and the producer's traceparent",
		len(msgs), wantDLQ, s.RecordsDelivered, s.DeadLetteredAll, len(got))
}

// TestRealKafkaBrokerRestart stops the broker for 20 s while the worker works through a
// backlog, then starts it again: the same worker recovers on its own (rejoins, fetches,
// commits), every deliverable record reaches Braze, every bad one the DLQ. Duplicates
// (records delivered but not yet committed when the broker went away) are counted.
func TestRealKafkaBrokerRestart(t *testing.T) {
	k := realKafka(t, 12)
	if k.Security.Enabled() {
		t.Skip("the broker restart test runs on PLAINTEXT (scripts/test.sh)")
	}
	sim := newSim(t, nil)
	exp := newExpectation()
	gen := synth.New(synth.Options{Users: 400, InvalidShare: 0.01, RejectShare: 0.01, Seed: 23})
	produceN(t, k, gen, 6000, exp)

	cfg := testConfig(k, sim, "restart-"+k.Topic)
	// Keep the worker busy past the outage: little buffered in the lanes, Braze paced.
	cfg.LaneQueue = 64
	cfg.BrazeRateLimit = 10
	cfg.BrazeRateBurst = 10
	p, stop := startWorker(t, cfg)
	waitFor(t, 60*time.Second, "some progress before the outage", func() bool { return sim.Sim.Stats().Objects > 800 })

	var down atomic.Bool
	t.Cleanup(func() {
		if down.Load() {
			kafkaCtl(t, "start") // never leave the shared broker stopped
		}
	})
	down.Store(true)
	atStop := sim.Sim.Stats().Objects
	stopTook := kafkaCtl(t, "stop")
	time.Sleep(20 * time.Second)
	duringOutage := sim.Sim.Stats().Objects - atStop
	commitsBefore := p.Stats().Snapshot().Commits
	startTook := kafkaCtl(t, "start")
	down.Store(false)
	backAt := time.Now()
	afterOutage := sim.Sim.Stats().Objects
	if afterOutage >= int64(exp.deliver) {
		t.Fatalf("everything was delivered before the broker came back (%d objects); the test proves nothing", afterOutage)
	}

	rep := settledBySim(t, k, sim, exp, 90*time.Second)
	recovered := time.Since(backAt)
	waitFor(t, 10*time.Second, "a commit after the restart", func() bool { return p.Stats().Snapshot().Commits > commitsBefore })
	stop()
	if len(rep.attrErrs) != 0 {
		t.Errorf("attributes after the broker restart: %v", rep.attrErrs)
	}
	if len(rep.orderErrs) != 0 {
		t.Errorf("per-user order after the broker restart: %v", rep.orderErrs)
	}
	dl := readDLQ(t, k)
	if want := exp.invalid + exp.rejected + exp.badJSON; len(dl) < want {
		t.Errorf("DLQ has %d records, want at least %d", len(dl), want)
	}
	if st := sim.Sim.Stats(); st.SameUserConcurrency != 0 {
		t.Errorf("%d overlapping same-user requests across the broker restart", st.SameUserConcurrency)
	}
	t.Logf("broker stopped after %d objects (stop took %s), down 20 s (+stop/start), start took %s; %d objects delivered from the lanes during the outage; "+
		"settled %s after the broker was back; nothing lost; %d duplicate event/purchase deliveries, %d dead letters for %d bad records; worker commit errors %d",
		atStop, stopTook.Round(time.Millisecond), startTook.Round(time.Millisecond), duringOutage, recovered.Round(time.Millisecond),
		rep.duplicates, len(dl), exp.invalid+exp.rejected+exp.badJSON, p.Stats().CommitErrors.Load())
}

// TestRealKafkaRebalance: while records stream in, a second worker joins the group, takes
// half the partitions, then leaves with SIGTERM. Nothing is lost, duplicates are counted,
// and Braze never sees two overlapping requests for one user (a revoked partition's
// in-flight records are drained before its final commit and before the next owner reads).
func TestRealKafkaRebalance(t *testing.T) {
	k := realKafka(t, 12)
	sim := newSim(t, func(c *brazesim.Config) { c.Latency = 3 * time.Millisecond })
	exp := newExpectation()
	var mu sync.Mutex
	gen := synth.New(synth.Options{Users: 500, InvalidShare: 0.01, RejectShare: 0.01, Seed: 31})
	add := func(m synth.Message) { mu.Lock(); exp.add(m); mu.Unlock() }
	var produced atomic.Int64
	if err := k.produce(context.Background(), gen, 2000, 0, &produced, add); err != nil {
		t.Fatal(err)
	}
	prodCtx, stopProducing := context.WithCancel(context.Background())
	defer stopProducing()
	prodDone := make(chan error, 1)
	go func() { prodDone <- k.produce(prodCtx, gen, 0, 500, &produced, add) }()

	cfg := testConfig(k, sim, "rebalance-"+k.Topic)
	p, stop := startWorker(t, cfg)
	owned := func() int { return len(p.Lag()) }
	waitFor(t, 30*time.Second, "worker A owns all 12 partitions and delivers", func() bool {
		return owned() == 12 && sim.Sim.Stats().Objects > 1000
	})

	// Watch A's assignment: each change is a rebalance; note how many records A had in
	// flight just before it (the point of the test is rebalancing with records in flight).
	type change struct {
		at       time.Duration
		from, to int
		inFlight int64
	}
	var (
		chMu    sync.Mutex
		changes []change
	)
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		start, last := time.Now(), owned()
		var maxInFlight int64
		for watchCtx.Err() == nil {
			n := owned()
			if n != last {
				chMu.Lock()
				changes = append(changes, change{time.Since(start), last, n, maxInFlight})
				chMu.Unlock()
				last, maxInFlight = n, 0
			}
			if f := p.Stats().InFlightRecords.Load(); f > maxInFlight {
				maxInFlight = f
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	rebalances := func() []change {
		stopWatch()
		<-watchDone
		chMu.Lock()
		defer chMu.Unlock()
		return changes
	}

	t0 := time.Now()
	b := startChild(t, cfg, "worker-b")
	waitFor(t, 45*time.Second, "worker B joins and takes partitions from A", func() bool { n := owned(); return n > 0 && n < 12 })
	joined := time.Since(t0)
	shared := owned()
	mid := sim.Sim.Stats().Objects
	together := time.Now()
	waitFor(t, 30*time.Second, "progress with two workers", func() bool {
		return sim.Sim.Stats().Objects > mid+1500 && time.Since(together) > 4*time.Second
	})

	t1 := time.Now()
	if err := b.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := b.Wait(); err != nil {
		t.Errorf("worker B exit after SIGTERM: %v (want status 0)", err)
	}
	waitFor(t, 45*time.Second, "worker A owns all partitions again", func() bool { return owned() == 12 })
	left := time.Since(t1)
	after := sim.Sim.Stats().Objects
	alone := time.Now()
	waitFor(t, 30*time.Second, "progress after B left", func() bool {
		return sim.Sim.Stats().Objects > after+500 && time.Since(alone) > 2*time.Second
	})
	for _, c := range rebalances() {
		t.Logf("rebalance at +%s: worker A %d -> %d partitions, up to %d records in flight in A just before", c.at.Round(time.Millisecond), c.from, c.to, c.inFlight)
		if c.inFlight == 0 {
			t.Logf("  (no records were in flight in A at that rebalance)")
		}
	}

	stopProducing()
	if err := <-prodDone; err != nil {
		t.Fatalf("producer: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	rep := settledBySim(t, k, sim, exp, 60*time.Second)
	stop()
	if len(rep.orderErrs) != 0 || len(rep.attrErrs) != 0 {
		t.Errorf("order: %v attributes: %v", rep.orderErrs, rep.attrErrs)
	}
	dl := readDLQ(t, k)
	if want := exp.invalid + exp.rejected + exp.badJSON; len(dl) < want {
		t.Errorf("DLQ has %d records, want at least %d", len(dl), want)
	}
	st := sim.Sim.Stats()
	if st.SameUserConcurrency != 0 {
		t.Errorf("%d overlapping same-user requests during the rebalances (a partition's new owner sent while the old one still had its records in flight)", st.SameUserConcurrency)
	}
	t.Logf("%d records: B joined after %s (A kept %d of 12 partitions), left %s after SIGTERM; nothing lost; %d duplicate event/purchase deliveries, %d dead letters for %d bad records; same-user overlaps %d; A commits %d, commit errors %d",
		exp.total, joined.Round(time.Millisecond), shared, left.Round(time.Millisecond), rep.duplicates, len(dl), exp.invalid+exp.rejected+exp.badJSON,
		st.SameUserConcurrency, p.Stats().Snapshot().Commits, p.Stats().CommitErrors.Load())
}
