package schemas

import "github.com/braze-ingestor/braze-ingestor/internal/fnv1a"

// User is a record's user identity in compact form, resolved once by the decoder and carried
// with the record to its lane, coalescing, suppression and de-duplication, none of which
// parse the identifier again (docs/design.md §2).
type User struct {
	// ID says which identifier names the user (0: none).
	ID IDKind
	// Hash is UserHash(ID, the unescaped identifier value): equal for the same user however
	// the producer escaped or ordered the identifier.
	Hash uint64
}

// User returns the record's identity.
func (r *Record) User() User { return User{ID: r.IDKind, Hash: r.UserHash} }

// UserHash is the 64-bit FNV-1a hash of the identifier kind byte followed by the identifier
// value (for a user alias: alias_label, a zero byte, alias_name). Two different users collide
// with probability about 2^-64 per pair.
func UserHash(kind IDKind, id []byte) uint64 {
	return fnv1a.Add(fnv1a.AddByte(fnv1a.Offset, byte(kind)), id)
}

func userHash(kind IDKind, id []byte) uint64 { return UserHash(kind, id) }
