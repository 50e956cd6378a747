package pipeline

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/braze-ingestor/braze-ingestor/batcher"
	"github.com/braze-ingestor/braze-ingestor/dedup"
	"github.com/braze-ingestor/braze-ingestor/schemas"
)

// Optimize configures the request optimizations (docs/optimizations.md). All are off by default; with all
// off the lanes take the plain path and nothing here runs.
//
//   - Coalesce merges a user's plain attribute updates within one request (batcher/coalesce.go).
//     A record merged into an earlier object costs no object, so a request can carry more
//     than MaxObjects records (at most 10×). If Braze rejects a merged object, every record
//     behind it is dead-lettered with Braze's error.
//   - SuppressUnchanged leaves out plain attribute writes whose value equals the last value
//     Braze accepted for that user and key (Store, recorded only after a 2xx that does not
//     name the object). A record with nothing left is acknowledged without being sent.
//   - Dedup skips events and purchases whose envelope id was delivered within the store's
//     window (not attribute writes: sending one again is what keeps a user's last write the
//     last after a replay, docs/optimizations.md).
type Optimize struct {
	Coalesce          bool
	SuppressUnchanged bool
	Dedup             bool
	// Store backs SuppressUnchanged and Dedup (dedup.NewMemory or dedup.NewRedis).
	Store dedup.Store
	// StoreTimeout bounds one store round trip (default 2s). On a store error the request
	// goes out unoptimized (fail open).
	StoreTimeout time.Duration
}

// OptimizeStats count what the optimizations saved.
type OptimizeStats struct {
	// SuppressedAttributes are attribute writes left out as unchanged: data points saved.
	SuppressedAttributes atomic.Int64
	// SuppressedRecords are attributes records acknowledged with nothing left to send.
	SuppressedRecords atomic.Int64
	// CoalescedObjects are objects saved by merging (records merged into an earlier object).
	CoalescedObjects atomic.Int64
	// CoalescedWrites are attribute writes replaced by a later write in the same merged
	// object: data points saved.
	CoalescedWrites atomic.Int64
	// DuplicatesSkipped are records skipped because their id was delivered before.
	DuplicatesSkipped atomic.Int64
	// StoreErrors count failed store round trips.
	StoreErrors atomic.Int64
}

// group is the set of source records behind an object sent in the optimized path: several
// when coalesced, one when rewritten (suppressed keys) or unchanged.
type group struct {
	srcs []item
	rec  *batchRecord
}

// batchRecord collects what Braze accepted during one optimized batch, recorded in the store
// in one round trip when the batch is done.
type batchRecord struct {
	units []item
}

type optimizer struct {
	cfg     Optimize
	store   dedup.Store
	timeout time.Duration
	log     rate.Sometimes
}

// dedups reports whether Dedup applies to it: an event or purchase with an envelope id.
func (o *Optimize) dedups(it *item) bool {
	return o.Dedup && len(it.id) > 0 && (it.kind == schemas.KindEvent || it.kind == schemas.KindPurchase)
}

func newOptimizer(o Optimize) (*optimizer, error) {
	if !o.Coalesce && !o.SuppressUnchanged && !o.Dedup {
		return nil, nil
	}
	if (o.SuppressUnchanged || o.Dedup) && o.Store == nil {
		return nil, errors.New("pipeline: attribute suppression and de-duplication need a store")
	}
	t := o.StoreTimeout
	if t <= 0 {
		t = 2 * time.Second
	}
	return &optimizer{cfg: o, store: o.Store, timeout: t, log: rate.Sometimes{Interval: 10 * time.Second}}, nil
}

// laneAcct accounts a lane's batch against the request limits. Without coalescing it is the
// packer; with it, a record that merges into an earlier object adds no object and is counted
// by its whole size (an upper bound: a merged object is never larger than its sources).
type laneAcct struct {
	packer   *batcher.Packer
	co       *batcher.Coalescer
	maxBytes int
	maxItems int
	items    int
	extra    int
}

func (p *Pipeline) newLaneAcct() *laneAcct {
	a := &laneAcct{packer: batcher.NewPacker(p.cfg.Limits), maxBytes: p.cfg.Limits.MaxBytes}
	if p.opt != nil && p.opt.cfg.Coalesce {
		a.co = &batcher.Coalescer{}
		a.maxItems = 10 * p.cfg.Limits.MaxObjects
	}
	return a
}

