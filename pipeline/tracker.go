package pipeline

import (
	"sync"
	"sync/atomic"

	"github.com/segmentio/kafka-go"
)

// partitionState tracks the messages fetched from one partition in one generation, so that
// the committed offset only ever moves over a contiguous run of acknowledged messages
// (Kafka offsets can have gaps, so the run is tracked by message, not by offset arithmetic).
type partitionState struct {
	topic     string
	partition int

	mu        sync.Mutex
	queue     []*msgAck // fetched, in offset order; queue[head:] are not yet all done
	head      int
	watermark int64 // offset to commit: one past the last contiguous done message; -1 = none yet
	committed int64 // last offset committed for this partition in this generation; -1 = none

	// The fields below are each written or read for every record by different goroutines
	// (fetch loop, lanes, DLQ stage); each sits on its own cache line so that they do not
	// slow each other down (false sharing measured at ~3% of CPU).

	// outstanding counts records handed to lanes or the DLQ stage and not yet resolved; a
	// drain waits for it to reach zero.
	_           [64]byte
	outstanding atomic.Int64
	_           [56]byte
	// revoked fences the partition once its generation has ended: late acks must not
	// commit, and queued records are dropped (the next owner reads them again).
	revoked atomic.Bool
	_       [63]byte
	// highWater is the partition's end offset as last seen by the fetcher (for lag).
	highWater atomic.Int64
	// fetched is the offset of the last fetched message.
	fetched atomic.Int64

	// slab is where track takes msgAcks from, owned by the partition's fetch loop: one
	// allocation per ackSlabSize messages instead of one per message (measured at ~3% of
	// the worker's CPU with the GC work it caused). A slab is freed by the GC once no
	// queue entry or record refers to any of its acks.
	slab []msgAck
}

const ackSlabSize = 128

func newPartitionState(topic string, partition int) *partitionState {
	ps := &partitionState{topic: topic, partition: partition, watermark: -1, committed: -1}
	ps.highWater.Store(-1)
	ps.fetched.Store(-1)
	return ps
}

// msgAck is one fetched message waiting for all its records to be resolved. It keeps only
// what the DLQ and the producer links read of the message: the records' bytes are held by
// the records themselves, so the message's value is not kept here.
type msgAck struct {
	ps        *partitionState
	offset    int64
	key       []byte
	headers   []kafka.Header
	remaining atomic.Int32
	done      bool // guarded by ps.mu
}

// track registers a fetched message; its records must then each be resolved once.
func (ps *partitionState) track(m *kafka.Message, records int) *msgAck {
	if len(ps.slab) == 0 {
		ps.slab = make([]msgAck, ackSlabSize)
	}
	a := &ps.slab[0]
	ps.slab = ps.slab[1:]
	a.ps, a.offset, a.key, a.headers = ps, m.Offset, m.Key, m.Headers
	a.remaining.Store(int32(records))
	ps.mu.Lock()
	ps.queue = append(ps.queue, a)
	ps.mu.Unlock()
	ps.fetched.Store(m.Offset)
	if m.HighWaterMark > 0 {
		ps.highWater.Store(m.HighWaterMark)
	}
	return a
}

// resolve marks one record of the message delivered or dead-lettered. Records of a revoked
// partition still count down, but their completion is never committed.
func (a *msgAck) resolve() {
	a.settle()
	a.ps.outstanding.Add(-1)
}

// settle is resolve without the partition's outstanding count, which the caller lowers
// afterwards, once for many records (the count is shared by every lane: one atomic per
// record on it was ~2% of the CPU). Lowering it after the completion also means a drain
// that sees zero outstanding sees every message completed.
func (a *msgAck) settle() {
	if a.remaining.Add(-1) == 0 {
		a.ps.complete(a)
	}
}

// settled lowers partitions' outstanding counts for records settled in a row: runs of
// records of one partition cost one atomic.
type settled struct {
	ps *partitionState
	n  int64
}

func (s *settled) add(a *msgAck) {
	a.settle()
	if a.ps != s.ps {
		s.flush()
		s.ps = a.ps
	}
	s.n++
}

func (s *settled) flush() {
	if s.n > 0 {
		s.ps.outstanding.Add(-s.n)
	}
	s.ps, s.n = nil, 0
}

func (ps *partitionState) complete(a *msgAck) {
	ps.mu.Lock()
	a.done = true
	// Every record is resolved, so nothing reads the message any more; drop its key and
	// headers now, or they would live as long as the slab, i.e. its slowest message.
	a.key, a.headers = nil, nil
	for ps.head < len(ps.queue) && ps.queue[ps.head].done {
		ps.watermark = ps.queue[ps.head].offset + 1
		ps.queue[ps.head] = nil
		ps.head++
	}
	// Reclaim the consumed prefix once it dominates, keeping appends amortised O(1).
	if ps.head > 1024 && ps.head*2 > len(ps.queue) {
		n := copy(ps.queue, ps.queue[ps.head:])
		clear(ps.queue[n:])
		ps.queue = ps.queue[:n]
		ps.head = 0
	}
	ps.mu.Unlock()
}

// toCommit returns the offset to commit, or -1 when nothing new is acknowledged.
func (ps *partitionState) toCommit() int64 {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.watermark > ps.committed {
		return ps.watermark
	}
	return -1
}

func (ps *partitionState) markCommitted(off int64) {
	ps.mu.Lock()
	if off > ps.committed {
		ps.committed = off
	}
	ps.mu.Unlock()
}

// pending is the number of fetched messages not yet acknowledged in order.
func (ps *partitionState) pending() int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return len(ps.queue) - ps.head
}
