package schemas

import (
	"encoding/binary"
	"math"
	"math/bits"
	"strconv"
	"unicode/utf8"
)

// maxDepth bounds container nesting. Deeper messages are rejected as invalid_json: no real
// Braze object nests this deep, and a bound keeps skip's bracket stack a fixed-size array.
const maxDepth = 1024

// scanner is a cursor over one message that checks full JSON syntax (RFC 8259, UTF-8 only) as
// it goes. Methods return false on the first syntax error, which is kept in errOff/errMsg.
type scanner struct {
	buf    []byte
	pos    int
	errOff int // byte offset of the first syntax error, -1 while there is none
	errMsg string
	// bigAt is 1 + the offset of a number outside float64 range read since it was last
	// zeroed (0: none). docs/braze-rules.md §8 poison-1.
	bigAt int
}

// fail records a syntax error (the first one wins) and returns false.
func (s *scanner) fail(off int, msg string) bool {
	if s.errOff < 0 {
		s.errOff, s.errMsg = off, msg
	}
	return false
}

// failHere reports "unexpected end of input" at EOF, otherwise msg at the current byte.
func (s *scanner) failHere(msg string) bool {
	if s.pos >= len(s.buf) {
		return s.fail(len(s.buf), "unexpected end of input")
	}
	return s.fail(s.pos, msg)
}

// ws skips JSON whitespace.
func (s *scanner) ws() {
	for s.pos < len(s.buf) {
		c := s.buf[s.pos]
		if c > ' ' || (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
			return
		}
		s.pos++
	}
}

// peek returns the current byte, or 0 at the end of input (0 is never valid JSON there).
func (s *scanner) peek() byte {
	if s.pos < len(s.buf) {
		return s.buf[s.pos]
	}
	return 0
}

// expect consumes byte c (after whitespace) or fails.
func (s *scanner) expect(c byte, msg string) bool {
	s.ws()
	if s.pos < len(s.buf) && s.buf[s.pos] == c {
		s.pos++
		return true
	}
	return s.failHere(msg)
}

// strPlain marks bytes a string may hold without a closer look: not '"', '\\', a control
// byte or a non-ASCII byte.
var strPlain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// specialMask flags (with bit 7 of the byte) the bytes of w, little-endian, that are '"',
// '\\', < 0x20 or >= 0x80: SWAR versions of "has a zero byte" and "has a byte less than n".
// Borrows can flag bytes above a special byte but never below one, so the lowest flag is
// exact: it marks the first special byte, or there is none.
func specialMask(w uint64) uint64 {
	quote := w ^ (lsb * '"')
	bslash := w ^ (lsb * '\\')
	m := (quote - lsb) &^ quote
	m |= (bslash - lsb) &^ bslash
	m |= (w - lsb*0x20) &^ w
	m |= w
	return m & msb
}

// str reads a string at s.pos (which holds '"'), validating escapes and UTF-8. It returns the
// span of the content between the quotes and whether it holds any escape.
func (s *scanner) str() (start, end int, esc, ok bool) {
	buf := s.buf
	i := s.pos + 1
	start = i
	for {
		// Find the next byte that needs a closer look, 8 bytes at a time where possible.
		if i+8 <= len(buf) {
			m := specialMask(binary.LittleEndian.Uint64(buf[i:]))
			if m == 0 {
				i += 8
				continue
			}
			i += bits.TrailingZeros64(m) >> 3
		} else {
			for i < len(buf) && strPlain[buf[i]] {
				i++
			}
			if i >= len(buf) {
				return 0, 0, false, s.fail(len(buf), "unterminated string")
			}
		}
		switch c := buf[i]; {
		case c == '"':
			s.pos = i + 1
			return start, i, esc, true
		case c == '\\':
			esc = true
			if i+1 >= len(buf) {
				return 0, 0, false, s.fail(len(buf), "unterminated string")
			}
			switch buf[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(buf) || hex4(buf[i+2:i+6]) < 0 {
					return 0, 0, false, s.fail(i, `invalid \u escape in string`)
				}
				i += 6
			default:
				return 0, 0, false, s.fail(i, "invalid escape in string")
			}
		case c < 0x20:
			return 0, 0, false, s.fail(i, "control character in string")
		default:
			r, size := utf8.DecodeRune(buf[i:])
			if r == utf8.RuneError && size == 1 {
				return 0, 0, false, s.fail(i, "invalid UTF-8 in string")
			}
			i += size
		}
	}
}

