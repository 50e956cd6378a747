package pipeline

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/braze-ingestor/braze-ingestor/batcher"
	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/schemas"
	"github.com/braze-ingestor/braze-ingestor/sink"
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

// laneBodyKeep is the largest request body a lane keeps for reuse: 64 lanes each holding a
// body grown for a few very large records would hold far more than the records in flight.
const laneBodyKeep = 1 << 20

func (p *Pipeline) runLane(ctx context.Context, l *lane) {
	packer := p.newLaneAcct()
	batch := make([]item, 0, p.cfg.Limits.MaxObjects)
	var body []byte
	var carry item
	hasCarry := false
	linger := time.NewTimer(time.Hour)
	linger.Stop()

	for {
		// Collect a batch: block for its first record, then take what comes until the batch
		// is full, the linger time passes, or (while draining) the lane is empty.
		for {
			var it item
			switch {
			case hasCarry:
				it, hasCarry = carry, false
			case len(batch) == 0:
				select {
				case it = <-l.in:
				case <-ctx.Done():
					return
				}
			default:
				// Under backlog the next record is already queued: a plain receive is much
				// cheaper than the three-way select below.
				select {
				case it = <-l.in:
					goto got
				default:
				}
				if p.draining.Load() > 0 {
					goto send
				}
				select {
				case it = <-l.in:
				case <-linger.C:
					goto send
				case <-ctx.Done():
					return
				}
			}
		got:
			if p.revoked(&it) {
				// Its generation is over; the next owner reads it again. Resolving keeps
				// the outstanding count honest; the commit is fenced by revoked.
				it.ack.resolve()
				continue
			}
			if !packer.fits(&it) {
				if len(batch) == 0 {
					// The decoder rejects records over the byte budget, so this cannot
					// happen; dead-letter rather than spin if it ever does.
					p.deadLetter(ctx, []item{it}, dlq.ReasonTooLarge, "record larger than the request byte limit", 0)
					continue
				}
				carry, hasCarry = it, true
				goto send
			}
			packer.add(&it)
			batch = append(batch, it)
			if len(batch) == 1 {
				linger.Reset(p.cfg.Linger)
			}
			if packer.full() {
				goto send
			}
		}
	send:
		linger.Stop()
		if p.opt != nil {
			p.deliverOptimized(ctx, batch)
		} else {
			body = batcher.Encode(body[:0], batch)
			p.deliver(ctx, batch, body)
			if cap(body) > laneBodyKeep {
				body = nil // a rare large body is not kept by every lane (MAX_INFLIGHT_BYTES)
			}
		}
		clear(batch) // drop references to message bytes
		batch = batch[:0]
		packer.reset()
		if ctx.Err() != nil {
			return
		}
	}
}

// liveItems drops items whose partition was revoked (they are read again by the next
// owner) and reports whether any are left.
func (p *Pipeline) liveItems(items []item) []item {
	if !p.anyRevoked(items) {
		return items // the common case: no copy
	}
	out := items[:0:0]
	for _, it := range items {
		if it.grp != nil {
			// An optimized object: hand back the revoked records behind it; the object goes
			// as it is while any record behind it is live.
			live := it.grp.srcs[:0]
			for _, s := range it.grp.srcs {
				if p.revoked(&s) {
					s.ack.resolve()
					continue
				}
				live = append(live, s)
			}
			it.grp.srcs = live
			if len(live) > 0 {
				out = append(out, it)
			}
			continue
		}
		if p.revoked(&it) {
			it.ack.resolve()
			continue
		}
		out = append(out, it)
	}
	return out
}

