package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
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

// Guard puts the rate limiters and the circuit breaker in front of a client. Layers, outermost
// first: limiter wait (paces and pauses every lane sending to the endpoint's rate-limit group)
// → breaker (refuses while open; one probe while half-open) → HTTP. Only outage signals count
// as breaker failures; answers about records (4xx), 429s and halts do not.
//
// Each rate-limit group (endpoint.Group) has its own limiter, fed only by the answers of its
// endpoints (their rate-limit headers and 429s): Braze counts the groups apart
// (docs/braze-rules.md). Each endpoint has its own breaker, tripped by its own outage
// answers only: /users/delete answering 5xx stops the deletes, not /users/track. The track
// breaker is the worker's (State, Paused: fetching pauses, /readyz, the breaker gauge); the
// others' transitions are logged with their endpoint.
type Guard struct {
	next     Tracker
	post     Poster // next, when it can post to every endpoint
	limiters [endpoint.GroupCount]*Limiter
	cb       [endpoint.Count]*gobreaker.CircuitBreaker[Response]
	state    atomic.Int32 // the track breaker's state, set by its OnStateChange
	log      *slog.Logger
	// OnStateChange, when set, is called on every transition of the track breaker.
	OnStateChange func(from, to BreakerState)
}

// errOutage marks a response as a breaker failure without being an error to the caller.
var errOutage = errors.New("braze outage")

// NewGuard wraps next, with limiter for /users/track (nil: unpaced). The other groups get a
// limiter at Braze's default rate (GroupLimiter) until SetGroupLimiter replaces it. next
// answers Post for the other endpoints when it is a Poster (Client is).
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
	g := &Guard{next: next, log: log}
	g.post, _ = next.(Poster)
	g.SetGroupLimiter(endpoint.GroupTrack, limiter)
	for gr := endpoint.GroupTrack + 1; gr < endpoint.GroupCount; gr++ {
		g.SetGroupLimiter(gr, PerMinuteLimiter(gr.DefaultPerMinute()))
	}
	for ep := endpoint.Track; ep < endpoint.Count; ep++ {
		g.cb[ep] = g.newBreaker(ep, bc)
	}
	return g
}

// newBreaker is ep's circuit breaker.
func (g *Guard) newBreaker(ep endpoint.Endpoint, bc BreakerConfig) *gobreaker.CircuitBreaker[Response] {
	return gobreaker.NewCircuitBreaker[Response](gobreaker.Settings{
		Name:        "braze " + ep.Name(),
		MaxRequests: 1, // a single half-open probe decides
		Timeout:     bc.OpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= uint32(bc.Failures) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			f, t := toState(from), toState(to)
			level := slog.LevelWarn
			if t == BreakerClosed {
				level = slog.LevelInfo
			}
			g.log.Log(context.Background(), level, "circuit breaker "+t.String(), "endpoint", ep.Path(), "from", f.String(), "to", t.String())
			if ep != endpoint.Track {
				return
			}
			g.state.Store(int32(t))
			if g.OnStateChange != nil {
				g.OnStateChange(f, t)
			}
		},
	})
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

// State is the track breaker's current state. Reading it also lets an open breaker move to
// half-open once its time is up.
func (g *Guard) State() BreakerState { return g.breakerState(endpoint.Track) }

// breakerState is ep's breaker's current state. Reading it lets an open breaker move to
// half-open; the track breaker's OnStateChange then records the state Paused reads. It is
// not stored here: a state read just before another lane's probe closed the breaker would
// overwrite "closed" with "half-open", and with fetching paused no request would come to
// correct it.
func (g *Guard) breakerState(ep endpoint.Endpoint) BreakerState {
	return toState(g.cb[ep].State())
}

// Paused reports whether sending is suspended (breaker not closed): fetching should pause
// too, so Kafka keeps the data instead of memory.
//
// It reads the state recorded by the breaker's OnStateChange (called for every transition,
// under the breaker's lock, so the record is never older than the breaker) instead of asking
// the breaker, which takes a lock and the clock: fetch loops ask once per message. An open
// breaker moves to half-open when a lane, polling State while it waits, notices.
func (g *Guard) Paused() bool { return BreakerState(g.state.Load()) != BreakerClosed }

// PerMinuteLimiter is a limiter at perMinute requests per minute with a burst of one second's
// worth (at least 1), for the rate-limit groups Braze documents per minute (endpoint.GroupUsers,
// endpoint.GroupSubscription; docs/braze-rules.md).
func PerMinuteLimiter(perMinute int) *Limiter {
	return NewLimiter(float64(perMinute)/60, max(1, perMinute/60))
}

// SetGroupLimiter sets the limiter of a rate-limit group (nil: unpaced). Call it before the
// guard is used.
func (g *Guard) SetGroupLimiter(group endpoint.Group, l *Limiter) {
	if group >= endpoint.GroupCount {
		return
	}
	if l != nil {
		l.SetLogger(g.log.With("rate_limit_group", group.String()))
	}
	g.limiters[group] = l
}

