package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/braze-ingestor/braze-ingestor/brazesim"
	"github.com/braze-ingestor/braze-ingestor/pipeline"
	"github.com/braze-ingestor/braze-ingestor/schemas"
	"github.com/braze-ingestor/braze-ingestor/synth"
)

// front puts a recording proxy in front of a simulator so tests can see every request's
// time and status as the worker sent it.
type front struct {
	srv   *httptest.Server
	mu    sync.Mutex
	times []time.Time
	codes []int
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(c int) { w.code = c; w.ResponseWriter.WriteHeader(c) }

func newFront(t *testing.T, sim *brazesim.Server) *front {
	f := &front{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		at := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: 200}
		sim.Sim.ServeHTTP(sw, r)
		if r.URL.Path == "/users/track" {
			f.mu.Lock()
			f.times = append(f.times, at)
			f.codes = append(f.codes, sw.code)
			f.mu.Unlock()
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *front) snapshot() ([]time.Time, []int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.times...), append([]int(nil), f.codes...)
}

// maxInWindow is the most requests sent within any window of length d.
func maxInWindow(times []time.Time, d time.Duration) int {
	sorted := append([]time.Time(nil), times...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Before(sorted[j]) })
	best, lo := 0, 0
	for hi := range sorted {
		for sorted[hi].Sub(sorted[lo]) >= d {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

// produceAtRate produces messages at rate until ctx ends, recording expectations.
func produceAtRate(ctx context.Context, t *testing.T, k *testKafka, gen *synth.Generator, rate int, exp *expectation, mu *sync.Mutex) <-chan error {
	done := make(chan error, 1)
	go func() {
		var produced atomic.Int64
		done <- produce(ctx, k.Brokers, k.Topic, gen, 0, rate, &produced, func(m synth.Message) {
			mu.Lock()
			exp.add(m)
			mu.Unlock()
		})
	}()
	return done
}

// TestBrazeOutage: a 60-second Braze outage mid-stream loses nothing and dead-letters
// nothing; the breaker opens and closes; consumption pauses and resumes.
func TestBrazeOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("60-second outage")
	}
	k := newTestKafka(t, 12)
	sim := newSim(t, nil)
	cfg := testConfig(k, sim, "outage")
	cfg.BreakerFailures = 3
	cfg.BreakerOpenFor = 2 * time.Second
	p, stop := startWorker(t, cfg)

	exp := newExpectation()
	var mu sync.Mutex
	ctx, cancel := context.WithCancel(context.Background())
	prodDone := produceAtRate(ctx, t, k, synth.New(synth.Options{Users: 400, Seed: 3}), 200, exp, &mu)
	waitFor(t, 30*time.Second, "first deliveries", func() bool { return p.Stats().Snapshot().RecordsDelivered > 500 })

	start := time.Now()
	sim.Sim.SetFaults(brazesim.Faults{Outage: []brazesim.Window{{Start: start, End: start.Add(60 * time.Second)}}})
	waitFor(t, 20*time.Second, "breaker open", p.Paused)
	if p.Ready() {
		t.Error("readiness should be false while the breaker is open")
	}
	// Consumption is paused: while the breaker is open, each partition's fetch loop takes at
	// most the one message it was already waiting for, then stops (the producer keeps going).
	c1 := p.Stats().MessagesConsumed.Load()
	time.Sleep(5 * time.Second)
	if c2 := p.Stats().MessagesConsumed.Load(); c2-c1 > 12 || !p.Paused() {
		t.Errorf("consumed %d messages while the breaker was open (paused=%v)", c2-c1, p.Paused())
	}
	waitFor(t, 90*time.Second, "outage over and breaker closed", func() bool { return time.Since(start) > 60*time.Second && !p.Paused() })
	time.Sleep(2 * time.Second)
	cancel()
	if err := <-prodDone; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	total := int64(exp.total)
	mu.Unlock()
	waitFor(t, 60*time.Second, "backlog delivered", func() bool { return p.Stats().Snapshot().RecordsDelivered >= total })
	stop()
	s := p.Stats().Snapshot()
	if s.DeadLetteredAll != 0 {
		t.Errorf("%d records dead-lettered during an outage", s.DeadLetteredAll)
	}
	rep := checkDeliveries(t, sim.Sim, exp)
	if rep.missing != 0 {
		t.Errorf("%d records lost", rep.missing)
	}
	t.Logf("outage: %d records delivered, %d retries, %d duplicates", s.RecordsDelivered, s.Retries, rep.duplicates)
}

// TestFaultyBraze: 20% 5xx, 10% 429 and added latency for the whole run: everything is
// delivered, nothing dead-lettered, and the request rate never exceeds the configured one.
func TestFaultyBraze(t *testing.T) {
	k := newTestKafka(t, 12)
	sim := newSim(t, nil)
	sim.Sim.SetFaults(brazesim.Faults{Error5xxRate: 0.2, Rate429: 0.1, ExtraLatency: 5 * time.Millisecond})
	f := newFront(t, sim)
	exp := newExpectation()
	produceN(t, k, synth.New(synth.Options{Users: 300, Seed: 5}), 1500, exp)
	cfg := testConfig(k, sim, "faulty")
	cfg.BrazeEndpoint = f.srv.URL
	cfg.BatchMaxObjects = 10 // more requests, so faults hit often
	cfg.BrazeRateLimit = 100
	cfg.BrazeRateBurst = 5
	cfg.BreakerFailures = 8
	cfg.BreakerOpenFor = 500 * time.Millisecond
	p, stop := startWorker(t, cfg)
	waitFor(t, 120*time.Second, "all delivered", func() bool { return p.Stats().Snapshot().RecordsDelivered >= int64(exp.total) })
	stop()
	s := p.Stats().Snapshot()
	if s.DeadLetteredAll != 0 {
		t.Errorf("dead-lettered %d", s.DeadLetteredAll)
	}
	if rep := checkDeliveries(t, sim.Sim, exp); rep.missing != 0 || len(rep.orderErrs) != 0 {
		t.Errorf("missing %d, order %v", rep.missing, rep.orderErrs)
	}
	times, codes := f.snapshot()
	// A token bucket allows rate*window + burst in any window.
	if got, limit := maxInWindow(times, time.Second), 100+5; got > limit {
		t.Errorf("%d requests within one second, configured 100/s burst 5", got)
	}
	var n429, n5xx int
	for _, c := range codes {
		switch {
		case c == 429:
			n429++
		case c >= 500:
			n5xx++
		}
	}
	if n429 == 0 || n5xx == 0 {
		t.Errorf("faults were not injected: %d 429s, %d 5xx", n429, n5xx)
	}
	t.Logf("%d requests (%d 429, %d 5xx), %d retries, max %d per second", len(times), n429, n5xx, s.Retries, maxInWindow(times, time.Second))
}

// TestReplicasShareRateLimit: three workers against one Braze limit settle near it: within
// the limit, under 1% 429s, and at least 90% of the limit used while there is backlog.
func TestReplicasShareRateLimit(t *testing.T) {
	k := newTestKafka(t, 12)
	const limit, window = 300, 3 * time.Second // 100 requests/s for the workspace
	sim := newSim(t, func(c *brazesim.Config) {
		c.TrackLimit = limit
		c.TrackWindow = window
		c.Latency = 2 * time.Millisecond
	})
	f := newFront(t, sim)
	exp := newExpectation()
	// 2 objects per request and ~6,000 records: about 30 s of backlog at the limit.
	produceN(t, k, synth.New(synth.Options{Users: 2000, BundleShare: 0.01, Seed: 9}), 5800, exp)
	var workers []func()
	var pipes []*pipeline.Pipeline
	for i := 0; i < 3; i++ {
		cfg := testConfig(k, sim, "replicas")
		cfg.BrazeEndpoint = f.srv.URL
		cfg.BatchMaxObjects = 2
		cfg.BatchLinger = 5 * time.Millisecond
		p, stop := startWorker(t, cfg)
		workers = append(workers, stop)
		pipes = append(pipes, p)
	}
	delivered := func() int64 {
		var n int64
		for _, p := range pipes {
			n += p.Stats().Snapshot().RecordsDelivered
		}
		return n
	}
	waitFor(t, 120*time.Second, "all delivered", func() bool { return delivered() >= int64(exp.total) })
	for _, stop := range workers {
		stop()
	}
	times, codes := f.snapshot()
	// Count accepted requests per Braze window (the simulator's windows are aligned to the
	// epoch); the full windows strictly between the first and the last are under backlog.
	perWindow := map[int64]int{}
	var n429 int
	for i, at := range times {
		if codes[i] == 429 {
			n429++
			continue
		}
		perWindow[at.UnixNano()/int64(window)]++
	}
	var keys []int64
	for w := range perWindow {
		keys = append(keys, w)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	var used, full int
	for _, w := range keys[1 : len(keys)-1] {
		if perWindow[w] > limit {
			t.Errorf("window %d: %d accepted requests over the limit %d", w, perWindow[w], limit)
		}
		used += perWindow[w]
		full++
	}
	if full < 3 {
		t.Fatalf("only %d full windows of backlog; the test needs more records", full)
	}
	util := float64(used) / float64(full*limit)
	share429 := float64(n429) / float64(len(times))
	t.Logf("%d requests, %d 429s (%.2f%%), %d full windows at %.1f%% of the limit; per window %v", len(times), n429, 100*share429, full, 100*util, perWindow)
	if share429 >= 0.02 {
		t.Errorf("429s are %.2f%% of requests, want under 2%%", 100*share429)
	}
	if util < 0.9 {
		t.Errorf("used %.1f%% of the limit while there was backlog, want at least 90%%", 100*util)
	}
}

// TestInvalidKeyHaltsAndRecovers: while every key is refused, nothing is dead-lettered or
// committed; once healed, everything is delivered without a restart.
func TestInvalidKeyHaltsAndRecovers(t *testing.T) {
	k := newTestKafka(t, 12)
	sim := newSim(t, nil)
	sim.Sim.SetFaults(brazesim.Faults{InvalidKeys: true})
	exp := newExpectation()
	produceN(t, k, synth.New(synth.Options{Users: 300, InvalidShare: 0, Seed: 13}), 2000, exp)
	cfg := testConfig(k, sim, "halt")
	group := cfg.KafkaGroupID
	cfg.HaltProbeMax = 2 * time.Second
	p, stop := startWorker(t, cfg)
	waitFor(t, 20*time.Second, "halt", p.Halted)
	if p.Ready() {
		t.Error("ready while halted")
	}
	haltStart := time.Now()
	for time.Since(haltStart) < 20*time.Second {
		s := p.Stats().Snapshot()
		if s.DeadLetteredAll != 0 || s.RecordsDelivered != 0 {
			t.Fatalf("during halt: dead-lettered %d, delivered %d", s.DeadLetteredAll, s.RecordsDelivered)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// A new group commits its resolved start offset (0 here) when it gets a partition; no
	// commit may move past it while everything is refused.
	for part, off := range committedOffsets(t, k, group) {
		if off != 0 {
			t.Fatalf("partition %d committed at %d during the halt, want only the start offset 0", part, off)
		}
	}
	sim.Sim.SetFaults(brazesim.Faults{})
	waitFor(t, 60*time.Second, "all delivered after healing", func() bool { return p.Stats().Snapshot().RecordsDelivered >= int64(exp.total) })
	waitFor(t, 10*time.Second, "ready again", p.Ready)
	stop()
	if s := p.Stats().Snapshot(); s.DeadLetteredAll != 0 {
		t.Errorf("dead-lettered %d", s.DeadLetteredAll)
	}
	if rep := checkDeliveries(t, sim.Sim, exp); rep.missing != 0 {
		t.Errorf("missing %d", rep.missing)
	}
}

// committedOffsets returns the group's committed offsets (partition -> offset) for the source topic.
func committedOffsets(t *testing.T, k *testKafka, group string) map[int]int64 {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(k.Brokers...), Timeout: 5 * time.Second}
	parts := make([]int, 12)
	for i := range parts {
		parts[i] = i
	}
	resp, err := c.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{k.Topic: parts}})
	if err != nil {
		t.Fatalf("offset fetch: %v", err)
	}
	out := map[int]int64{}
	for _, p := range resp.Topics[k.Topic] {
		if p.CommittedOffset >= 0 {
			out[p.Partition] = p.CommittedOffset
		}
	}
	return out
}

// TestDLQUnavailable: while the DLQ topic cannot be written, no offset is committed past a
// record that must be dead-lettered; once it is back, everything completes.
func TestDLQUnavailable(t *testing.T) {
	k := newTestKafka(t, 12)
	if k.Cluster == nil {
		t.Skip("needs the in-process broker's fault injection")
	}
	sim := newSim(t, nil)
	exp := newExpectation()
	produceN(t, k, synth.New(synth.Options{Users: 300, InvalidShare: 0.02, Seed: 17}), 3000, exp)
	firstBad := firstBadOffsets(t, k)
	if len(firstBad) == 0 {
		t.Fatal("no invalid records produced")
	}
	var broken atomic.Bool
	broken.Store(true)
	var refused atomic.Int64
	k.Cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		pr := req.(*kmsg.ProduceRequest)
		if !broken.Load() || len(pr.Topics) == 0 || pr.Topics[0].Topic != k.DLQ {
			return nil, nil, false
		}
		k.Cluster.KeepControl()
		refused.Add(1)
		return nil, errors.New("DLQ unavailable (test)"), true
	})
	dcfg := testConfig(k, sim, "dlqdown")
	p, stop := startWorker(t, dcfg)
	waitFor(t, 30*time.Second, "DLQ write failures", func() bool { return p.Stats().DLQErrors.Load() > 0 })
	time.Sleep(3 * time.Second) // several commit intervals
	for part, off := range committedOffsets(t, k, dcfg.KafkaGroupID) {
		if bad, ok := firstBad[part]; ok && off > bad {
			t.Errorf("partition %d committed to %d, past the undead-lettered record at offset %d", part, off, bad)
		}
	}
	if p.Stats().Snapshot().DeadLetteredAll != 0 {
		t.Error("records counted as dead-lettered while the DLQ was down")
	}
	broken.Store(false)
	waitFor(t, 60*time.Second, "everything settled", func() bool {
		s := p.Stats().Snapshot()
		return s.RecordsDelivered+s.DeadLetteredAll >= int64(exp.total)
	})
	stop()
	if got, want := len(readDLQ(t, k)), exp.invalid+exp.badJSON; got != want {
		t.Errorf("DLQ has %d records, want %d", got, want)
	}
	t.Logf("DLQ refused %d produce requests; nothing committed past bad records %v", refused.Load(), firstBad)
}

