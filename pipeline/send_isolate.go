package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// isolateLayer sets aside a payload Braze can never take. A request that gets only 5xx
// answers for longer than Config.Isolate5xxAfter is split; its halves are suspects, split
// again after suspectAttempts 5xx answers in a row. Splitting costs nothing but requests, so
// it needs no proof; rejecting does: a lone record is dead-lettered as persistent_5xx only if
// Braze accepted other requests of the same endpoint since the run of 5xx began (the record's
// siblings or other lanes), so during an outage, of Braze or of one endpoint, nothing is
// dead-lettered and the lone record keeps being retried. A no-op when Isolate5xxAfter < 0.
type isolateLayer struct {
	p     *Pipeline
	next  sendLayer
	after time.Duration
}

// suspectAttempts is how many 5xx answers in a row a suspect may get before it is split.
const suspectAttempts = 3

func newIsolateLayer(p *Pipeline, next sendLayer) sendLayer {
	if p.cfg.Isolate5xxAfter < 0 {
		return next
	}
	return &isolateLayer{p: p, next: next, after: p.cfg.Isolate5xxAfter}
}

func (l *isolateLayer) send(ctx context.Context, r *request) results {
	if !r.suspect {
		r.isolateAfter = l.after
	}
	res := l.next.send(ctx, r)
	root := r.runStart // when the first run of 5xx answers behind this request began
	for res.isolate && ctx.Err() == nil {
		if root.IsZero() {
			root = res.runStart
		}
		pending := res.indexes(sink.OutcomeRetryLater)
		sub := r.subset(pending)
		sub.attempt, sub.suspect, sub.runStart = r.attempt, true, root
		if len(sub.items) > 1 {
			l.p.stats.Splits.Add(1)
			res.place(pending, halves(ctx, sub, res.last, l.send))
			return res
		}
		if l.p.acceptedSince(r.endpoint(), root) {
			l.p.log.Warn("a record got only 5xx answers while Braze accepted other requests; dead-lettering it", "answer", res.last.Describe(), "attempts", r.attempt)
			res.mark(pending, sink.Verdict{Outcome: sink.OutcomeRejected, Reason: dlq.ReasonPersistent5xx, Attempts: r.attempt,
				Error: fmt.Sprintf("only 5xx answers while other requests were accepted; last answer: %s", res.last.Describe())})
			return res
		}
		// Nothing accepted meanwhile: an outage, not this record. Keep trying.
		again := l.next.send(ctx, sub)
		res.place(pending, again)
		res.isolate = again.isolate
	}
	return res
}

// acceptedSince reports whether Braze accepted a request of ep after t: only the same
// endpoint's answers show that it is up (track may be healthy while /users/delete is down).
func (p *Pipeline) acceptedSince(ep endpoint.Endpoint, t time.Time) bool {
	return !t.IsZero() && time.Unix(0, p.lastAccepted[ep].Load()).After(t)
}

// isolating reports whether the retry layer hands a request to the isolate layer: its run of
// 5xx answers is longer than its bound (suspects: suspectAttempts answers).
func isolating(r *request, run fiveXXRun) bool {
	switch {
	case run.n == 0:
		return false
	case r.suspect:
		return run.n >= suspectAttempts
	case r.isolateAfter > 0:
		return time.Since(run.start) > r.isolateAfter
	}
	return false
}
