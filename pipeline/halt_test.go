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

	"github.com/braze-ingestor/braze-ingestor/endpoint"
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
	// One request per lane at most; a request may carry several lanes' records (lane.go topUp).
	if n := after.Load(); n < 1 || n > lanes {
		t.Errorf("%d requests after recovery, want 1 to %d (at most one per lane)", n, lanes)
	}
}

// An endpoint answering every request 400 with an HTML page (a WAF) is not Braze judging
// records: none of 1,000 valid records is dead-lettered; the worker halts (not ready) and
// delivers everything once real answers come back.
func TestWAFAnswersDeadLetterNothing(t *testing.T) {
	var waf atomic.Bool
	waf.Store(true)
	var requests atomic.Int64
	braze := &fakeBraze{answer: func(map[string][]map[string]any) sink.Response {
		requests.Add(1)
		if waf.Load() {
			return classify(400, `<html><body><h1>Request blocked</h1>WAF</body></html>`)
		}
		return classify(201, `{"message":"success"}`)
	}}
	p, mq, ps, stop := laneHarness(t, braze, testLimits(), func(c *Config) { c.LaneQueue = 1000 })
	defer stop()
	objs := make([][]byte, 1000)
	for i := range objs {
		objs[i] = ev(fmt.Sprint("u", i%100), i)
	}
	feed(p, ps, objs)
	time.Sleep(time.Second)
	if n := len(mq.snapshot()); n != 0 {
		t.Fatalf("%d records dead-lettered on WAF answers, want 0", n)
	}
	if !p.Halted() || p.Ready() {
		t.Fatalf("halted %v ready %v: want halted and not ready", p.Halted(), p.Ready())
	}
	t.Logf("%d requests in 1 s of WAF answers", requests.Load())
	waf.Store(false)
	waitSettled(t, ps, int64(len(objs)))
	if d := p.stats.Snapshot().RecordsDelivered; d != int64(len(objs)) || len(mq.snapshot()) != 0 {
		t.Fatalf("delivered %d, dead-lettered %d", d, len(mq.snapshot()))
	}
}

// When most recent requests are rejected as a whole with one and the same Braze answer, the
// worker halts instead of bisecting every batch into the DLQ.
func TestMassRejectionHaltsInsteadOfFlooding(t *testing.T) {
	t.Run("400", func(t *testing.T) { testMassRejection(t, 400, `{"message":"Something upstream changed"}`) })
	// A proxy refusing every body as too large: the same guard (too_large, not braze_rejected).
	t.Run("413 page", func(t *testing.T) {
		testMassRejection(t, 413, "<html><head><title>413 Request Entity Too Large</title></head><body>nginx</body></html>")
	})
}

func testMassRejection(t *testing.T, status int, body string) {
	var broken atomic.Bool
	broken.Store(true)
	braze := &fakeBraze{answer: func(map[string][]map[string]any) sink.Response {
		if broken.Load() {
			return classify(status, body)
		}
		return classify(201, `{"message":"success"}`)
	}}
	p, mq, ps, stop := laneHarness(t, braze, testLimits(), func(c *Config) { c.LaneQueue = 1000 })
	defer stop()
	objs := make([][]byte, 1000)
	for i := range objs {
		objs[i] = ev(fmt.Sprint("u", i%100), i)
	}
	feed(p, ps, objs)
	time.Sleep(time.Second)
	dead := len(mq.snapshot())
	if dead > massWindow {
		t.Fatalf("%d of 1000 records dead-lettered while every request is rejected as a whole; want at most %d (before the guard has seen %d answers)", dead, massWindow, massWindow)
	}
	if !p.Halted() {
		t.Fatal("not halted on mass rejection")
	}
	broken.Store(false)
	waitSettled(t, ps, int64(len(objs)))
	if n := len(mq.snapshot()); n != dead {
		t.Errorf("%d dead letters at the end, %d while halted: verdicts before the halt must settle at once", n, dead)
	}
	if d := p.stats.Snapshot().RecordsDelivered; d+int64(dead) != int64(len(objs)) {
		t.Fatalf("delivered %d + dead %d != 1000", d, dead)
	}
	t.Logf("%d dead letters before the guard tripped", dead)
}

// A key without one endpoint's permission (403 on /users/delete only) halts the worker until
// that endpoint accepts: track answers (requests that were in flight when the halt began, or
// probes) do not end it while the delete waits to probe, so the worker neither flaps between
// halted and resumed nor sends the refused delete again at the pace of track answers.
func TestHaltEndsOnTheRefusingEndpoint(t *testing.T) {
	var allowed atomic.Bool
	braze := &epBraze{answer: func(ep endpoint.Endpoint, users []string) sink.Response {
		if ep == endpoint.Delete && !allowed.Load() {
			return classify(403, `{"message":"Access Denied"}`)
		}
		time.Sleep(20 * time.Millisecond)
		return classify(201, `{"message":"success"}`)
	}}
	h := startOrder(t, braze, func(c *Config) { c.Lanes = 8 })
	fed := 0
	feed := func(k schemas.Kind, u string) { h.feed(testRecord(k, u, fed, 0)); fed++ }
	halts := 0
	was := false
	for end := time.Now().Add(1600 * time.Millisecond); time.Now().Before(end); time.Sleep(3 * time.Millisecond) {
		if fed == 20 {
			feed(schemas.KindDelete, "u1")
		} else {
			feed(schemas.KindEvent, fmt.Sprintf("u%d", 2+fed%40))
		}
		if now := h.p.halted.Load(); now && !was {
			halts++
		}
		was = h.p.halted.Load()
	}
	deletes := 0
	for _, c := range braze.log() {
		if c.ep == endpoint.Delete {
			deletes++
		}
	}
	allowed.Store(true)
	waitSettledWithin(t, h.ps, int64(fed), 10*time.Second)
	if halts != 1 || deletes > 5 {
		t.Errorf("%d halts and %d refused deletes sent in 1.6 s; want one halt, and the delete sent again only by the prober", halts, deletes)
	}
	if h.p.halted.Load() {
		t.Error("still halted after /users/delete accepted")
	}
	if n := len(h.mq.snapshot()); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}
}

// The mass-rejection guard keeps a history per endpoint: a run of deletes rejected as a whole
// does not turn a lone track record's rejection into a halt, nor the other way round.
func TestMassGuardPerEndpoint(t *testing.T) {
	var g massGuard
	rej := classify(400, `{"message":"Invalid request"}`)
	for range massWindow {
		g.observe(endpoint.Delete, rej)
	}
	if !g.mass(endpoint.Delete, rej) {
		t.Error("20 whole-request rejections of /users/delete: not a mass rejection")
	}
	if g.mass(endpoint.Track, rej) {
		t.Error("/users/track: a mass rejection from /users/delete's answers")
	}
	for range massWindow {
		g.observe(endpoint.Track, classify(201, `{"message":"success"}`))
	}
	if !g.mass(endpoint.Delete, rej) {
		t.Error("track's accepted answers diluted /users/delete's run of rejections")
	}
}
