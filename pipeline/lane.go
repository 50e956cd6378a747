package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/braze-ingestor/braze-ingestor/batcher"
	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/schemas"
)

// item is one valid record on its way to Braze.
type item struct {
	kind schemas.Kind
	// idKind and user are the record's identity as the decoder resolved it (schemas.User):
	// coalescing and suppression group by it and never parse the identifier again.
	idKind schemas.IDKind
	user   uint64
	raw    []byte
	index  int
	id     []byte
	ack    *msgAck
	grp    *group // optimized path only (optimize.go): the records behind this object
	// epoch is Pipeline.revokeEpoch when the record was fetched: while it is unchanged no
	// partition has been revoked since, so the record is live without a look at its
	// partition (a pointer chase per record, measured at ~4% of CPU).
	epoch int64
}

// revoked reports whether the record's partition was revoked since it was fetched.
func (p *Pipeline) revoked(it *item) bool {
	return it.epoch != p.revokeEpoch.Load() && it.ack.ps.revoked.Load()
}

func (it item) ObjectKind() schemas.Kind { return it.kind }
func (it item) ObjectBytes() []byte      { return it.raw }
func (it item) ObjectUser() schemas.User { return schemas.User{ID: it.idKind, Hash: it.user} }

// lane holds one user-hash slice of the traffic. A lane sends one request at a time and
// retries it before anything behind it, which is what keeps each user's records in order.
type lane struct {
	id int
	in chan item
}

// laneBatch is a lane's batch being collected.
type laneBatch struct {
	packer   *laneAcct
	items    []item
	carry    item // the record that did not fit the previous batch
	hasCarry bool
	linger   *time.Timer
	prog     *progress // liveness.go
}

// runLane collects, encodes, sends and settles, one request at a time; how a request is sent
// is the sender chain's business (chain.go).
func (p *Pipeline) runLane(ctx context.Context, l *lane) {
	b := &laneBatch{packer: p.newLaneAcct(), items: make([]item, 0, p.cfg.Limits.MaxObjects), linger: time.NewTimer(time.Hour)}
	b.linger.Stop()
	b.prog = p.watch.add(fmt.Sprintf("lane %d", l.id))
	defer p.watch.remove(b.prog)
	ctx = p.withUserSends(withProgress(ctx, b.prog))
	var body []byte
	for {
		if !p.collect(ctx, l, b) {
			return
		}
		b.linger.Stop()
		if p.opt != nil {
			p.deliverOptimized(ctx, b.items)
		} else {
			body = p.deliverCapped(ctx, b.items, body)
		}
		clear(b.items) // drop references to message bytes
		b.items = b.items[:0]
		b.packer.reset()
		if ctx.Err() != nil {
			return
		}
	}
}

// deliverCapped sends items in requests of at most the current object cap (lowered only by a
// "too many objects" answer, send_split.go); body is the reusable encoding buffer.
func (p *Pipeline) deliverCapped(ctx context.Context, items []item, body []byte) []byte {
	for c := p.objectCap(); len(items) > 0; {
		n := min(c, len(items))
		body = batcher.Encode(body[:0], items[:n])
		p.deliver(ctx, items[:n], body)
		items = items[n:]
		if ctx.Err() != nil {
			break
		}
	}
	if cap(body) > laneBodyKeep {
		return nil // a rare large body is not kept by every lane (MAX_INFLIGHT_BYTES)
	}
	return body
}

// laneBodyKeep is the largest request body a lane keeps for reuse: 64 lanes each holding a
// body grown for a few very large records would hold far more than the records in flight.
const laneBodyKeep = 1 << 20

// collect fills a batch: it blocks for its first record, then takes what comes until the
// batch is full, the linger time passes, or (while draining) the lane is empty. It reports
// false when ctx ends.
func (p *Pipeline) collect(ctx context.Context, l *lane, b *laneBatch) bool {
	for {
		it, ok := p.nextItem(ctx, l, b)
		if !ok {
			return ctx.Err() == nil
		}
		if p.revoked(&it) {
			// Its generation is over; the next owner reads it again. Resolving keeps
			// the outstanding count honest; the commit is fenced by revoked.
			it.ack.resolve()
			continue
		}
		if !b.packer.fits(&it) {
			if len(b.items) == 0 {
				// The decoder rejects records over the byte budget, so this cannot
				// happen; dead-letter rather than spin if it ever does.
				p.deadLetter(ctx, []item{it}, dlq.ReasonTooLarge, "record larger than the request byte limit", 0)
				continue
			}
			b.carry, b.hasCarry = it, true
			return true
		}
		b.packer.add(&it)
		b.items = append(b.items, it)
		if len(b.items) == 1 {
			b.linger.Reset(p.cfg.Linger)
		}
		if b.packer.full() {
			return true
		}
	}
}

// nextItem returns the lane's next record; ok is false when the batch is to be sent now
// (linger passed, or draining with the lane empty) or ctx ended.
func (p *Pipeline) nextItem(ctx context.Context, l *lane, b *laneBatch) (it item, ok bool) {
	switch {
	case b.hasCarry:
		b.hasCarry = false
		return b.carry, true
	case len(b.items) == 0:
		b.prog.idle() // nothing in hand: waiting for work
		select {
		case it = <-l.in:
			b.prog.work()
			return it, true
		case <-ctx.Done():
			return it, false
		}
	}
	// Under backlog the next record is already queued: a plain receive is much cheaper than
	// the three-way select below.
	select {
	case it = <-l.in:
		return it, true
	default:
	}
	if p.draining.Load() > 0 {
		return it, false
	}
	select {
	case it = <-l.in:
		return it, true
	case <-b.linger.C:
		return it, false
	case <-ctx.Done():
		return it, false
	}
}

func (p *Pipeline) delivered(items []item) {
	if p.opt != nil {
		p.accepted(items)
	}
	var kinds [3]int64
	var n int64
	var done settled
	for _, it := range items {
		if it.grp != nil {
			for _, s := range it.grp.srcs {
				kinds[s.kind]++
				n++
				done.add(s.ack)
			}
			continue
		}
		kinds[it.kind]++
		n++
		done.add(it.ack)
	}
	done.flush()
	for k, c := range kinds {
		if c > 0 {
			p.stats.RecordsDelivered[k].Add(c)
		}
	}
}

func (p *Pipeline) anyRevoked(items []item) bool {
	for i := range items {
		if items[i].grp != nil {
			for _, s := range items[i].grp.srcs {
				if p.revoked(&s) {
					return true
				}
			}
			continue
		}
		if p.revoked(&items[i]) {
			return true
		}
	}
	return false
}

// deadLetter hands items to the DLQ stage; they are acknowledged once written.
func (p *Pipeline) deadLetter(ctx context.Context, items []item, reason dlq.Reason, msg string, attempts int) {
	for _, it := range items {
		if it.grp != nil {
			// Every record behind a rejected (possibly coalesced) object is dead-lettered
			// with Braze's error, as it was read.
			p.deadLetter(ctx, it.grp.srcs, reason, msg, attempts)
			continue
		}
		p.toDLQ(ctx, dlqEntry{ack: it.ack, kind: int(it.kind), letter: dlq.Letter{
			Reason: reason, Error: msg, Attempts: attempts, Type: it.kind.EnvelopeType(), Record: it.raw, ID: it.id, RecordIndex: it.index,
		}})
	}
}