func (a *laneAcct) fits(it *item) bool {
	if a.co == nil {
		return a.packer.Fits(it.kind, len(it.raw))
	}
	if a.items >= a.maxItems {
		return false
	}
	if a.co.Merges(it.kind, it.ObjectUser(), it.raw) {
		return a.packer.Bytes()+a.extra+len(it.raw)+1 <= a.maxBytes
	}
	return a.packer.Fits(it.kind, len(it.raw)+a.extra)
}

func (a *laneAcct) add(it *item) {
	if a.co == nil {
		a.packer.Add(it.kind, len(it.raw))
		return
	}
	a.items++
	if a.co.Add(it.kind, it.ObjectUser(), it.raw) {
		a.extra += len(it.raw) + 1
	} else {
		a.packer.Add(it.kind, len(it.raw))
	}
}

// full reports whether the batch must go now. With coalescing a batch whose objects are at
// the limit still takes records that merge; the first that does not fit sends it.
func (a *laneAcct) full() bool {
	if a.co == nil {
		return a.packer.Full()
	}
	return a.items >= a.maxItems
}

func (a *laneAcct) reset() {
	a.packer.Reset()
	if a.co != nil {
		a.co.Reset()
		a.items, a.extra = 0, 0
	}
}

// attrRef names one attribute of one user (dedup.UserKey, attribute key).
type attrRef struct{ user, key string }

type restoreEntry struct {
	attrRef
	h uint64
}

// optScratch is the reusable working memory of one deliverOptimized call.
type optScratch struct {
	attrs   []parsedAttr
	units   []item
	groups  []group
	srcs    []item
	userIdx map[string]int
	known   map[attrRef]uint64
	touched map[attrRef]bool
	seenIDs map[string]bool
	co      batcher.Coalescer
}

var scratchPool = sync.Pool{New: func() any {
	return &optScratch{userIdx: map[string]int{}, known: map[attrRef]uint64{}, touched: map[attrRef]bool{}, seenIDs: map[string]bool{}}
}}

func (sc *optScratch) attrsFor(n int) []parsedAttr {
	if cap(sc.attrs) < n {
		sc.attrs = append(sc.attrs[:cap(sc.attrs)], make([]parsedAttr, n-cap(sc.attrs))...)
	}
	sc.attrs = sc.attrs[:n]
	for i := range sc.attrs {
		sc.attrs[i].ok, sc.attrs[i].user = false, ""
	}
	return sc.attrs
}

func (sc *optScratch) groupsFor(n int) ([]group, []item) {
	if cap(sc.groups) < n {
		sc.groups, sc.srcs = make([]group, n), make([]item, n)
	}
	return sc.groups[:n], sc.srcs[:n]
}

// release drops every reference to record bytes and returns the scratch to the pool.
func (sc *optScratch) release() {
	for i := range sc.attrs {
		a := &sc.attrs[i]
		clear(a.obj.Fields[:cap(a.obj.Fields)])
		clear(a.obj.Meta[:cap(a.obj.Meta)])
		a.obj = batcher.AttrObject{Meta: a.obj.Meta[:0], Fields: a.obj.Fields[:0]}
	}
	clear(sc.units[:cap(sc.units)])
	clear(sc.groups)
	clear(sc.srcs)
	clear(sc.userIdx)
	clear(sc.known)
	clear(sc.touched)
	clear(sc.seenIDs)
	sc.co.Reset()
	scratchPool.Put(sc)
}

// parsedAttr is an attributes record of the batch, parsed once.
type parsedAttr struct {
	ok   bool
	obj  batcher.AttrObject
	user string // dedup.UserKey of the record's identity
}

// optBatch is what the steps of one deliverOptimized call share.
type optBatch struct {
	sc      *optScratch
	attrs   []parsedAttr   // the batch's attributes records, parsed once (suppression only)
	q       dedup.Query    // the store lookup
	storeOK bool           // false when the lookup failed: nothing is suppressed or skipped by it
	rec     batchRecord    // what Braze accepts, recorded when the batch is done
	restore []restoreEntry // suppressed keys: forgotten by the lookup, still true
}

