package schemas

import (
	"encoding/binary"
	"math/bits"
	"slices"
	"unicode/utf8"
)

// Checks of attribute values that Braze applies to a whole request, made per record so that
// one bad record is dead-lettered alone (docs/braze-rules.md §1 "Nested custom attributes",
// §8 nested-1 and poison-3).

// keySet finds a repeated key among the members of one object. Small objects are searched
// linearly by fingerprint, behind a 64-bit filter that answers "new key" for most keys at one
// test; an object with more keys than fit spills into a map. A key with print h (keyPrint of
// the unescaped key; its span in the message is start:end, escaped when esc) is recorded by
// tryNew, small enough to be inlined into the loops that read keys, or when that declines by
// add, which also tells a repeat:
//
//	dup := !ks.tryNew(h, start, end, esc) && ks.add(st, h, start, end, esc)
type keySet struct {
	n     int
	bloom uint64 // bit h*φ>>58 of the print h of every key recorded
	ents  [32]keyEnt
	spill map[uint64][]keyEnt
}

type keyEnt struct {
	h          uint64
	start, end int32
	esc        bool
}

func (ks *keySet) reset() {
	ks.n, ks.bloom = 0, 0
	ks.spill = nil
}

// tryNew records a key whose filter bit is not set while ents has room, and reports whether
// it did. A false answer leaves everything as it was, for add.
func (ks *keySet) tryNew(h uint64, start, end int, esc bool) bool {
	bit := uint64(1) << (h * 0x9E3779B97F4A7C15 >> 58)
	if ks.bloom&bit != 0 || ks.n >= len(ks.ents) {
		return false
	}
	ks.bloom |= bit
	ks.ents[ks.n] = keyEnt{h: h, start: int32(start), end: int32(end), esc: esc}
	ks.n++
	return true
}

// add records a key tryNew did not take and reports whether the object already had it.
func (ks *keySet) add(st *decodeState, h uint64, start, end int, esc bool) bool {
	e := keyEnt{h: h, start: int32(start), end: int32(end), esc: esc}
	bit := uint64(1) << (h * 0x9E3779B97F4A7C15 >> 58)
	if ks.bloom&bit != 0 && ks.has(st, e) {
		return true
	}
	ks.bloom |= bit
	if ks.n < len(ks.ents) {
		ks.ents[ks.n] = e
		ks.n++
		return false
	}
	if ks.spill == nil {
		ks.spill = make(map[uint64][]keyEnt)
	}
	ks.spill[h] = append(ks.spill[h], e)
	return false
}

func (ks *keySet) has(st *decodeState, e keyEnt) bool {
	for i := 0; i < ks.n; i++ {
		if ks.ents[i].h == e.h && st.sameKey(ks.ents[i], e) {
			return true
		}
	}
	if ks.spill != nil {
		for _, o := range ks.spill[e.h] {
			if st.sameKey(o, e) {
				return true
			}
		}
	}
	return false
}

// keyPrint is a cheap fingerprint of a key (length, first and last 8 bytes): equal keys have
// equal prints, and different keys of one object rarely do (then sameKey tells). room is how
// many bytes from the key's start the caller's buffer holds (the rest of the message, or the
// capacity of a scratch buffer): a key shorter than 8 bytes is read as one word when room
// allows, the bytes past its end masked off.
func keyPrint(k []byte, room int) uint64 {
	n := len(k)
	var w uint64
	switch {
	case n >= 8:
		w = binary.LittleEndian.Uint64(k) ^ bits.RotateLeft64(binary.LittleEndian.Uint64(k[n-8:]), 29)
	case room >= 8 && cap(k) >= 8:
		w = binary.LittleEndian.Uint64(k[:8]) & (1<<(8*n) - 1)
	default:
		for i, c := range k {
			w |= uint64(c) << (8 * i)
		}
	}
	return w ^ uint64(n)*0x9E3779B97F4A7C15
}

// sameKey compares two keys of the message after unescaping (only on a print match).
func (st *decodeState) sameKey(a, b keyEnt) bool {
	ka, kb := st.s.buf[a.start:a.end], st.s.buf[b.start:b.end]
	if !a.esc && !b.esc {
		return string(ka) == string(kb)
	}
	return string(appendUnescaped(nil, ka)) == string(appendUnescaped(nil, kb))
}

