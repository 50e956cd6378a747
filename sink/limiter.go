package sink

import (
	"context"
	"log/slog"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter paces requests to Braze (docs/braze-rules.md §3). It starts from a configured
// token bucket (requests per second and a burst) and adapts to two windows:
//
//   - The window the X-RateLimit-* headers describe: a short window on most contracts, the
//     HOURLY window on MAU contracts (where Reset is seconds remaining). The pace is this
//     worker's share of the window's recent consumption times the rate that makes the rest
//     of the window last until its reset: share × Remaining / (Reset − now). The share is
//     measured from how fast Remaining falls against how many answers this worker got in the
//     same interval, so traffic from before this worker started (others' use earlier in the
//     hour, a restart mid-window) does not count; a worker alone gets share 1 and runs at its
//     configured rate whenever the rest of the window can afford it, and several replicas
//     sharing one limit settle at it together. Remaining 0 pauses every lane until the reset.
//   - The burst window (3,000 requests per 3 s), which on MAU contracts no header describes:
//     a 429 pauses every lane for X-Ratelimit-Retry-After (else a back-off doubling from 1 s
//     up to 30 s) and lowers a burst pace by 10% (once per throttle episode); the burst
//     pace then rises by 1% of the configured rate per second (additive increase,
//     multiplicative decrease), so replicas sharing one burst limit converge on it with
//     few 429s.
//
// The effective pace is the smallest of the configured rate, the window pace and the burst
// pace. Inputs are typed (Observe, Throttled); header values are bounded by ParseRateLimit.
// Wait grants one request: callers pack the request after Wait returns.
type Limiter struct {
	base  float64 // configured requests/s; +Inf when unpaced
	burst int
	lim   *rate.Limiter
	now   func() time.Time

	mu         sync.Mutex
	log        *slog.Logger
	pauseUntil time.Time
	throttles  int // consecutive throttle episodes without an accepted answer
	win        windowState
	burstPace  float64 // from 429s; +Inf while none
	grown      time.Time
	grantSec   int64 // unix second of grantCur
	grantCur   int   // grants in that second
	grantPrev  int   // grants in the second before
	pace       float64
	logged     HeaderFlaw
	grantRate  float64   // grants per second, decaying average (time constant usageTau)
	grantAt    time.Time // when grantRate was last updated
}

// windowState follows the window the rate-limit headers describe.
type windowState struct {
	known     bool
	limit     int
	reset     time.Time
	remaining int
	share     float64   // this worker's share of the window's recent consumption, (0, 1]
	t0        time.Time // start of the current measuring interval
	rem0      int       // Remaining at t0
	own       int       // answers this worker got since t0
}

const (
	shareInterval   = time.Second             // measuring interval of the window share
	shareProbe      = 0.05                    // added to the measured share: replicas sharing a window converge to equal shares summing to 1
	resetJitter     = 1500 * time.Millisecond // resets of one window differ by less (seconds-remaining rounds to whole seconds)
	burstDecrease   = 0.9                     // burst pace factor per throttle episode
	burstIncrease   = 0.01                    // burst pace growth per second, as a share of the configured rate
	minPace         = 0.5                     // requests/s; the pace never goes below (Remaining 0 pauses instead)
	maxNoHintPause  = 30 * time.Second
	firstNoHintWait = time.Second
)

// NewLimiter returns a limiter for perSecond requests per second with burst. perSecond <= 0
// disables the configured pacing (the adaptation to Braze's windows and 429s still applies).
func NewLimiter(perSecond float64, burst int) *Limiter {
	if burst < 1 {
		burst = 1
	}
	base := perSecond
	if perSecond <= 0 {
		base = math.Inf(1)
	}
	return &Limiter{base: base, burst: burst, lim: rate.NewLimiter(toLimit(base), burst), now: time.Now,
		burstPace: math.Inf(1), pace: base, win: windowState{share: 1}, log: slog.Default()}
}

// SetLogger sets where the limiter reports ignored header values (once per header).
func (l *Limiter) SetLogger(log *slog.Logger) {
	if log != nil {
		l.mu.Lock()
		l.log = log
		l.mu.Unlock()
	}
}

// Wait blocks until a request may be sent and returns how long it waited. The grant is
// consumed when Wait returns nil.
func (l *Limiter) Wait(ctx context.Context) (time.Duration, error) {
	start := l.now()
	for {
		at, res, granted := l.reserve(l.now())
		if !sleepUntil(ctx, l.now, at) {
			if res != nil {
				res.CancelAt(l.now())
			}
			return l.now().Sub(start), ctx.Err()
		}
		if !granted {
			continue
		}
		// A pause that began while waiting (a 429 to another lane) holds this grant too.
		if p := l.PausedUntil(); !p.IsZero() && !sleepUntil(ctx, l.now, p) {
			return l.now().Sub(start), ctx.Err()
		}
		return l.now().Sub(start), nil
	}
}

func sleepUntil(ctx context.Context, now func() time.Time, at time.Time) bool {
	d := at.Sub(now())
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// maxAhead bounds how far ahead a grant is reserved: a lane that would wait longer (a
// slow pace, a pause) asks again later, so a pace raised meanwhile applies at once.
const maxAhead = 250 * time.Millisecond

// reserve asks for one grant at now. granted: the request may go at the returned time (the
// reservation can be cancelled until then). Otherwise the caller asks again at that time.
func (l *Limiter) reserve(now time.Time) (at time.Time, res *rate.Reservation, granted bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pauseUntil.After(now) {
		return l.pauseUntil, nil, false
	}
	if l.win.known && !now.Before(l.win.reset) {
		l.apply(now) // the described window ended: its pace no longer applies
	}
	r := l.lim.ReserveN(now, 1)
	d := r.DelayFrom(now)
	if d > maxAhead {
		r.CancelAt(now)
		return now.Add(maxAhead), nil, false
	}
	at = now.Add(d)
	if s := at.Unix(); s != l.grantSec {
		if s == l.grantSec+1 {
			l.grantPrev = l.grantCur
		} else {
			l.grantPrev = 0
		}
		l.grantSec, l.grantCur = s, 0
	}
	l.grantCur++
	l.grantRate = l.decayedRate(now) + 1/usageTau.Seconds()
	l.grantAt = now
	return at, r, true
}

// usageTau is the time constant of the grant rate behind Usage.
const usageTau = time.Second

func (l *Limiter) decayedRate(now time.Time) float64 {
	if l.grantAt.IsZero() {
		return 0
	}
	return l.grantRate * math.Exp(-now.Sub(l.grantAt).Seconds()/usageTau.Seconds())
}

// Usage is how much of the request budget this worker is using: its recent grant rate over
// the current pace (the smallest of the configured rate, the pace the rate-limit headers'
// window affords — the hourly budget on MAU contracts — and the burst pace after 429s), in
// [0, 1]. 0 when nothing paces the worker; 1 while paused.
func (l *Limiter) Usage() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if l.pauseUntil.After(now) {
		return 1
	}
	p := math.Min(l.base, math.Min(l.windowPace(now), l.burstPace))
	if math.IsInf(p, 1) || p <= 0 {
		return 0
	}
	return math.Min(1, l.decayedRate(now)/p)
}

// Pause stops all requests until t (at least).
func (l *Limiter) Pause(t time.Time) {
	l.mu.Lock()
	l.pauseAt(t)
	l.mu.Unlock()
}

func (l *Limiter) pauseAt(t time.Time) {
	if t.After(l.pauseUntil) {
		l.pauseUntil = t
	}
}

// PausedUntil reports the end of the current pause (zero if none).
func (l *Limiter) PausedUntil() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pauseUntil.After(l.now()) {
		return l.pauseUntil
	}
	return time.Time{}
}

