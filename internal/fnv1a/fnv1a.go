// Package fnv1a is the repository's one 64-bit hash: FNV-1a, written out so that hashing
// costs no allocation and inlines (hash/fnv would need an interface value). It keys user
// identities (schemas.UserHash: lanes, coalescing, the suppression store) and attribute
// values (dedup.ValueHash). It is not a cryptographic hash.
package fnv1a

const (
	// Offset is the FNV-1a 64-bit offset basis: the hash of no bytes.
	Offset uint64 = 14695981039346656037
	prime  uint64 = 1099511628211
)

// AddByte folds one byte into h.
func AddByte(h uint64, c byte) uint64 {
	return (h ^ uint64(c)) * prime
}

// Add folds b into h.
func Add(h uint64, b []byte) uint64 {
	for _, c := range b {
		h = (h ^ uint64(c)) * prime
	}
	return h
}

// Sum64 is the FNV-1a 64-bit hash of b.
func Sum64(b []byte) uint64 { return Add(Offset, b) }
