package brazesim

import (
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
)

type objErr struct {
	typ   string
	array string
	index int
}

// serveTrack handles POST /users/track after auth, limits, content type and size.
func (s *Sim) serveTrack(w http.ResponseWriter, r *http.Request, body []byte, now time.Time, lat time.Duration) {
	seq := s.reqSeq.Add(1)
	rs := s.reqPool.Get().(*reqState)
	defer s.reqPool.Put(rs)
	rs.tr.reset()
	rs.users = rs.users[:0]
	o := parseOpts{countOnly: s.cfg.CountOnly, validate: s.cfg.Validate, now: now, blackList: s.blacklist, blackPfx: s.cfg.BlacklistedPrefix}
	tr := &rs.tr
	if fatal := parseTrack(body, tr, &o); fatal != "" {
		// Invalid JSON -> 400 (docs/braze-rules.md §2 status table).
		s.writeMsg(w, endpoint.Track, http.StatusBadRequest, fatal)
		return
	}
	total := tr.nA + tr.nE + tr.nP
	for {
		cur := s.ctr.maxObjects.Load()
		if int64(total) <= cur || s.ctr.maxObjects.CompareAndSwap(cur, int64(total)) {
			break
		}
	}
	// Object limits (docs/braze-rules.md §1 "Per-request object limits"): 75 in total
	// (combined) or 75 per array (per_array) -> 400 "Max Input Length Exceeded".
	max := s.cfg.MaxObjects
	if (s.cfg.Mode == ModeCombined && total > max) ||
		(s.cfg.Mode == ModePerArray && (tr.nA > max || tr.nE > max || tr.nP > max)) {
		s.ctr.limitRejected.Add(1)
		s.writeMsg(w, endpoint.Track, http.StatusBadRequest, msgMaxInput)
		return
	}
	if total == 0 {
		// docs/braze-rules.md §2 "Fatal errors" (3P fixture text).
		s.writeMsg(w, endpoint.Track, http.StatusBadRequest, msgValidData)
		return
	}
	if s.cfg.Fatal2xxShare > 0 && mrand.Float64() < s.cfg.Fatal2xxShare {
		s.writeFatal2xx(w, rs.out[:0])
		return
	}
	if s.cfg.CountOnly {
		sleepCtx(r.Context(), lat)
		s.count(tr.nA, tr.nE, tr.nP, 0)
		s.writeJSON(w, endpoint.Track, http.StatusCreated, appendSuccess(rs.out[:0], tr, tr.nA, tr.nE, tr.nP, nil))
		return
	}

	var errs []objErr
	okA, okE, okP := 0, 0, 0
	for i := range tr.attrs {
		if e := tr.attrs[i].err; e != "" {
			errs = append(errs, objErr{e, "attributes", i})
		} else {
			okA++
		}
	}
	for i := range tr.events {
		if e := tr.events[i].err; e != "" {
			errs = append(errs, objErr{e, "events", i})
		} else {
			okE++
		}
	}
	for i := range tr.purchases {
		if e := tr.purchases[i].err; e != "" {
			errs = append(errs, objErr{e, "purchases", i})
		} else {
			okP++
		}
	}
	if len(errs) > 0 {
		s.ctr.objErrors.Add(int64(len(errs)))
	}
	if okA+okE+okP == 0 {
		// Nothing valid left: fatal 400 with the per-object errors (docs/braze-rules.md §2
		// "Fatal errors"; nothing is processed).
		b := append(rs.out[:0], `{"message":`...)
		b = appendJSONString(b, msgValidData)
		b = appendErrors(b, errs)
		s.writeJSON(w, endpoint.Track, http.StatusBadRequest, append(b, '}'))
		return
	}

	tr.at = now.UnixNano()
	s.smu.RLock()
	st := s.st // a Reset meanwhile leaves this request on the old store
	s.resolveAll(st, tr)
	s.enter(rs, seq)
	s.smu.RUnlock()
	sleepCtx(r.Context(), lat)
	dp := s.apply(st, tr, seq)
	s.exit(rs)

	s.count(okA, okE, okP, dp)
	rs.out = appendSuccess(rs.out[:0], tr, okA, okE, okP, errs)
	s.writeJSON(w, endpoint.Track, http.StatusCreated, rs.out)
}

