package brazesim

import (
	"encoding/binary"
	"math/bits"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"
)

// Layouts accepted for event/purchase/date values (docs/braze-rules.md §1 "Attributes object"
// Dates and "Event object": ISO 8601 or yyyy-MM-dd'T'HH:mm:ss:SSSZ; without an offset
// the value is UTC).
var timeLayouts = []string{
	"2006-01-02T15:04:05Z0700",
	"2006-01-02T15:04:05.999999999Z0700",
	"2006-01-02T15:04:05",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02T15:04Z07:00",
	"2006-01-02 15:04:05",
	"2006-01-02 15:04:05Z07:00",
	"2006-01-02",
	"01/02/2006",
	"Mon 01 02 15:04:05.000 -0700 2006",
	"Mon 01 02 15:04:05 MST 2006",
	time.UnixDate,
	time.RubyDate,
}

func parseBrazeTime(raw []byte) (time.Time, bool) {
	if len(raw) == 0 {
		return time.Time{}, false
	}
	// Fastest path: yyyy-MM-ddTHH:mm:ssZ, the usual shape; the same Time as time.Parse.
	if t, ok := parseUTCSeconds(raw); ok {
		return t, true
	}
	// Fast path: RFC 3339 (numeric offset or Z: no zone name is retained).
	if t, err := time.Parse(time.RFC3339, unsafe.String(unsafe.SliceData(raw), len(raw))); err == nil {
		return t, true
	}
	s := string(raw)
	// yyyy-MM-ddTHH:mm:ss:SSS[Z|±hh:mm|±hhmm]: the milliseconds follow a colon.
	if len(s) >= 23 && s[10] == 'T' && s[19] == ':' && isDigits(s[20:23]) {
		s2 := s[:19] + "." + s[20:]
		if t, ok := parseLayouts(s2); ok {
			return t, true
		}
	}
	return parseLayouts(s)
}

// parseUTCSeconds parses exactly yyyy-MM-ddTHH:mm:ssZ with the range checks of
// time.Parse(time.RFC3339, …); anything else is left to time.Parse.
func parseUTCSeconds(b []byte) (time.Time, bool) {
	return parseUTCSecondsCached(b, nil)
}

// dayCache remembers the last date parsed: the events of a request usually share it.
type dayCache struct {
	key  [10]byte
	days int64
	ok   bool
}

// parseUTCSecondsCached is parseUTCSeconds with the date part looked up in c first.
func parseUTCSecondsCached(b []byte, c *dayCache) (time.Time, bool) {
	if len(b) != 20 || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' || b[19] != 'Z' {
		return time.Time{}, false
	}
	d := func(i int) int {
		x, y := int(b[i])-'0', int(b[i+1])-'0'
		if uint(x) > 9 || uint(y) > 9 {
			return -1
		}
		return x*10 + y
	}
	hh, mi, ss := d(11), d(14), d(17)
	if hh < 0 || hh > 23 || mi < 0 || mi > 59 || ss < 0 || ss > 59 {
		return time.Time{}, false
	}
	var days int64
	if c != nil && c.ok && string(b[:10]) == string(c.key[:]) {
		days = c.days
	} else {
		hy, ly, mo, dd := d(0), d(2), d(5), d(8)
		if hy < 0 || ly < 0 || mo < 1 || mo > 12 || dd < 1 {
			return time.Time{}, false
		}
		y := hy*100 + ly
		leap := y%4 == 0 && (y%100 != 0 || y%400 == 0)
		if dd > 28 && (dd > daysInMonth[mo] || mo == 2 && (dd > 29 || !leap)) {
			return time.Time{}, false
		}
		// Days since 1970-01-01 (proleptic Gregorian, days-from-civil).
		if mo <= 2 {
			y--
		}
		era := y / 400 // y >= -1
		if y < 0 {
			era = -1
		}
		yoe := y - era*400
		mp := (mo + 9) % 12
		doy := (153*mp+2)/5 + dd - 1
		doe := yoe*365 + yoe/4 - yoe/100 + doy
		days = int64(era)*146097 + int64(doe) - 719468
		if c != nil {
			copy(c.key[:], b[:10])
			c.days, c.ok = days, true
		}
	}
	return time.Unix(days*86400+int64(hh*3600+mi*60+ss), 0).UTC(), true
}

var daysInMonth = [13]int{0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}

func parseLayouts(s string) (time.Time, bool) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, true
	}
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return len(s) > 0
}

// Interning of attribute keys, event names, product IDs and short string values:
// a lock-free direct-mapped cache, so hot-path lookups of repeated strings neither
// lock nor allocate. Colliding entries replace each other; memory stays bounded.
const (
	internBits   = 14
	internMaxLen = 48
)

type internEntry struct {
	s string
	v any // s, boxed once
}

var (
	internTab [1 << internBits]atomic.Pointer[internEntry]
)

// quickHash mixes the length and the first and last 8 bytes (enough to spread
// keys and short values; collisions only cost a cache miss).
func quickHash(b []byte) uint64 {
	var x uint64
	if len(b) >= 8 {
		x = binary.LittleEndian.Uint64(b) ^ bits.RotateLeft64(binary.LittleEndian.Uint64(b[len(b)-8:]), 29)
	} else {
		for i, c := range b {
			x |= uint64(c) << (8 * i)
		}
	}
	x ^= uint64(len(b)) * 0x9E3779B97F4A7C15
	x *= 0xBF58476D1CE4E5B9
	return x >> (64 - internBits)
}

// internAny returns b as a boxed string, shared with earlier equal values.
func internAny(b []byte) any {
	if len(b) > internMaxLen {
		return string(b)
	}
	slot := &internTab[quickHash(b)]
	if e := slot.Load(); e != nil && e.s == string(b) {
		return e.v
	}
	str := string(b)
	e := &internEntry{s: str, v: str}
	slot.Store(e)
	return e.v
}

// internString is intern for a string that may point into a reused buffer: the
// result never does.
func internString(k string) string {
	return intern(unsafe.Slice(unsafe.StringData(k), len(k)))
}

// bodyStr views raw as a string without copying. It is only valid while the
// request body is: whatever the store keeps must be cloned or interned.
func bodyStr(raw []byte) string {
	return unsafe.String(unsafe.SliceData(raw), len(raw))
}

func intern(b []byte) string {
	return internAny(b).(string)
}

// internKey returns the string of a raw JSON string (unescaped if needed), interned.
func internKey(raw []byte, esc bool) string {
	if esc {
		return unescape(raw)
	}
	return intern(raw)
}

// attrKey applies the custom-attribute key rule: leading and trailing spaces are
// stripped (docs/braze-rules.md §1 "Attributes object").
// The key points into the body unless it has escapes (attrSet.set interns it).
func attrKey(raw []byte, esc bool) string {
	var k string
	if esc {
		k = unescape(raw)
	} else {
		k = bodyStr(raw)
	}
	if len(k) > 0 && (k[0] == ' ' || k[len(k)-1] == ' ') {
		return strings.TrimSpace(k)
	}
	return k
}
