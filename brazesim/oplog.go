package brazesim

import (
	"sort"
	"time"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
)

// opRec is one operation-log entry of a profile (Op is its exported form). Consecutive
// /users/track requests on a profile share one entry (a run: first and last request,
// count), so that the /users/track path neither allocates nor grows the log per request.
type opRec struct {
	order, lastOrder uint64
	req, lastReq     uint64
	at, lastAt       int64 // unix ns
	count            int64
	ep               endpoint.Endpoint
	detail           string
	brazeID          string
}

// logOp appends an operation to u's log and returns its order. The caller holds the
// exclusive structural lock, or u.mu with the order taken from updSeq (logTrack).
func (s *Sim) logOp(u *user, ep endpoint.Endpoint, req uint64, at time.Time, detail string) uint64 {
	order := s.updSeq.Add(1)
	ns := at.UnixNano()
	u.ops.push(opRec{order: order, lastOrder: order, req: req, lastReq: req, at: ns, lastAt: ns, count: 1,
		ep: ep, detail: detail, brazeID: u.brazeID}, s.cfg.MaxHistoryPerUser)
	u.opMark = req
	return order
}

// logTrack records a /users/track request on u once per request (caller holds u.mu):
// it extends the profile's last entry when that is a /users/track run that this request
// follows in arrival order, else starts a run (a request applied after a later-arriving
// one, as when the later one's client gave up and skipped the latency, gets an entry of
// its own: a run is the requests from Request to LastRequest). order is the application
// mark of the first object of the request applied to u.
func (s *Sim) logTrack(u *user, req, order uint64, at int64) {
	if u.opMark == req {
		return
	}
	u.opMark = req
	if l := u.ops.last(); l != nil && l.ep == endpoint.Track && l.brazeID == u.brazeID && req > l.lastReq {
		l.lastOrder, l.lastReq, l.lastAt = order, req, at
		l.count++
		return
	}
	*u.ops.slot(s.cfg.MaxHistoryPerUser) = opRec{order: order, lastOrder: order, req: req, lastReq: req, at: at, lastAt: at,
		count: 1, ep: endpoint.Track, brazeID: u.brazeID}
}

// moveOps merges src's log into dst's, in order (caller holds the exclusive lock).
func (s *Sim) moveOps(src, dst *user) {
	var all []opRec
	dst.ops.each(func(o *opRec) { all = append(all, *o) })
	src.ops.each(func(o *opRec) { all = append(all, *o) })
	sort.SliceStable(all, func(i, j int) bool { return all[i].order < all[j].order })
	dst.ops = history[opRec]{}
	for _, o := range all {
		dst.ops.push(o, s.cfg.MaxHistoryPerUser)
	}
}

// identKeys are the keys of the tombstone index for a profile's identifiers.
func identKeys(u *user) []string {
	keys := []string{"braze_id\x00" + u.brazeID}
	if u.externalID != "" {
		keys = append(keys, "external_id\x00"+u.externalID)
	}
	for _, a := range u.aliases {
		keys = append(keys, "alias\x00"+aliasKey(a))
	}
	if u.email != "" {
		keys = append(keys, "email\x00"+normEmail(u.email))
	}
	if u.phone != "" {
		keys = append(keys, "phone\x00"+normPhone(u.phone))
	}
	return keys
}

// tombstone keeps a removed profile's identifiers and operation log for Sim.Ops and
// drops its data (caller holds the exclusive lock). At most Config.MaxTombstones are
// kept; the oldest are forgotten first.
func (s *Sim) tombstone(st *store, u *user) {
	u.attrs = attrSet{}
	u.events, u.purchases = history[event]{}, history[purchase]{}
	u.subs = nil
	for _, k := range identKeys(u) {
		st.gone[k] = append(st.gone[k], u)
	}
	st.goneFIFO = append(st.goneFIFO, u)
	for len(st.goneFIFO) > s.cfg.MaxTombstones {
		old := st.goneFIFO[0]
		st.goneFIFO[0] = nil
		st.goneFIFO = st.goneFIFO[1:]
		for _, k := range identKeys(old) {
			l := st.gone[k]
			for i, x := range l {
				if x == old {
					l = append(l[:i], l[i+1:]...)
					break
				}
			}
			if len(l) == 0 {
				delete(st.gone, k)
			} else {
				st.gone[k] = l
			}
		}
	}
}

// Ops returns the operation log of the user an identifier names, oldest first (by
// Op.Order): every request of any endpoint applied to the profile that holds the
// identifier now, including the history it absorbed through /users/identify and
// /users/merge, and to the deleted or merged-away profiles that held it (the history
// before a /users/delete stays visible after a later /users/track re-creates the user).
// idKind is "external_id", "braze_id", "email", "phone" or "alias" (id =
// label+"\x00"+name). An email or phone shared by several profiles gives all their logs.
func (s *Sim) Ops(idKind, id string) []Op {
	key, k, ok := opKey(idKind, id)
	if !ok {
		return nil
	}
	s.smu.RLock()
	defer s.smu.RUnlock()
	st := s.st
	var profiles []*user
	switch k.kind {
	case idEmail, idPhone:
		ix := st.byEmail
		if k.kind == idPhone {
			ix = st.byPhone
		}
		sh := ix.shard(k.id)
		sh.mu.Lock()
		profiles = append(profiles, sh.m[k.id]...)
		sh.mu.Unlock()
	default:
		if u := s.resolve(st, k, false, "", ""); u != nil {
			profiles = append(profiles, u)
		}
	}
	profiles = append(profiles, st.gone[key]...)
	type seen struct {
		order uint64
		bid   string
	}
	dup := map[seen]bool{}
	out := []Op{}
	for _, u := range profiles {
		u.mu.Lock()
		u.ops.each(func(o *opRec) {
			if dup[seen{o.order, o.brazeID}] {
				return
			}
			dup[seen{o.order, o.brazeID}] = true
			out = append(out, Op{Order: o.order, Request: o.req, Endpoint: o.ep.Name(), Time: time.Unix(0, o.at).UTC(),
				Detail: o.detail, BrazeID: o.brazeID, Count: o.count, LastOrder: o.lastOrder, LastRequest: o.lastReq,
				LastTime: time.Unix(0, o.lastAt).UTC()})
		})
		u.mu.Unlock()
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Order < out[j].Order })
	return out
}

func opKey(idKind, id string) (string, ident, bool) {
	switch idKind {
	case "external_id":
		return "external_id\x00" + id, ident{kind: idExternal, id: id}, true
	case "braze_id":
		return "braze_id\x00" + id, ident{kind: idBraze, id: id}, true
	case "email":
		return "email\x00" + normEmail(id), ident{kind: idEmail, id: normEmail(id)}, true
	case "phone":
		return "phone\x00" + normPhone(id), ident{kind: idPhone, id: normPhone(id)}, true
	case "alias", "user_alias":
		return "alias\x00" + id, ident{kind: idAlias, id: id}, true
	}
	return "", ident{}, false
}
