package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// retryLayer sends again, after a back-off, what the answer left retry-later: 429, 5xx,
// timeouts and connection errors. A 429's wait hint replaces the back-off (the limiter pauses
// every lane for the same time). With RETRY_MAX_DURATION set, records still not delivered
// after that long are rejected as retries_exhausted.
type retryLayer struct {
	p    *Pipeline
	next sendLayer
}

func (l *retryLayer) send(ctx context.Context, r *request) results {
	start := time.Now()
	r.attempt = 1
	res := l.next.send(ctx, r)
	if r.once {
		return res
	}
	cur := r
	var run fiveXXRun
	for attempt := 1; ; attempt++ {
		idx := res.indexes(sink.OutcomeRetryLater)
		if len(idx) == 0 || ctx.Err() != nil || res.last.Class == sink.Split {
			// Nothing to retry, stopping, or a fatal answer for the split layer.
			return res
		}
		if run.add(res.last); isolating(r, run) {
			res.isolate, res.runStart = true, run.start
			return res
		}
		l.p.stats.Retries.Add(1)
		if exhausted := l.exhausted(start, attempt, res.last); exhausted != nil {
			res.mark(idx, *exhausted)
			return res
		}
		wait := l.wait(attempt, res.last)
		l.p.log.Debug("request will be retried", "lane", cur.items[0].ack.ps.partition, "attempt", attempt, "answer", res.last.Describe(), "wait", wait)
		if !pause(ctx, wait) {
			return res
		}
		// Only what is still pending goes again: dropped records are already released.
		cur = r.subset(idx)
		cur.attempt = attempt + 1
		res.place(idx, l.next.send(ctx, cur))
	}
}

// exhausted is the verdict for records that RETRY_MAX_DURATION gives up on, or nil.
func (l *retryLayer) exhausted(start time.Time, attempt int, last sink.Response) *sink.Verdict {
	max := l.p.cfg.RetryMaxDuration
	if max <= 0 || time.Since(start) <= max {
		return nil
	}
	return &sink.Verdict{Outcome: sink.OutcomeRejected, Reason: dlq.ReasonRetriesExhausted, Attempts: attempt,
		Error: fmt.Sprintf("not delivered after %d attempts over %s; last answer: %s", attempt, time.Since(start).Round(time.Millisecond), last.Describe())}
}

// wait is the pause before the next attempt: Braze's hint on a 429, else jittered back-off.
func (l *retryLayer) wait(attempt int, last sink.Response) time.Duration {
	if last.Cause() == sink.CauseThrottled && last.RetryAfter > 0 {
		return last.RetryAfter
	}
	return backoff(l.p.cfg.RetryInitial, l.p.cfg.RetryMax, attempt)
}

// fiveXXRun is a request's current run of 5xx answers.
type fiveXXRun struct {
	start time.Time
	n     int
}

func (f *fiveXXRun) add(last sink.Response) {
	if last.Cause() != sink.CauseOutage || !last.Answered() {
		f.n = 0
		return
	}
	if f.n == 0 {
		f.start = time.Now()
	}
	f.n++
}
