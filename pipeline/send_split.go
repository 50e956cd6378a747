package pipeline

import (
	"context"

	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// splitLayer handles fatal answers (400, 413, a 2xx with a fatal message), after which Braze
// processed nothing. When the answer names objects in errors[], those are rejected (by the
// answer layer) and the rest is sent again, which spends fewer requests than bisecting;
// otherwise the request is bisected until the offending object stands alone and is rejected.
type splitLayer struct {
	p    *Pipeline
	next sendLayer
}

func (s *splitLayer) send(ctx context.Context, r *request) results {
	res := s.next.send(ctx, r)
	if res.last.Class != sink.Split || ctx.Err() != nil {
		return res
	}
	rest := res.indexes(sink.OutcomeRetryLater)
	if len(rest) == 0 {
		return res
	}
	if res.any(sink.OutcomeRejected) {
		// errors[] named some objects: send the others again.
		res.place(rest, s.send(ctx, r.subset(rest)))
		return res
	}
	sub := r.subset(rest)
	sub.attempt = r.attempt
	if res.last.Cause() == sink.CauseTooMany && len(sub.items) > 1 && r.endpoint() == endpoint.Track {
		s.p.lowerObjectCap(len(sub.items), res.last)
	}
	res.place(rest, s.bisect(ctx, sub, res.last))
	return res
}

// lowerObjectCap halves the object cap below a request Braze found to hold too many objects
// (a contract limit lower than configured), so that later batches go out at the new cap
// instead of each costing a bisection.
func (p *Pipeline) lowerObjectCap(sent int, last sink.Response) {
	want := int64(max(1, sent/2))
	for {
		cur := p.objCap.Load()
		if cur != 0 && cur <= want {
			return
		}
		if p.objCap.CompareAndSwap(cur, want) {
			p.log.Warn("Braze refused a request for its number of objects; lowering the object cap for the rest of this run (set BATCH_MAX_OBJECTS to the contract's limit to avoid this)",
				"objects_sent", sent, "object_cap", want, "answer", last.Describe())
			return
		}
	}
}

// objectCap is the most objects a request may carry now.
func (p *Pipeline) objectCap() int {
	if c := p.objCap.Load(); c > 0 {
		return int(c)
	}
	return p.cfg.Limits.MaxObjects
}

// bisect rejects a lone object, or sends the halves.
func (s *splitLayer) bisect(ctx context.Context, r *request, last sink.Response) results {
	s.p.stats.Splits.Add(1)
	if len(r.items) == 1 {
		if s.p.mass.mass(r.endpoint(), last) {
			// Most recent requests are rejected as a whole with this same answer: not a
			// verdict on this record. Halt; the prober sends it again.
			s.p.halt.massRejection(last)
			return uniform(1, sink.Verdict{Outcome: sink.OutcomeHalted}, last)
		}
		reason := dlq.ReasonBrazeRejected
		if last.Cause() == sink.CauseTooLarge {
			reason = dlq.ReasonTooLarge
		}
		return uniform(1, sink.Verdict{Outcome: sink.OutcomeRejected, Reason: reason, Error: last.Describe(), Attempts: r.attempt}, last)
	}
	// Each half bisects again on a fatal answer.
	return halves(ctx, r, last, s.send)
}

// halves sends the two halves of r in order through send, which keeps the lane's order. When
// the first half is left unsettled (halted, or stopping), the second is not sent and shares
// that outcome, so it is sent after the first.
func halves(ctx context.Context, r *request, last sink.Response, send func(context.Context, *request) results) results {
	n := len(r.items)
	mid := n / 2
	res := uniform(n, sink.Verdict{Outcome: sink.OutcomeRetryLater}, last)
	first, second := span(0, mid), span(mid, n)
	res.place(first, send(ctx, r.subset(first)))
	for _, i := range first {
		if o := res.at(i).Outcome; !o.Final() {
			res.mark(second, sink.Verdict{Outcome: o})
			return res
		}
	}
	res.place(second, send(ctx, r.subset(second)))
	return res
}

func span(from, to int) []int {
	idx := make([]int, to-from)
	for i := range idx {
		idx[i] = from + i
	}
	return idx
}