// deliverOptimized is the lane's send step when an optimization is on: de-duplicate and
// suppress (one store round trip), coalesce, deliver in requests that keep the limits, then
// record what Braze accepted (one store round trip).
func (p *Pipeline) deliverOptimized(ctx context.Context, batch []item) {
	sc := scratchPool.Get().(*optScratch)
	defer sc.release()
	cfg := p.opt.cfg
	b := &optBatch{sc: sc, storeOK: true}
	b.buildQuery(cfg, batch)
	p.lookup(ctx, b)
	units := p.buildUnits(b, batch)
	if cfg.Coalesce && len(units) > 1 {
		units = p.coalesceUnits(b, units)
	}
	p.sendPacked(ctx, units)
	if cfg.SuppressUnchanged || cfg.Dedup {
		p.recordAccepted(&b.rec, b.restore)
	}
}

// buildQuery prepares the store lookup: with suppression, the attributes records are parsed
// (into b.attrs) and each user's attribute keys asked for; with de-duplication, the ids.
func (b *optBatch) buildQuery(cfg Optimize, batch []item) {
	if cfg.SuppressUnchanged {
		b.attrs = b.sc.attrsFor(len(batch))
		b.q.Forget = true
		userIdx := b.sc.userIdx
		for i := range batch {
			if batch[i].kind != schemas.KindAttributes {
				continue
			}
			a := &b.attrs[i]
			if a.ok = batcher.ParseAttributes(batch[i].raw, batch[i].idKind, &a.obj) && a.obj.ID != 0; !a.ok {
				continue
			}
			a.user = dedup.UserKey(batch[i].user)
			ui, seen := userIdx[a.user]
			if !seen {
				ui = len(b.q.Users)
				userIdx[a.user] = ui
				b.q.Users = append(b.q.Users, dedup.UserAttrs{User: a.user})
			}
			for _, f := range a.obj.Fields {
				b.q.Users[ui].Keys = appendUnique(b.q.Users[ui].Keys, f.Key)
			}
		}
	}
	if cfg.Dedup {
		for i := range batch {
			if cfg.dedups(&batch[i]) {
				b.q.IDs = append(b.q.IDs, string(batch[i].id))
			}
		}
	}
}

// lookup runs the store lookup (one round trip, when there is something to ask) and notes
// the values Braze last accepted in sc.known. On a store error the batch goes out
// unoptimized: b.storeOK is false.
func (p *Pipeline) lookup(ctx context.Context, b *optBatch) {
	o := p.opt
	if (!o.cfg.SuppressUnchanged && !o.cfg.Dedup) || (len(b.q.Users) == 0 && len(b.q.IDs) == 0) {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, o.timeout)
	err := o.store.Lookup(lctx, &b.q)
	cancel()
	if err != nil {
		b.storeOK = false
		p.stats.Optimize.StoreErrors.Add(1)
		o.log.Do(func() {
			p.log.Warn("suppression/de-duplication store lookup failed; sending unoptimized", "error", err)
		})
		return
	}
	known := b.sc.known
	for _, u := range b.q.Users {
		for j, k := range u.Keys {
			if j < len(u.Hashes) && u.Hashes[j] != 0 {
				known[attrRef{u.User, k}] = u.Hashes[j]
			}
		}
	}
}

// buildUnits makes the objects to send, one per record in batch order, each with its group.
// A duplicate, and a record whose every attribute is suppressed, is acknowledged at once
// (p.delivered, in batch order) and makes none; a record with some attributes suppressed is
// rewritten without them.
func (p *Pipeline) buildUnits(b *optBatch, batch []item) []item {
	sc := b.sc
	units := sc.units[:0]
	idn := 0
	groups, srcs := sc.groupsFor(len(batch))
	for i := range batch {
		it := batch[i]
		if p.opt.cfg.dedups(&it) {
			dup := b.duplicate(string(it.id), idn)
			idn++
			if dup {
				p.stats.Optimize.DuplicatesSkipped.Add(1)
				p.delivered([]item{it})
				continue
			}
		}
		srcs[i] = it
		groups[i] = group{srcs: srcs[i : i+1 : i+1], rec: &b.rec}
		unit := item{kind: it.kind, idKind: it.idKind, user: it.user, raw: it.raw, index: it.index, id: it.id, ack: it.ack, grp: &groups[i]}
		if b.attrs != nil && b.attrs[i].ok {
			raw, left := p.suppress(b, &b.attrs[i], &it)
			if !left {
				p.delivered([]item{it})
				continue
			}
			unit.raw = raw
		}
		units = append(units, unit)
	}
	sc.units = units
	return units
}