// hex4 decodes four hex digits, or returns -1.
func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// number reads a number at s.pos: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
// A number whose magnitude may exceed float64 (more than 308 decimal digits before the
// point, counting the exponent) is parsed to tell, and noted in bigAt when it does.
func (s *scanner) number() bool {
	b, i := s.buf, s.pos
	start := i
	if i < len(b) && b[i] == '-' {
		i++
	}
	intStart := i
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i++; i < len(b) && isDigit(b[i]); i++ {
		}
	default:
		s.pos = i
		return s.failHere("invalid character looking for a value")
	}
	mag := i - intStart // decimal digits before the point, plus the exponent
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			s.pos = i
			return s.failHere("invalid number: digit expected after '.'")
		}
		for ; i < len(b) && isDigit(b[i]); i++ {
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		neg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			neg = b[i] == '-'
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			s.pos = i
			return s.failHere("invalid number: digit expected in exponent")
		}
		exp := 0
		for ; i < len(b) && isDigit(b[i]); i++ {
			if exp < 1e6 {
				exp = exp*10 + int(b[i]-'0')
			}
		}
		if neg {
			exp = -exp
		}
		mag += exp
	}
	s.pos = i
	if mag > 308 && s.bigAt == 0 && outOfFloat64(b[start:i]) {
		s.bigAt = start + 1
	}
	return true
}

// outOfFloat64 reports whether a valid JSON number overflows float64.
func outOfFloat64(lit []byte) bool {
	f, err := strconv.ParseFloat(string(lit), 64)
	return err != nil && math.IsInf(f, 0)
}

// literal reads true, false or null at s.pos.
func (s *scanner) literal() bool {
	var want string
	switch s.buf[s.pos] {
	case 't':
		want = "true"
	case 'f':
		want = "false"
	default:
		want = "null"
	}
	for i := 0; i < len(want); i++ {
		if s.pos+i >= len(s.buf) || s.buf[s.pos+i] != want[i] {
			s.pos += i
			return s.failHere("invalid literal")
		}
	}
	s.pos += len(want)
	return true
}

// key reads an object key and its ':' (s.pos at the key, whitespace already skipped).
func (s *scanner) key() (start, end int, esc, ok bool) {
	if s.peek() != '"' {
		return 0, 0, false, s.failHere("object key expected")
	}
	if start, end, esc, ok = s.str(); !ok {
		return
	}
	if s.pos < len(s.buf) && s.buf[s.pos] == ':' {
		s.pos++
		return start, end, esc, true
	}
	return start, end, esc, s.expect(':', "':' expected after object key")
}

// skip reads any value at s.pos (leading whitespace allowed) without recursion, keeping
// only one bit per open container (object or array).
func (s *scanner) skip() bool {
	s.ws()
	switch s.peek() {
	case '"':
		_, _, _, ok := s.str()
		return ok
	case '{', '[':
		return s.skipContainer()
	case 't', 'f', 'n':
		return s.literal()
	}
	return s.number() // at the end of input too: it reports that as skipContainer would
}

// skipContainer is skip for a value that may hold others.
func (s *scanner) skipContainer() bool {
	var stack [maxDepth / 64]uint64
	depth := 0
	for {
		s.ws()
		if s.pos >= len(s.buf) {
			return s.failHere("")
		}
		switch c := s.buf[s.pos]; c {
		case '{', '[':
			if depth == maxDepth {
				return s.fail(s.pos, "nesting too deep")
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
				if _, _, _, ok := s.key(); !ok {
					return false
				}
			}
			continue
		case '"':
			if _, _, _, ok := s.str(); !ok {
				return false
			}
		case 't', 'f', 'n':
			if !s.literal() {
				return false
			}
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
					if _, _, _, ok := s.key(); !ok {
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
			if obj {
				return s.failHere("',' or '}' expected in object")
			}
			return s.failHere("',' or ']' expected in array")
		}
	}
}

// appendUnescaped appends the decoded content of an already validated JSON string body to
// dst. Lone surrogates become U+FFFD, as encoding/json does.
func appendUnescaped(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		if raw[i] != '\\' {
			j := i + 1
			for j < len(raw) && raw[j] != '\\' {
				j++
			}
			dst = append(dst, raw[i:j]...)
			i = j
			continue
		}
		c := raw[i+1]
		i += 2
		switch c {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(raw[i : i+4])
			i += 4
			switch {
			case 0xD800 <= r && r < 0xDC00:
				if i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
					if r2 := hex4(raw[i+2 : i+6]); 0xDC00 <= r2 && r2 < 0xE000 {
						r = 0x10000 + (r-0xD800)<<10 + (r2 - 0xDC00)
						i += 6
						break
					}
				}
				r = utf8.RuneError
			case 0xDC00 <= r && r < 0xE000:
				r = utf8.RuneError
			}
			dst = utf8.AppendRune(dst, r)
		default: // '"', '\\', '/'
			dst = append(dst, c)
		}
	}
	return dst
}