// deliver sends one request and acts on Braze's answer until every item is delivered or
// dead-lettered, or ctx ends (then nothing is acknowledged and Kafka keeps the records).
func (p *Pipeline) deliver(ctx context.Context, items []item, body []byte) {
	start := time.Now()
	attempt := 0
	haltAttempt := 0
	for {
		if ctx.Err() != nil {
			return
		}
		if live := p.liveItems(items); len(live) != len(items) {
			if len(live) == 0 {
				return
			}
			items = live
			body = batcher.Encode(nil, items)
		}
		attempt++
		sendStart := time.Now()
		sctx, span := p.startRequestSpan(ctx, items, body, attempt)
		resp := p.sender.Track(sctx, body)
		p.endRequestSpan(span, resp, resp.Waited, time.Since(sendStart)-resp.Waited, len(items), len(body))
		if ctx.Err() != nil {
			return // shutting down hard: nothing is acknowledged, Kafka keeps the records
		}
		p.stats.Requests[resp.Class].Add(1)
		p.stats.RequestsStatus[resp.Status/100%6].Add(1)
		if resp.Class != sink.Halt && p.halted.Load() && resp.Status != 0 {
			p.halted.Store(false)
			p.stats.Halted.Store(false)
			p.log.Info("Braze accepts requests again; resuming", "status", resp.Status)
		}
		switch resp.Class {
		case sink.Delivered:
			p.stats.ObjectsSent.Add(int64(len(items)))
			p.delivered(items)
			return
		case sink.Partial:
			p.stats.ObjectsSent.Add(int64(len(items)))
			rejected := namedErrors(items, resp.Errors)
			if rejected == nil {
				rejected = make([]string, len(items))
				p.log.Warn("Braze reported errors for objects not in the request", "errors", len(resp.Errors))
			}
			ok := items[:0:0]
			for i, it := range items {
				if rejected[i] != "" {
					p.deadLetter(ctx, []item{it}, dlq.ReasonBrazeRejected, rejected[i], attempt)
				} else {
					ok = append(ok, it)
				}
			}
			p.delivered(ok)
			return
		case sink.Split:
			// A fatal 400 that names objects in errors[] (Braze processed nothing): dead-letter
			// exactly those and send the rest again, which spends fewer requests than bisecting.
			if named := namedErrors(items, resp.Errors); len(named) > 0 {
				rest := items[:0:0]
				for i, it := range items {
					if named[i] != "" {
						p.deadLetter(ctx, []item{it}, dlq.ReasonBrazeRejected, named[i], attempt)
					} else {
						rest = append(rest, it)
					}
				}
				if len(rest) > 0 {
					p.deliver(ctx, rest, batcher.Encode(nil, rest))
				}
				return
			}
			p.stats.Splits.Add(1)
			if len(items) == 1 {
				reason := dlq.ReasonBrazeRejected
				if resp.Status == http.StatusRequestEntityTooLarge {
					reason = dlq.ReasonTooLarge
				}
				p.deadLetter(ctx, items, reason, resp.Describe(), attempt)
				return
			}
			// Halves in order keep the lane's order; each half bisects again on a 400.
			mid := len(items) / 2
			p.deliver(ctx, items[:mid], batcher.Encode(nil, items[:mid]))
			p.deliver(ctx, items[mid:], batcher.Encode(nil, items[mid:]))
			return
		case sink.Halt:
			haltAttempt++
			if !p.halted.Swap(true) {
				p.stats.Halted.Store(true)
			}
			p.haltLog.Do(func() {
				p.log.Error("HALTED: Braze refuses the worker's requests; nothing is dead-lettered or committed until this is fixed, and the worker resumes by itself",
					"status", resp.Status, "answer", resp.Describe(), "likely_cause", sink.HaltCause(resp))
			})
			if !sleepCtx(ctx, backoff(time.Second, p.cfg.HaltProbeMax, haltAttempt)+500*time.Millisecond) {
				return
			}
			attempt-- // a halt is not a delivery attempt for the record
		case sink.Retry:
			p.stats.Retries.Add(1)
			if p.cfg.RetryMaxDuration > 0 && time.Since(start) > p.cfg.RetryMaxDuration {
				p.deadLetter(ctx, items, dlq.ReasonRetriesExhausted,
					fmt.Sprintf("not delivered after %d attempts over %s; last answer: %s", attempt, time.Since(start).Round(time.Millisecond), resp.Describe()), attempt)
				return
			}
			wait := backoff(p.cfg.RetryInitial, p.cfg.RetryMax, attempt)
			if resp.Status == http.StatusTooManyRequests && resp.RetryAfter > 0 {
				// The sender's limiter pauses every lane for the same time; this lane just
				// waits it out too.
				wait = resp.RetryAfter
			}
			p.log.Debug("request will be retried", "lane", items[0].ack.ps.partition, "attempt", attempt, "answer", resp.Describe(), "wait", wait)
			if !sleepCtx(ctx, wait) {
				return
			}
		}
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
