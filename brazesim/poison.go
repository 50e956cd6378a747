package brazesim

import (
	"bytes"
	"math"
	"strconv"

	"github.com/braze-ingestor/braze-ingestor/internal/fnv1a"
)

// Whole-request failures that Braze does not document but that were measured against it
// (docs/braze-rules.md §1 "Numbers, strings and keys that break a whole request", §8
// poison-1..3): a number outside float64 range, an object that repeats a key, a NUL in an
// external_id. The simulator answers them 400 (validation on).
const (
	msgNumberRange  = "Request body could not be parsed: number out of range" // sim
	msgDuplicateKey = "Request body could not be parsed: duplicate key"       // sim
	msgNULExternal  = "Request body could not be parsed: NUL in external_id"  // sim
)

// poisonBody checks a syntactically valid body for those inputs, in one pass. keys is
// scratch (the key prints of the open objects); it is returned for reuse.
func poisonBody(b []byte, keys []uint64) (string, []uint64) {
	var starts [maxDepth + 2]int32 // where each open object's keys begin in keys
	depth := 0
	var objs [(maxDepth + 2 + 63) / 64]uint64 // bit d: level d is an object
	keys = keys[:0]
	expectKey := false
	lastKeyExt := false
	for i := 0; i < len(b); {
		c := b[i]
		switch {
		case c == '"':
			end, esc, _ := scanStr(b, i+1)
			raw := b[i+1 : end-1]
			if expectKey {
				k := raw
				if esc {
					k = []byte(unescape(raw))
				}
				h := keyHash(k)
				for _, o := range keys[starts[depth]:] {
					if o == h {
						return msgDuplicateKey, keys
					}
				}
				keys = append(keys, h)
				lastKeyExt = string(k) == "external_id"
				expectKey = false
			} else if lastKeyExt && esc && bytes.Contains(raw, []byte(`\u0000`)) {
				return msgNULExternal, keys
			}
			i = end
			continue
		case c == '{':
			depth++
			if depth < len(starts) {
				starts[depth] = int32(len(keys))
			}
			if depth < len(starts) {
				objs[depth>>6] |= 1 << (depth & 63)
			}
			expectKey = true
		case c == '[':
			depth++
			if depth < len(starts) {
				objs[depth>>6] &^= 1 << (depth & 63)
			}
		case c == '}' || c == ']':
			if c == '}' && depth < len(starts) {
				keys = keys[:starts[depth]]
			}
			depth--
		case c == ',':
			expectKey = depth < len(starts) && objs[depth>>6]&(1<<(depth&63)) != 0
			lastKeyExt = false
		case c == '-' || (c >= '0' && c <= '9'):
			j, mag := numberMag(b, i)
			if mag > 308 && bigNumber(b[i:j]) {
				return msgNumberRange, keys
			}
			i = j
			continue
		}
		i++
	}
	return "", keys
}

// numberMag scans the number at b[i] and returns its end and its decimal magnitude (digits
// before the point plus the exponent).
func numberMag(b []byte, i int) (end, mag int) {
	if b[i] == '-' {
		i++
	}
	start := i
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	mag = i - start
	if i < len(b) && b[i] == '.' {
		for i++; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		neg := i < len(b) && b[i] == '-'
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		exp := 0
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
			if exp < 1e6 {
				exp = exp*10 + int(b[i]-'0')
			}
		}
		if neg {
			exp = -exp
		}
		mag += exp
	}
	return i, mag
}

func bigNumber(lit []byte) bool {
	f, err := strconv.ParseFloat(string(lit), 64)
	return err != nil && math.IsInf(f, 0)
}

// keyHash is 64-bit FNV-1a (the repository's one hash, internal/fnv1a).
func keyHash(k []byte) uint64 { return fnv1a.Sum64(k) }
