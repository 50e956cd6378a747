package brazesim

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// scanner is a small validating JSON scanner used on the /users/track hot path.
// It never builds maps for the common path: callers walk objects key by key and
// decode only the values they keep. Any syntax error sets err and makes every
// further call a no-op, so loops terminate.
type scanner struct {
	b   []byte
	i   int
	err error
}

var errSyntax = errors.New("invalid JSON")

func (s *scanner) fail() {
	if s.err == nil {
		s.err = errSyntax
	}
	s.i = len(s.b)
}

func (s *scanner) ws() {
	if s.i < len(s.b) && s.b[s.i] > ' ' {
		return
	}
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next non-space byte without consuming it (0 at end).
func (s *scanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) consume(c byte) bool {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// more drives object and array loops: it consumes the separator or the closing byte.
func (s *scanner) more(close byte, first *bool) bool {
	if s.err != nil {
		return false
	}
	s.ws()
	if s.i >= len(s.b) {
		s.fail()
		return false
	}
	if s.b[s.i] == close {
		s.i++
		return false
	}
	if !*first {
		if s.b[s.i] != ',' {
			s.fail()
			return false
		}
		s.i++
	}
	*first = false
	return true
}

// member is more('}', first) followed by key() in one call: it reads the next
// member's key and colon, or the closing brace (ok false).
func (s *scanner) member(first *bool) (raw []byte, esc, ok bool) {
	if s.err != nil {
		return nil, false, false
	}
	b := s.b
	i := skipWS(b, s.i)
	if i >= len(b) {
		s.fail()
		return nil, false, false
	}
	if b[i] == '}' {
		s.i = i + 1
		return nil, false, false
	}
	if !*first {
		if b[i] != ',' {
			s.fail()
			return nil, false, false
		}
		i = skipWS(b, i+1)
	}
	*first = false
	if i >= len(b) || b[i] != '"' {
		s.fail()
		return nil, false, true
	}
	end, esc, ok := scanStr(b, i+1)
	if !ok {
		s.fail()
		return nil, false, true
	}
	raw = b[i+1 : end-1]
	if end = skipWS(b, end); end >= len(b) || b[end] != ':' {
		s.fail()
		return raw, esc, true
	}
	s.i = end + 1
	return raw, esc, true
}

// key reads an object key and the following colon. The returned bytes are the raw
// (still escaped) key; esc reports whether it contains escapes.
func (s *scanner) key() (raw []byte, esc bool) {
	b := s.b
	i := skipWS(b, s.i)
	if i >= len(b) || b[i] != '"' {
		s.fail()
		return nil, false
	}
	end, esc, ok := scanStr(b, i+1)
	if !ok {
		s.fail()
		return nil, false
	}
	raw = b[i+1 : end-1]
	if end = skipWS(b, end); end >= len(b) || b[end] != ':' {
		s.fail()
		return raw, esc
	}
	s.i = end + 1
	return raw, esc
}

const (
	swarOnes = 0x0101010101010101
	swarHigh = 0x8080808080808080
)

// hasSpecial reports, for 8 bytes, whether any is '"', '\\' or a control byte (< 0x20).
func hasSpecial(x uint64) uint64 {
	q := x ^ (swarOnes * '"')
	bs := x ^ (swarOnes * '\\')
	t := ((q - swarOnes) & ^q) | ((bs - swarOnes) & ^bs) | ((x - swarOnes*0x20) & ^x)
	return t & swarHigh
}

// str reads a JSON string starting at the opening quote and returns its raw content.
func (s *scanner) str() (raw []byte, esc bool) {
	b := s.b
	i := s.i
	if i >= len(b) || b[i] != '"' {
		s.ws()
		i = s.i
		if i >= len(b) || b[i] != '"' {
			s.fail()
			return nil, false
		}
	}
	end, esc, ok := scanStr(b, i+1)
	if !ok {
		s.fail()
		return nil, false
	}
	s.i = end
	return b[i+1 : end-1], esc
}

// scanStr validates the rest of a JSON string whose content starts at i and
// returns the index after its closing quote and whether it has escapes. Plain
// bytes are skipped 8 at a time.
func scanStr(b []byte, i int) (end int, esc, ok bool) {
	p := unsafe.Pointer(unsafe.SliceData(b))
	for i >= 0 {
		for i+8 <= len(b) {
			if m := hasSpecial(binary.LittleEndian.Uint64((*[8]byte)(unsafe.Add(p, i))[:])); m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
			i += 8
		}
		if i >= len(b) {
			break
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, esc, true
		case c == '\\':
			esc = true
			if i+1 >= len(b) {
				return 0, false, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex4(b[i+2:i+6]) {
					return 0, false, false
				}
				i += 6
			default:
				return 0, false, false
			}
		case c < 0x20:
			return 0, false, false
		default: // tail shorter than 8 bytes
			i++
		}
	}
	return 0, false, false
}

func isHex4(b []byte) bool {
	for _, c := range b[:4] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// unescape decodes the raw content of a validated JSON string.
func unescape(raw []byte) string {
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		switch raw[i+1] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := rune(hex4(raw[i+2:]))
			i += 6
			if utf16.IsSurrogate(r) && i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
				r2 := rune(hex4(raw[i+2:]))
				if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
					r = d
					i += 6
				} else {
					r = utf8.RuneError
				}
			} else if utf16.IsSurrogate(r) {
				r = utf8.RuneError
			}
			out = utf8.AppendRune(out, r)
			continue
		default: // '"', '\\', '/'
			out = append(out, raw[i+1])
		}
		i += 2
	}
	return string(out)
}