// duplicate reports whether id, the n-th id of the batch, was delivered before: earlier in
// the batch, or as the store answered. It notes id as seen.
func (b *optBatch) duplicate(id string, n int) bool {
	dup := b.sc.seenIDs[id] || (b.storeOK && n < len(b.q.Seen) && b.q.Seen[n])
	b.sc.seenIDs[id] = true
	return dup
}

// suppress leaves out of record it (parsed as a) the plain attribute writes whose value is
// the one Braze last accepted, unless an earlier record of the batch wrote the key. It
// returns the object to send (it.raw when nothing is left out), and false when nothing is
// left: the record is then settled without a request.
func (p *Pipeline) suppress(b *optBatch, a *parsedAttr, it *item) ([]byte, bool) {
	known, touched := b.sc.known, b.sc.touched
	var drop []bool
	dropped := 0
	for j, f := range a.obj.Fields {
		k := attrRef{a.user, f.Key}
		if f.Plain && !batcher.FreeAttribute(f.Key) && !touched[k] {
			if h := known[k]; h != 0 && h == dedup.ValueHash(f.Value) {
				if drop == nil {
					drop = make([]bool, len(a.obj.Fields))
				}
				drop[j] = true
				dropped++
				b.restore = append(b.restore, restoreEntry{attrRef{a.user, f.Key}, h})
			}
		}
	}
	for j, f := range a.obj.Fields {
		if drop == nil || !drop[j] {
			touched[attrRef{a.user, f.Key}] = true
		}
	}
	if dropped == 0 {
		return it.raw, true
	}
	st := &p.stats.Optimize
	st.SuppressedAttributes.Add(int64(dropped))
	if dropped == len(a.obj.Fields) {
		st.SuppressedRecords.Add(1)
		return nil, false
	}
	return batcher.AppendAttributes(make([]byte, 0, len(it.raw)), &a.obj, func(j int) bool { return !drop[j] }), true
}

// coalesceUnits merges a user's plain attribute updates (batcher.Coalescer); a merged object's
// group holds the source records of every unit merged into it.
func (p *Pipeline) coalesceUnits(b *optBatch, units []item) []item {
	c := &b.sc.co
	c.Reset()
	for i := range units {
		c.Add(units[i].kind, units[i].ObjectUser(), units[i].raw)
	}
	res := c.Result()
	if len(res) >= len(units) {
		return units
	}
	merged := make([]item, 0, len(res))
	for _, r := range res {
		if len(r.Sources) == 1 {
			merged = append(merged, units[r.Sources[0]])
			continue
		}
		first := units[r.Sources[0]]
		g := &group{rec: &b.rec}
		for _, s := range r.Sources {
			g.srcs = append(g.srcs, units[s].grp.srcs...)
		}
		merged = append(merged, item{kind: first.kind, idKind: first.idKind, user: first.user, raw: r.Bytes, index: first.index, ack: first.ack, grp: g})
	}
	st := &p.stats.Optimize
	st.CoalescedObjects.Add(int64(len(units) - len(merged)))
	st.CoalescedWrites.Add(int64(c.Overwritten))
	return merged
}

// sendPacked delivers units in requests that keep the limits. Coalescing and suppression
// only shrink objects, so this is one request unless something unexpected grew.
func (p *Pipeline) sendPacked(ctx context.Context, units []item) {
	packer := batcher.NewPacker(p.cfg.Limits)
	start := 0
	for i := range units {
		if !packer.Fits(units[i].kind, len(units[i].raw)) && i > start {
			p.deliver(ctx, units[start:i], batcher.Encode(nil, units[start:i]))
			packer.Reset()
			start = i
		}
		packer.Add(units[i].kind, len(units[i].raw))
	}
	if start < len(units) {
		p.deliver(ctx, units[start:], batcher.Encode(nil, units[start:]))
	}
}

func appendUnique(s []string, v string) []string {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}

