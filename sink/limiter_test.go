package sink

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var simStart = time.Unix(1_800_000_000, 0)

// One replica starting mid-hour, with 900,000 of 2,000,000 hourly requests used by other
// traffic before it started, runs at its configured rate: the share of the hour is measured
// from recent consumption, not from the window's total.
func TestLimiterMidHourRunsAtConfiguredRate(t *testing.T) {
	r := midHour(500, simStart).run()
	t.Log(r)
	if r.perSecond < 0.95*500 || r.throttledShare() > 0.01 {
		t.Fatalf("%v; want ≥ 475 requests/s and < 1%% 429s", r)
	}
}

// With a configured rate the rest of the hour cannot afford (1,000/s against 1,100,000
// requests left for 30 minutes), the pace spreads the budget: Remaining / time left.
func TestLimiterSpreadsHourlyBudget(t *testing.T) {
	r := midHour(1000, simStart).run()
	want := 1_100_000 / 1800.0
	if r.perSecond < 0.95*want || r.perSecond > 1.05*want {
		t.Fatalf("%v; want about %.0f requests/s", r, want)
	}
	m := smallBudget(simStart)
	r = m.run()
	t.Logf("%v, budget exhausted %v after the start", r, m.braze.exhaustedAt.Sub(simStart))
	if r.accepted < 57_000 {
		t.Fatalf("%v; want ≥ 95%% of the 60,000 requests left used before the reset", r)
	}
	if !m.braze.exhaustedAt.IsZero() && m.braze.exhaustedAt.Before(simStart.Add(9*time.Minute+30*time.Second)) {
		t.Fatalf("budget ran out %v after the start; want it spread over the 10 minutes left", m.braze.exhaustedAt.Sub(simStart))
	}
}

// Three replicas at 1,000 requests/s each, sharing one 3,000-per-3-s limit, settle at it with
// few 429s whether the headers describe that window, the hour (MAU contracts: the burst
// window shows itself only through 429s), or nothing.
func TestLimiterReplicasShareBurstLimit(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    headerMode
	}{{"headers describe the burst window", headersBurst}, {"headers describe the hour", headersHourly}, {"no headers", headersNone}} {
		t.Run(tc.name, func(t *testing.T) {
			r := threeOnBurst(tc.h, simStart).run()
			t.Log(r)
			if r.perSecond < 900 || r.throttledShare() > 0.03 {
				t.Fatalf("%v; want ≥ 900 requests/s (90%% of the limit) and < 3%% 429s", r)
			}
		})
	}
}

func classifyHeaders(t *testing.T, status int, kv ...string) Response {
	t.Helper()
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return Classify(status, h, []byte(`{"message":"success"}`), simStart)
}

func observe(l *Limiter, r Response) {
	if r.Throttled {
		l.throttledAt(r.RateLimit, simStart)
	} else {
		l.observeAt(r.RateLimit, simStart)
	}
}