func hex4(b []byte) uint32 {
	var v uint32
	for _, c := range b[:4] {
		v <<= 4
		switch {
		case c >= '0' && c <= '9':
			v |= uint32(c - '0')
		case c >= 'a' && c <= 'f':
			v |= uint32(c - 'a' + 10)
		default:
			v |= uint32(c - 'A' + 10)
		}
	}
	return v
}

// strVal returns a string value as a Go string (allocating).
func strVal(raw []byte, esc bool) string {
	if esc {
		return unescape(raw)
	}
	return string(raw)
}

// number validates a JSON number and returns its bytes.
func (s *scanner) number() []byte {
	b := s.b
	i := s.i
	start := i
	if i < len(b) && b[i] == '-' {
		i++
	}
	if i >= len(b) {
		s.fail()
		return nil
	}
	if b[i] == '0' {
		i++
	} else if b[i] >= '1' && b[i] <= '9' {
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	} else {
		s.fail()
		return nil
	}
	if i < len(b) && b[i] == '.' {
		i++
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			s.fail()
			return nil
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			s.fail()
			return nil
		}
	}
	s.i = i
	return b[start:i]
}

func (s *scanner) lit(word string) {
	if len(s.b)-s.i >= len(word) && string(s.b[s.i:s.i+len(word)]) == word {
		s.i += len(word)
		return
	}
	s.fail()
}

const maxDepth = 200

