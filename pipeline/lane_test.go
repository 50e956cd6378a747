package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/braze-ingestor/braze-ingestor/batcher"
	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/schemas"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// fakeBraze answers each request with a scripted function of the request's objects.
type fakeBraze struct {
	mu       sync.Mutex
	answer   func(body map[string][]map[string]any) sink.Response
	requests []map[string][]map[string]any
}

func (f *fakeBraze) Track(ctx context.Context, body []byte) sink.Response {
	var b map[string][]map[string]any
	if err := json.Unmarshal(body, &b); err != nil {
		panic(fmt.Sprintf("worker sent invalid JSON: %v: %s", err, body))
	}
	f.mu.Lock()
	f.requests = append(f.requests, b)
	f.mu.Unlock()
	return f.answer(b)
}

type memDLQ struct {
	mu      sync.Mutex
	letters []dlq.Letter
	fail    bool
}

func (m *memDLQ) Write(ctx context.Context, l []dlq.Letter) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return dlq.ErrWrite
	}
	for i := range l {
		if !l[i].Written {
			l[i].Written = true
			m.letters = append(m.letters, l[i])
		}
	}
	return nil
}

func (m *memDLQ) snapshot() []dlq.Letter {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]dlq.Letter(nil), m.letters...)
}

func ev(user string, seq int) []byte {
	return []byte(fmt.Sprintf(`{"external_id":%q,"name":"e","time":"2026-01-01T00:00:00Z","properties":{"seq":%d}}`, user, seq))
}

// laneHarness runs one lane and the DLQ stage without Kafka.
func laneHarness(t *testing.T, braze *fakeBraze, limits batcher.Limits, opts ...func(*Config)) (*Pipeline, *memDLQ, *partitionState, func()) {
	t.Helper()
	mq := &memDLQ{}
	cfg := Config{Brokers: []string{"x"}, Topics: []string{"t"}, GroupID: "g", Lanes: 1, Linger: 10 * time.Millisecond,
		Limits: limits, RetryInitial: time.Millisecond, RetryMax: 5 * time.Millisecond, HaltProbeMax: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, o := range opts {
		o(&cfg)
	}
	p, err := New(cfg, braze, mq)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.runLane(ctx, p.lanes[0]) }()
	go func() { defer wg.Done(); p.runDLQ(ctx) }()
	ps := newPartitionState("t", 0)
	return p, mq, ps, func() { cancel(); wg.Wait() }
}

func feed(p *Pipeline, ps *partitionState, objs [][]byte) []*msgAck {
	acks := make([]*msgAck, len(objs))
	for i, o := range objs {
		acks[i] = ps.track(&kafka.Message{Topic: "t", Offset: int64(i)}, 1)
		ps.outstanding.Add(1)
		p.lanes[0].in <- item{kind: schemas.KindEvent, raw: o, ack: acks[i]}
	}
	return acks
}