// writeFatal2xx answers 201 with Braze's fatal body and applies nothing (Config.Fatal2xxShare).
func (s *Sim) writeFatal2xx(w http.ResponseWriter, b []byte) {
	s.ctr.fatal2xx.Add(1)
	b = append(b, `{"message":`...)
	b = appendJSONString(b, msgValidData)
	b = append(b, `,"errors":[{"type":`...)
	b = appendJSONString(b, msgValidData)
	s.writeJSON(w, endpoint.Track, http.StatusCreated, append(b, `}]}`...))
}

// count adds to the shared counters; zero adds are skipped (each add is an
// atomic operation on a cache line that all cores write).
func (s *Sim) count(a, e, p int, dp int64) {
	s.ctr.objects.Add(int64(a + e + p))
	if a != 0 {
		s.ctr.attrs.Add(int64(a))
	}
	if e != 0 {
		s.ctr.events.Add(int64(e))
	}
	if p != 0 {
		s.ctr.purchases.Add(int64(p))
	}
	if dp != 0 {
		s.ctr.dataPoints.Add(dp)
	}
}

// appendSuccess writes the 201 body: message, the *_processed count of each array
// that was sent, and the minor errors (docs/braze-rules.md §2 "Success body", "Partial success").
func appendSuccess(b []byte, tr *trackReq, a, e, p int, errs []objErr) []byte {
	b = append(b, `{"message":"success"`...)
	if tr.hasA {
		b = append(b, `,"attributes_processed":`...)
		b = strconv.AppendInt(b, int64(a), 10)
	}
	if tr.hasE {
		b = append(b, `,"events_processed":`...)
		b = strconv.AppendInt(b, int64(e), 10)
	}
	if tr.hasP {
		b = append(b, `,"purchases_processed":`...)
		b = strconv.AppendInt(b, int64(p), 10)
	}
	if len(errs) > 0 {
		b = appendErrors(b, errs)
	}
	return append(b, '}')
}

func appendErrors(b []byte, errs []objErr) []byte {
	b = append(b, `,"errors":[`...)
	for i, e := range errs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"type":`...)
		b = appendJSONString(b, e.typ)
		b = append(b, `,"input_array":"`...)
		b = append(b, e.array...)
		b = append(b, `","index":`...)
		b = strconv.AppendInt(b, int64(e.index), 10)
		b = append(b, '}')
	}
	return append(b, ']')
}

// resolveAll finds (or creates, as Braze would) the user of every valid object,
// in processing order: attributes, events, purchases. Caller holds the read lock.
func (s *Sim) resolveAll(st *store, tr *trackReq) {
	for i := range tr.attrs {
		a := &tr.attrs[i]
		if a.err != "" {
			continue
		}
		// _update_existing_only: default false, but true for user_alias (docs/braze-rules.md §1).
		only := a.updateOnly
		if !a.updateOnlySet && a.id.kind == idAlias {
			only = true
		}
		a.u = s.resolveFor(st, &a.objCommon, only)
	}
	for i := range tr.events {
		// With user_alias, events are always update-only (docs/braze-rules.md §1 "_update_existing_only").
		if e := &tr.events[i]; e.err == "" {
			e.u = s.resolveFor(st, &e.objCommon, e.updateOnly || e.id.kind == idAlias)
		}
	}
	for i := range tr.purchases {
		if p := &tr.purchases[i]; p.err == "" {
			p.u = s.resolveFor(st, &p.objCommon, p.updateOnly || p.id.kind == idAlias)
		}
	}
}

func (s *Sim) resolveFor(st *store, c *objCommon, updateOnly bool) *user {
	// A braze_id is assigned by Braze: an unknown one creates nothing.
	return s.resolve(st, c.id, !updateOnly && c.id.kind != idBraze, c.email, c.phone)
}

// enter registers the request on every user it touches and counts overlaps with
// requests still in the handler (Stats.SameUserConcurrency).
func (s *Sim) enter(rs *reqState, seq uint64) {
	viol := 0
	visit := func(u *user) {
		if u == nil || u.mark.Load() == seq {
			return
		}
		if u.inflight.Load() > 0 { // maybe this request itself: check its own list
			for _, x := range rs.users {
				if x == u {
					return
				}
			}
		}
		u.mark.Store(seq)
		if u.inflight.Add(1) > 1 {
			viol++
		}
		rs.users = append(rs.users, u)
	}
	tr := &rs.tr
	for i := range tr.attrs {
		visit(tr.attrs[i].u)
	}
	for i := range tr.events {
		visit(tr.events[i].u)
	}
	for i := range tr.purchases {
		visit(tr.purchases[i].u)
	}
	if viol > 0 {
		s.ctr.sameUser.Add(int64(viol))
	}
}