// skipWS returns the index of the first non-space byte at or after i.
func skipWS(b []byte, i int) int {
	for i < len(b) && b[i] <= ' ' && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipDepth validates and skips one value; depth is the nesting level of that
// value (values nested deeper than maxDepth are invalid). It is iterative: one
// loop over the bytes instead of a call per token.
func (s *scanner) skipDepth(depth int) {
	s.walk(depth, nil)
}

// topKeys collects what props needs about the members of the object walk starts
// on: their number, where the 256th ends, and whether a key is not allowed.
type topKeys struct {
	check    bool // apply the property-key rules
	purchase bool
	bad      bool
	n        int
	cut      int
}

// walk is skipDepth; with tk, the value must be an object whose members it
// reports in tk (their values count as depth, not depth+1).
func (s *scanner) walk(depth int, tk *topKeys) {
	b := s.b
	i := s.i
	if tk != nil {
		depth-- // the object itself
	}
	// Container kinds of the open levels, one bit each (1 = object); maxDepth+1 levels at most.
	var kinds [(maxDepth + 64) / 64]uint64
	lvl := 0 // open containers in this value
	if depth > maxDepth {
		goto fail
	}
	// White space is rare in request bodies: each step tests the expected byte
	// first and skips spaces only when it is not there.
value:
	if i >= len(b) || depth+lvl > maxDepth {
		goto fail
	}
	switch b[i] {
	case '"':
		var ok bool
		if i, _, ok = scanStr(b, i+1); !ok {
			goto fail
		}
		goto after
	case '{':
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == '}' {
			i++
			goto after
		}
		kinds[lvl>>6] |= 1 << (lvl & 63)
		lvl++
		goto key
	case '[':
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == ']' {
			i++
			goto after
		}
		kinds[lvl>>6] &^= 1 << (lvl & 63)
		lvl++
		goto value
	case 't':
		if len(b)-i < 4 || string(b[i:i+4]) != "true" {
			goto fail
		}
		i += 4
		goto after
	case 'f':
		if len(b)-i < 5 || string(b[i:i+5]) != "false" {
			goto fail
		}
		i += 5
		goto after
	case 'n':
		if len(b)-i < 4 || string(b[i:i+4]) != "null" {
			goto fail
		}
		i += 4
		goto after
	case ' ', '\t', '\n', '\r':
		i = skipWS(b, i+1)
		goto value
	default:
		s.i = i
		s.number()
		if s.err != nil {
			return
		}
		i = s.i
		goto after
	}
key:
	if i >= len(b) || b[i] != '"' {
		if i = skipWS(b, i); i >= len(b) || b[i] != '"' {
			goto fail
		}
	}
	{
		start := i + 1
		var ok, esc bool
		if i, esc, ok = scanStr(b, start); !ok {
			goto fail
		}
		if tk != nil && lvl == 1 && tk.check && !tk.bad {
			// Only keys that could break a rule are checked in full.
			if n := i - 1 - start; esc || n == 0 || b[start] == '$' || n > 255 || n == 4 || n == 5 || n == 8 || n == 10 {
				tk.bad = !validPropKey(b[start:i-1], esc, tk.purchase)
			}
		}
	}
	if i >= len(b) || b[i] != ':' {
		if i = skipWS(b, i); i >= len(b) || b[i] != ':' {
			goto fail
		}
	}
	i++
	goto value
after:
	if lvl == 1 && tk != nil {
		if tk.n++; tk.n == 256 {
			tk.cut = i
		}
	}
	if lvl == 0 {
		s.i = i
		return
	}
sep:
	if i >= len(b) {
		goto fail
	}
	{
		obj := kinds[(lvl-1)>>6]>>((lvl-1)&63)&1 != 0
		switch b[i] {
		case ',':
			i++
			if obj {
				goto key
			}
			goto value
		case '}':
			if !obj {
				goto fail
			}
		case ']':
			if obj {
				goto fail
			}
		case ' ', '\t', '\n', '\r':
			i = skipWS(b, i+1)
			goto sep
		default:
			goto fail
		}
		i++
		lvl--
		goto after
	}
fail:
	s.fail()
}

// span skips one value and returns the bytes it occupied.
func (s *scanner) span() []byte {
	s.ws()
	start := s.i
	s.skipDepth(0)
	if s.err != nil {
		return nil
	}
	return s.b[start:s.i]
}

// value decodes one value into the encoding/json generic representation
// (map[string]any, []any, string, float64, bool, nil).
func (s *scanner) value(depth int) any {
	if depth > maxDepth {
		s.fail()
		return nil
	}
	switch s.peek() {
	case '{':
		s.i++
		m := map[string]any{}
		first := true
		for s.more('}', &first) {
			k, esc := s.key()
			ks := strVal(k, esc)
			m[ks] = s.value(depth + 1)
		}
		return m
	case '[':
		s.i++
		a := make([]any, 0, 4)
		first := true
		for s.more(']', &first) {
			a = append(a, s.value(depth+1))
		}
		return a
	case '"':
		raw, esc := s.str()
		if s.err != nil {
			return nil
		}
		if esc {
			return unescape(raw)
		}
		return internAny(raw)
	case 't':
		s.lit("true")
		return true
	case 'f':
		s.lit("false")
		return false
	case 'n':
		s.lit("null")
		return nil
	default:
		n := s.number()
		if s.err != nil {
			return nil
		}
		return boxNumber(n)
	}
}

// arrayInto decodes the array at s.i (as value(0) would) appending its elements to dst.
func (s *scanner) arrayInto(dst []any) []any {
	s.i++ // '['
	first := true
	for s.more(']', &first) {
		dst = append(dst, s.value(1))
	}
	return dst
}

var smallInts = func() (t [1024]any) {
	for i := range t {
		t[i] = float64(i)
	}
	return
}()

// boxNumber returns the number as a boxed float64, without allocating for 0..1023.
func boxNumber(n []byte) any {
	if len(n) <= 4 {
		v := 0
		for _, c := range n {
			if c < '0' || c > '9' {
				return parseFloat(n)
			}
			v = v*10 + int(c-'0')
		}
		if v < len(smallInts) {
			return smallInts[v]
		}
	}
	return parseFloat(n)
}

func parseFloat(n []byte) float64 {
	f, _ := strconv.ParseFloat(unsafe.String(unsafe.SliceData(n), len(n)), 64)
	return f
}

// end checks that only white space follows the top-level value.
func (s *scanner) end() {
	s.ws()
	if s.i != len(s.b) {
		s.fail()
	}
}