// One answer with an absurd header value never freezes sending, and it is logged once.
func TestLimiterIgnoresAbsurdHeaders(t *testing.T) {
	var buf bytes.Buffer
	l := NewLimiter(100, 10)
	l.now = func() time.Time { return simStart }
	l.SetLogger(slog.New(slog.NewTextHandler(&buf, nil)))

	observe(l, classifyHeaders(t, 429, "X-Ratelimit-Retry-After", "3000000000"))
	if p := l.pauseUntil.Sub(simStart); p > firstNoHintWait {
		t.Fatalf("a 429 with Retry-After 3000000000 paused %v; want the normal back-off (%v)", p, firstNoHintWait)
	}
	l.pauseUntil = time.Time{}
	observe(l, classifyHeaders(t, 201, "X-RateLimit-Limit", "3000", "X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "9000000000"))
	if !l.pauseUntil.IsZero() {
		t.Fatalf("a 201 with Remaining 0 and Reset 9000000000 paused until %v", l.pauseUntil)
	}
	observe(l, classifyHeaders(t, 429, "X-Ratelimit-Retry-After", "-4"))
	if n := strings.Count(buf.String(), "ignoring rate-limit header"); n != 2 {
		t.Fatalf("logged %d times, want once per header (Retry-After, Reset):\n%s", n, buf.String())
	}
}

func TestLimiterPausesOn429(t *testing.T) {
	l := NewLimiter(0, 1)
	l.now = func() time.Time { return simStart }
	observe(l, classifyHeaders(t, 429, "X-Ratelimit-Retry-After", "2"))
	if got := l.PausedUntil(); !got.Equal(simStart.Add(2 * time.Second)) {
		t.Fatalf("paused until %v, want 2s", got.Sub(simStart))
	}
	// 429s to requests sent before the pause began belong to the same episode.
	l.throttledAt(RateLimit{RetryAfter: 2 * time.Second}, simStart.Add(time.Second))
	if got := l.PausedUntil(); !got.Equal(simStart.Add(2 * time.Second)) {
		t.Fatalf("an echo 429 moved the pause to %v", got.Sub(simStart))
	}
	// Without a hint: back-off doubling from 1 s while nothing is accepted.
	l2 := NewLimiter(0, 1)
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		now := simStart.Add(time.Duration(i) * time.Hour)
		l2.throttledAt(RateLimit{}, now)
		if got := l2.pauseUntil.Sub(now); got != want {
			t.Fatalf("throttle %d without a hint paused %v, want %v", i+1, got, want)
		}
	}
}

func TestLimiterPausesWhenWindowExhausted(t *testing.T) {
	l := NewLimiter(0, 1)
	l.now = func() time.Time { return simStart }
	observe(l, classifyHeaders(t, 201, "X-RateLimit-Limit", "100", "X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "2"))
	if got := l.PausedUntil(); !got.Equal(simStart.Add(2 * time.Second)) {
		t.Fatalf("paused until %v, want the reset 2s away", got.Sub(simStart))
	}
	if _, _, granted := l.reserve(simStart); granted {
		t.Fatal("granted a request during the pause")
	}
}

// A lane never holds a grant reserved far ahead at a slow pace: when the pace rises, it
// applies at once.
func TestLimiterReservesAtMostMaxAhead(t *testing.T) {
	l := NewLimiter(1, 1)
	if _, _, granted := l.reserve(simStart); !granted {
		t.Fatal("first request not granted")
	}
	at, _, granted := l.reserve(simStart)
	if granted || at.Sub(simStart) != maxAhead {
		t.Fatalf("second request at 1/s: granted %v at %v; want a retry after %v", granted, at.Sub(simStart), maxAhead)
	}
}

func TestLimiterWaitHonoursContext(t *testing.T) {
	l := NewLimiter(0, 1)
	l.Pause(time.Now().Add(time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := l.Wait(ctx); err == nil {
		t.Fatal("Wait returned nil during an hour-long pause")
	}
}

// The guard feeds the limiter typed signals: a throttled answer pauses every lane.
func TestGuardFeedsLimiterTypedSignals(t *testing.T) {
	l := NewLimiter(0, 1)
	s := &scripted{answer: func(int32) Response {
		return Response{Status: 429, Class: Retry, Throttled: true, RateLimit: RateLimit{Limit: -1, Remaining: -1, RetryAfter: time.Minute}}
	}}
	g := NewGuard(s, l, BreakerConfig{}, nil)
	g.Track(context.Background(), nil)
	if p := time.Until(l.PausedUntil()); p < 50*time.Second {
		t.Fatalf("paused %v after a throttled answer asking for a minute", p)
	}
}

// TestLimiterFigures prints the model's figures for BENCHMARKS.md across round-trip times and
// lane counts (the model is deterministic; the spread over these is the noise stated there).
// Run with LIMITER_FIGURES=1 go test ./sink -run TestLimiterFigures -v.
func TestLimiterFigures(t *testing.T) {
	if os.Getenv("LIMITER_FIGURES") == "" {
		t.Skip("set LIMITER_FIGURES=1")
	}
	for _, rtt := range []time.Duration{10 * time.Millisecond, 30 * time.Millisecond, 80 * time.Millisecond} {
		for _, lanes := range []int{16, 64} {
			vary := func(m modelRun) modelRun { m.rtt, m.lanes = rtt, lanes; return m }
			a := vary(midHour(500, simStart)).run()
			b := vary(midHour(1000, simStart)).run()
			c := vary(threeOnBurst(headersBurst, simStart)).run()
			d := vary(threeOnBurst(headersHourly, simStart)).run()
			e := vary(threeOnBurst(headersNone, simStart)).run()
			m := vary(smallBudget(simStart))
			f := m.run()
			ex := "never"
			if !m.braze.exhaustedAt.IsZero() {
				ex = m.braze.exhaustedAt.Sub(simStart).Round(time.Second).String()
			}
			t.Logf("rtt %v lanes %d | mid-hour@500: %.1f/s %.2f%% | mid-hour@1000: %.1f/s | 3×burst-hdr: %.1f%% %.2f%% | 3×hourly-hdr: %.1f%% %.2f%% | 3×no-hdr: %.1f%% %.2f%% | small budget: %d of 60000, exhausted %s, first minute %.0f/s",
				rtt, lanes, a.perSecond, 100*a.throttledShare(), b.perSecond, c.perSecond/10, 100*c.throttledShare(),
				d.perSecond/10, 100*d.throttledShare(), e.perSecond/10, 100*e.throttledShare(), f.accepted, ex, firstMinute(smallBudget, rtt, lanes))
		}
	}
}

func firstMinute(mk func(time.Time) modelRun, rtt time.Duration, lanes int) float64 {
	m := mk(simStart)
	m.rtt, m.lanes, m.duration = rtt, lanes, time.Minute
	return m.run().perSecond
}

// Over real HTTP: one 429 asking for 3,000,000,000 s and one 201 with Remaining 0 and a reset
// in the year 2255 cost at most the normal back-off, never a freeze.
func TestGuardSurvivesAbsurdRateHeaders(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		switch n.Add(1) {
		case 1:
			w.Header().Set("X-Ratelimit-Retry-After", "3000000000")
			w.WriteHeader(http.StatusTooManyRequests)
		case 2:
			w.Header().Set("X-RateLimit-Limit", "3000")
			w.Header().Set("X-RateLimit-Remaining", "0")
			w.Header().Set("X-RateLimit-Reset", "9000000000")
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte(`{"message":"success"}`))
		default:
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte(`{"message":"success"}`))
		}
	}))
	defer srv.Close()
	c, err := NewClient(ClientConfig{Endpoint: srv.URL, APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	g := NewGuard(c, NewLimiter(100, 10), BreakerConfig{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 1; i <= 3; i++ {
		if r := g.Track(ctx, []byte(`{}`)); r.Err != nil {
			t.Fatalf("request %d: %v (waited %v): sending froze", i, r.Err, r.Waited)
		}
	}
}
