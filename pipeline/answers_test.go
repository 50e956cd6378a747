package pipeline

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/schemas"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

func classify(status int, body string) sink.Response {
	return sink.Classify(status, http.Header{}, []byte(body), time.Now())
}

// A contract whose object limit (50) is below the configured 75: Braze's first "Max Input
// Length Exceeded" lowers the cap, and later batches go out under it instead of each costing
// a bisection.
func TestTooManyObjectsLowersTheObjectCap(t *testing.T) {
	var refused int
	braze := &fakeBraze{answer: func(b map[string][]map[string]any) sink.Response {
		if len(b["events"]) > 50 {
			refused++ // answers are serialised: one lane
			return classify(400, `{"message":"Max Input Length Exceeded"}`)
		}
		return classify(201, `{"message":"success"}`)
	}}
	p, mq, ps, stop := laneHarness(t, braze, testLimits())
	defer stop()
	objs := make([][]byte, 600)
	for i := range objs {
		objs[i] = ev(fmt.Sprintf("u%d", i%40), i)
	}
	feed(p, ps, objs)
	waitSettled(t, ps, int64(len(objs)))
	if refused != 1 {
		t.Errorf("%d refused requests, want 1 (the cap is lowered after the first)", refused)
	}
	if got := p.objectCap(); got != 37 {
		t.Errorf("object cap %d, want 37", got)
	}
	if n := len(mq.snapshot()); n != 0 || p.stats.Snapshot().RecordsDelivered != int64(len(objs)) {
		t.Errorf("%d dead letters, %d delivered", n, p.stats.Snapshot().RecordsDelivered)
	}
}

// A 2xx whose message is not "success" (Braze's fatal "Valid data must be provided…") is not
// a delivery: only records in requests Braze answered "success" are counted delivered.
func TestFatal2xxIsNeverCountedDelivered(t *testing.T) {
	var mu sync.Mutex
	accepted := map[string]bool{}
	n := 0
	braze := &fakeBraze{answer: func(b map[string][]map[string]any) sink.Response {
		mu.Lock()
		defer mu.Unlock()
		n++
		if n%4 == 1 && len(b["events"]) > 1 {
			return classify(201, `{"message":"Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."}`)
		}
		for _, o := range b["events"] {
			accepted[fmt.Sprint(o["external_id"], o["properties"])] = true
		}
		return classify(201, `{"message":"success","events_processed":1}`)
	}}
	p, mq, ps, stop := laneHarness(t, braze, testLimits())
	defer stop()
	objs := make([][]byte, 400)
	for i := range objs {
		objs[i] = ev(fmt.Sprintf("u%d", i%30), i)
	}
	feed(p, ps, objs)
	waitSettled(t, ps, int64(len(objs)))
	s := p.stats.Snapshot()
	mu.Lock()
	defer mu.Unlock()
	if s.RecordsDelivered != int64(len(accepted)) {
		t.Errorf("%d records counted delivered, but Braze said success for %d", s.RecordsDelivered, len(accepted))
	}
	if s.RecordsDelivered+int64(len(mq.snapshot())) != int64(len(objs)) {
		t.Errorf("delivered %d + dead-lettered %d != %d", s.RecordsDelivered, len(mq.snapshot()), len(objs))
	}
}

// A record Braze answers only 5xx for while it accepts the others is isolated by splitting and
// dead-lettered alone as persistent_5xx; the partition does not stall.
func TestPersistent5xxIsIsolated(t *testing.T) {
	braze := &fakeBraze{answer: func(b map[string][]map[string]any) sink.Response {
		for _, o := range b["events"] {
			if o["external_id"] == "poison" {
				return classify(503, `{"message":"internal error"}`)
			}
		}
		return classify(201, `{"message":"success"}`)
	}}
	p, mq, ps, stop := laneHarness(t, braze, testLimits(), func(c *Config) { c.Isolate5xxAfter = 30 * time.Millisecond })
	defer stop()
	objs := make([][]byte, 40)
	for i := range objs {
		objs[i] = ev(fmt.Sprintf("u%d", i), i)
	}
	objs[17] = ev("poison", 17)
	feed(p, ps, objs)
	waitSettled(t, ps, int64(len(objs)))
	letters := mq.snapshot()
	if len(letters) != 1 || letters[0].Reason != dlq.ReasonPersistent5xx || !strings.Contains(string(letters[0].Record), "poison") {
		t.Fatalf("dead letters %+v, want the poison record alone as persistent_5xx", letters)
	}
	if d := p.stats.Snapshot().RecordsDelivered; d != int64(len(objs)-1) {
		t.Errorf("delivered %d, want %d", d, len(objs)-1)
	}
}