// firstBadOffsets reads the source topic and returns, per partition, the offset of the
// first message holding a record the decoder rejects.
func firstBadOffsets(t *testing.T, k *testKafka) map[int]int64 {
	t.Helper()
	out := map[int]int64{}
	var dec schemas.Decoder
	for part := 0; part < 12; part++ {
		lc, err := kafka.DialLeader(context.Background(), "tcp", k.Brokers[0], k.Topic, part)
		if err != nil {
			t.Fatal(err)
		}
		last, _ := lc.ReadLastOffset()
		lc.Close()
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: k.Brokers, Topic: k.Topic, Partition: part, MaxWait: 100 * time.Millisecond})
		for i := int64(0); i < last; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			m, err := r.ReadMessage(ctx)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			recs, derr := dec.Decode(m.Value, nil)
			bad := derr != nil
			for _, rec := range recs {
				bad = bad || rec.Err != nil
			}
			if bad {
				out[part] = m.Offset
				break
			}
		}
		r.Close()
	}
	return out
}

// TestKill9Cycles kills the worker at random points ten times; nothing is lost, and the
// duplicates at-least-once allows are counted and reported.
func TestKill9Cycles(t *testing.T) {
	if testing.Short() {
		t.Skip("ten crash cycles")
	}
	k := newTestKafka(t, 12)
	// Slow enough (one lane, 25 objects per request, 30 ms per request: ~800 records/s) that
	// ten kills land before the backlog is gone.
	sim := newSim(t, func(c *brazesim.Config) { c.Latency = 30 * time.Millisecond })
	exp := newExpectation()
	produceN(t, k, synth.New(synth.Options{Users: 1000, InvalidShare: 0.01, RejectShare: 0.01, Seed: 23}), 15000, exp)
	cfg := testConfig(k, sim, "kill9")
	cfg.Lanes = 1
	cfg.BatchMaxObjects = 25
	cfg.KafkaSessionTimeout = 6 * time.Second
	cfg.KafkaDrainTimeout = 3 * time.Second
	r := rand.New(rand.NewPCG(1, 2))
	for cycle := 0; cycle < 10; cycle++ {
		child := startChild(t, cfg, fmt.Sprintf("kill9-%d", cycle))
		waitJoined(t, child)
		before := sim.Sim.Stats().Objects
		// Kill at a random point once the worker is moving.
		waitFor(t, 60*time.Second, "progress", func() bool { return sim.Sim.Stats().Objects > before })
		time.Sleep(time.Duration(100+r.IntN(1400)) * time.Millisecond)
		_ = child.Process.Signal(syscall.SIGKILL)
		_ = child.Wait()
	}
	startChild(t, cfg, "kill9-final")
	rep := settledBySim(t, k, sim, exp, 180*time.Second)
	t.Logf("10 kill -9 cycles: nothing lost; %d duplicate deliveries of %d events/purchases", rep.duplicates, countSeqs(exp))
}

func countSeqs(e *expectation) int {
	n := 0
	for _, s := range e.wantSeqs {
		n += len(s)
	}
	return n
}