func (s *Sim) exit(rs *reqState) {
	for _, u := range rs.users {
		u.inflight.Add(-1)
	}
	clear(rs.users)
	rs.users = rs.users[:0]
}

// apply writes the valid objects to the store in Braze's order, attributes ->
// events -> purchases (docs/braze-rules.md §1 "Processing order"). It returns the data points billed.
func (s *Sim) apply(st *store, tr *trackReq, seq uint64) int64 {
	s.smu.RLock()
	defer s.smu.RUnlock()
	// Any invalid value inside a nested attribute drops all nested-attribute updates
	// of the request (docs/braze-rules.md §1 "Nested custom attributes").
	dropNested := false
	for i := range tr.attrs {
		if tr.attrs[i].err == "" && tr.attrs[i].bad {
			dropNested = true
		}
	}
	var total int64
	limit := s.cfg.MaxHistoryPerUser
	// One atomic add per request; objects get increasing "last updated" marks.
	upd := s.updSeq.Add(uint64(len(tr.attrs)+len(tr.events)+len(tr.purchases))) - uint64(len(tr.attrs)+len(tr.events)+len(tr.purchases))
	for i := range tr.attrs {
		a := &tr.attrs[i]
		if a.err != "" {
			continue
		}
		u := lockUser(a.u)
		if u == nil {
			continue
		}
		var dp int64
		for j := range a.ops {
			op := &a.ops[j]
			if st.applyOp(u, op, tr, a.merge, dropNested) {
				dp += int64(op.dp)
			}
		}
		// email/phone in an attributes object are profile fields too; with a primary
		// identifier they are written, not used for lookup (docs/braze-rules.md §1
		// "Identifiers"). As the lookup identifier they are not an update (not billed, §6).
		if a.hasEmail || a.emailNull {
			st.setEmail(u, a.email)
			dp += int64(btoi(a.id.kind != idEmail))
		}
		if a.hasPhone || a.phoneNull {
			st.setPhone(u, a.phone)
			dp += int64(btoi(a.id.kind != idPhone))
		}
		u.dp += dp
		upd++
		u.updated.Store(upd)
		if u.opMark != seq {
			s.logTrack(u, seq, upd, tr.at)
		}
		u.mu.Unlock()
		total += dp
	}
	for i := range tr.events {
		e := &tr.events[i]
		if e.err != "" {
			continue
		}
		u := lockUser(e.u)
		if u == nil {
			continue
		}
		// The slot lends the buffer of the event it held (history full).
		sl := u.events.slot(limit)
		prev := sl.props
		*sl = event{names: namesOf(e.name, e.appID), t: e.t, seq: seq}
		sl.props = tr.keepProps(prev, e.props, e.span)
		u.dp++ // each custom event = 1 data point (docs/braze-rules.md §6)
		upd++
		u.updated.Store(upd)
		if u.opMark != seq {
			s.logTrack(u, seq, upd, tr.at)
		}
		u.mu.Unlock()
		total++
	}
	for i := range tr.purchases {
		p := &tr.purchases[i]
		if p.err != "" {
			continue
		}
		u := lockUser(p.u)
		if u == nil {
			continue
		}
		sl := u.purchases.slot(limit)
		prev := sl.props
		*sl = purchase{productID: p.productID, currency: p.currency,
			price: p.price, quantity: p.quantity, t: p.t, appID: p.appID, seq: seq}
		sl.props = tr.keepProps(prev, p.props, p.span)
		u.dp++ // each purchase = 1 data point (docs/braze-rules.md §6)
		upd++
		u.updated.Store(upd)
		if u.opMark != seq {
			s.logTrack(u, seq, upd, tr.at)
		}
		u.mu.Unlock()
		total++
	}
	return total
}

// lockUser locks a resolved user; nil if there is none or it was deleted meanwhile.
func lockUser(u *user) *user {
	if u == nil {
		return nil
	}
	u.mu.Lock()
	if u.deleted {
		u.mu.Unlock()
		return nil
	}
	return u
}
