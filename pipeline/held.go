package pipeline

import (
	"context"
	"sync"
	"time"

	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"github.com/braze-ingestor/braze-ingestor/schemas"
)

// Per-user order across endpoints (docs/architecture.md "Per-user order"). Every record goes
// to the lane of its user. /users/track records go into the lane's batch as always; a record
// for another endpoint holds its user: the user's later records wait in the lane, in Kafka
// order, until it settles. A held user's records move on one step at a time:
//
//   - a non-track record waits until the user's track records in the lane's batch or in
//     flight have settled, then for the spacing since the last of them settled (Spacing
//     [Track][ep]), and goes to its endpoint sender (endpoints.go); the user stays held until
//     it settles there;
//   - once it settled, the user's next records wait for Spacing[ep][next]: track records then
//     go into the batch, the next non-track record starts over.
//
// Only the lane's goroutine touches the table; endpoint senders report settled records
// through the lane's mailbox. Other users' records pass by at full speed.

// heldUser is a user whose records wait in the lane.
type heldUser struct {
	key   schemas.User
	queue []item // in Kafka order
	// out: a non-track record of the user is at its endpoint sender.
	out bool
	// waitTrack: the head (non-track) waits for the user's track records to settle.
	waitTrack bool
	// prev and prevAt: the endpoint and time of the user's last settled non-track record,
	// while no track record followed it (hasPrev).
	prev    endpoint.Endpoint
	prevAt  time.Time
	hasPrev bool
	due     time.Time // when the head may go; zero until computed
}

// settledNote tells a lane that a held user's outstanding record has settled.
type settledNote struct {
	user schemas.User
	ep   endpoint.Endpoint
	at   time.Time
}

// mailbox is an unbounded queue that never blocks its sender: the receiver waits on wake.
type mailbox[T any] struct {
	mu    sync.Mutex
	items []T
	wake  chan struct{} // capacity 1
}

func newMailbox[T any]() *mailbox[T] { return &mailbox[T]{wake: make(chan struct{}, 1)} }

