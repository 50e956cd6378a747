package pipeline

import (
	"context"
	"time"

	"github.com/braze-ingestor/braze-ingestor/batcher"
	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// The sender chain (docs/architecture.md "Sender chain"). The lane collects, encodes, sends
// and settles; how a request is sent is the business of these layers, outermost first:
//
//	halt    (send_halt.go)    one prober for the worker while Braze refuses it
//	split   (send_split.go)   fatal answers: drop named objects, bisect the rest
//	isolate (send_isolate.go) a payload that only ever gets 5xx is split off and set aside
//	retry   (send_retry.go)   back-off, Retry-After, RETRY_MAX_DURATION
//	live    (send_live.go)    revoked records leave before each send
//	spacing (send_spacing.go) USER_MIN_SPACING between two requests of one user (off by default)
//	observe (send_observe.go) span, request metrics, the halt flag's recovery
//	answer  (send_answer.go)  Braze's answer becomes one verdict per record
//	Sender  (sink/guard.go: limiter wait → circuit breaker → sink/braze.go HTTP client)
//
// Only the HTTP client reads status codes and message texts; every layer above acts on
// sink.Class, sink.Cause and the per-record sink.Verdict.

// request is what travels down the chain: records and their encoded body.
type request struct {
	items []item
	body  []byte
	// attempt is set by the retry layer: 1 for the first send of these records.
	attempt int
	// once: the retry layer sends one attempt and leaves what is to be retried to the caller
	// (a request carrying several lanes' records, lane.go sendMerged).
	once bool
	// isolateAfter, suspect and runStart are set by the isolate layer (send_isolate.go).
	isolateAfter time.Duration
	suspect      bool
	runStart     time.Time // when the run of 5xx answers that made this a suspect began
}

// endpoint is the endpoint the request goes to: its records' (one kind per request outside
// /users/track).
func (r *request) endpoint() endpoint.Endpoint {
	if len(r.items) == 0 {
		return endpoint.Track
	}
	return r.items[0].kind.Endpoint()
}

func newRequest(items []item) *request {
	return &request{items: items, body: batcher.Encode(nil, items)}
}

// subset is a request of the items at idx, in their order.
func (r *request) subset(idx []int) *request {
	if len(idx) == len(r.items) {
		return r
	}
	items := make([]item, len(idx))
	for j, i := range idx {
		items[j] = r.items[i]
	}
	sub := newRequest(items)
	sub.isolateAfter, sub.suspect, sub.runStart, sub.once = r.isolateAfter, r.suspect, r.runStart, r.once
	return sub
}

// sendLayer is one layer of the chain.
type sendLayer interface {
	send(ctx context.Context, r *request) results
}

// newChain assembles the chain around the pipeline's Sender.
func (p *Pipeline) newChain() sendLayer {
	var s sendLayer = &answerLayer{p: p, next: p.sender, post: p.poster()}
	s = &observeLayer{p: p, next: s}
	s = newSpacingLayer(p, s)
	s = &liveLayer{p: p, next: s}
	s = &retryLayer{p: p, next: s}
	s = newIsolateLayer(p, s)
	s = &splitLayer{p: p, next: s}
	return &haltLayer{p: p, next: s}
}

// results are the verdicts of a request's records, in the order of its items. While every
// record shares one verdict (the common case) no slice is allocated.
type results struct {
	last sink.Response // the last answer behind the verdicts
	n    int
	all  sink.Verdict // every record's verdict while per is nil
	per  []sink.Verdict
	// isolate: the retry layer hands the request to the isolate layer (send_isolate.go),
	// after a run of 5xx answers that began at runStart.
	isolate  bool
	runStart time.Time
}

func uniform(n int, v sink.Verdict, last sink.Response) results {
	return results{last: last, n: n, all: v}
}

func (rs *results) at(i int) sink.Verdict {
	if rs.per == nil {
		return rs.all
	}
	return rs.per[i]
}

func (rs *results) set(i int, v sink.Verdict) {
	if rs.per == nil {
		if v == rs.all {
			return
		}
		rs.per = make([]sink.Verdict, rs.n)
		for j := range rs.per {
			rs.per[j] = rs.all
		}
	}
	rs.per[i] = v
}

// indexes lists the records whose outcome is o.
func (rs *results) indexes(o sink.Outcome) []int {
	var idx []int
	for i := 0; i < rs.n; i++ {
		if rs.at(i).Outcome == o {
			idx = append(idx, i)
		}
	}
	return idx
}

func (rs *results) any(o sink.Outcome) bool {
	if rs.per == nil {
		return rs.n > 0 && rs.all.Outcome == o
	}
	for i := range rs.per {
		if rs.per[i].Outcome == o {
			return true
		}
	}
	return false
}

// place copies the verdicts of a sub-request of the records at idx.
func (rs *results) place(idx []int, sub results) {
	rs.last = sub.last
	if len(idx) == rs.n && rs.per == nil && sub.per == nil {
		rs.all = sub.all
		return
	}
	for j, i := range idx {
		rs.set(i, sub.at(j))
	}
}

// mark gives every record at idx the verdict v.
func (rs *results) mark(idx []int, v sink.Verdict) {
	for _, i := range idx {
		rs.set(i, v)
	}
}

// deliver sends one request through the chain and settles every record by its verdict.
// Records left unsettled (the worker is stopping) stay with Kafka.
func (p *Pipeline) deliver(ctx context.Context, items []item, body []byte) {
	res := p.chain.send(ctx, &request{items: items, body: body})
	p.settle(ctx, items, &res)
}

// settle acknowledges delivered records and dead-letters rejected ones. With other endpoints
// enabled it first notes when each user's track records settled (held.go spacedAt).
func (p *Pipeline) settle(ctx context.Context, items []item, res *results) {
	if p.multi && len(items) > 0 && items[0].kind.Tracked() {
		p.noteTrackSettled(items)
	}
	if res.per == nil {
		switch res.all.Outcome {
		case sink.OutcomeDelivered:
			p.delivered(items)
		case sink.OutcomeRejected:
			p.deadLetter(ctx, items, res.all.Reason, res.all.Error, res.all.Attempts)
		}
		return
	}
	ok := items[:0:0]
	for i, it := range items {
		switch v := res.per[i]; v.Outcome {
		case sink.OutcomeDelivered:
			ok = append(ok, it)
		case sink.OutcomeRejected:
			p.deadLetter(ctx, []item{it}, v.Reason, v.Error, v.Attempts)
		}
	}
	if len(ok) > 0 {
		p.delivered(ok)
	}
}

// noteTrackSettled records the settle time of the users of items in their lanes, a run of
// items of one lane at a time (a request's records are mostly of one lane).
func (p *Pipeline) noteTrackSettled(items []item) {
	now := time.Now().UnixNano()
	n := uint64(len(p.lanes))
	for start := 0; start < len(items); {
		l := items[start].user % n
		end := start + 1
		for end < len(items) && items[end].user%n == l {
			end++
		}
		p.lanes[l].track.note(items[start:end], now)
		start = end
	}
}

// settleEarly settles the records with a final verdict now and marks them dropped (already
// released), so that the lane does not settle them again.
func (p *Pipeline) settleEarly(ctx context.Context, items []item, res *results) {
	var idx []int
	for i := range items {
		if o := res.at(i).Outcome; o == sink.OutcomeDelivered || o == sink.OutcomeRejected {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return
	}
	sub := make([]item, len(idx))
	for j, i := range idx {
		sub[j] = items[i]
	}
	var subRes results
	subRes.n = len(idx)
	for j, i := range idx {
		subRes.set(j, res.at(i))
	}
	p.settle(ctx, sub, &subRes)
	res.mark(idx, sink.Verdict{Outcome: sink.OutcomeDropped})
}