// During an outage (every request 5xx, nothing accepted) isolation splits but dead-letters
// nothing; everything is delivered once Braze is back.
func TestOutageIsNotIsolated(t *testing.T) {
	var mu sync.Mutex
	var start time.Time
	braze := &fakeBraze{answer: func(b map[string][]map[string]any) sink.Response {
		mu.Lock()
		defer mu.Unlock()
		if start.IsZero() {
			start = time.Now()
		}
		if time.Since(start) < 300*time.Millisecond {
			return classify(503, ``)
		}
		return classify(201, `{"message":"success"}`)
	}}
	p, mq, ps, stop := laneHarness(t, braze, testLimits(), func(c *Config) { c.Isolate5xxAfter = 20 * time.Millisecond })
	defer stop()
	objs := make([][]byte, 40)
	for i := range objs {
		objs[i] = ev(fmt.Sprintf("u%d", i), i)
	}
	feed(p, ps, objs)
	waitSettled(t, ps, int64(len(objs)))
	if n := len(mq.snapshot()); n != 0 {
		t.Fatalf("%d dead letters during an outage, want 0", n)
	}
	if d := p.stats.Snapshot().RecordsDelivered; d != int64(len(objs)) {
		t.Errorf("delivered %d, want %d", d, len(objs))
	}
}

// A 429 asking for a wait beyond an hour is treated as no hint (sink/ratelimit.go): the normal
// back-off applies and the records are delivered.
func TestOutOfRangeRetryAfterUsesBackoff(t *testing.T) {
	var logs syncBuffer
	n := 0
	braze := &fakeBraze{answer: func(b map[string][]map[string]any) sink.Response {
		n++
		if n <= 3 {
			h := http.Header{}
			h.Set("X-Ratelimit-Retry-After", "3000000000")
			return sink.Classify(429, h, nil, time.Now())
		}
		return classify(201, `{"message":"success"}`)
	}}
	p, _, ps, stop := laneHarness(t, braze, testLimits(), func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	defer stop()
	feed(p, ps, [][]byte{ev("a", 1), ev("b", 2)})
	waitSettled(t, ps, 2)
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// USER_MIN_SPACING: a request carrying a user whose previous request is closer than the
// spacing waits; a request of other users does not.
func TestUserMinSpacing(t *testing.T) {
	var mu sync.Mutex
	var sent []time.Time
	braze := &fakeBraze{answer: func(map[string][]map[string]any) sink.Response {
		mu.Lock()
		sent = append(sent, time.Now())
		mu.Unlock()
		return classify(201, `{"message":"success"}`)
	}}
	const spacing = 200 * time.Millisecond
	p, _, ps, stop := laneHarness(t, braze, testLimits(), func(c *Config) { c.UserMinSpacing = spacing })
	defer stop()
	in := func(off int64, user string) {
		ps.outstanding.Add(1)
		p.lanes[0].in <- item{kind: schemas.KindEvent, raw: ev(user, int(off)), user: uint64(len(user)*1000) + uint64(user[0]), ack: ps.track(msgAt(off), 1)}
	}
	in(0, "u")
	time.Sleep(50 * time.Millisecond) // the first request is out
	in(1, "u")
	waitSettled(t, ps, 2)
	in(2, "vv") // another user, right after
	waitSettled(t, ps, 3)
	mu.Lock()
	defer mu.Unlock()
	if len(sent) != 3 {
		t.Fatalf("%d requests, want 3", len(sent))
	}
	if gap := sent[1].Sub(sent[0]); gap < spacing {
		t.Errorf("second request of one user %s after the first, want at least %s", gap, spacing)
	}
	if gap := sent[2].Sub(sent[1]); gap >= spacing {
		t.Errorf("a request of another user waited %s", gap)
	}
}
