package sink

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter paces requests to Braze. It starts from a configured token bucket (requests per
// second and a burst) and adapts to what Braze reports:
//
//   - X-RateLimit-Remaining / X-RateLimit-Reset: the rest of the window is spread evenly
//     over the time left, scaled by this worker's share of the window's traffic, so several
//     replicas sharing one Braze limit together settle at the limit instead of racing to
//     exhaust it and collecting 429s;
//   - Remaining 0: every lane pauses until the reset;
//   - 429: every lane pauses for X-Ratelimit-Retry-After (or until the reset).
type Limiter struct {
	base  rate.Limit
	burst int
	lim   *rate.Limiter

	mu          sync.Mutex
	pauseUntil  time.Time
	windowReset time.Time // reset time of the window the counts below belong to
	ownInWindow int       // requests this worker made in that window
	now         func() time.Time
}

// NewLimiter returns a limiter for perSecond requests per second with burst. perSecond <= 0
// disables pacing (adaptation and 429 pauses still apply).
func NewLimiter(perSecond float64, burst int) *Limiter {
	if burst < 1 {
		burst = 1
	}
	l := rate.Limit(perSecond)
	if perSecond <= 0 {
		l = rate.Inf
	}
	return &Limiter{base: l, burst: burst, lim: rate.NewLimiter(l, burst), now: time.Now}
}

// Wait blocks until a request may be sent and returns how long it waited.
func (l *Limiter) Wait(ctx context.Context) (time.Duration, error) {
	start := l.now()
	for {
		l.mu.Lock()
		until := l.pauseUntil
		l.mu.Unlock()
		d := until.Sub(l.now())
		if d <= 0 {
			break
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return l.now().Sub(start), ctx.Err()
		case <-t.C:
		}
	}
	err := l.lim.Wait(ctx)
	return l.now().Sub(start), err
}

// Pause stops all requests until t (at least).
func (l *Limiter) Pause(t time.Time) {
	l.mu.Lock()
	if t.After(l.pauseUntil) {
		l.pauseUntil = t
	}
	l.mu.Unlock()
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

// Limit is the current pacing rate in requests per second (+Inf when unpaced).
func (l *Limiter) Limit() float64 { return float64(l.lim.Limit()) }

// Observe adapts the pace to one Braze answer.
func (l *Limiter) Observe(r Response) {
	now := l.now()
	if r.Cause() == CauseThrottled {
		wait := r.RetryAfter
		if wait <= 0 {
			wait = time.Second
		}
		l.Pause(now.Add(wait))
		return
	}
	rl := r.RateLimit
	if !r.Answered() || rl.Limit <= 0 || rl.Remaining < 0 || rl.Reset.IsZero() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// Answers of one window share its reset time; allow a little jitter in how the reset is
	// rounded before calling it a new window.
	if d := rl.Reset.Sub(l.windowReset); d > 500*time.Millisecond || d < -500*time.Millisecond {
		l.windowReset = rl.Reset
		l.ownInWindow = 0
	}
	l.ownInWindow++
	if rl.Remaining == 0 {
		if rl.Reset.After(l.pauseUntil) {
			l.pauseUntil = rl.Reset
		}
		return
	}
	left := rl.Reset.Sub(now)
	if left < 100*time.Millisecond {
		left = 100 * time.Millisecond
	}
	share := 1.0
	if used := rl.Limit - rl.Remaining; used > 0 && l.ownInWindow < used {
		share = float64(l.ownInWindow) / float64(used)
	}
	pace := rate.Limit(share * float64(rl.Remaining) / left.Seconds())
	if pace > l.base {
		pace = l.base
	}
	if pace < 1 {
		pace = 1
	}
	burst := int(share * float64(rl.Remaining) / 10)
	if burst > l.burst {
		burst = l.burst
	}
	if burst < 1 {
		burst = 1
	}
	l.lim.SetLimitAt(now, pace)
	l.lim.SetBurstAt(now, burst)
}
