package sink

import (
	"container/heap"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"
)

// A discrete-event model of replicas × lanes sending /users/track requests to a Braze that
// enforces a fixed burst window (429 + X-Ratelimit-Retry-After, as brazesim does) and reports
// either no window, the burst window (epoch reset) or an hourly window (seconds-remaining
// reset, MAU contracts). Every answer goes through real headers and ParseRateLimit, and every
// replica through a real Limiter on a virtual clock, so a minute of traffic takes milliseconds.

type headerMode int

const (
	headersNone   headerMode = iota
	headersBurst             // the headers describe the burst window, Reset as epoch seconds
	headersHourly            // the headers describe the hour, Reset as seconds remaining
)

type modelBraze struct {
	burstLimit  int
	burstWindow time.Duration
	bIdx        int64
	bUsed       int
	headers     headerMode
	hourLimit   int
	hourUsed    int
	hourEnd     time.Time
	accepted    int
	throttled   int
	exhaustedAt time.Time // first time the hourly budget ran out
}

// handle answers one request arriving at now.
func (b *modelBraze) handle(now time.Time) (throttled bool, rl RateLimit) {
	w := int64(b.burstWindow)
	idx := now.UnixNano() / w
	end := time.Unix(0, (idx+1)*w)
	if idx != b.bIdx {
		b.bIdx, b.bUsed = idx, 0
	}
	h := http.Header{}
	if b.bUsed >= b.burstLimit || (b.headers == headersHourly && b.hourUsed >= b.hourLimit) {
		b.throttled++
		retry := int64(math.Ceil(end.Sub(now).Seconds()))
		if b.headers == headersHourly && b.hourUsed >= b.hourLimit {
			retry = int64(math.Ceil(b.hourEnd.Sub(now).Seconds()))
		}
		h.Set("X-Ratelimit-Retry-After", strconv.FormatInt(max(retry, 1), 10))
		return true, ParseRateLimit(h, now)
	}
	b.bUsed++
	b.accepted++
	switch b.headers {
	case headersBurst:
		h.Set("X-RateLimit-Limit", strconv.Itoa(b.burstLimit))
		h.Set("X-RateLimit-Remaining", strconv.Itoa(b.burstLimit-b.bUsed))
		h.Set("X-RateLimit-Reset", strconv.FormatInt(int64(math.Ceil(float64(end.UnixNano())/1e9)), 10))
	case headersHourly:
		b.hourUsed++
		if b.hourUsed == b.hourLimit {
			b.exhaustedAt = now
		}
		h.Set("X-RateLimit-Limit", strconv.Itoa(b.hourLimit))
		h.Set("X-RateLimit-Remaining", strconv.Itoa(b.hourLimit-b.hourUsed))
		h.Set("X-RateLimit-Reset", strconv.FormatInt(int64(math.Ceil(b.hourEnd.Sub(now).Seconds())), 10))
	}
	return false, ParseRateLimit(h, now)
}

type modelEvent struct {
	at        time.Time
	kind      int // 0 ready, 1 send, 2 answer
	replica   int
	throttled bool
	rl        RateLimit
}

type eventQueue []modelEvent

func (q eventQueue) Len() int           { return len(q) }
func (q eventQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q eventQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)        { *q = append(*q, x.(modelEvent)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

type modelRun struct {
	replicas int
	lanes    int
	rate     float64 // configured requests/s per replica
	rtt      time.Duration
	duration time.Duration
	braze    *modelBraze
	start    time.Time
}

type modelResult struct {
	accepted, throttled int
	perSecond           float64 // accepted requests per second over the run
	limiters            []*Limiter
}

func (r modelResult) throttledShare() float64 {
	return float64(r.throttled) / float64(r.accepted+r.throttled)
}

func (r modelResult) String() string {
	return fmt.Sprintf("accepted %d (%.1f/s), 429s %d (%.2f%%)", r.accepted, r.perSecond, r.throttled, 100*r.throttledShare())
}

// run drives the model: every lane always has a request ready (a backlog).
func (m modelRun) run() modelResult {
	clock := m.start
	lims := make([]*Limiter, m.replicas)
	q := &eventQueue{}
	for i := range lims {
		lims[i] = NewLimiter(m.rate, 3000)
		lims[i].now = func() time.Time { return clock }
		for range m.lanes {
			heap.Push(q, modelEvent{at: m.start, replica: i})
		}
	}
	end := m.start.Add(m.duration)
	for q.Len() > 0 {
		e := heap.Pop(q).(modelEvent)
		if e.at.After(end) {
			break
		}
		clock = e.at
		l := lims[e.replica]
		switch e.kind {
		case 0:
			kind := 0
			at, _, granted := l.reserve(e.at)
			if granted {
				kind = 1
			}
			heap.Push(q, modelEvent{at: at, kind: kind, replica: e.replica})
		case 1:
			if p := l.pauseUntil; p.After(e.at) { // as Wait does: a pause that began meanwhile holds the grant
				heap.Push(q, modelEvent{at: p, kind: 1, replica: e.replica})
				continue
			}
			thr, rl := m.braze.handle(e.at)
			heap.Push(q, modelEvent{at: e.at.Add(m.rtt), kind: 2, replica: e.replica, throttled: thr, rl: rl})
		case 2:
			if e.throttled {
				l.throttledAt(e.rl, e.at)
			} else {
				l.observeAt(e.rl, e.at)
			}
			heap.Push(q, modelEvent{at: e.at, replica: e.replica})
		}
	}
	return modelResult{accepted: m.braze.accepted, throttled: m.braze.throttled,
		perSecond: float64(m.braze.accepted) / m.duration.Seconds(), limiters: lims}
}

// Scenarios shared by the tests and BENCHMARKS.md (TestLimiterScenarios prints them).

// midHour: one replica at 500 requests/s starts 30 minutes before the hour ends, with
// 900,000 of 2,000,000 hourly requests already used by other traffic.
func midHour(rate float64, start time.Time) modelRun {
	return modelRun{replicas: 1, lanes: 64, rate: rate, rtt: 30 * time.Millisecond, duration: time.Minute, start: start,
		braze: &modelBraze{burstLimit: 3000, burstWindow: 3 * time.Second, headers: headersHourly,
			hourLimit: 2_000_000, hourUsed: 900_000, hourEnd: start.Add(30 * time.Minute)}}
}

// threeOnBurst: three replicas at 1,000 requests/s each share one 3,000-per-3-s limit.
func threeOnBurst(h headerMode, start time.Time) modelRun {
	return modelRun{replicas: 3, lanes: 64, rate: 1000, rtt: 30 * time.Millisecond, duration: 2 * time.Minute, start: start,
		braze: &modelBraze{burstLimit: 3000, burstWindow: 3 * time.Second, headers: h,
			hourLimit: 20_000_000, hourEnd: start.Add(time.Hour)}}
}

// smallBudget: one replica at 1,000 requests/s, 10 minutes before the hour ends with 60,000
// requests left: at full pace the budget would be gone in a minute.
func smallBudget(start time.Time) modelRun {
	return modelRun{replicas: 1, lanes: 64, rate: 1000, rtt: 30 * time.Millisecond, duration: 10 * time.Minute, start: start,
		braze: &modelBraze{burstLimit: 3000, burstWindow: 3 * time.Second, headers: headersHourly,
			hourLimit: 2_000_000, hourUsed: 2_000_000 - 60_000, hourEnd: start.Add(10 * time.Minute)}}
}
