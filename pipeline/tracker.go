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

	// flow is the pipeline-wide account of records and bytes in flight (flow.go).
	flow *flow

	mu        sync.Mutex
	queue     []*msgAck // fetched, in offset order; queue[head:] are not yet all done
	head      int
	watermark int64 // offset to commit: one past the last contiguous done message; -1 = none yet
	committed int64 // last offset committed for this partition in this generation; -1 = none
	// seq counts completions; the offset map changes with each, so a commit is due whenever
	// seq moved past committedSeq, even when the watermark did not.
	seq, committedSeq uint64
	// tracked is one past the last tracked offset (the start offset before any).
	tracked int64
	// inherited is what the previous owner's offset map says is settled (offsetmap.go);
	// the part past tracked is carried into this owner's commits until fetching gets there.
	inherited []offsetRun
	// bytesDelta is the change in this partition's unsettled bytes not yet added to the
	// shared flow.bytes: the shared counter moves once per flowBatchBytes of change (or when
	// the partition has nothing unsettled left), not twice per message.
	bytesDelta int64

	// The fields below are each written or read for every record by different goroutines
	// (fetch loop, lanes, DLQ stage); each sits on its own cache line so that they do not
	// slow each other down (false sharing measured at ~3% of CPU).

	// outstanding counts records handed to lanes or the DLQ stage and not yet resolved; a
	// drain waits for it to reach zero.
	_           [64]byte
	outstanding atomic.Int64
	// parked counts the outstanding records that wait in a lane for their user's earlier
	// records and spacing (held.go): a drain does not wait for them (they are left to Kafka).
	parked atomic.Int64
	_      [48]byte
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

// newPartitionState returns a partition's state on a flow of its own; the pipeline's
// partitions share the pipeline's (Pipeline.newPartitionState).
func newPartitionState(topic string, partition int) *partitionState {
	ps := &partitionState{topic: topic, partition: partition, flow: &flow{records: new(atomic.Int64)}, watermark: -1, committed: -1, tracked: -1}
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
	done      bool  // guarded by ps.mu
	bytes     int64 // counted in flow.bytes until released; guarded by ps.mu
}

// track registers a fetched message; its records must then each be resolved once.
func (ps *partitionState) track(m *kafka.Message, records int) *msgAck {
	if len(ps.slab) == 0 {
		ps.slab = make([]msgAck, ackSlabSize)
	}
	a := &ps.slab[0]
	ps.slab = ps.slab[1:]
	a.ps, a.offset, a.key, a.headers = ps, m.Offset, m.Key, m.Headers
	a.bytes = messageBytes(m)
	a.remaining.Store(int32(records))
	ps.mu.Lock()
	ps.addBytesLocked(a.bytes)
	ps.queue = append(ps.queue, a)
	ps.tracked = m.Offset + 1
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
	a.ps.release(1)
}

// hold counts n records handed out (to lanes or the DLQ stage) from the partition; release
// counts n of them resolved. They are the one place the partition's outstanding count and
// the pipeline's in-flight count (Stats.InFlightRecords, through the flow) move.
func (ps *partitionState) hold(n int64) {
	ps.outstanding.Add(n)
	ps.flow.records.Add(n)
}

func (ps *partitionState) release(n int64) {
	ps.outstanding.Add(-n)
	ps.flow.records.Add(-n)
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
		s.ps.release(s.n)
	}
	s.ps, s.n = nil, 0
}