// Limiter returns the guard's /users/track limiter.
func (g *Guard) Limiter() *Limiter { return g.limiters[endpoint.GroupTrack] }

// GroupLimiter returns the limiter of a rate-limit group (nil when unpaced).
func (g *Guard) GroupLimiter(group endpoint.Group) *Limiter {
	if group >= endpoint.GroupCount {
		return nil
	}
	return g.limiters[group]
}

// Track is Post(endpoint.Track).
func (g *Guard) Track(ctx context.Context, body []byte) Response {
	return g.Post(ctx, endpoint.Track, body)
}

// Post waits for ep's group limiter and ep's breaker, then sends. While the breaker is open it
// waits (nothing is sent to ep); in half-open only one probe goes out and the rest wait for its
// verdict. The returned Response.Waited covers all of that waiting. The answer's rate-limit
// headers and 429s feed ep's group limiter only.
func (g *Guard) Post(ctx context.Context, ep endpoint.Endpoint, body []byte) Response {
	start := time.Now()
	lim := g.GroupLimiter(ep.Group())
	for {
		if g.breakerState(ep) == BreakerOpen {
			if !sleep(ctx, 100*time.Millisecond) {
				return Response{Endpoint: ep, Class: Retry, Err: ctx.Err(), Waited: time.Since(start)}
			}
			continue
		}
		if lim != nil && !takeGrant(ctx, ep.Group()) {
			if _, err := lim.Wait(ctx); err != nil {
				return Response{Endpoint: ep, Class: Retry, Err: err, Waited: time.Since(start)}
			}
		}
		waited := time.Since(start)
		resp, err := g.cb[ep].Execute(func() (Response, error) {
			r := g.send(ctx, ep, body)
			if isOutage(r) {
				return r, errOutage
			}
			return r, nil
		})
		if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
			// Another lane's probe is deciding; wait for it.
			if !sleep(ctx, 50*time.Millisecond) {
				return Response{Endpoint: ep, Class: Retry, Err: ctx.Err(), Waited: time.Since(start)}
			}
			continue
		}
		if lim != nil {
			if resp.Throttled {
				lim.Throttled(resp.RateLimit)
			} else {
				lim.Observe(resp.RateLimit)
			}
		}
		resp.Waited = waited
		return resp
	}
}

// errNoPoster: the wrapped client can only send /users/track.
var errNoPoster = errors.New("the Braze client behind the guard sends only /users/track")

// send is one request through the wrapped client.
func (g *Guard) send(ctx context.Context, ep endpoint.Endpoint, body []byte) Response {
	switch {
	case ep == endpoint.Track:
		return g.next.Track(ctx, body)
	case g.post != nil:
		return g.post.Post(ctx, ep, body)
	}
	// A wiring mistake, not Braze's answer: halt rather than retry or dead-letter.
	return Response{Endpoint: ep, Class: Halt, Err: fmt.Errorf("POST %s: %w", ep.Path(), errNoPoster), cause: CauseUnexpected}
}

// Grant waits for the /users/track limiter's permission to send one request (GrantFor).
func (g *Guard) Grant(ctx context.Context) error { return g.GrantFor(ctx, endpoint.Track) }

// GrantFor waits for the permission of ep's group limiter to send one request. A lane asks
// for it before packing its request, so that the request carries what arrived while it waited
// (pipeline/lane.go); the request then goes with a context from WithGrant (Track) or
// WithGrantFor (ep).
func (g *Guard) GrantFor(ctx context.Context, ep endpoint.Endpoint) error {
	lim := g.GroupLimiter(ep.Group())
	if lim == nil {
		return nil
	}
	_, err := lim.Wait(ctx)
	return err
}

// Usage is the /users/track limiter's Usage (0 without a limiter).
func (g *Guard) Usage() float64 { return g.UsageFor(endpoint.Track) }

// UsageFor is the Usage of ep's group limiter (0 without a limiter).
func (g *Guard) UsageFor(ep endpoint.Endpoint) float64 {
	lim := g.GroupLimiter(ep.Group())
	if lim == nil {
		return 0
	}
	return lim.Usage()
}

type grantKey struct{}

// grant is one unused grant of a group's limiter, carried by a context.
type grant struct {
	group endpoint.Group
	used  atomic.Bool
}

// WithGrant marks ctx as holding one grant from Grant: the first Track under it does not wait
// for the limiter again (a retry does).
func WithGrant(ctx context.Context) context.Context { return WithGrantFor(ctx, endpoint.Track) }

// WithGrantFor marks ctx as holding one grant from GrantFor(ep): the first Post under it to an
// endpoint of ep's group does not wait for that group's limiter again. A grant of another
// group is never used.
func WithGrantFor(ctx context.Context, ep endpoint.Endpoint) context.Context {
	return context.WithValue(ctx, grantKey{}, &grant{group: ep.Group()})
}

// takeGrant uses ctx's grant for group, if it holds an unused one.
func takeGrant(ctx context.Context, group endpoint.Group) bool {
	g, _ := ctx.Value(grantKey{}).(*grant)
	return g != nil && g.group == group && g.used.CompareAndSwap(false, true)
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
