package pipeline

import (
	"sync"
	"time"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
)

// trackSettles is one lane's record of when its users' /users/track records last settled,
// for the spacing before a user's next record of another endpoint (held.go spacedAt). Only
// entries younger than the longest Spacing[Track][*] matter; older ones are pruned as the
// table grows. It is exact per user hash: a fixed array by hash would make almost every
// user's next non-track record wait the full track spacing at high track rates (its slot
// shared with users settled moments ago), and held records hold their partition's commit
// and, beyond KAFKA_MAX_RUN_AHEAD, its fetch (docs/architecture.md "Per-user order").
type trackSettles struct {
	mu      sync.Mutex
	at      map[uint64]int64 // user hash -> unix nanos
	window  int64            // entries older than this (nanos) are pruned
	pruneAt int              // prune when the table reaches this size
}

// trackPruneMin is the table size below which it is never pruned.
const trackPruneMin = 1024

func newTrackSettles(sp *Spacing) *trackSettles {
	var w time.Duration
	for to := endpoint.Track + 1; to < endpoint.Count; to++ {
		w = max(w, sp[endpoint.Track][to])
	}
	return &trackSettles{at: map[uint64]int64{}, window: int64(w), pruneAt: trackPruneMin}
}

// note records that the users of items settled at now (unix nanos); nil-safe.
func (ts *trackSettles) note(items []item, now int64) {
	if ts == nil || ts.window == 0 {
		return // no other endpoint, or no track spacing: nothing to remember
	}
	ts.mu.Lock()
	for i := range items {
		ts.at[items[i].user] = now
	}
	if len(ts.at) >= ts.pruneAt {
		for u, t := range ts.at {
			if now-t >= ts.window {
				delete(ts.at, u)
			}
		}
		ts.pruneAt = max(trackPruneMin, 2*len(ts.at))
	}
	ts.mu.Unlock()
}

// last is when user's track records last settled (unix nanos), or 0 when not within the
// window; nil-safe.
func (ts *trackSettles) last(user uint64) int64 {
	if ts == nil {
		return 0
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.at[user]
}
