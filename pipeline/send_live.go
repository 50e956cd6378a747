package pipeline

import (
	"context"

	"github.com/braze-ingestor/braze-ingestor/sink"
)

// liveLayer drops, before each send, the records whose partition was revoked (the next owner
// reads them again) and re-encodes the body when it did.
type liveLayer struct {
	p    *Pipeline
	next sendLayer
}

func (l *liveLayer) send(ctx context.Context, r *request) results {
	if !l.p.anyRevoked(r.items) {
		return l.next.send(ctx, r) // the common case: no copy
	}
	dropped := sink.Verdict{Outcome: sink.OutcomeDropped}
	res := uniform(len(r.items), dropped, sink.Response{})
	var live []int
	for i := range r.items {
		if l.p.releaseRevoked(&r.items[i]) {
			live = append(live, i)
		}
	}
	if len(live) == 0 {
		return res
	}
	sub := r.subset(live)
	sub.attempt = r.attempt
	res.place(live, l.next.send(ctx, sub))
	return res
}

// releaseRevoked releases the revoked records of it and reports whether it still has a live
// one (an optimized object goes as it is while any record behind it is live).
func (p *Pipeline) releaseRevoked(it *item) bool {
	if it.grp == nil {
		if p.revoked(it) {
			it.ack.resolve()
			return false
		}
		return true
	}
	live := it.grp.srcs[:0]
	for _, s := range it.grp.srcs {
		if p.revoked(&s) {
			s.ack.resolve()
			continue
		}
		live = append(live, s)
	}
	it.grp.srcs = live
	return len(live) > 0
}