// attrValue reads an object or array value of an attributes object's member (s.pos at '{'
// or '[') and checks it as a nested custom attribute. One pass (cleanAttrValue) reads and
// clears the common values; a value it cannot clear is read again by skip and judged by
// attrValueProblem, which also names the problem's path.
func (st *decodeState) attrValue(r *Record, l loc, ks, ke int, kesc bool) bool {
	s := &st.s
	if r.Err != nil {
		return s.skip()
	}
	key := st.keyBytes(ks, ke, kesc)
	switch string(key) {
	case "current_location", "push_tokens", "subscription_groups", "facebook", "twitter":
		return s.skip() // standard fields with their own shapes, checked by Braze per object
	}
	start, errOff, errMsg, bigAt := s.pos, s.errOff, s.errMsg, s.bigAt
	if s.cleanAttrValue() {
		return true
	}
	s.pos, s.errOff, s.errMsg, s.bigAt = start, errOff, errMsg, bigAt
	if !s.skip() {
		return false
	}
	if msg, path := attrValueProblem(s.buf[start:s.pos]); msg != "" {
		slices.Reverse(path)
		bad(r, l, msg, append([]string{string(key)}, path...)...)
	}
	return true
}

// cleanAttrValue reads the attribute value at s.pos ('{' or '[') as skip does and reports
// true only when attrValueProblem would find nothing wrong with it. It answers false, leaving
// s.pos and the error state for the caller to restore, on a problem and on anything it does
// not judge itself: escaped or long keys, operator objects holding a null, syntax errors.
// An object is checked as a nested custom attribute, an array as a whole-array set whose
// object elements are; an object that passes as a nested attribute passes as an operator
// ({"inc": n}, {"add": […]}) too, and $add/$remove/$update objects never pass ('$' keys).
func (s *scanner) cleanAttrValue() bool {
	if s.buf[s.pos] == '{' {
		return s.cleanNested(maxDepth)
	}
	s.pos++
	s.ws()
	if s.peek() == ']' {
		s.pos++
		return true
	}
	for {
		s.ws()
		if s.peek() == '{' {
			if !s.cleanNested(maxDepth - 1) {
				return false
			}
		} else if !s.skip() {
			return false
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return true
		default:
			return false
		}
	}
}

// cleanNested reads the nested custom attribute object at s.pos ('{') without recursion and
// reports true only when nestedObject would find nothing wrong with it: no null at any depth,
// keys that pass nestedKeyProblem, {"$time": t} alone in its object with t a valid time.
func (s *scanner) cleanNested(limit int) bool {
	var stack [maxDepth / 64]uint64
	depth := 0
	for {
		s.ws()
		if s.pos >= len(s.buf) {
			return false
		}
		switch c := s.buf[s.pos]; c {
		case '{', '[':
			if depth >= limit {
				return false
			}
			w, bit := depth>>6, uint64(1)<<(depth&63)
			if c == '{' {
				stack[w] |= bit
			} else {
				stack[w] &^= bit
			}
			depth++
			s.pos++
			s.ws()
			if s.peek() == c+2 { // '{'+2 == '}', '['+2 == ']'
				s.pos++
				depth--
				break
			}
			if c == '{' {
				timed, ok := s.cleanKey(true)
				if !ok {
					return false
				}
				if timed {
					break // the value is read and the object holds nothing else
				}
			}
			continue
		case '"':
			if _, _, _, ok := s.str(); !ok {
				return false
			}
		case 't', 'f':
			if !s.literal() {
				return false
			}
		case 'n':
			return false
		default:
			if !s.number() {
				return false
			}
		}
		// A value is complete: consume separators and closing brackets.
		for {
			if depth == 0 {
				return true
			}
			s.ws()
			d := depth - 1
			obj := stack[d>>6]>>(d&63)&1 == 1
			c := s.peek()
			if c == ',' {
				s.pos++
				if obj {
					s.ws()
					if _, ok := s.cleanKey(false); !ok {
						return false
					}
				}
				break
			}
			if (obj && c == '}') || (!obj && c == ']') {
				s.pos++
				depth--
				continue
			}
			return false
		}
	}
}

// nestedKeyBad marks the bytes a nested custom attribute key must not hold.
var nestedKeyBad = [256]bool{' ': true, '.': true, '$': true}