func (m *mailbox[T]) put(v ...T) {
	m.mu.Lock()
	m.items = append(m.items, v...)
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// take appends what is queued to dst and empties the queue.
func (m *mailbox[T]) take(dst []T) []T {
	m.mu.Lock()
	dst = append(dst, m.items...)
	clear(m.items)
	m.items = m.items[:0]
	m.mu.Unlock()
	return dst
}

// heldTable is a lane's held users; only the lane's goroutine uses it.
type heldTable struct {
	users map[schemas.User]*heldUser
	// waiting counts users whose head waits for their track records: while it is > 0 no
	// other lane's request takes this lane's batch (slot.keep), so "in flight" stays known.
	waiting int
	timer   *time.Timer
	armed   bool
	armedAt time.Time
	epoch   int64 // Pipeline.revokeEpoch when the queues were last swept
	notes   []settledNote
	// tend: something a held user may wait for happened (a settle, a request, the timer).
	tend bool
}

// heldCheck is the longest a lane with held users sleeps without looking at them: revoked
// partitions' records leave their queues within it.
const heldCheck = time.Second

// hold routes a record that is not plain track traffic for an unheld user: it joins its
// user's queue, or holds its user. It reports false when the record belongs in the batch.
func (p *Pipeline) hold(ctx context.Context, r *laneRun, it item) bool {
	key := it.ObjectUser()
	h := r.held.users[key]
	if h == nil {
		if it.kind.Tracked() {
			return false
		}
		h = &heldUser{key: key}
		r.held.users[key] = h
		p.stats.HeldUsers.Add(1)
	}
	it.ack.ps.parked.Add(1)
	h.queue = append(h.queue, it)
	if len(h.queue) == 1 && !h.out {
		now := time.Now()
		p.advance(ctx, r, h, now)
		r.held.arm(now, h.due, false)
	}
	return true
}

// tendHeld takes the settle notes, drops revoked records and moves every held user on that
// can move. It runs on the lane's goroutine at a turn of await after something a held user
// may wait for happened (heldTable.tend).
func (p *Pipeline) tendHeld(ctx context.Context, r *laneRun) {
	t := &r.held
	t.tend = false
	t.notes = r.l.notes.take(t.notes[:0])
	for _, n := range t.notes {
		if h := t.users[n.user]; h != nil && h.out {
			h.out, h.prev, h.prevAt, h.hasPrev, h.due = false, n.ep, n.at, true, time.Time{}
		}
	}
	clear(t.notes)
	if len(t.users) == 0 {
		return
	}
	if e := p.revokeEpoch.Load(); e != t.epoch {
		t.epoch = e
		for _, h := range t.users {
			p.sweepRevoked(h)
		}
	}
	now := time.Now()
	var next time.Time
	for _, h := range t.users {
		if !h.out {
			p.advance(ctx, r, h, now)
		}
		if len(h.queue) == 0 && !h.out {
			p.unhold(r, h)
			continue
		}
		if !h.out && !h.due.IsZero() && (next.IsZero() || h.due.Before(next)) {
			next = h.due
		}
	}
	if len(t.users) > 0 {
		t.arm(now, next, true)
	}
}

// timerC is the held timer's channel while it is armed, else nil.
func (t *heldTable) timerC() <-chan time.Time {
	if t.armed {
		return t.timer.C
	}
	return nil
}

// arm sets the held timer to fire by at (at most heldCheck from now), unless it already
// fires earlier; reset re-arms it from scratch.
func (t *heldTable) arm(now, at time.Time, reset bool) {
	d := heldCheck
	if !at.IsZero() {
		d = min(d, max(at.Sub(now), time.Millisecond))
	}
	when := now.Add(d)
	if t.armed && !reset && !when.Before(t.armedAt) {
		return
	}
	if t.armed && !t.timer.Stop() {
		select {
		case <-t.timer.C:
		default:
		}
	}
	t.timer.Reset(d)
	t.armed, t.armedAt = true, when
}

// unhold forgets a user with nothing left in the lane.
func (p *Pipeline) unhold(r *laneRun, h *heldUser) {
	if h.waitTrack {
		p.stopWaiting(r, h)
	}
	delete(r.held.users, h.key)
	p.stats.HeldUsers.Add(-1)
}

// sweepRevoked drops the queued records of revoked partitions (the next owner reads them).
func (p *Pipeline) sweepRevoked(h *heldUser) {
	q := h.queue[:0]
	for _, it := range h.queue {
		if p.revoked(&it) {
			it.ack.ps.parked.Add(-1)
			it.ack.resolve()
			continue
		}
		q = append(q, it)
	}
	clear(h.queue[len(q):])
	h.queue = q
}

// pop removes the head of h's queue, no longer parked.
func (h *heldUser) pop() item {
	it := h.queue[0]
	it.ack.ps.parked.Add(-1)
	h.queue[0] = item{}
	h.queue = h.queue[1:]
	if len(h.queue) == 0 {
		h.queue = nil
	}
	return it
}

// advance moves h's queue on as far as it may now: track records into the batch, a
// non-track head to its endpoint sender once its user's track records settled and its
// spacing passed.
func (p *Pipeline) advance(ctx context.Context, r *laneRun, h *heldUser, now time.Time) {
	for !h.out && len(h.queue) > 0 {
		head := &h.queue[0]
		if p.revoked(head) {
			h.pop().ack.resolve()
			continue
		}
		ep := head.kind.Endpoint()
		if ep != endpoint.Track && p.trackPending(r, h.key) {
			if !h.waitTrack {
				h.waitTrack = true
				p.startWaiting(r)
			}
			h.due = time.Time{}
			return
		}
		if h.waitTrack {
			p.stopWaiting(r, h)
		}
		if due := p.spacedAt(r, h, ep); now.Before(due) {
			h.due = due
			return
		}
		h.due = time.Time{}
		if ep == endpoint.Track {
			if !p.batchTracked(ctx, r, h) {
				return // the batch is full: the next turn of await tries again
			}
			h.hasPrev = false // the user's last settle is now a track one (lastTrack)
			continue
		}
		p.dispatch(ctx, h.pop())
		h.out = true
	}
}

// spacedAt is when h's head for ep may go: Spacing[prev][ep] after its last non-track record
// settled and, for a non-track head, Spacing[Track][ep] after its last track settle.
func (p *Pipeline) spacedAt(r *laneRun, h *heldUser, ep endpoint.Endpoint) time.Time {
	var at time.Time
	if h.hasPrev {
		at = h.prevAt.Add(p.cfg.Spacing[h.prev][ep])
	}
	if ep != endpoint.Track {
		if t := r.l.track.last(h.key.Hash); t > 0 {
			at = maxTime(at, time.Unix(0, t).Add(p.cfg.Spacing[endpoint.Track][ep]))
		}
	}
	return at
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// startWaiting keeps other lanes' requests from taking this lane's batch while a user waits
// for its track records: only the lane's own requests then carry them.
func (p *Pipeline) startWaiting(r *laneRun) {
	r.held.waiting++
	if r.held.waiting == 1 {
		r.l.slot.mu.Lock()
		r.l.slot.keep = true
		r.l.slot.mu.Unlock()
	}
}

func (p *Pipeline) stopWaiting(r *laneRun, h *heldUser) {
	h.waitTrack = false
	r.held.waiting--
	if r.held.waiting == 0 {
		r.l.slot.mu.Lock()
		r.l.slot.keep = false
		r.l.slot.mu.Unlock()
	}
}

// trackPending reports whether user u may have track records in the lane's batch or in a
// request in flight: one of its records is in the batch (or is the carry), or the lane's
// batch rides in another lane's request (busy; which users it carries is not kept, so any
// user waits for it).
func (p *Pipeline) trackPending(r *laneRun, u schemas.User) bool {
	if r.hasCarry && r.carry.ObjectUser() == u {
		return true
	}
	s := &r.l.slot
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy != nil {
		return true
	}
	for i := range s.items {
		if s.items[i].user == u.Hash && s.items[i].idKind == u.ID {
			return true
		}
	}
	return false
}

// batchTracked moves h's leading track records into the batch; false when the batch has no
// room for the next one.
func (p *Pipeline) batchTracked(ctx context.Context, r *laneRun, h *heldUser) bool {
	if r.hasCarry {
		return false
	}
	for len(h.queue) > 0 && h.queue[0].kind.Tracked() {
		it := &h.queue[0]
		if p.revoked(it) {
			h.pop().ack.resolve()
			continue
		}
		if p.addToBatch(ctx, r, it) == batchNoRoom {
			return false
		}
		h.pop()
	}
	return true
}

// dispatch hands a non-track record to its endpoint sender.
func (p *Pipeline) dispatch(ctx context.Context, it item) {
	es := p.endpoints[it.kind.Endpoint()]
	if es == nil {
		// New dead-letters records of disabled endpoints before they reach a lane; a record
		// fed past that check is still not lost.
		p.deadLetter(ctx, []item{it}, dlq.ReasonInvalidRecord, disabledMessage(it.kind.Endpoint()), 0)
		p.lanes[it.user%uint64(len(p.lanes))].notes.put(settledNote{user: it.ObjectUser(), ep: it.kind.Endpoint(), at: time.Now()})
		return
	}
	es.in.put(it)
}

// disabledMessage is the dead-letter error of a record whose endpoint is not enabled.
func disabledMessage(ep endpoint.Endpoint) string {
	return "endpoint " + ep.Name() + " is not enabled: add it to ENDPOINTS"
}