func waitSettled(t *testing.T, ps *partitionState, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ps.mu.Lock()
		wm := ps.watermark
		ps.mu.Unlock()
		if wm == n && ps.outstanding.Load() == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not settled: watermark %d (want %d), outstanding %d", wm, n, ps.outstanding.Load())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestLaneOutcomes(t *testing.T) {
	bad := func(o map[string]any) bool { return strings.HasPrefix(o["external_id"].(string), "bad") }
	tests := []struct {
		name       string
		objs       [][]byte
		answer     func(body map[string][]map[string]any) sink.Response
		wantDLQ    map[string]dlq.Reason // external_id -> reason
		wantMinReq int
	}{
		{
			name: "2xx delivers all",
			objs: [][]byte{ev("a", 1), ev("b", 2)},
			answer: func(map[string][]map[string]any) sink.Response {
				return sink.Response{Status: 201, Class: sink.Delivered}
			},
			wantDLQ: map[string]dlq.Reason{},
		},
		{
			name: "partial errors map to exact records",
			objs: [][]byte{ev("a", 1), ev("bad-1", 2), ev("c", 3), ev("bad-2", 4)},
			answer: func(b map[string][]map[string]any) sink.Response {
				r := sink.Response{Status: 201, Class: sink.Delivered}
				for i, o := range b["events"] {
					if bad(o) {
						r.Class = sink.Partial
						r.Errors = append(r.Errors, sink.ItemError{Type: "BLACKLISTED_EXTERNAL_USER_ID", InputArray: "events", Index: i})
					}
				}
				return r
			},
			wantDLQ: map[string]dlq.Reason{"bad-1": dlq.ReasonBrazeRejected, "bad-2": dlq.ReasonBrazeRejected},
		},
		{
			name: "400 without errors bisects down to the bad record",
			objs: [][]byte{ev("a", 1), ev("b", 2), ev("bad-x", 3), ev("d", 4), ev("e", 5)},
			answer: func(b map[string][]map[string]any) sink.Response {
				for _, o := range b["events"] {
					if bad(o) {
						return sink.Response{Status: 400, Class: sink.Split, Message: "bad"}
					}
				}
				return sink.Response{Status: 201, Class: sink.Delivered}
			},
			wantDLQ:    map[string]dlq.Reason{"bad-x": dlq.ReasonBrazeRejected},
			wantMinReq: 4,
		},
		{
			name: "413 isolates a too-large record",
			objs: [][]byte{ev("a", 1), ev("bad-big", 2), ev("c", 3)},
			answer: func(b map[string][]map[string]any) sink.Response {
				for _, o := range b["events"] {
					if bad(o) {
						return sink.Response{Status: 413, Class: sink.Split}
					}
				}
				return sink.Response{Status: 201, Class: sink.Delivered}
			},
			wantDLQ: map[string]dlq.Reason{"bad-big": dlq.ReasonTooLarge},
		},
		{
			name: "retries until delivered, nothing dead-lettered",
			objs: [][]byte{ev("a", 1), ev("b", 2)},
			answer: func() func(map[string][]map[string]any) sink.Response {
				n := 0
				return func(map[string][]map[string]any) sink.Response {
					n++
					if n < 4 {
						return sink.Response{Status: 503, Class: sink.Retry}
					}
					return sink.Response{Status: 201, Class: sink.Delivered}
				}
			}(),
			wantDLQ:    map[string]dlq.Reason{},
			wantMinReq: 4,
		},
		{
			name: "halt then recovery: nothing dead-lettered",
			objs: [][]byte{ev("a", 1)},
			answer: func() func(map[string][]map[string]any) sink.Response {
				n := 0
				return func(map[string][]map[string]any) sink.Response {
					n++
					if n < 3 {
						return sink.Response{Status: 401, Class: sink.Halt}
					}
					return sink.Response{Status: 201, Class: sink.Delivered}
				}
			}(),
			wantDLQ:    map[string]dlq.Reason{},
			wantMinReq: 3,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			braze := &fakeBraze{answer: tc.answer}
			p, mq, ps, stop := laneHarness(t, braze, batcher.Limits{Mode: batcher.Combined, MaxObjects: 75, MaxBytes: 1 << 20})
			defer stop()
			feed(p, ps, tc.objs)
			waitSettled(t, ps, int64(len(tc.objs)))
			got := map[string]dlq.Reason{}
			for _, l := range mq.snapshot() {
				var o map[string]any
				if err := json.Unmarshal(l.Record, &o); err != nil {
					t.Fatal(err)
				}
				got[o["external_id"].(string)] = l.Reason
				if l.Error == "" || l.Attempts < 1 {
					t.Errorf("dead letter without error/attempts: %+v", l)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.wantDLQ) {
				t.Errorf("dead letters %v, want %v", got, tc.wantDLQ)
			}
			if len(braze.requests) < tc.wantMinReq {
				t.Errorf("%d requests, want at least %d", len(braze.requests), tc.wantMinReq)
			}
			delivered := p.stats.Snapshot().RecordsDelivered
			if want := int64(len(tc.objs) - len(tc.wantDLQ)); delivered != want {
				t.Errorf("delivered %d, want %d", delivered, want)
			}
			if p.Halted() {
				t.Error("still halted after a success")
			}
		})
	}
}