// recordAccepted stores, in one round trip, the values Braze accepted in this batch (in
// request order, so the last write per key wins), the suppressed values (forgotten by the
// lookup, still true) and the delivered ids.
func (p *Pipeline) recordAccepted(rec *batchRecord, restore []restoreEntry) {
	o := p.opt
	var up dedup.Update
	u := storeUpdate{up: &up, at: map[attrRef]attrPos{}}
	for _, r := range restore {
		u.set(r.user, r.key, r.h)
	}
	p.addAccepted(&u, rec)
	if len(up.Users) == 0 && len(up.IDs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	if err := o.store.Record(ctx, &up); err != nil {
		p.stats.Optimize.StoreErrors.Add(1)
		o.log.Do(func() {
			p.log.Warn("suppression/de-duplication store record failed; those values will be sent again", "error", err)
		})
	}
}

// addAccepted adds to u what Braze accepted in rec: the ids of the records behind each
// object (de-duplication) and the value of each attribute written (suppression).
func (p *Pipeline) addAccepted(u *storeUpdate, rec *batchRecord) {
	cfg := p.opt.cfg
	var obj batcher.AttrObject
	for _, it := range rec.units {
		if cfg.Dedup {
			for i := range it.grp.srcs {
				if cfg.dedups(&it.grp.srcs[i]) {
					u.up.IDs = append(u.up.IDs, string(it.grp.srcs[i].id))
				}
			}
		}
		if !cfg.SuppressUnchanged || it.kind != schemas.KindAttributes || !batcher.ParseAttributes(it.raw, it.idKind, &obj) || obj.ID == 0 {
			continue
		}
		user := dedup.UserKey(it.user)
		creates := obj.CreatesOrUpdates()
		for _, f := range obj.Fields {
			var h uint64 // 0: the value is now unknown (operator, nested, update-only)
			if f.Plain && creates && !obj.MergeObjects {
				h = dedup.ValueHash(f.Value)
			}
			u.set(user, f.Key, h)
		}
	}
}

// storeUpdate builds a dedup.Update holding each (user, key) once: a later set replaces the
// value.
type storeUpdate struct {
	up *dedup.Update
	at map[attrRef]attrPos
}

// attrPos is where an attribute sits in a dedup.Update: Users[u].Keys[k].
type attrPos struct{ u, k int }

func (u *storeUpdate) set(user, key string, h uint64) {
	if p, ok := u.at[attrRef{user, key}]; ok {
		u.up.Users[p.u].Hashes[p.k] = h
		return
	}
	ui := -1
	for i := range u.up.Users {
		if u.up.Users[i].User == user {
			ui = i
			break
		}
	}
	if ui < 0 {
		ui = len(u.up.Users)
		u.up.Users = append(u.up.Users, dedup.UserAttrs{User: user})
	}
	u.at[attrRef{user, key}] = attrPos{ui, len(u.up.Users[ui].Keys)}
	u.up.Users[ui].Keys = append(u.up.Users[ui].Keys, key)
	u.up.Users[ui].Hashes = append(u.up.Users[ui].Hashes, h)
}

// accepted notes objects Braze accepted for the batch's store record, and forgets what the
// store knows of users Braze deleted.
func (p *Pipeline) accepted(items []item) {
	var deleted []string
	for _, it := range items {
		if it.grp != nil && it.grp.rec != nil {
			it.grp.rec.units = append(it.grp.rec.units, it)
		}
		if it.kind == schemas.KindDelete && p.opt.cfg.SuppressUnchanged {
			deleted = append(deleted, dedup.UserKey(it.user))
		}
	}
	if len(deleted) > 0 {
		p.forgetDeleted(deleted)
	}
}

// forgetDeleted forgets the attribute values Braze accepted for users it has now deleted:
// otherwise a later write of the same value to the re-created profile would be suppressed
// and the profile would lack it. It runs before the delete is settled, so the user's later
// records (which wait for it) are looked up after it (docs/optimizations.md).
func (p *Pipeline) forgetDeleted(users []string) {
	o := p.opt
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	if err := o.store.Record(ctx, &dedup.Update{ForgetUsers: users}); err != nil {
		p.stats.Optimize.StoreErrors.Add(1)
		p.log.Warn("suppression store: cannot forget deleted users; their earlier attribute values may be left out of a re-created profile until SUPPRESS_TTL passes", "users", len(users), "error", err)
	}
}
