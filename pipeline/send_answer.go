package pipeline

import (
	"context"

	"github.com/braze-ingestor/braze-ingestor/batcher"
	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// answerLayer is the bottom of the pipeline's chain: it sends the body through the Sender
// and turns the classified answer into one verdict per record (partial success: the objects
// errors[] names are rejected, the others delivered).
type answerLayer struct {
	p    *Pipeline
	next Sender
	post sink.Poster // the other endpoints' requests (New requires it when one is enabled)
}

func (a *answerLayer) send(ctx context.Context, r *request) results {
	// The limiter, the breaker and the HTTP timeout bound the wait: it is not a stall.
	done := waiting(ctx)
	var resp sink.Response
	if ep := r.endpoint(); ep == endpoint.Track {
		resp = a.next.Track(ctx, r.body)
	} else {
		resp = a.post.Post(ctx, ep, r.body)
	}
	done()
	n := len(r.items)
	if ctx.Err() != nil {
		// Shutting down hard: nothing is acknowledged, Kafka keeps the records.
		return uniform(n, sink.Verdict{Outcome: sink.OutcomeRetryLater}, resp)
	}
	switch resp.Class {
	case sink.Delivered:
		return uniform(n, sink.Verdict{Outcome: sink.OutcomeDelivered}, resp)
	case sink.Partial:
		return a.partial(r, resp)
	case sink.Split:
		// A fatal answer processed nothing: the objects it names are rejected, the rest is
		// for the split layer to send again.
		res := uniform(n, sink.Verdict{Outcome: sink.OutcomeRetryLater}, resp)
		a.rejectNamed(r, resp, &res)
		return res
	case sink.Halt:
		return uniform(n, sink.Verdict{Outcome: sink.OutcomeHalted}, resp)
	}
	return uniform(n, sink.Verdict{Outcome: sink.OutcomeRetryLater}, resp)
}

func (a *answerLayer) partial(r *request, resp sink.Response) results {
	res := uniform(len(r.items), sink.Verdict{Outcome: sink.OutcomeDelivered}, resp)
	if !a.rejectNamed(r, resp, &res) {
		a.p.log.Warn("Braze reported errors for objects not in the request", "errors", len(resp.Errors))
	}
	return res
}

// rejectNamed rejects the records errors[] names; it reports whether any entry named one.
func (a *answerLayer) rejectNamed(r *request, resp sink.Response, res *results) bool {
	named := namedErrors(r.items, resp.Errors)
	for i, msg := range named {
		if msg != "" {
			res.set(i, sink.Verdict{Outcome: sink.OutcomeRejected, Reason: dlq.ReasonBrazeRejected, Error: msg, Attempts: r.attempt})
		}
	}
	return named != nil
}

// namedErrors maps errors[] entries to the items they name; nil when none maps.
func namedErrors(items []item, errs []sink.ItemError) []string {
	var out []string
	for _, e := range errs {
		if i := batcher.Locate(items, e.InputArray, e.Index); i >= 0 {
			if out == nil {
				out = make([]string, len(items))
			}
			if out[i] != "" {
				out[i] += "; "
			}
			out[i] += e.Type
		}
	}
	return out
}
