package pipeline

import (
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/segmentio/kafka-go"
)

// The committed offset must only move over contiguous acknowledged messages, whatever the
// order acks arrive in, and offsets may have gaps.
func TestWatermarkContiguous(t *testing.T) {
	tests := []struct {
		name    string
		offsets []int64
		records []int32
		ackSeq  []int // indexes into offsets, one entry per record resolution
		want    []int64
	}{
		{"in order", []int64{0, 1, 2}, []int32{1, 1, 1}, []int{0, 1, 2}, []int64{1, 2, 3}},
		{"out of order holds back", []int64{0, 1, 2}, []int32{1, 1, 1}, []int{2, 1, 0}, []int64{-1, -1, 3}},
		{"gaps in offsets", []int64{5, 9, 20}, []int32{1, 1, 1}, []int{0, 2, 1}, []int64{6, 6, 21}},
		{"bundle waits for all records", []int64{0, 1}, []int32{3, 1}, []int{0, 1, 0, 0}, []int64{-1, -1, -1, 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ps := newPartitionState("t", 0)
			acks := make([]*msgAck, len(tc.offsets))
			for i, off := range tc.offsets {
				acks[i] = ps.track(&kafka.Message{Offset: off}, int(tc.records[i]))
				ps.outstanding.Add(int64(tc.records[i]))
			}
			for step, i := range tc.ackSeq {
				acks[i].resolve()
				ps.mu.Lock()
				got := ps.watermark
				ps.mu.Unlock()
				if got != tc.want[step] {
					t.Fatalf("after step %d (ack msg %d): watermark %d, want %d", step, i, got, tc.want[step])
				}
			}
			if ps.outstanding.Load() != 0 {
				t.Fatalf("outstanding %d, want 0", ps.outstanding.Load())
			}
		})
	}
}

func TestWatermarkRandomLarge(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 9))
	ps := newPartitionState("t", 0)
	const n = 5000
	acks := make([]*msgAck, n)
	defer func() {
		if t.Failed() {
			t.Logf("shared count %d", ps.flow.bytes.Load())
		}
	}()
	for i := range acks {
		acks[i] = ps.track(&kafka.Message{Offset: int64(i * 2)}, 1)
	}
	order := r.Perm(n)
	doneSet := make([]bool, n)
	for _, i := range order {
		acks[i].resolve()
		doneSet[i] = true
		// expected watermark: first not-done index
		first := 0
		for first < n && doneSet[first] {
			first++
		}
		want := int64(-1)
		if first > 0 {
			want = int64((first-1)*2 + 1)
		}
		ps.mu.Lock()
		got := ps.watermark
		ps.mu.Unlock()
		if got != want {
			t.Fatalf("watermark %d, want %d", got, want)
		}
	}
	if ps.pending() != 0 {
		t.Fatalf("pending %d", ps.pending())
	}
}

// The partition's outstanding count and the pipeline's in-flight count move together, in
// one place (hold/release), whichever way records are resolved.
func TestInFlightCountsMoveTogether(t *testing.T) {
	ps := newPartitionState("t", 0)
	a := ps.track(&kafka.Message{Offset: 0, Value: make([]byte, 100)}, 4)
	ps.hold(4)
	if ps.outstanding.Load() != 4 || ps.flow.records.Load() != 4 || ps.unsettledBytes() != 100 {
		t.Fatalf("after hold: outstanding %d, in flight %d, bytes %d", ps.outstanding.Load(), ps.flow.records.Load(), ps.unsettledBytes())
	}
	a.resolve()
	var s settled
	s.add(a)
	s.add(a)
	s.flush()
	if ps.outstanding.Load() != 1 || ps.flow.records.Load() != 1 {
		t.Fatalf("after three: outstanding %d, in flight %d", ps.outstanding.Load(), ps.flow.records.Load())
	}
	a.resolve()
	if ps.outstanding.Load() != 0 || ps.flow.records.Load() != 0 || ps.flow.bytes.Load() != 0 {
		t.Fatalf("settled: outstanding %d, in flight %d, bytes %d", ps.outstanding.Load(), ps.flow.records.Load(), ps.flow.bytes.Load())
	}
}

// unsettledBytes is the partition's unsettled bytes: what it reported to the flow plus what
// it has not reported yet (the flow is the partition's own in these tests).
func (ps *partitionState) unsettledBytes() int64 {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.flow.bytes.Load() + ps.bytesDelta
}

// The shared byte count moves in steps of flowBatchBytes, stays within that of the truth,
// and is exactly zero once the partition has nothing unsettled (so a message larger than
// the bound can pass alone).
func TestFlowBytesBatched(t *testing.T) {
	ps := newPartitionState("t", 0)
	const n, size = 1000, 1000
	acks := make([]*msgAck, n)
	defer func() {
		if t.Failed() {
			t.Logf("shared count %d", ps.flow.bytes.Load())
		}
	}()
	for i := range acks {
		acks[i] = ps.track(&kafka.Message{Offset: int64(i), Value: make([]byte, size)}, 1)
		if d := int64((i+1)*size) - ps.flow.bytes.Load(); d < 0 || d >= flowBatchBytes {
			t.Fatalf("after %d tracked: shared count %d, true %d", i+1, ps.flow.bytes.Load(), (i+1)*size)
		}
		if i == 0 && ps.flow.bytes.Load() != 0 {
			t.Fatalf("one small message moved the shared count to %d; want it batched", ps.flow.bytes.Load())
		}
	}
	// Settle out of order; the last message stays unsettled until the end.
	for i := n - 2; i >= 0; i-- {
		acks[i].resolve()
		if d := ps.flow.bytes.Load() - int64((i+1)*size); d <= -flowBatchBytes || d >= flowBatchBytes || ps.flow.bytes.Load() < 0 {
			t.Fatalf("after settling down to %d: shared count %d, true %d", i, ps.flow.bytes.Load(), (i+1)*size)
		}
	}
	if got := ps.unsettledBytes(); got != size {
		t.Fatalf("one message left: %d bytes, want %d", got, size)
	}
	acks[n-1].resolve()
	if got := ps.flow.bytes.Load(); got != 0 {
		t.Fatalf("all settled: shared count %d, want exactly 0", got)
	}
}

// BenchmarkTrackSettle is the tracker's cost per message as fetch loops and lanes pay it:
// goroutines each tracking and settling the messages of their own partition, all on one
// shared flow (the pipeline's byte and in-flight counts).
func BenchmarkTrackSettle(b *testing.B) {
	f := &flow{records: new(atomic.Int64)}
	var id atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ps := newPartitionState("t", int(id.Add(1)))
		ps.flow = f
		m := kafka.Message{Value: make([]byte, 500)}
		acks := make([]*msgAck, 0, 64)
		for pb.Next() {
			acks = append(acks, ps.track(&m, 1))
			ps.hold(1)
			m.Offset++
			if len(acks) == cap(acks) {
				var s settled
				for _, a := range acks {
					s.add(a)
				}
				s.flush()
				acks = acks[:0]
			}
		}
	})
}