// A lane keeps its records in order across requests and packs full requests.
func TestLaneOrderAndPacking(t *testing.T) {
	braze := &fakeBraze{answer: func(map[string][]map[string]any) sink.Response {
		return sink.Response{Status: 201, Class: sink.Delivered}
	}}
	p, _, ps, stop := laneHarness(t, braze, batcher.Limits{Mode: batcher.Combined, MaxObjects: 75, MaxBytes: 1 << 20})
	defer stop()
	var objs [][]byte
	for i := 0; i < 300; i++ {
		objs = append(objs, ev("u", i))
	}
	feed(p, ps, objs)
	waitSettled(t, ps, 300)
	next := 0
	for _, r := range braze.requests {
		if len(r["events"]) > 75 {
			t.Fatalf("request with %d objects", len(r["events"]))
		}
		for _, o := range r["events"] {
			if seq := int(o["properties"].(map[string]any)["seq"].(float64)); seq != next {
				t.Fatalf("seq %d arrived, want %d", seq, next)
			}
			next++
		}
	}
	if len(braze.requests) != 4 {
		t.Errorf("300 records in %d requests, want 4 full ones", len(braze.requests))
	}
}

// Records of a revoked partition are dropped, never sent, and never committed.
func TestLaneDropsRevoked(t *testing.T) {
	braze := &fakeBraze{answer: func(map[string][]map[string]any) sink.Response {
		return sink.Response{Status: 201, Class: sink.Delivered}
	}}
	p, _, ps, stop := laneHarness(t, braze, batcher.Limits{Mode: batcher.Combined, MaxObjects: 75, MaxBytes: 1 << 20})
	defer stop()
	ps.revoked.Store(true)
	p.revokeEpoch.Add(1)
	feed(p, ps, [][]byte{ev("a", 1), ev("b", 2)})
	deadline := time.Now().Add(2 * time.Second)
	for ps.outstanding.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if len(braze.requests) != 0 || ps.outstanding.Load() != 0 {
		t.Fatalf("revoked records: %d requests sent, %d outstanding", len(braze.requests), ps.outstanding.Load())
	}
	if p.stats.Snapshot().RecordsDelivered != 0 {
		t.Fatal("revoked records counted as delivered")
	}
}

// While the DLQ cannot be written, the record is not acknowledged.
func TestDLQFailureHoldsAck(t *testing.T) {
	braze := &fakeBraze{answer: func(b map[string][]map[string]any) sink.Response {
		return sink.Response{Status: 201, Class: sink.Partial, Errors: []sink.ItemError{{Type: "x", InputArray: "events", Index: 0}}}
	}}
	p, mq, ps, stop := laneHarness(t, braze, batcher.Limits{Mode: batcher.Combined, MaxObjects: 75, MaxBytes: 1 << 20})
	defer stop()
	mq.mu.Lock()
	mq.fail = true
	mq.mu.Unlock()
	feed(p, ps, [][]byte{ev("a", 1)})
	time.Sleep(300 * time.Millisecond)
	if ps.toCommit() != -1 || p.stats.DLQErrors.Load() == 0 {
		t.Fatalf("committable %d with the DLQ down (errors %d)", ps.toCommit(), p.stats.DLQErrors.Load())
	}
	mq.mu.Lock()
	mq.fail = false
	mq.mu.Unlock()
	waitSettled(t, ps, 1)
}

// With RETRY_MAX_DURATION set, a record Braze keeps failing on becomes a retries_exhausted
// dead letter instead of waiting forever.
func TestRetryMaxDurationDeadLetters(t *testing.T) {
	braze := &fakeBraze{answer: func(map[string][]map[string]any) sink.Response { return sink.Response{Status: 503, Class: sink.Retry} }}
	mq := &memDLQ{}
	p, err := New(Config{Brokers: []string{"x"}, Topics: []string{"t"}, GroupID: "g", Lanes: 1, Linger: time.Millisecond,
		RetryInitial: time.Millisecond, RetryMax: 5 * time.Millisecond, RetryMaxDuration: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, braze, mq)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.runLane(ctx, p.lanes[0])
	go p.runDLQ(ctx)
	ps := newPartitionState("t", 0)
	feed(p, ps, [][]byte{ev("a", 1)})
	waitSettled(t, ps, 1)
	l := mq.snapshot()
	if len(l) != 1 || l[0].Reason != dlq.ReasonRetriesExhausted || l[0].Attempts < 2 || !strings.Contains(l[0].Error, "503") {
		t.Fatalf("dead letters %+v", l)
	}
}
