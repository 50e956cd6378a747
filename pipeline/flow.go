package pipeline

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
)

// flow is the pipeline-wide account of what is in flight: the bytes of fetched messages not
// yet settled (bounded by Config.MaxInflightBytes where messages enter, in the fetch loop),
// and the records handed out and not yet resolved (Stats.InFlightRecords is this count).
type flow struct {
	bytes    atomic.Int64
	maxBytes int64
	records  *atomic.Int64
}

// messageBytes is what a fetched message holds in memory until it is settled: its value
// (which the records point into), key and headers.
func messageBytes(m *kafka.Message) int64 {
	n := len(m.Value) + len(m.Key)
	for _, h := range m.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return int64(n)
}

// flowPoll is how often a fetch loop held back by a bound looks again.
const flowPoll = time.Millisecond

// admit waits until a message of size bytes fits within the byte bound and lies within
// maxRunAhead offsets of the partition's oldest unsettled message. A message larger than
// the bound passes alone once nothing else is in flight, so no size deadlocks. It returns
// false when ctx ends first.
func (f *flow) admit(ctx context.Context, ps *partitionState, offset, size int64, maxRunAhead int64) bool {
	for {
		if f.fits(size) {
			oldest := ps.oldestUnsettled()
			if maxRunAhead <= 0 || oldest < 0 || offset-oldest < maxRunAhead {
				return true
			}
		}
		if !sleepCtx(ctx, flowPoll) {
			return false
		}
	}
}

// admit holds a fetched message back until it fits the byte bound and the partition's
// run-ahead bound (see flow.admit). oldest caches the partition's oldest unsettled offset:
// it only grows, so a stale value errs on the side of looking again.
func (p *Pipeline) admit(ctx context.Context, ps *partitionState, m *kafka.Message, oldest *int64) bool {
	ahead := int64(p.cfg.MaxRunAhead)
	if *oldest < 0 || m.Offset-*oldest >= ahead {
		*oldest = ps.oldestUnsettled()
	}
	if (*oldest < 0 || m.Offset-*oldest < ahead) && p.flow.fits(messageBytes(m)) {
		return true
	}
	return p.flow.admit(ctx, ps, m.Offset, messageBytes(m), ahead)
}

// fits reports whether size more bytes keep the flow within its bound.
func (f *flow) fits(size int64) bool {
	held := f.bytes.Load()
	return f.maxBytes <= 0 || held == 0 || held+size <= f.maxBytes
}