func (ps *partitionState) complete(a *msgAck) {
	ps.mu.Lock()
	a.done = true
	ps.seq++
	ps.addBytesLocked(-a.bytes)
	a.bytes = 0
	// Every record is resolved, so nothing reads the message any more; drop its key and
	// headers now, or they would live as long as the slab, i.e. its slowest message.
	a.key, a.headers = nil, nil
	for ps.head < len(ps.queue) && ps.queue[ps.head].done {
		ps.watermark = ps.queue[ps.head].offset + 1
		ps.queue[ps.head] = nil
		ps.head++
	}
	if ps.head == len(ps.queue) {
		ps.flushBytesLocked() // nothing unsettled here: the shared count holds none of it
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

// toCommit returns the offset to commit, or -1 when neither it nor the offset map changed
// since the last commit.
func (ps *partitionState) toCommit() int64 {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.watermark >= 0 && (ps.watermark > ps.committed || ps.seq != ps.committedSeq) {
		return ps.watermark
	}
	return -1
}

// commitPoint returns what to commit: the watermark and the settled runs above it (appended
// to runs), with the completion count they reflect; off is -1 when nothing changed.
func (ps *partitionState) commitPoint(runs []offsetRun) (off int64, m offsetMap, seq uint64) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.watermark < 0 || (ps.watermark <= ps.committed && ps.seq == ps.committedSeq) {
		return -1, offsetMap{}, 0
	}
	m = offsetMap{base: ps.watermark, end: max(ps.watermark, ps.tracked), runs: runs[:0]}
	open := false
	for _, a := range ps.queue[ps.head:] {
		switch {
		case !a.done:
			open = false
		case open:
			m.runs[len(m.runs)-1].hi = a.offset + 1
		default:
			m.runs = append(m.runs, offsetRun{a.offset, a.offset + 1})
			open = true
		}
	}
	if len(ps.inherited) > 0 {
		rest := (&skipSet{runs: ps.inherited}).beyond(m.end)
		ps.inherited = rest // what fetching has passed is in the queue now
		if len(rest) > 0 {
			m.runs = append(m.runs, rest...)
			m.end = rest[len(rest)-1].hi
		}
	}
	return ps.watermark, m, ps.seq
}

func (ps *partitionState) markCommitted(off int64, seq uint64) {
	ps.mu.Lock()
	if off > ps.committed {
		ps.committed = off
	}
	if seq > ps.committedSeq {
		ps.committedSeq = seq
	}
	ps.mu.Unlock()
}

// start sets where the partition starts in this generation: the offset the fetch loop
// begins at, committed when it was not read from a commit (a new group's resolved start
// offset), and what the previous owner's offset map says is settled past it.
func (ps *partitionState) start(off int64, fromCommit bool, inherited []offsetRun) {
	ps.mu.Lock()
	ps.watermark, ps.tracked, ps.inherited = off, off, inherited
	if fromCommit {
		ps.committed = off
	}
	ps.mu.Unlock()
}

// oldestUnsettled returns the offset of the oldest tracked message not yet done, or -1.
func (ps *partitionState) oldestUnsettled() int64 {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.head < len(ps.queue) {
		return ps.queue[ps.head].offset
	}
	return -1
}

// abandon releases the bytes of messages that will never complete in this generation (a
// drain that timed out, or records never handed out): the next owner reads them again.
func (ps *partitionState) abandon() {
	ps.mu.Lock()
	for _, a := range ps.queue[ps.head:] {
		if !a.done {
			ps.bytesDelta -= a.bytes
			a.bytes = 0
		}
	}
	ps.flushBytesLocked()
	ps.mu.Unlock()
}

// flowBatchBytes is how far a partition's unsettled bytes may drift from what it reported
// to the shared flow.bytes before it reports again. The shared counter is written by every
// fetch loop and lane; moving it per message cost two contended atomics per message. The
// byte bound may thus be exceeded by up to flowBatchBytes per partition; a partition with
// nothing unsettled has reported everything, so with nothing in flight the shared count is
// exactly zero (a message larger than the bound still passes alone, flow.admit).
const flowBatchBytes = 64 << 10

// addBytesLocked records a change of n unsettled bytes; ps.mu is held.
func (ps *partitionState) addBytesLocked(n int64) {
	ps.bytesDelta += n
	if ps.bytesDelta >= flowBatchBytes || ps.bytesDelta <= -flowBatchBytes {
		ps.flushBytesLocked()
	}
}

func (ps *partitionState) flushBytesLocked() {
	if ps.bytesDelta != 0 {
		ps.flow.bytes.Add(ps.bytesDelta)
		ps.bytesDelta = 0
	}
}

// pending is the number of fetched messages not yet acknowledged in order.
func (ps *partitionState) pending() int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return len(ps.queue) - ps.head
}