// cleanKey reads a key of a nested attribute object and its ':' and reports whether it is
// clean. The key "$time" is clean only as the first one (first) with a valid time string as
// its value and nothing after it: cleanKey then reads that value too and says so (timed).
func (s *scanner) cleanKey(first bool) (timed, ok bool) {
	start, end, esc, ok := s.key()
	if !ok || esc || end == start || end-start > maxPropertyKeyChar {
		return false, false
	}
	for _, c := range s.buf[start:end] {
		if nestedKeyBad[c] {
			if !first || string(s.buf[start:end]) != "$time" {
				return false, false
			}
			return true, s.cleanTime()
		}
	}
	return false, true
}

// cleanTime reads the value of a leading "$time" key and reports whether it is a valid time
// string that ends its object (the '}' is left for the caller).
func (s *scanner) cleanTime() bool {
	s.ws()
	if s.peek() != '"' {
		return false
	}
	start, end, esc, ok := s.str()
	if !ok || esc {
		return false
	}
	if t := s.buf[start:end]; !isBrazeTime(t) && !isUSDate(t) {
		return false
	}
	s.ws()
	return s.peek() == '}'
}

// attrValueProblem checks an attribute value that is an object or an array (valid JSON).
// Operator objects ({"inc": n}, {"add": […], "remove": […]}) are not nested attributes;
// {"$add", "$remove", "$update"} hold objects that are. It returns what is wrong and the
// path to it below the attribute, innermost token first.
func attrValueProblem(v []byte) (msg string, path []string) {
	sc := &scanner{buf: v, errOff: -1}
	if v[0] == '[' {
		// A whole-array set: objects in it are an array of objects.
		return eachElement(sc, func(i int) (string, []string) {
			if sc.peek() != '{' {
				sc.skip()
				return "", nil
			}
			return nestedObject(sc, 0)
		})
	}
	switch objectOperator(v) {
	case opSimple:
		return "", nil
	case opObjectArray:
		return objectArrayOps(sc)
	}
	return nestedObject(sc, 0)
}

type attrOperator uint8

const (
	opNone attrOperator = iota
	opSimple
	opObjectArray
)

// objectOperator says whether the object v is an operator: {"inc": number},
// {"add": [...], "remove": [...]} (either or both), or {"$add", "$remove", "$update"}
// (any of them). Anything else is a nested custom attribute.
func objectOperator(v []byte) attrOperator {
	sc := &scanner{buf: v, pos: 1, errOff: -1}
	var simple, objArr, other, n int
	sc.ws()
	if sc.peek() == '}' {
		return opNone
	}
	for {
		sc.ws()
		ks, ke, kesc, _ := sc.key()
		sc.ws()
		k := sc.buf[ks:ke]
		if kesc {
			k = appendUnescaped(nil, k)
		}
		c := sc.peek()
		switch string(k) {
		case "inc":
			if isNumberStart(c) {
				simple |= 1
			} else {
				other++
			}
		case "add", "remove":
			if c == '[' {
				simple |= 2
			} else {
				other++
			}
		case "$add", "$remove", "$update":
			objArr++
		default:
			other++
		}
		n++
		sc.skip()
		sc.ws()
		if sc.peek() != ',' {
			break
		}
		sc.pos++
	}
	switch {
	case other > 0:
		return opNone
	case objArr == n:
		return opObjectArray
	case objArr == 0 && (simple == 2 || (simple == 1 && n == 1)):
		return opSimple
	}
	return opNone
}

// objectArrayOps checks the objects of $add and the $new_object of each $update.
func objectArrayOps(sc *scanner) (string, []string) {
	return eachMember(sc, func(k []byte) (string, []string) {
		switch string(k) {
		case "$add":
			if sc.peek() != '[' {
				sc.skip()
				return "", nil
			}
			return eachElement(sc, func(i int) (string, []string) {
				if sc.peek() == 'n' {
					sc.skip()
					return "a null is not allowed inside a nested custom attribute: Braze would drop every nested update of the request", nil
				}
				if sc.peek() != '{' {
					sc.skip()
					return "", nil
				}
				return nestedObject(sc, 0)
			})
		case "$update":
			if sc.peek() != '[' {
				sc.skip()
				return "", nil
			}
			return eachElement(sc, func(i int) (string, []string) {
				if sc.peek() != '{' {
					sc.skip()
					return "", nil
				}
				return eachMember(sc, func(k []byte) (string, []string) {
					if string(k) != "$new_object" || sc.peek() != '{' {
						sc.skip()
						return "", nil
					}
					return nestedObject(sc, 0)
				})
			})
		}
		sc.skip()
		return "", nil
	})
}

