package brazesim

import (
	"encoding/hex"
	"encoding/json"
	"hash/maphash"
	"math"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// user is a stored profile. externalID, brazeID and aliases change only under the
// Sim's exclusive structural lock (or before the user is published); the rest is
// guarded by mu.
type user struct {
	mu         sync.Mutex
	externalID string
	brazeID    string
	aliases    []Alias
	deleted    bool

	email, phone string
	attrs        attrSet
	events       history[event]
	purchases    history[purchase]
	dp           int64
	updated      atomic.Uint64 // sequence of the last update ("most recently updated")

	// Concurrency observation: /users/track requests in the handler touching this
	// user, and the sequence of the last request that entered.
	inflight atomic.Int32
	mark     atomic.Uint64

	// Operation log (Sim.Ops) and the request last logged; subscription group states
	// (/subscription/status/set). Guarded by mu.
	ops    history[opRec]
	opMark uint64
	subs   map[string]string
}

// event is one history slot: 64 bytes, one cache line. props is the slot's own
// buffer (never shared), reused when the slot is overwritten.
type event struct {
	names *evNames
	t     time.Time
	props []byte
	seq   uint64
}

// evNames is an event's name and app_id, shared by the events that have both.
type evNames struct{ name, appID string }

var namesTab [1 << 12]atomic.Pointer[evNames]

// namesOf returns the shared evNames for an (interned) name and app_id: a
// lock-free direct-mapped cache keyed by the strings' addresses.
func namesOf(name, appID string) *evNames {
	h := uint64(uintptr(unsafe.Pointer(unsafe.StringData(name))))*0x9E3779B97F4A7C15 ^
		uint64(uintptr(unsafe.Pointer(unsafe.StringData(appID))))*0xBF58476D1CE4E5B9 ^ uint64(len(name)+len(appID))
	slot := &namesTab[h>>52]
	if p := slot.Load(); p != nil && p.name == name && p.appID == appID {
		return p
	}
	p := &evNames{name, appID}
	slot.Store(p)
	return p
}

type purchase struct {
	productID, currency string
	price               float64
	quantity            int
	t                   time.Time
	appID               string
	props               []byte // as event.props
	seq                 uint64
}

// aval is a stored attribute value: the JSON text of a scalar as it arrived (no
// decoding, no boxing on the hot path) or a decoded value. raw is owned by the
// attribute (never shared), so it can be rewritten in place.
type aval struct {
	raw []byte // JSON scalar (string with quotes, number, true/false); nil when x is used
	x   any
}

func (v aval) value() any {
	if v.raw != nil {
		s := scanner{b: v.raw}
		return s.value(0)
	}
	return copyAny(v.x)
}

func (v aval) num() float64 {
	if v.raw != nil {
		if c := v.raw[0]; c == '-' || c >= '0' && c <= '9' {
			return parseFloat(v.raw)
		}
		return 0
	}
	f, _ := v.x.(float64)
	return f
}

func (v aval) arr() []any {
	a, _ := v.x.([]any)
	return a
}

const nShards = 32

type shard[V any] struct {
	mu sync.Mutex
	m  map[string]V
	_  [40]byte
}

type index[V any] struct {
	seed maphash.Seed
	sh   [nShards]shard[V]
}

func newIndex[V any]() *index[V] {
	ix := &index[V]{seed: maphash.MakeSeed()}
	for i := range ix.sh {
		ix.sh[i].m = map[string]V{}
	}
	return ix
}

func (ix *index[V]) shard(k string) *shard[V] {
	return &ix.sh[maphash.String(ix.seed, k)%nShards]
}

type store struct {
	byExt   *index[*user]
	byBraze *index[*user]
	byAlias *index[*user]
	byEmail *index[[]*user]
	byPhone *index[[]*user]

	// Removed profiles by identifier key (identKeys), oldest first in goneFIFO; guarded
	// by the exclusive structural lock (Sim.tombstone).
	gone     map[string][]*user
	goneFIFO []*user
}

func newStore() *store {
	return &store{byExt: newIndex[*user](), byBraze: newIndex[*user](), byAlias: newIndex[*user](),
		byEmail: newIndex[[]*user](), byPhone: newIndex[[]*user](), gone: map[string][]*user{}}
}

func aliasKey(a Alias) string { return a.Label + "\x00" + a.Name }

func (s *Sim) newBrazeID() string {
	var b [12]byte
	copy(b[:4], s.bidPrefix[:])
	n := s.bidSeq.Add(1)
	for i := 11; i >= 4; i-- {
		b[i] = byte(n)
		n >>= 8
	}
	return hex.EncodeToString(b[:])
}

func (s *Sim) publish(st *store, u *user) {
	sh := st.byBraze.shard(u.brazeID)
	sh.mu.Lock()
	sh.m[u.brazeID] = u
	sh.mu.Unlock()
	s.nUsers.Add(1)
}

// pick chooses among profiles sharing an email/phone: the most recently updated one
// with an external_id, else the most recently updated (docs/braze-rules.md §1 "Identifiers" FAQ).
func pick(list []*user) *user {
	var best, bestExt *user
	for _, u := range list {
		if best == nil || u.updated.Load() > best.updated.Load() {
			best = u
		}
		if u.externalID != "" && (bestExt == nil || u.updated.Load() > bestExt.updated.Load()) {
			bestExt = u
		}
	}
	if bestExt != nil {
		return bestExt
	}
	return best
}

// resolve finds (and, if create, creates) the user an identifier names. The caller
// holds the structural lock (read or write).
func (s *Sim) resolve(st *store, id ident, create bool, email, phone string) *user {
	switch id.kind {
	case idExternal, idAlias:
		ix := st.byExt
		if id.kind == idAlias {
			ix = st.byAlias
		}
		sh := ix.shard(id.id)
		sh.mu.Lock()
		u := sh.m[id.id]
		if u != nil || !create {
			sh.mu.Unlock()
			return u
		}
		u = &user{brazeID: s.newBrazeID()}
		key := strings.Clone(id.id) // id.id may point into the request body
		if id.kind == idExternal {
			u.externalID = key
		} else {
			u.aliases = []Alias{id.alias}
		}
		sh.m[key] = u
		sh.mu.Unlock()
		s.publish(st, u)
		return u
	case idAnon:
		// An anonymous push token import: a new profile every time.
		if !create {
			return nil
		}
		u := &user{brazeID: s.newBrazeID()}
		s.publish(st, u)
		return u
	case idBraze:
		sh := st.byBraze.shard(id.id)
		sh.mu.Lock()
		u := sh.m[id.id]
		sh.mu.Unlock()
		return u
	case idEmail, idPhone:
		ix := st.byEmail
		if id.kind == idPhone {
			ix = st.byPhone
		}
		sh := ix.shard(id.id)
		sh.mu.Lock()
		u := pick(sh.m[id.id])
		if u != nil || !create {
			sh.mu.Unlock()
			return u
		}
		u = &user{brazeID: s.newBrazeID()}
		if id.kind == idEmail {
			u.email = strings.Clone(email)
		} else {
			u.phone = strings.Clone(phone)
		}
		key := strings.Clone(id.id)
		sh.m[key] = append(sh.m[key], u)
		sh.mu.Unlock()
		s.publish(st, u)
		return u
	}
	return nil
}

func listAdd(ix *index[[]*user], k string, u *user) {
	if k == "" {
		return
	}
	sh := ix.shard(k)
	sh.mu.Lock()
	sh.m[k] = append(sh.m[k], u)
	sh.mu.Unlock()
}

func listDel(ix *index[[]*user], k string, u *user) {
	if k == "" {
		return
	}
	sh := ix.shard(k)
	sh.mu.Lock()
	l := sh.m[k]
	for i, x := range l {
		if x == u {
			l = append(l[:i], l[i+1:]...)
			break
		}
	}
	if len(l) == 0 {
		delete(sh.m, k)
	} else {
		sh.m[k] = l
	}
	sh.mu.Unlock()
}

// setEmail/setPhone change the profile field and its lookup index (caller holds u.mu).
// e may point into the request body: it is cloned when kept.
func (st *store) setEmail(u *user, e string) {
	if u.email == e {
		return
	}
	e = strings.Clone(e)
	if normEmail(u.email) == normEmail(e) {
		u.email = e
		return
	}
	listDel(st.byEmail, normEmail(u.email), u)
	u.email = e
	listAdd(st.byEmail, normEmail(e), u)
}

func (st *store) setPhone(u *user, p string) {
	if u.phone == p {
		return
	}
	p = strings.Clone(p)
	if normPhone(u.phone) == normPhone(p) {
		u.phone = p
		return
	}
	listDel(st.byPhone, normPhone(u.phone), u)
	u.phone = p
	listAdd(st.byPhone, normPhone(p), u)
}

const maxSimpleArray = 500 // default and maximum simple-array length (docs/braze-rules.md §1 "Attributes object")

// applyOp applies one attribute operation (caller holds u.mu). It reports whether the op was applied.
// r is the request (body, keys, opExt, list values).
func (st *store) applyOp(u *user, op *attrOp, r *trackReq, merge, dropNested bool) bool {
	key, x, vals := r.key(op), r.extOf(op), r.vals
	switch op.kind {
	case opSet:
		switch key {
		case "email":
			e, _ := x.v.(string)
			st.setEmail(u, e)
			return true
		case "phone":
			p, _ := x.v.(string)
			st.setPhone(u, p)
			return true
		}
		if x.v == nil {
			u.attrs.del(key)
			return true
		}
		if arr, ok := x.v.([]any); ok && dropNested && !isScalarArray(arr) {
			return false // an array of objects is a nested update (docs/braze-rules.md §1)
		}
		if arr, ok := x.v.([]any); ok && isScalarArray(arr) {
			// Simple arrays keep unique values only, at most 500 (the oldest dropped).
			out := make([]any, 0, len(arr))
			for _, v := range arr {
				if indexOf(out, v) < 0 {
					out = append(out, v)
				}
			}
			if len(out) > maxSimpleArray {
				out = out[len(out)-maxSimpleArray:]
			}
			u.attrs.set(key, aval{x: out})
			return true
		}
		u.attrs.set(key, aval{x: x.v})
	case opDropped:
		return false
	case opSetRaw:
		// The value's own buffer is rewritten in place when it is large enough:
		// updating a user's attributes allocates nothing once they exist.
		src := op.raw(r.body)
		if p := u.attrs.ref(key); p != nil {
			*p = aval{raw: append(p.raw[:0], src...)}
		} else {
			u.attrs.set(key, aval{raw: append([]byte(nil), src...)})
		}
	case opNull:
		// null removes the attribute (docs/braze-rules.md §1 "Attributes object").
		u.attrs.del(key)
	case opInc:
		if p := u.attrs.ref(key); p != nil {
			*p = aval{x: boxFloat(p.num() + x.n)}
		} else {
			var none aval // 0 + n, as for a missing value (-0 becomes 0)
			u.attrs.set(key, aval{x: boxFloat(none.num() + x.n)})
		}
	case opArr:
		p := u.attrs.ref(key)
		var cur []any // owned by u; changed in place
		wasArr := false
		if p != nil {
			cur, wasArr = p.x.([]any)
			wasArr = wasArr && p.raw == nil
		}
		changed := false
		for _, v := range x.add(vals) {
			if indexOf(cur, v) < 0 {
				cur = append(cur, v)
				changed = true
			}
		}
		if len(cur) > maxSimpleArray {
			cur = cur[len(cur)-maxSimpleArray:]
		}
		for _, v := range x.rem(vals) {
			for i := indexOf(cur, v); i >= 0; i = indexOf(cur, v) {
				cur = append(cur[:i], cur[i+1:]...)
				changed = true
			}
		}
		switch {
		case p == nil:
			u.attrs.set(key, aval{x: cur})
		case changed || !wasArr: // unchanged arrays are not boxed again
			*p = aval{x: cur}
		}
	case opNested:
		if dropNested {
			return false
		}
		m := x.v.(map[string]any)
		cv, _ := u.attrs.get(key)
		if cur, ok := cv.x.(map[string]any); ok && merge {
			deepMerge(cur, m)
		} else {
			u.attrs.set(key, aval{x: m})
		}
	case opObjArr:
		if dropNested {
			return false
		}
		cv, _ := u.attrs.get(key)
		cur := append([]any(nil), cv.arr()...)
		// Processing order: $add -> $remove -> $update (docs/braze-rules.md §1 "Arrays of objects").
		cur = append(cur, x.add(vals)...)
		for _, r := range x.rem(vals) {
			rm, _ := r.(map[string]any)
			k, _ := rm["$identifier_key"].(string)
			val := rm["$identifier_value"]
			out := cur[:0]
			for _, it := range cur {
				if im, ok := it.(map[string]any); ok && eqAny(im[k], val) {
					continue
				}
				out = append(out, it)
			}
			cur = out
		}
		if merge { // $update requires _merge_objects: true
			for _, up := range x.upd() {
				um, _ := up.(map[string]any)
				k, _ := um["$identifier_key"].(string)
				val := um["$identifier_value"]
				no, _ := um["$new_object"].(map[string]any)
				for _, it := range cur {
					if im, ok := it.(map[string]any); ok && eqAny(im[k], val) && no != nil {
						deepMerge(im, copyAny(no).(map[string]any))
					}
				}
			}
		}
		u.attrs.set(key, aval{x: cur})
	}
	return true
}

// boxFloat boxes f without allocating for the small integers counters usually hold.
func boxFloat(f float64) any {
	if f >= 0 && f < float64(len(smallInts)) && f == float64(int(f)) && !(f == 0 && math.Signbit(f)) {
		return smallInts[int(f)]
	}
	return f
}

func isScalarArray(a []any) bool {
	for _, v := range a {
		switch v.(type) {
		case map[string]any, []any:
			return false
		}
	}
	return true
}

func eqAny(a, b any) bool {
	switch x := a.(type) {
	case string:
		y, ok := b.(string)
		return ok && x == y
	case float64:
		y, ok := b.(float64)
		return ok && x == y
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case nil:
		return b == nil
	}
	return reflect.DeepEqual(a, b)
}

func indexOf(a []any, v any) int {
	for i, x := range a {
		if eqAny(x, v) {
			return i
		}
	}
	return -1
}

func deepMerge(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok && !isTimeObj(sm) {
			if dm, ok := dst[k].(map[string]any); ok {
				deepMerge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

func copyAny(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = copyAny(e)
		}
		return m
	case []any:
		a := make([]any, len(x))
		for i, e := range x {
			a[i] = copyAny(e)
		}
		return a
	}
	return v
}

// history keeps the last limit items (all when limit is 0) in arrival order; when
// full, the oldest is overwritten (a ring, so nothing is copied on the hot path).
type history[T any] struct {
	buf   []T
	start int
}

func (h *history[T]) push(v T, limit int) {
	*h.slot(limit) = v
}

// slot returns the place of the next item: a new zero item, or (when full) the
// oldest one, which the caller overwrites.
func (h *history[T]) slot(limit int) *T {
	if limit <= 0 || len(h.buf) < limit {
		if c := cap(h.buf); len(h.buf) == c && limit > 0 && 2*c > limit {
			// The last growth: exactly to the limit, not past it as append would.
			nb := make([]T, len(h.buf), limit)
			copy(nb, h.buf)
			h.buf = nb
		}
		var zero T
		h.buf = append(h.buf, zero)
		return &h.buf[len(h.buf)-1]
	}
	p := &h.buf[h.start]
	h.start++
	if h.start == len(h.buf) {
		h.start = 0
	}
	return p
}

// last returns the newest item, or nil.
func (h *history[T]) last() *T {
	if len(h.buf) == 0 {
		return nil
	}
	if h.start == 0 {
		return &h.buf[len(h.buf)-1]
	}
	return &h.buf[h.start-1]
}

// each calls f on the items, oldest first.
func (h *history[T]) each(f func(*T)) {
	for i := h.start; i < len(h.buf); i++ {
		f(&h.buf[i])
	}
	for i := 0; i < h.start; i++ {
		f(&h.buf[i])
	}
}

// snapshot copies a user out (caller holds the structural lock; takes u.mu).
func (s *Sim) snapshot(u *user) User {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := User{
		ExternalID: u.externalID,
		BrazeID:    u.brazeID,
		Aliases:    append([]Alias(nil), u.aliases...),
		Email:      u.email,
		Phone:      u.phone,
		Attributes: make(map[string]any, u.attrs.len()),
		DataPoints: u.dp,
		Events:     []Event{},
		Purchases:  []Purchase{},
	}
	if len(u.subs) > 0 {
		out.Subscriptions = make(map[string]string, len(u.subs))
		for g, st := range u.subs {
			out.Subscriptions[g] = st
		}
	}
	for _, kv := range u.attrs.kv {
		out.Attributes[kv.k] = kv.v.value()
	}
	u.events.each(func(e *event) {
		out.Events = append(out.Events, Event{Name: e.names.name, Time: e.t, AppID: e.names.appID, Properties: decodeProps(e.props), Seq: e.seq})
	})
	u.purchases.each(func(p *purchase) {
		out.Purchases = append(out.Purchases, Purchase{ProductID: p.productID, Currency: p.currency, Price: p.price,
			Quantity: p.quantity, Time: p.t, AppID: p.appID, Properties: decodeProps(p.props), Seq: p.seq})
	})
	return out
}

func decodeProps(b []byte) map[string]any {
	if len(b) == 0 {
		return nil
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

// User returns a snapshot of the user an identifier names. idKind is "external_id",
// "braze_id", "email", "phone" or "alias" (id = label+"\x00"+name).
func (s *Sim) User(idKind, id string) (User, bool) {
	var k ident
	switch idKind {
	case "external_id":
		k = ident{kind: idExternal, id: id}
	case "braze_id":
		k = ident{kind: idBraze, id: id}
	case "email":
		k = ident{kind: idEmail, id: normEmail(id)}
	case "phone":
		k = ident{kind: idPhone, id: normPhone(id)}
	case "alias", "user_alias":
		k = ident{kind: idAlias, id: id}
	default:
		return User{}, false
	}
	s.smu.RLock()
	defer s.smu.RUnlock()
	u := s.resolve(s.st, k, false, "", "")
	if u == nil {
		return User{}, false
	}
	return s.snapshot(u), true
}

// Users returns snapshots of all users, ordered by braze_id (creation order).
func (s *Sim) Users() []User {
	s.smu.RLock()
	defer s.smu.RUnlock()
	var all []*user
	for i := range s.st.byBraze.sh {
		sh := &s.st.byBraze.sh[i]
		sh.mu.Lock()
		for _, u := range sh.m {
			all = append(all, u)
		}
		sh.mu.Unlock()
	}
	sort.Slice(all, func(i, j int) bool { return all[i].brazeID < all[j].brazeID })
	out := make([]User, 0, len(all))
	for _, u := range all {
		out = append(out, s.snapshot(u))
	}
	return out
}

// removeUser drops u from every index (caller holds the exclusive structural lock).
func (s *Sim) removeUser(st *store, u *user) {
	del := func(ix *index[*user], k string) {
		if k == "" {
			return
		}
		sh := ix.shard(k)
		if sh.m[k] == u {
			delete(sh.m, k)
		}
	}
	del(st.byExt, u.externalID)
	del(st.byBraze, u.brazeID)
	for _, a := range u.aliases {
		del(st.byAlias, aliasKey(a))
	}
	listDel(st.byEmail, normEmail(u.email), u)
	listDel(st.byPhone, normPhone(u.phone), u)
	u.deleted = true
	s.nUsers.Add(-1)
	s.tombstone(st, u)
}
