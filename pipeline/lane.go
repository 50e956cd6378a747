package pipeline

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/braze-ingestor/braze-ingestor/batcher"
	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/schemas"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// item is one valid record on its way to Braze.
type item struct {
	kind schemas.Kind
	// pack is the record's schemas.Record.PackKey: only records of one kind and pack share
	// a request of another endpoint than /users/track.
	pack uint32
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

// lane holds one user-hash slice of the traffic. A lane's records are in at most one request
// in flight, which is retried before anything behind it: that keeps each user's records in
// order. A request may carry several lanes' records (see lead): each of those lanes then waits
// for it to be settled before its records go into another request.
type lane struct {
	id   int
	in   chan item
	slot slot
	// notes carries the settles of held users' records from the endpoint senders (held.go).
	notes *mailbox[settledNote]
	// track holds when the lane's users' track records last settled (tracksettle.go); nil
	// while only /users/track is enabled.
	track *trackSettles
}

// slot is the batch a lane is collecting. Another lane's request may carry it (topUp), so it
// is guarded by mu.
type slot struct {
	mu    sync.Mutex
	items []item
	acct  *laneAcct
	first time.Time     // when the oldest record in items arrived
	busy  chan struct{} // non-nil while records of this lane are in a request in flight; closed once settled
	n     atomic.Int32  // len(items), read without mu to pick the fullest lanes
	kick  chan struct{} // (capacity 1) another lane took records from this batch
	// keep: a held user waits for its track records (held.go): other lanes' requests do not
	// take this batch meanwhile.
	keep bool
}

// laneRun is what a lane's goroutine holds besides its slot.
type laneRun struct {
	l        *lane
	prog     *progress // liveness.go
	carry    item      // the record that did not fit the batch
	hasCarry bool
	timer    *time.Timer
	grant    chan error // non-nil while the limiter's grant is awaited
	granted  bool       // holds one grant of the limiter
	req      []item     // the request being sent
	acct     *laneAcct  // accounts the request while it is topped up
	done     chan struct{}
	from     []taken // other lanes whose records the request carries
	cand     []*lane
	body     []byte
	retries  sync.WaitGroup // sendMerged's per-lane retries
	held     heldTable      // users whose records wait in the lane (held.go)
}

// taken is a lane whose records a request carries, and the channel its busy mark holds.
type taken struct {
	l    *lane
	done chan struct{}
}

// Granter is implemented by senders whose rate limiter can grant a send before the request is
// packed (sink.Guard): the lane packs what arrived while it waited, and sends under
// sink.WithGrant. Usage is the share of the request budget in use (sink.Limiter.Usage).
type Granter interface {
	Grant(ctx context.Context) error
	Usage() float64
}

// runLane collects, encodes, sends and settles, one request at a time; how a request is sent
// is the sender chain's business (chain.go).
func (p *Pipeline) runLane(ctx context.Context, l *lane) {
	r := &laneRun{l: l, timer: time.NewTimer(time.Hour), acct: p.newLaneAcct(), req: make([]item, 0, p.cfg.Limits.MaxObjects)}
	r.timer.Stop()
	r.held.users, r.held.timer = map[schemas.User]*heldUser{}, time.NewTimer(time.Hour)
	r.held.timer.Stop()
	r.held.epoch = p.revokeEpoch.Load()
	l.slot.mu.Lock()
	l.slot.acct, l.slot.kick = p.newLaneAcct(), make(chan struct{}, 1)
	l.slot.mu.Unlock()
	r.prog = p.watch.add(fmt.Sprintf("lane %d", l.id))
	defer p.watch.remove(r.prog)
	defer r.retries.Wait() // they end with ctx
	ctx = p.withUserSends(withProgress(ctx, r.prog))
	for {
		if !p.await(ctx, r) {
			return
		}
		if !p.lead(r) {
			continue // another lane's request took the batch; the grant is kept
		}
		// The request goes with the grant the lane waited for: the limiter is not asked again
		// (a retry is).
		gctx := sink.WithGrant(ctx)
		switch {
		case len(r.from) > 0:
			p.sendMerged(ctx, gctx, r)
		case p.opt != nil:
			p.deliverOptimized(gctx, r.req)
		default:
			r.body = p.deliverCapped(gctx, r.req, r.body)
		}
		clear(r.req) // drop references to message bytes
		r.req = r.req[:0]
		p.release(r.l, r.done)
		r.held.tend = true // a user may have waited for this request
		if ctx.Err() != nil {
			return
		}
	}
}

// sendMerged sends a request carrying several lanes' records once. What is left to retry goes
// back into one request per lane, retried independently: a payload Braze keeps refusing then
// holds only its own lane, as the lane's own request would, not every lane it rode with.
func (p *Pipeline) sendMerged(ctx, gctx context.Context, r *laneRun) {
	body := batcher.Encode(r.body[:0], r.req)
	res := p.chain.send(gctx, &request{items: r.req, body: body, once: true})
	if cap(body) <= laneBodyKeep {
		r.body = body
	}
	p.settle(ctx, r.req, &res)
	if ctx.Err() != nil || !res.any(sink.OutcomeRetryLater) {
		for _, t := range r.from {
			p.release(t.l, t.done)
		}
		return
	}
	groups := map[*lane][]item{}
	for i, it := range r.req {
		if res.at(i).Outcome == sink.OutcomeRetryLater {
			l := p.lanes[it.user%uint64(len(p.lanes))]
			groups[l] = append(groups[l], it)
		}
	}
	// The retries' waits are not this lane's: they carry no progress mark (liveness.go).
	rctx := withProgress(ctx, nil)
	for _, t := range r.from {
		g := groups[t.l]
		if len(g) == 0 {
			p.release(t.l, t.done)
			continue
		}
		r.retries.Add(1)
		go func() {
			defer r.retries.Done()
			p.deliver(rctx, g, batcher.Encode(nil, g))
			p.release(t.l, t.done)
		}()
	}
	if own := groups[r.l]; len(own) > 0 {
		p.deliver(ctx, own, batcher.Encode(nil, own))
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

// await accepts records until the lane may send: its batch is ready (full, lingered for
// linger(), or draining), none of its records is in flight, and the limiter granted a send.
// While it waits for the grant it keeps accepting records into the batch, so that a request
// is packed when it can be sent. It reports false when ctx ends.
func (p *Pipeline) await(ctx context.Context, r *laneRun) bool {
	for {
		if r.held.tend {
			p.tendHeld(ctx, r)
		}
		if r.hasCarry && r.l.slot.n.Load() == 0 {
			r.hasCarry = false
			p.accept(ctx, r, r.carry)
			continue
		}
		b := p.batchState(r)
		var spare chan time.Time
		if b.ready && b.busy == nil {
			if r.granted {
				return true
			}
			if p.granter == nil {
				r.granted = true
				continue
			}
			if r.grant == nil {
				r.grant = p.askGrant(ctx)
			}
			spare = p.spare
		} else if r.granted {
			// Another lane's request took the batch: the grant goes to a lane that can
			// send now rather than idle here (a grant unused is a request lost).
			r.granted = false
			p.donate()
		}
		if !p.awaitEvent(ctx, r, b, spare) {
			return false
		}
	}
}

// batch is what await knows of the lane's batch at one look.
type batch struct {
	ready, full bool
	busy        chan struct{}    // non-nil while the lane's records are in a request in flight
	deadline    <-chan time.Time // the linger's end, while a batch waits for it
}

// batchState looks at the lane's batch: it is ready when full, when draining, or once it has
// waited the linger (then deadline is nil; before, deadline fires at the linger's end).
func (p *Pipeline) batchState(r *laneRun) batch {
	s := &r.l.slot
	s.mu.Lock()
	n, busy, first, full := len(s.items), s.busy, s.first, s.acct.full()
	s.mu.Unlock()
	b := batch{full: full || r.hasCarry, busy: busy}
	b.ready = n > 0 && (b.full || p.draining.Load() > 0)
	if n > 0 && !b.ready {
		if d := time.Until(first.Add(p.linger())); d > 0 {
			r.timer.Reset(d)
			b.deadline = r.timer.C
		} else {
			b.ready = true
		}
	}
	return b
}

// awaitEvent waits for the next thing that may change what await does: a record, the grant,
// a spare grant, the batch's request settled or taken, a held user's turn, the linger's end.
// It reports false when ctx ends.
func (p *Pipeline) awaitEvent(ctx context.Context, r *laneRun, b batch, spare chan time.Time) bool {
	var in chan item
	if !b.full {
		in = r.l.in
	}
	heldC := r.held.timerC()
	r.prog.idle() // waiting for records, the linger, the grant or another lane's request
	select {
	case it := <-in:
		r.prog.work()
		p.accept(ctx, r, it)
	case err := <-r.grant:
		r.grant = nil
		if err == nil && r.granted {
			p.donate() // a spare grant came first
		}
		r.granted = r.granted || err == nil
	case at := <-spare:
		r.granted = time.Since(at) < spareMaxAge
	case <-b.busy:
		r.held.tend = true
	case <-r.l.slot.kick:
	case <-r.l.notes.wake:
		r.held.tend = true
	case <-heldC:
		r.held.armed, r.held.tend = false, true
	case <-b.deadline:
	case <-ctx.Done():
		return false
	}
	r.prog.work()
	if b.deadline != nil {
		r.timer.Stop()
	}
	return true
}

// spareMaxAge bounds how long a grant no lane could use stays usable: older ones are dropped,
// so that unused grants do not add up to a burst beyond the limiter's pace.
const spareMaxAge = 500 * time.Millisecond

// donate hands a grant this lane cannot use now to a lane waiting for one.
func (p *Pipeline) donate() {
	select {
	case p.spare <- time.Now():
	default:
	}
}

// askGrant waits for the limiter's grant in the background.
func (p *Pipeline) askGrant(ctx context.Context) chan error {
	ch := make(chan error, 1)
	go func() { ch <- p.granter.Grant(ctx) }()
	return ch
}

// accept adds it, and then whatever is already queued, to the batch while it has room. A
// record of another endpoint, or of a held user, goes to the held table instead (held.go).
func (p *Pipeline) accept(ctx context.Context, r *laneRun, it item) {
	for {
		switch {
		case (!it.kind.Tracked() || len(r.held.users) > 0) && p.hold(ctx, r, it):
		case p.revoked(&it):
			// Its generation is over; the next owner reads it again. Resolving keeps
			// the outstanding count honest; the commit is fenced by revoked.
			it.ack.resolve()
		default:
			// addToBatch, inlined: a call here costs about 12% of this per-record path
			// (BenchmarkAcceptTrack, BENCHMARKS.md).
			s := &r.l.slot
			s.mu.Lock()
			ok, empty := s.acct.fits(&it), len(s.items) == 0
			if ok {
				s.acct.add(&it)
				if empty {
					s.first = time.Now()
				}
				s.items = append(s.items, it)
				s.n.Store(int32(len(s.items)))
			}
			full := s.acct.full()
			s.mu.Unlock()
			switch {
			case !ok && empty:
				p.tooLarge(ctx, &it)
			case !ok:
				r.carry, r.hasCarry = it, true
				return
			case full:
				return
			}
		}
		select {
		case it = <-r.l.in: // under backlog the next record is already queued
		default:
			return
		}
	}
}

// What addToBatch did with a record.
const (
	batchAdded  = iota // added; the batch has room for more
	batchFull          // added; the batch is full
	batchNoRoom        // not added: the batch has no room for it
)

// addToBatch adds it to the lane's batch if it fits (accept inlines the same steps).
func (p *Pipeline) addToBatch(ctx context.Context, r *laneRun, it *item) int {
	s := &r.l.slot
	s.mu.Lock()
	ok, empty := s.acct.fits(it), len(s.items) == 0
	if ok {
		s.acct.add(it)
		if empty {
			s.first = time.Now()
		}
		s.items = append(s.items, *it)
		s.n.Store(int32(len(s.items)))
	}
	full := s.acct.full()
	s.mu.Unlock()
	switch {
	case !ok && empty:
		p.tooLarge(ctx, it)
	case !ok:
		return batchNoRoom
	case full:
		return batchFull
	}
	return batchAdded
}

// tooLarge dead-letters a record that does not fit an empty batch. The decoder rejects
// records over the byte budget, so this cannot happen; dead-letter rather than spin if it
// ever does.
func (p *Pipeline) tooLarge(ctx context.Context, it *item) {
	p.deadLetter(ctx, []item{*it}, dlq.ReasonTooLarge, "record larger than the request byte limit", 0)
}

// lead turns the lane's batch into a request, marks the lane busy and, where allowed, tops
// the request up with other lanes' batches. It reports false when another lane's request
// took the batch meanwhile.
func (p *Pipeline) lead(r *laneRun) bool {
	s := &r.l.slot
	s.mu.Lock()
	if s.busy != nil || len(s.items) == 0 {
		s.mu.Unlock()
		return false
	}
	r.done = make(chan struct{})
	r.req = append(r.req[:0], s.items...)
	clear(s.items)
	s.items = s.items[:0]
	s.n.Store(0)
	s.acct.reset()
	s.first = time.Time{}
	s.busy = r.done
	s.mu.Unlock()
	r.granted = false
	r.from = r.from[:0]
	if p.merge && p.objectCap() == p.cfg.Limits.MaxObjects {
		p.topUp(r)
	}
	p.noteFill(float64(len(r.req)) / float64(p.cfg.Limits.MaxObjects))
	return true
}

// noteFill adds a request's fill (objects over the object limit) to the decaying average
// that linger reads.
func (p *Pipeline) noteFill(f float64) {
	f = min(f, 1)
	for {
		old := p.fill.Load()
		avg := math.Float64frombits(old)
		if p.fill.CompareAndSwap(old, math.Float64bits(avg+fillWeight*(f-avg))) {
			return
		}
	}
}

// topUp fills the request with other lanes' records, fullest lanes first, skipping lanes
// whose records are in flight. Every lane it takes from is busy until the request is settled.
func (p *Pipeline) topUp(r *laneRun) {
	a := r.acct
	a.reset()
	for i := range r.req {
		a.add(&r.req[i])
	}
	if a.full() {
		return
	}
	r.cand = r.cand[:0]
	for _, o := range p.lanes {
		if o != r.l && o.slot.n.Load() > 0 {
			r.cand = append(r.cand, o)
		}
	}
	slices.SortFunc(r.cand, func(x, y *lane) int { return int(y.slot.n.Load() - x.slot.n.Load()) })
	for _, o := range r.cand {
		p.takeFrom(r, o)
		if a.full() {
			return
		}
	}
}

// takeFrom moves the records of o's batch that fit into the request, oldest first.
func (p *Pipeline) takeFrom(r *laneRun, o *lane) {
	s := &o.slot
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy != nil || s.keep || len(s.items) == 0 {
		return
	}
	k := 0
	for k < len(s.items) && r.acct.fits(&s.items[k]) {
		r.acct.add(&s.items[k])
		k++
	}
	if k == 0 {
		return
	}
	r.req = append(r.req, s.items[:k]...)
	rest := copy(s.items, s.items[k:])
	clear(s.items[rest:])
	s.items = s.items[:rest]
	s.acct.reset()
	for i := range s.items {
		s.acct.add(&s.items[i])
	}
	if rest == 0 {
		s.first = time.Time{}
		// The whole batch rode along: a request the lane would have sent on its own.
		p.stats.RequestsSaved.Add(1)
	}
	s.n.Store(int32(rest))
	done := make(chan struct{})
	s.busy = done
	r.from = append(r.from, taken{o, done})
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// release ends a lane's part in a request: the lane may send again.
func (p *Pipeline) release(l *lane, done chan struct{}) {
	l.slot.mu.Lock()
	if l.slot.busy == done {
		l.slot.busy = nil
	}
	l.slot.mu.Unlock()
	close(done)
}

// Below usageLow of the request budget a batch lingers cfg.Linger; from there to usageHigh
// the linger grows to cfg.MaxLatency. Waiting longer only saves requests that leave partly
// filled: the growth is scaled down as the recent fill (an average over about 1/fillWeight
// requests) rises from fillLow to fillFull, where it is nil.
const (
	usageLow   = 0.25
	usageHigh  = 0.75
	fillLow    = 0.75
	fillFull   = 0.95
	fillWeight = 0.02
)

// linger is how long a batch that is not full waits for more records before it asks to be
// sent: BATCH_LINGER while the request budget is far from used (or requests leave full
// anyway), longer as usage approaches it, never beyond MAX_LATENCY.
func (p *Pipeline) linger() time.Duration {
	lo, hi := p.cfg.Linger, p.cfg.MaxLatency
	if p.granter == nil || hi <= lo {
		return lo
	}
	f := clamp01((p.granter.Usage() - usageLow) / (usageHigh - usageLow))
	f *= clamp01((fillFull - math.Float64frombits(p.fill.Load())) / (fillFull - fillLow))
	return lo + time.Duration(f*float64(hi-lo))
}

func clamp01(x float64) float64 { return max(0, min(1, x)) }

func (p *Pipeline) delivered(items []item) {
	if p.opt != nil {
		p.accepted(items)
	}
	var kinds [schemas.NumKinds]int64
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
	// Counted before the acknowledgements: whoever sees the records settled (a commit, a
	// test waiting for the watermark) sees them counted.
	for k, c := range kinds {
		if c > 0 {
			p.stats.RecordsDelivered[k].Add(c)
			p.stats.Endpoint[schemas.Kind(k).Endpoint()].Delivered.Add(c)
		}
	}
	done.flush()
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
