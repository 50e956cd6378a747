package pipeline

import (
	"context"
	"time"

	"github.com/braze-ingestor/braze-ingestor/sink"
)

// observeLayer records each HTTP request: its client span, the request metrics and counters,
// and tells the halt gate about every answer (send_halt.go says which answers end a halt).
type observeLayer struct {
	p    *Pipeline
	next sendLayer
}

func (o *observeLayer) send(ctx context.Context, r *request) results {
	p := o.p
	sendStart := time.Now()
	ep := r.endpoint()
	sctx, span := p.startRequestSpan(ctx, ep, r.items, r.body, r.attempt)
	res := o.next.send(sctx, r)
	resp := res.last
	p.endRequestSpan(span, ep, resp, resp.Waited, time.Since(sendStart)-resp.Waited, len(r.items), len(r.body))
	if ctx.Err() != nil {
		return res
	}
	p.stats.Requests[resp.Class].Add(1)
	p.stats.Endpoint[ep].Requests[resp.Class].Add(1)
	p.stats.RequestsStatus[resp.StatusClass()].Add(1)
	if resp.Class == sink.Delivered || resp.Class == sink.Partial {
		p.stats.ObjectsSent.Add(int64(len(r.items)))
		p.lastAccepted[ep].Store(time.Now().UnixNano())
	}
	p.mass.observe(ep, resp)
	p.halt.answered(ep, resp)
	return res
}
