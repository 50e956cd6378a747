// Package dedup remembers what Braze has accepted, so the pipeline can leave out attribute
// writes that change nothing (SUPPRESS_UNCHANGED_ATTRIBUTES) and records delivered before
// (DEDUP_EVENTS). Two stores: an in-process LRU (NewMemory) and Redis (NewRedis), which
// replicas share. Every call answers a whole request in one round trip.
//
// A store only ever learns from deliveries Braze accepted; it is a cache, and the pipeline
// fails open when it is unavailable (everything is sent).
package dedup

import (
	"context"
	"time"

	"github.com/braze-ingestor/braze-ingestor/internal/fnv1a"
)

// Store is a bounded memory of delivered attribute values and record ids.
type Store interface {
	// Lookup fills q's answers (Users[i].Hashes, Seen).
	Lookup(ctx context.Context, q *Query) error
	// Record stores what Braze accepted: attribute hashes (0 forgets the key) and ids.
	Record(ctx context.Context, u *Update) error
	Close() error
}

// UserAttrs names attributes of one user. User is an opaque key (see UserKey).
type UserAttrs struct {
	User   string
	Keys   []string
	Hashes []uint64 // Lookup: filled, 0 = unknown; Record: 0 = forget the key
}

// Query asks for the last delivered value hashes of some attributes and whether ids were
// delivered within the window.
type Query struct {
	Users []UserAttrs
	IDs   []string
	Seen  []bool // filled by Lookup, one per ID
	// Forget deletes the attribute hashes it read, in the same round trip. The pipeline
	// forgets every key a request writes before sending it and records the values again once
	// Braze accepted them: if that record is lost (crash, store error) the keys are merely
	// unknown, never stale.
	Forget bool
}

// Update records a delivery.
type Update struct {
	Users []UserAttrs
	IDs   []string
	// ForgetUsers forgets every attribute of these users (Braze deleted them: a value
	// accepted before the delete says nothing about the new profile). Applied before Users.
	ForgetUsers []string
}

// Options bound a store.
type Options struct {
	// AttrTTL is how long an attribute hash is trusted (0: 24h). A value changed outside the
	// pipeline (SDK, dashboard, another integration) is not re-sent while the store says it
	// is unchanged; the TTL bounds that.
	AttrTTL time.Duration
	// IDWindow is the de-duplication window for record ids (0: 24h).
	IDWindow time.Duration
	// AttrEntries and IDEntries bound the in-memory store (0: 1,000,000 each).
	AttrEntries int
	IDEntries   int
	// KeyPrefix prefixes Redis keys (default "bi:").
	KeyPrefix string
}

func (o *Options) defaults() {
	if o.AttrTTL <= 0 {
		o.AttrTTL = 24 * time.Hour
	}
	if o.IDWindow <= 0 {
		o.IDWindow = 24 * time.Hour
	}
	if o.AttrEntries <= 0 {
		o.AttrEntries = 1_000_000
	}
	if o.IDEntries <= 0 {
		o.IDEntries = 1_000_000
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = "bi:"
	}
}

// UserKey turns a user identity hash (schemas.Record.UserHash: identifier kind and unescaped
// value, resolved by the decoder) into the store's short stable key: 16 hex digits.
func UserKey(user uint64) string {
	var b [16]byte
	const hexd = "0123456789abcdef"
	for i := 15; i >= 0; i-- {
		b[i] = hexd[user&15]
		user >>= 4
	}
	return string(b[:])
}

// ValueHash is the stable hash of a raw JSON value (FNV-1a 64, never 0).
func ValueHash(v []byte) uint64 {
	if h := fnv1a.Sum64(v); h != 0 {
		return h
	}
	return 1
}
