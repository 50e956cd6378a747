package dedup

import (
	"context"
	"sync"
	"time"
)

// Memory is the in-process store: two LRUs bounded by entry counts, with expiry.
type Memory struct {
	opts  Options
	mu    sync.Mutex
	attrs *lru[attrRef, uint64]
	ids   *lru[string, struct{}]
	now   func() time.Time
}

// NewMemory returns an in-memory store.
func NewMemory(o Options) *Memory {
	o.defaults()
	return &Memory{opts: o, attrs: newLRU[attrRef, uint64](o.AttrEntries), ids: newLRU[string, struct{}](o.IDEntries), now: time.Now}
}

// Len returns the number of attribute and id entries held.
func (m *Memory) Len() (attrs, ids int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.attrs.m), len(m.ids.m)
}

type attrRef struct{ user, key string }

// Lookup implements Store.
func (m *Memory) Lookup(_ context.Context, q *Query) error {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range q.Users {
		u := &q.Users[i]
		u.Hashes = resize(u.Hashes, len(u.Keys))
		for j, k := range u.Keys {
			u.Hashes[j], _ = m.attrs.get(attrRef{u.User, k}, now)
			if q.Forget {
				m.attrs.del(attrRef{u.User, k})
			}
		}
	}
	q.Seen = resizeBool(q.Seen, len(q.IDs))
	for i, id := range q.IDs {
		_, q.Seen[i] = m.ids.get(id, now)
	}
	return nil
}

// Record implements Store.
func (m *Memory) Record(_ context.Context, up *Update) error {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.forgetUsers(up.ForgetUsers)
	for i := range up.Users {
		u := &up.Users[i]
		for j, k := range u.Keys {
			var h uint64
			if j < len(u.Hashes) {
				h = u.Hashes[j]
			}
			if h == 0 {
				m.attrs.del(attrRef{u.User, k})
			} else {
				m.attrs.put(attrRef{u.User, k}, h, now.Add(m.opts.AttrTTL))
			}
		}
	}
	for _, id := range up.IDs {
		if _, ok := m.ids.get(id, now); !ok { // SET NX: the first delivery starts the window
			m.ids.put(id, struct{}{}, now.Add(m.opts.IDWindow))
		}
	}
	return nil
}

// forgetUsers deletes every attribute entry of users. It walks the whole LRU (deletes are
// rare: privacy requests), so its cost grows with AttrEntries.
func (m *Memory) forgetUsers(users []string) {
	if len(users) == 0 {
		return
	}
	set := make(map[string]struct{}, len(users))
	for _, u := range users {
		set[u] = struct{}{}
	}
	for k := range m.attrs.m {
		if _, ok := set[k.user]; ok {
			m.attrs.del(k)
		}
	}
}

// Close implements Store.
func (m *Memory) Close() error { return nil }

func resize(s []uint64, n int) []uint64 {
	if cap(s) < n {
		return make([]uint64, n)
	}
	s = s[:n]
	clear(s)
	return s
}

func resizeBool(s []bool, n int) []bool {
	if cap(s) < n {
		return make([]bool, n)
	}
	s = s[:n]
	clear(s)
	return s
}

// lru is a size-bounded least-recently-used map with per-entry expiry. Not safe for
// concurrent use.
type lru[K comparable, V any] struct {
	max  int
	m    map[K]*node[K, V]
	head node[K, V] // sentinel: head.next is the most recent
}

type node[K comparable, V any] struct {
	key        K
	val        V
	exp        time.Time
	prev, next *node[K, V]
}

func newLRU[K comparable, V any](max int) *lru[K, V] {
	l := &lru[K, V]{max: max, m: make(map[K]*node[K, V])}
	l.head.prev, l.head.next = &l.head, &l.head
	return l
}

func (l *lru[K, V]) unlink(n *node[K, V]) {
	n.prev.next, n.next.prev = n.next, n.prev
}

func (l *lru[K, V]) front(n *node[K, V]) {
	n.next, n.prev = l.head.next, &l.head
	l.head.next.prev = n
	l.head.next = n
}

func (l *lru[K, V]) get(k K, now time.Time) (V, bool) {
	var zero V
	n, ok := l.m[k]
	if !ok {
		return zero, false
	}
	if now.After(n.exp) {
		l.unlink(n)
		delete(l.m, k)
		return zero, false
	}
	l.unlink(n)
	l.front(n)
	return n.val, true
}

func (l *lru[K, V]) put(k K, v V, exp time.Time) {
	if n, ok := l.m[k]; ok {
		n.val, n.exp = v, exp
		l.unlink(n)
		l.front(n)
		return
	}
	if len(l.m) >= l.max {
		old := l.head.prev
		l.unlink(old)
		delete(l.m, old.key)
	}
	n := &node[K, V]{key: k, val: v, exp: exp}
	l.m[k] = n
	l.front(n)
}

func (l *lru[K, V]) del(k K) {
	if n, ok := l.m[k]; ok {
		l.unlink(n)
		delete(l.m, k)
	}
}
