package fnv1a

import (
	"hash/fnv"
	"testing"
)

// The hand-written hash is the standard library's FNV-1a 64, byte for byte.
func TestMatchesHashFNV(t *testing.T) {
	for _, s := range []string{"", "a", "external_id", "\x00\xff", "user-12345678901234567890"} {
		h := fnv.New64a()
		h.Write([]byte{3})
		h.Write([]byte(s))
		if got := Add(AddByte(Offset, 3), []byte(s)); got != h.Sum64() {
			t.Errorf("%q: %x, want %x", s, got, h.Sum64())
		}
		h.Reset()
		h.Write([]byte(s))
		if got := Sum64([]byte(s)); got != h.Sum64() {
			t.Errorf("Sum64(%q) = %x, want %x", s, got, h.Sum64())
		}
	}
}