// Limit is the current pace in requests per second (+Inf when unpaced).
func (l *Limiter) Limit() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pace
}

// Observe adapts the pace to one answer Braze accepted for processing (anything but a
// throttle), with its bounded rate-limit headers.
func (l *Limiter) Observe(rl RateLimit) { l.observeAt(rl, l.now()) }

// Throttled adapts the pace to one request Braze refused for its rate limit (a 429);
// rl.RetryAfter is Braze's bounded hint (0 = none: back-off).
func (l *Limiter) Throttled(rl RateLimit) { l.throttledAt(rl, l.now()) }

func (l *Limiter) observeAt(rl RateLimit, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.logFlaws(rl.Flaws)
	l.throttles = 0
	if rl.Window() {
		l.observeWindow(rl, now)
	}
	l.apply(now)
}

func (l *Limiter) throttledAt(rl RateLimit, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.logFlaws(rl.Flaws)
	if now.Before(l.pauseUntil) {
		// An answer to a request sent before this episode's pause began: same episode.
		return
	}
	l.throttles++
	wait := rl.RetryAfter
	if wait <= 0 {
		wait = firstNoHintWait << min(l.throttles-1, 5)
		if wait > maxNoHintPause {
			wait = maxNoHintPause
		}
	}
	until := now.Add(wait)
	if w := &l.win; w.known && w.reset.Before(until) && now.Sub(w.reset) < resetJitter {
		// Retry-After is whole seconds: when the window the headers describe resets sooner
		// (or has just reset: the answer was on its way), this 429 is that window running
		// dry, and sending resumes at its reset.
		l.pauseAt(w.reset)
		l.apply(now)
		return
	}
	l.pauseAt(until)
	// A window no header describes (the burst window): lower the burst pace below the rate
	// this worker was sending at.
	l.growBurst(now)
	cur := math.Min(l.burstPace, l.base)
	if own := float64(max(l.grantPrev, l.grantCur)); own > 0 && own < cur {
		cur = own
	}
	if math.IsInf(cur, 1) {
		cur = 1
	}
	l.burstPace = math.Max(minPace, cur*burstDecrease)
	l.grown = now
	l.apply(now)
}

