package pipeline

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/braze-ingestor/braze-ingestor/schemas"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// While halted, one prober for the whole worker: with 16 lanes holding records during a
// 401 period, the worker sends the requests that found out (at most one per lane) plus one
// probe per back-off step, not one probe per lane; once the key is fixed every lane resumes
// at once.
func TestHaltOneProberForTheWorker(t *testing.T) {
	const lanes = 16
	var refusing atomic.Bool
	refusing.Store(true)
	var during, after atomic.Int64
	braze := senderFunc(func(ctx context.Context, body []byte) sink.Response {
		if refusing.Load() {
			during.Add(1)
			return sink.Response{Status: 401, Class: sink.Halt, Message: "Invalid API key"}
		}
		after.Add(1)
		return sink.Response{Status: 201, Class: sink.Delivered}
	})
	p, err := New(Config{Brokers: []string{"x"}, Topics: []string{"t"}, GroupID: "g", Lanes: lanes, Linger: time.Millisecond,
		Limits: testLimits(), RetryInitial: time.Millisecond, RetryMax: 5 * time.Millisecond, HaltProbeMax: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, braze, &memDLQ{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, l := range p.lanes {
		wg.Add(1)
		go func() { defer wg.Done(); p.runLane(ctx, l) }()
	}
	defer func() { cancel(); wg.Wait() }()
	ps := newPartitionState("t", 0)
	for i := range lanes {
		ps.outstanding.Add(1)
		p.lanes[i].in <- item{kind: schemas.KindEvent, raw: ev(fmt.Sprint("u", i), i), ack: ps.track(&kafka.Message{Offset: int64(i)}, 1)}
	}
	const period = 2 * time.Second
	time.Sleep(period)
	if !p.Halted() {
		t.Fatal("not halted after a 401")
	}
	// Probes are at least 0.5 s apart: at most 1 + period/0.5 s of them.
	if n, max := during.Load(), int64(lanes+1+int(period/(500*time.Millisecond))); n > max {
		t.Errorf("%d requests during %s of 401 with %d lanes, want at most %d (one prober)", n, period, lanes, max)
	}
	t.Logf("%d requests during %s of 401 with %d lanes", during.Load(), period, lanes)
	refusing.Store(false)
	recovered := time.Now()
	waitSettled(t, ps, lanes)
	if p.Halted() {
		t.Error("still halted after Braze accepted a request")
	}
	t.Logf("all lanes settled %s after the key was fixed", time.Since(recovered).Round(time.Millisecond))
	if n := after.Load(); n != lanes {
		t.Errorf("%d requests after recovery, want %d (one per lane)", n, lanes)
	}
}
