package pipeline

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/braze-ingestor/braze-ingestor/schemas"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// livenessHarness runs one lane with StuckAfter 100ms; the DLQ stage runs only if withDLQ.
func livenessHarness(t *testing.T, braze Sender, withDLQ bool, retry time.Duration) (*Pipeline, *partitionState, func()) {
	t.Helper()
	p, err := New(Config{Brokers: []string{"x"}, Topics: []string{"t"}, GroupID: "g", Lanes: 1, Linger: time.Millisecond,
		Limits: testLimits(), RetryInitial: retry, RetryMax: retry, HaltProbeMax: retry, StuckAfter: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, braze, &memDLQ{})
	if err != nil {
		t.Fatal(err)
	}
	p.lastLoop.Store(time.Now().Add(time.Hour).UnixNano()) // the run loop is not under test
	if !withDLQ {
		p.dlqCh = make(chan dlqEntry) // nobody reads: a dead letter blocks the lane forever
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); p.runLane(ctx, p.lanes[0]) }()
	if withDLQ {
		wg.Add(1)
		go func() { defer wg.Done(); p.runDLQ(ctx) }()
	}
	return p, newPartitionState("t", 0), func() { cancel(); wg.Wait() }
}

type senderFunc func(ctx context.Context, body []byte) sink.Response

func (f senderFunc) Track(ctx context.Context, body []byte) sink.Response { return f(ctx, body) }

// A lane that has a record in hand and cannot hand it on (the DLQ stage does not take it)
// makes /livez fail after StuckAfter.
func TestLivenessFailsWhenALaneIsStuck(t *testing.T) {
	reject := senderFunc(func(context.Context, []byte) sink.Response {
		return sink.Response{Status: 201, Class: sink.Partial, Errors: []sink.ItemError{{Type: "x", InputArray: "events", Index: 0}}}
	})
	p, ps, stop := livenessHarness(t, reject, false, time.Millisecond)
	defer stop()
	if !p.Alive(time.Hour) {
		t.Fatal("not alive before any work")
	}
	ps.outstanding.Add(1)
	p.lanes[0].in <- item{kind: schemas.KindEvent, raw: ev("u", 1), ack: ps.track(msgAt(0), 1)}
	deadline := time.Now().Add(5 * time.Second)
	for p.Alive(time.Hour) {
		if time.Now().After(deadline) {
			t.Fatal("a lane blocked for seconds with a record in hand still counts as alive")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s := p.watch.stuck(p.cfg.StuckAfter); !strings.Contains(s, "lane 0") {
		t.Fatalf("stuck report %q does not name the lane", s)
	}
}

// Waits the worker chooses are not stalls: a lane in back-off behind 503s, one waiting for a
// slow answer, and an idle lane stay alive well past StuckAfter.
func TestLivenessDeliberateWaitsAreNotStalls(t *testing.T) {
	for name, s := range map[string]senderFunc{
		"back-off": func(context.Context, []byte) sink.Response { return sink.Response{Status: 503, Class: sink.Retry} },
		"slow answer": func(ctx context.Context, _ []byte) sink.Response {
			sleepCtx(ctx, 400*time.Millisecond)
			return sink.Response{Status: 503, Class: sink.Retry}
		},
		"halted": func(context.Context, []byte) sink.Response { return sink.Response{Status: 401, Class: sink.Halt} },
	} {
		t.Run(name, func(t *testing.T) {
			p, ps, stop := livenessHarness(t, s, true, 300*time.Millisecond)
			defer stop()
			ps.outstanding.Add(1)
			p.lanes[0].in <- item{kind: schemas.KindEvent, raw: ev("u", 1), ack: ps.track(msgAt(0), 1)}
			for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
				if !p.Alive(time.Hour) {
					t.Fatalf("not alive: %s", p.watch.stuck(p.cfg.StuckAfter))
				}
			}
		})
	}
}

func TestWatchdogNamesTheStuckGoroutine(t *testing.T) {
	var w watchdog
	fetch := w.add("fetch loop t/3")
	commit := w.add("committer of generation 7")
	commit.work()
	commit.idle() // made progress, then nothing to do
	fetch.work()
	time.Sleep(30 * time.Millisecond)
	if s := w.stuck(10 * time.Millisecond); !strings.Contains(s, "fetch loop t/3") {
		t.Fatalf("stuck = %q", s)
	}
	w.remove(fetch)
	if s := w.stuck(10 * time.Millisecond); s != "" {
		t.Fatalf("stuck after remove = %q", s)
	}
}
