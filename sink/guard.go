package sink

import (
	"context"
	"errors"
	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Tracker is the part of a Braze client the guard wraps.
type Tracker interface {
	Track(ctx context.Context, body []byte) Response
}

// Poster sends a body to any endpoint (Client.Post).
type Poster interface {
	Post(ctx context.Context, ep endpoint.Endpoint, body []byte) Response
}

// BreakerConfig configures the circuit breaker.
type BreakerConfig struct {
	// Failures is how many consecutive outage answers (5xx, timeouts, connection errors) open
	// the breaker.
	Failures int
	// OpenFor is how long the breaker stays open before a half-open probe.
	OpenFor time.Duration
}

// BreakerState mirrors gobreaker's states for metrics: 0 closed, 1 half-open, 2 open.
type BreakerState int32

const (
	BreakerClosed   BreakerState = 0
	BreakerHalfOpen BreakerState = 1
	BreakerOpen     BreakerState = 2
)

func (s BreakerState) String() string {
	return [...]string{"closed", "half-open", "open"}[s]
}

// Guard puts the rate limiter and the circuit breaker in front of a client. Layers, outermost
// first: limiter wait (paces and pauses every lane) → breaker (refuses while open; one probe
// while half-open) → HTTP. Only outage signals count as breaker failures; answers about
// records (4xx), 429s and halts do not.
type Guard struct {
	next    Tracker
	limiter *Limiter
	cb      *gobreaker.CircuitBreaker[Response]
	state   atomic.Int32
	log     *slog.Logger
	// OnStateChange, when set, is called on every breaker transition.
	OnStateChange func(from, to BreakerState)
}

// errOutage marks a response as a breaker failure without being an error to the caller.
var errOutage = errors.New("braze outage")

// NewGuard wraps next.
func NewGuard(next Tracker, limiter *Limiter, bc BreakerConfig, log *slog.Logger) *Guard {
	if bc.Failures <= 0 {
		bc.Failures = 5
	}
	if bc.OpenFor <= 0 {
		bc.OpenFor = 10 * time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	g := &Guard{next: next, limiter: limiter, log: log}
	if limiter != nil {
		limiter.SetLogger(log)
	}
	g.cb = gobreaker.NewCircuitBreaker[Response](gobreaker.Settings{
		Name:        "braze",
		MaxRequests: 1, // a single half-open probe decides
		Timeout:     bc.OpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= uint32(bc.Failures) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			f, t := toState(from), toState(to)
			g.state.Store(int32(t))
			level := slog.LevelWarn
			if t == BreakerClosed {
				level = slog.LevelInfo
			}
			g.log.Log(context.Background(), level, "circuit breaker "+t.String(), "from", f.String(), "to", t.String())
			if g.OnStateChange != nil {
				g.OnStateChange(f, t)
			}
		},
	})
	return g
}

func toState(s gobreaker.State) BreakerState {
	switch s {
	case gobreaker.StateOpen:
		return BreakerOpen
	case gobreaker.StateHalfOpen:
		return BreakerHalfOpen
	}
	return BreakerClosed
}

// State is the breaker's current state. Reading it also lets an open breaker move to
// half-open once its time is up.
func (g *Guard) State() BreakerState {
	s := toState(g.cb.State())
	g.state.Store(int32(s))
	return s
}

// Paused reports whether sending is suspended (breaker not closed): fetching should pause
// too, so Kafka keeps the data instead of memory.
//
// It reads the state last seen (every transition and every State call update it) instead of
// asking the breaker, which takes a lock and the clock: fetch loops ask once per message. An
// open breaker moves to half-open when a lane, polling State while it waits, notices.
func (g *Guard) Paused() bool { return BreakerState(g.state.Load()) != BreakerClosed }

// Limiter returns the guard's limiter.
func (g *Guard) Limiter() *Limiter { return g.limiter }

// Track waits for the limiter and the breaker, then sends. While the breaker is open it
// waits (no lane sends); in half-open only one probe goes out and the rest wait for its
// verdict. The returned Response.Waited covers all of that waiting.
func (g *Guard) Track(ctx context.Context, body []byte) Response {
	start := time.Now()
	for {
		if g.State() == BreakerOpen {
			if !sleep(ctx, 100*time.Millisecond) {
				return Response{Class: Retry, Err: ctx.Err(), Waited: time.Since(start)}
			}
			continue
		}
		if g.limiter != nil && !takeGrant(ctx) {
			if _, err := g.limiter.Wait(ctx); err != nil {
				return Response{Class: Retry, Err: err, Waited: time.Since(start)}
			}
		}
		waited := time.Since(start)
		resp, err := g.cb.Execute(func() (Response, error) {
			r := g.next.Track(ctx, body)
			if isOutage(r) {
				return r, errOutage
			}
			return r, nil
		})
		if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
			// Another lane's probe is deciding; wait for it.
			if !sleep(ctx, 50*time.Millisecond) {
				return Response{Class: Retry, Err: ctx.Err(), Waited: time.Since(start)}
			}
			continue
		}
		if g.limiter != nil {
			if resp.Throttled {
				g.limiter.Throttled(resp.RateLimit)
			} else {
				g.limiter.Observe(resp.RateLimit)
			}
		}
		resp.Waited = waited
		return resp
	}
}

// Grant waits for the limiter's permission to send one request. A lane asks for it before
// packing its request, so that the request carries what arrived while it waited
// (pipeline/lane.go); the request then goes with a context from WithGrant.
func (g *Guard) Grant(ctx context.Context) error {
	if g.limiter == nil {
		return nil
	}
	_, err := g.limiter.Wait(ctx)
	return err
}

// Usage is the limiter's Usage (0 without a limiter).
func (g *Guard) Usage() float64 {
	if g.limiter == nil {
		return 0
	}
	return g.limiter.Usage()
}

type grantKey struct{}

// WithGrant marks ctx as holding one grant from Grant: the first Track under it does not wait
// for the limiter again (a retry does).
func WithGrant(ctx context.Context) context.Context {
	return context.WithValue(ctx, grantKey{}, new(atomic.Bool))
}

// takeGrant uses ctx's grant, if it holds an unused one.
func takeGrant(ctx context.Context) bool {
	g, _ := ctx.Value(grantKey{}).(*atomic.Bool)
	return g != nil && g.CompareAndSwap(false, true)
}

// isOutage: Braze or the path to it is failing (5xx, timeout, reset, refused); not when the
// caller gave up.
func isOutage(r Response) bool { return r.Cause() == CauseOutage }

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