// eachMember calls fn for each member of the object at sc.pos, with sc at the member's
// value; fn must consume the value. It stops at the first problem (path gets the key).
func eachMember(sc *scanner, fn func(k []byte) (string, []string)) (string, []string) {
	sc.pos++
	sc.ws()
	if sc.peek() == '}' {
		sc.pos++
		return "", nil
	}
	for {
		sc.ws()
		ks, ke, kesc, _ := sc.key()
		sc.ws()
		k := sc.buf[ks:ke]
		if kesc {
			k = appendUnescaped(nil, k)
		}
		if msg, path := fn(k); msg != "" {
			return msg, append(path, string(k))
		}
		sc.ws()
		if sc.peek() == ',' {
			sc.pos++
			continue
		}
		sc.pos++ // '}'
		return "", nil
	}
}

// eachElement calls fn for each element of the array at sc.pos, with sc at the element;
// fn must consume it. It stops at the first problem (path gets the index).
func eachElement(sc *scanner, fn func(i int) (string, []string)) (string, []string) {
	sc.pos++
	sc.ws()
	if sc.peek() == ']' {
		sc.pos++
		return "", nil
	}
	for i := 0; ; i++ {
		sc.ws()
		if msg, path := fn(i); msg != "" {
			return msg, append(path, itoa(i))
		}
		sc.ws()
		if sc.peek() == ',' {
			sc.pos++
			continue
		}
		sc.pos++ // ']'
		return "", nil
	}
}

func itoa(i int) string {
	var b [20]byte
	n := len(b)
	for {
		n--
		b[n] = byte('0' + i%10)
		if i /= 10; i == 0 {
			return string(b[n:])
		}
	}
}

// nestedObject checks a nested custom attribute object at sc.pos: no null anywhere, keys
// non-empty, at most 255 characters, without space, '.' or '$'; {"$time": t} with t a time.
func nestedObject(sc *scanner, depth int) (string, []string) {
	members := 0
	sawTime := false
	msg, path := eachMember(sc, func(k []byte) (string, []string) {
		members++
		if string(k) == "$time" {
			sawTime = true
			if sc.peek() != '"' {
				sc.skip()
				return "$time must be a time string: Braze would drop every nested update of the request", nil
			}
			start, end, esc, _ := sc.str()
			t := sc.buf[start:end]
			if esc {
				t = appendUnescaped(nil, t)
			}
			if !isBrazeTime(t) && !isUSDate(t) {
				return "$time is not a valid time: Braze would drop every nested update of the request", nil
			}
			return "", nil
		}
		if p := nestedKeyProblem(k); p != "" {
			sc.skip()
			return p, nil
		}
		return nestedValue(sc, depth)
	})
	if msg == "" && sawTime && members > 1 {
		return "an object with $time must have no other key", nil
	}
	return msg, path
}

// nestedValue checks one value inside a nested custom attribute.
func nestedValue(sc *scanner, depth int) (string, []string) {
	switch sc.peek() {
	case 'n':
		sc.skip()
		return "a null is not allowed inside a nested custom attribute: Braze would drop every nested update of the request", nil
	case '{':
		return nestedObject(sc, depth+1)
	case '[':
		return eachElement(sc, func(int) (string, []string) { return nestedValue(sc, depth+1) })
	}
	sc.skip()
	return "", nil
}

// nestedKeyProblem applies the key rules of nested custom attributes.
func nestedKeyProblem(k []byte) string {
	if len(k) == 0 {
		return "a nested custom attribute key must be non-empty"
	}
	if len(k) > maxPropertyKeyChar && utf8.RuneCount(k) > maxPropertyKeyChar {
		return "a nested custom attribute key must be at most 255 characters"
	}
	for _, c := range k {
		if c == ' ' || c == '.' || c == '$' {
			return "a nested custom attribute key must not contain a space, '.' or '$'"
		}
	}
	return ""
}

// isUSDate checks MM/dd/yyyy, a Braze attribute date layout.
func isUSDate(b []byte) bool {
	if len(b) != 10 || b[2] != '/' || b[5] != '/' {
		return false
	}
	iso := [10]byte{b[6], b[7], b[8], b[9], '-', b[0], b[1], '-', b[3], b[4]}
	return isDate(iso[:])
}
