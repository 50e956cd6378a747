package brazesim

import "unsafe"

// attrSet is a user's custom attributes: a small slice searched linearly (keys are
// interned, so most comparisons are a pointer check), with a map index once it
// grows. Cheaper and more compact than a map for the usual handful of attributes.
type attrSet struct {
	kv  []attrKV
	idx map[string]int32
	// next is where the following lookup probes first: requests tend to send a
	// user's attributes in the order they were stored, so this usually hits.
	next int32
}

type attrKV struct {
	k string
	v aval
}

const attrIndexAt = 24

func sameStr(a, b string) bool {
	return len(a) == len(b) && (unsafe.StringData(a) == unsafe.StringData(b) || a == b)
}

func (a *attrSet) find(k string) int {
	if a.idx != nil {
		if i, ok := a.idx[k]; ok {
			return int(i)
		}
		return -1
	}
	if n := int(a.next); n < len(a.kv) && sameStr(a.kv[n].k, k) {
		a.next++
		return n
	}
	for i := range a.kv {
		if sameStr(a.kv[i].k, k) {
			a.next = int32(i + 1)
			return i
		}
	}
	return -1
}

func (a *attrSet) get(k string) (aval, bool) {
	if i := a.find(k); i >= 0 {
		return a.kv[i].v, true
	}
	return aval{}, false
}

// ref returns the value stored under k for update in place, or nil.
func (a *attrSet) ref(k string) *aval {
	if i := a.find(k); i >= 0 {
		return &a.kv[i].v
	}
	return nil
}

func (a *attrSet) set(k string, v aval) {
	if i := a.find(k); i >= 0 {
		a.kv[i].v = v
		return
	}
	k = internString(k) // k may point into the request body
	a.kv = append(a.kv, attrKV{k, v})
	if a.idx != nil {
		a.idx[k] = int32(len(a.kv) - 1)
	} else if len(a.kv) >= attrIndexAt {
		a.idx = make(map[string]int32, 2*len(a.kv))
		for i := range a.kv {
			a.idx[a.kv[i].k] = int32(i)
		}
	}
}

func (a *attrSet) del(k string) {
	i := a.find(k)
	if i < 0 {
		return
	}
	last := len(a.kv) - 1
	if a.idx != nil {
		delete(a.idx, k)
		if i != last {
			a.idx[a.kv[last].k] = int32(i)
		}
	}
	a.kv[i] = a.kv[last]
	a.kv[last] = attrKV{}
	a.kv = a.kv[:last]
}

func (a *attrSet) len() int { return len(a.kv) }
