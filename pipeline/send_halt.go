package pipeline

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// haltLayer holds records Braze refuses to take from this worker (a bad key, a wrong
// endpoint, an answer that is not Braze's): nothing is dead-lettered or committed. While
// halted, one prober for the whole worker sends with a bounded back-off (1 s doubling up to
// HALT_PROBE_MAX); every other lane waits at the gate and resumes the moment an answer
// shows Braze accepting requests again.
//
// A refusal can be one endpoint's (a key without the users.delete permission answers 403 on
// /users/delete only), so the halt ends on an answer of the endpoint that refused; an answer
// of another endpoint ends it only when no request of the refusing endpoint is waiting to
// probe (docs/architecture.md "Answers").
type haltLayer struct {
	p    *Pipeline
	next sendLayer
}

func (h *haltLayer) send(ctx context.Context, r *request) results {
	g := h.p.halt
	probe, ok := g.pass(ctx)
	if !ok {
		return uniform(len(r.items), sink.Verdict{Outcome: sink.OutcomeHalted}, sink.Response{})
	}
	res := h.next.send(ctx, r)
	if probe {
		g.release()
	}
	ep, held := r.endpoint(), false
	defer func() {
		if held {
			g.unhold(ep)
		}
	}()
	for ctx.Err() == nil {
		idx := res.indexes(sink.OutcomeHalted)
		if len(idx) == 0 {
			return res
		}
		if !held {
			held = true
			g.hold(ep)
		}
		g.enter(ep, res.last)
		// What is settled need not wait for the halt to end (its offsets can commit).
		h.p.settleEarly(ctx, r.items, &res)
		probe, ok = g.turn(ctx)
		if !ok {
			return res
		}
		res.place(idx, h.next.send(ctx, r.subset(idx)))
		if probe {
			g.release()
		}
	}
	return res
}

// haltGate is the worker-wide halt state.
type haltGate struct {
	p        *Pipeline
	probeMax time.Duration
	log      rate.Sometimes

	mu      sync.Mutex
	halted  bool
	mass    bool                // halted on mass rejection: only an accepted request ends it
	ep      endpoint.Endpoint   // the endpoint whose refusal began the halt
	waiting [endpoint.Count]int // halted requests per endpoint, waiting to probe
	prober  bool                // a lane holds the probe
	probes  int                 // probes since the halt began
	changed chan struct{}
}

func newHaltGate(p *Pipeline) *haltGate {
	return &haltGate{p: p, probeMax: p.cfg.HaltProbeMax, log: rate.Sometimes{Interval: time.Minute}, changed: make(chan struct{})}
}

// pass lets a new request through unless the worker is halted; then the lane takes its turn
// like a halted one (see turn).
func (g *haltGate) pass(ctx context.Context) (probe, ok bool) {
	if !g.p.halted.Load() { // set under g.mu by enter; turn re-checks under the lock
		return false, true
	}
	return g.turn(ctx)
}

// turn waits until the lane may send while halted: it either becomes the prober (after the
// back-off) or is woken when the halt ends. It reports whether the lane is the prober.
func (g *haltGate) turn(ctx context.Context) (probe, ok bool) {
	for {
		g.mu.Lock()
		if !g.halted {
			g.mu.Unlock()
			return false, true
		}
		if !g.prober {
			g.prober = true
			g.probes++
			n := g.probes
			g.mu.Unlock()
			if !pause(ctx, backoff(time.Second, g.probeMax, n)+500*time.Millisecond) {
				g.release()
				return false, false
			}
			return true, true
		}
		ch := g.changed
		g.mu.Unlock()
		done := waiting(ctx)
		select {
		case <-ch:
			done()
		case <-ctx.Done():
			return false, false
		}
	}
}

// release gives the probe up (after its answer), waking the waiting lanes.
func (g *haltGate) release() {
	g.mu.Lock()
	if g.prober {
		g.prober = false
		g.notifyLocked()
	}
	g.mu.Unlock()
}

func (g *haltGate) notifyLocked() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// hold and unhold count the halted requests of ep waiting to probe.
func (g *haltGate) hold(ep endpoint.Endpoint) {
	g.mu.Lock()
	g.waiting[ep]++
	g.mu.Unlock()
}

func (g *haltGate) unhold(ep endpoint.Endpoint) {
	g.mu.Lock()
	g.waiting[ep]--
	g.mu.Unlock()
}

// enter starts (or continues) a halt on a refusing answer of ep.
func (g *haltGate) enter(ep endpoint.Endpoint, resp sink.Response) {
	g.mu.Lock()
	if !g.halted {
		g.halted = true
		g.ep = ep
		g.probes = 0
		g.p.halted.Store(true)
		g.p.stats.Halted.Store(true)
	}
	g.mu.Unlock()
	g.log.Do(func() {
		g.p.log.Error("HALTED: Braze refuses the worker's requests; nothing is dead-lettered or committed until this is fixed, and the worker resumes by itself",
			"endpoint", ep.Path(), "status", resp.Status, "cause", resp.Cause().String(), "answer", resp.Describe(), "likely_cause", sink.HaltCause(resp))
	})
}

// massRejection marks the coming halt as one on mass rejection.
func (g *haltGate) massRejection(resp sink.Response) {
	g.mu.Lock()
	if !g.halted {
		g.mass = true
	}
	g.mu.Unlock()
	g.p.stats.MassRejections.Add(1)
}

// answered ends a halt on an answer of ep that is not a refusal, when ep is the endpoint that
// refused or none of its requests waits to probe; a halt on mass rejection ends only when a
// request is accepted.
func (g *haltGate) answered(ep endpoint.Endpoint, resp sink.Response) {
	if resp.Class == sink.Halt || !resp.Answered() || !g.p.halted.Load() {
		return
	}
	accepted := resp.Class == sink.Delivered || resp.Class == sink.Partial
	g.mu.Lock()
	if g.halted && (accepted || !g.mass) && (ep == g.ep || g.waiting[g.ep] == 0) {
		g.halted, g.mass = false, false
		g.p.halted.Store(false)
		g.p.stats.Halted.Store(false)
		g.notifyLocked()
		g.p.log.Info("Braze accepts requests again; resuming", "status", resp.Status)
	}
	g.mu.Unlock()
}
