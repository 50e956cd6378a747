package pipeline

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Liveness (docs/architecture.md "Liveness"): each lane, fetch loop and committer keeps a
// progress mark, the time it last made progress while it has work, or zero while it has none
// or waits on purpose (a back-off, the halt gate, the rate limiter, the circuit breaker, an
// HTTP request bounded by its timeout, back-pressure from full lanes). A goroutine whose mark
// is older than Config.StuckAfter makes no progress while it has work: /livez fails.

// DefaultStuckAfter is the default Config.StuckAfter.
const DefaultStuckAfter = time.Minute

// progress is one goroutine's mark.
type progress struct {
	name string
	busy atomic.Int64 // unix nanos; 0 = nothing to do, or waiting on purpose
}

// work records progress (or the start of work).
func (g *progress) work() { g.busy.Store(time.Now().UnixNano()) }

// idle records that the goroutine has nothing to do or waits on purpose.
func (g *progress) idle() { g.busy.Store(0) }

func (g *progress) stuckFor(now time.Time) time.Duration {
	b := g.busy.Load()
	if b == 0 {
		return 0
	}
	return now.Sub(time.Unix(0, b))
}

// watchdog holds the marks of the running goroutines.
type watchdog struct {
	mu    sync.Mutex
	marks map[*progress]struct{}
	log   rate.Sometimes
}

func (w *watchdog) add(name string) *progress {
	g := &progress{name: name}
	w.mu.Lock()
	if w.marks == nil {
		w.marks = map[*progress]struct{}{}
	}
	w.marks[g] = struct{}{}
	w.mu.Unlock()
	return g
}

func (w *watchdog) remove(g *progress) {
	w.mu.Lock()
	delete(w.marks, g)
	w.mu.Unlock()
}

// stuck names the goroutine stuck longest beyond limit, or "".
func (w *watchdog) stuck(limit time.Duration) string {
	now := time.Now()
	var name string
	var worst time.Duration
	w.mu.Lock()
	defer w.mu.Unlock()
	for g := range w.marks {
		if d := g.stuckFor(now); d > limit && d > worst {
			name, worst = g.name, d
		}
	}
	if name == "" {
		return ""
	}
	return fmt.Sprintf("%s made no progress for %s while it has work", name, worst.Round(time.Second))
}

// Alive reports whether the run loop has shown a sign of life within d and no lane, fetch
// loop or committer is stuck (Config.StuckAfter).
func (p *Pipeline) Alive(d time.Duration) bool {
	if time.Since(time.Unix(0, p.lastLoop.Load())) >= d {
		return false
	}
	if s := p.watch.stuck(p.cfg.StuckAfter); s != "" {
		p.watch.log.Do(func() { p.log.Error("not alive: " + s) })
		return false
	}
	return true
}

type progressKey struct{}

// withProgress carries a lane's mark to the sender chain, which marks its deliberate waits.
func withProgress(ctx context.Context, g *progress) context.Context {
	return context.WithValue(ctx, progressKey{}, g)
}

func progressOf(ctx context.Context) *progress {
	g, _ := ctx.Value(progressKey{}).(*progress)
	return g
}

// waiting marks the goroutine behind ctx as waiting on purpose; the returned function marks
// it working again.
func waiting(ctx context.Context) func() {
	g := progressOf(ctx)
	if g == nil {
		return func() {}
	}
	g.idle()
	return g.work
}

// pause sleeps d (a deliberate wait) or until ctx ends; it reports whether it slept it all.
func pause(ctx context.Context, d time.Duration) bool {
	defer waiting(ctx)()
	return sleepCtx(ctx, d)
}