// observeWindow follows the header window and re-measures this worker's share of it.
func (l *Limiter) observeWindow(rl RateLimit, now time.Time) {
	w := &l.win
	if !w.known || rl.Limit != w.limit || absDur(rl.Reset.Sub(w.reset)) > resetJitter ||
		rl.Remaining > w.remaining+max(10, rl.Limit/100) {
		// A new window: the share carries over (it is a ratio of rates), the interval restarts.
		*w = windowState{known: true, limit: rl.Limit, reset: rl.Reset, remaining: rl.Remaining,
			share: w.share, t0: now, rem0: rl.Remaining}
		if w.share <= 0 {
			w.share = 1
		}
	} else {
		w.remaining = rl.Remaining
		w.own++
	}
	if dt := now.Sub(w.t0); dt >= shareInterval {
		total := float64(w.rem0-rl.Remaining) / dt.Seconds()
		own := float64(w.own) / dt.Seconds()
		if total > 0 && own > 0 {
			s := math.Min(1, math.Max(0.01, own/total))
			w.share = 0.5*w.share + 0.5*s
		}
		w.t0, w.rem0, w.own = now, rl.Remaining, 0
	}
	if rl.Remaining == 0 {
		l.pauseAt(rl.Reset)
	}
}

// windowPace is share × Remaining / time left, +Inf when no window applies.
func (l *Limiter) windowPace(now time.Time) float64 {
	w := &l.win
	if !w.known {
		return math.Inf(1)
	}
	left := w.reset.Sub(now)
	if left <= 0 {
		return math.Inf(1) // the window is over; the next answer tells about the new one
	}
	if left < 100*time.Millisecond {
		left = 100 * time.Millisecond
	}
	return math.Min(1, w.share+shareProbe) * float64(w.remaining) / left.Seconds()
}

// growBurst raises the burst pace additively since the last change.
func (l *Limiter) growBurst(now time.Time) {
	if math.IsInf(l.burstPace, 1) {
		return
	}
	ref := l.base
	if math.IsInf(ref, 1) {
		ref = l.burstPace * 5 // unpaced: grow 10% of the current pace per second
	}
	l.burstPace += burstIncrease * ref * now.Sub(l.grown).Seconds()
	l.grown = now
	if l.burstPace >= l.base {
		l.burstPace = math.Inf(1)
	}
}

// apply sets the token bucket to the smallest of the configured, window and burst paces.
func (l *Limiter) apply(now time.Time) {
	l.growBurst(now)
	p := math.Min(l.base, math.Min(l.windowPace(now), l.burstPace))
	if p < minPace {
		p = minPace
	}
	if p == l.pace || (!math.IsInf(p, 1) && math.Abs(p-l.pace) < 0.01*p) {
		return
	}
	l.pace = p
	burst := l.burst
	if p < l.base {
		// Below the configured rate, allow at most 100 ms worth of requests at once.
		burst = max(1, min(l.burst, int(p/10)))
	}
	l.lim.SetLimitAt(now, toLimit(p))
	l.lim.SetBurstAt(now, burst)
}

func (l *Limiter) logFlaws(f HeaderFlaw) {
	if n := f &^ l.logged; n != 0 {
		l.logged |= n
		l.log.Warn("ignoring rate-limit header values outside their documented range; the normal back-off applies (logged once per header)",
			"headers", n.Names(), "max_wait", MaxHeaderWait.String())
	}
}

func toLimit(p float64) rate.Limit {
	if math.IsInf(p, 1) {
		return rate.Inf
	}
	return rate.Limit(p)
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
