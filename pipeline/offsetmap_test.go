package pipeline

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"
)

func TestOffsetMapRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	cases := []offsetMap{
		{base: 0, end: 0},
		{base: 42, end: 50},
		{base: 1 << 40, end: 1<<40 + 10, runs: []offsetRun{{1<<40 + 1, 1<<40 + 3}, {1<<40 + 9, 1<<40 + 10}}},
		{base: 7, end: 9, runs: []offsetRun{{7, 9}}},
	}
	for i := 0; i < 200; i++ {
		m := offsetMap{base: r.Int64N(1 << 50)}
		at := m.base
		for j := r.IntN(300); j > 0; j-- {
			lo := at + 1 + r.Int64N(20)
			hi := lo + 1 + r.Int64N(20)
			m.runs = append(m.runs, offsetRun{lo, hi})
			at = hi
		}
		m.end = at + r.Int64N(5)
		cases = append(cases, m)
	}
	for i, m := range cases {
		s, cut := encodeOffsetMap(m, maxOffsetMetadata)
		if cut || len(s) > maxOffsetMetadata {
			t.Fatalf("case %d: cut %v, %d chars", i, cut, len(s))
		}
		got, err := decodeOffsetMap(s)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if got.base != m.base || got.end != m.end || !slices.Equal(got.runs, m.runs) {
			t.Fatalf("case %d: got %+v, want %+v", i, got, m)
		}
	}
}

// The run-ahead bound keeps the worst map (every other offset settled) within the limit
// without truncation.
func TestOffsetMapWorstCaseFits(t *testing.T) {
	m := offsetMap{base: 1 << 45}
	for off := m.base + 1; off < m.base+DefaultMaxRunAhead; off += 2 {
		m.runs = append(m.runs, offsetRun{off, off + 1})
	}
	m.end = m.base + DefaultMaxRunAhead
	s, cut := encodeOffsetMap(m, maxOffsetMetadata)
	if cut {
		t.Fatalf("worst case of %d offsets cut short", DefaultMaxRunAhead)
	}
	// Irregular alternation (compression helps less) fits too.
	r := rand.New(rand.NewPCG(8, 8))
	m.runs = m.runs[:0]
	for off := m.base + 1; off < m.base+DefaultMaxRunAhead; off += 2 + r.Int64N(2) {
		m.runs = append(m.runs, offsetRun{off, off + 1})
	}
	s2, cut := encodeOffsetMap(m, maxOffsetMetadata)
	t.Logf("worst case %d chars, random alternation %d chars", len(s), len(s2))
	if cut {
		t.Fatal("random alternation cut short")
	}
}

func TestOffsetMapTruncates(t *testing.T) {
	m := offsetMap{base: 0}
	r := rand.New(rand.NewPCG(1, 1))
	at := int64(0)
	for i := 0; i < 20000; i++ {
		lo := at + 1 + r.Int64N(300)
		m.runs = append(m.runs, offsetRun{lo, lo + 1 + r.Int64N(300)})
		at = m.runs[len(m.runs)-1].hi
	}
	m.end = at
	s, cut := encodeOffsetMap(m, maxOffsetMetadata)
	if !cut || len(s) > maxOffsetMetadata {
		t.Fatalf("cut %v, %d chars", cut, len(s))
	}
	got, err := decodeOffsetMap(s)
	if err != nil {
		t.Fatal(err)
	}
	// A prefix of the runs, and the end moves in with it: nothing past the cut is claimed.
	if len(got.runs) == 0 || !slices.Equal(got.runs, m.runs[:len(got.runs)]) || got.end != got.runs[len(got.runs)-1].hi {
		t.Fatalf("truncated map is not a prefix: %d runs, end %d", len(got.runs), got.end)
	}
}

func TestOffsetMapRejectsForeign(t *testing.T) {
	for _, s := range []string{"", "hello", "bzo1:", "bzo1:!!!", "bzo2:AAAA", "bzo1:" + strings.Repeat("A", 40),
		encodeRuns(10, 5, nil), // end before base reads as a span far out of range
	} {
		if _, err := decodeOffsetMap(s); err == nil {
			t.Errorf("%q decoded", s)
		}
	}
	// Runs out of order or past the end are refused.
	bad := encodeRuns(0, 10, []offsetRun{{5, 8}, {6, 9}})
	if _, err := decodeOffsetMap(bad); err == nil {
		t.Error("overlapping runs decoded")
	}
	bad = encodeRuns(0, 10, []offsetRun{{5, 12}})
	if _, err := decodeOffsetMap(bad); err == nil {
		t.Error("run past the end decoded")
	}
}

func FuzzDecodeOffsetMap(f *testing.F) {
	f.Add(encodeRuns(5, 100, []offsetRun{{6, 9}, {20, 21}}))
	f.Add("bzo1:AAAA")
	f.Add("")
	big := offsetMap{base: 0, end: 4000}
	for off := int64(1); off < 4000; off += 2 {
		big.runs = append(big.runs, offsetRun{off, off + 1})
	}
	s, _ := encodeOffsetMap(big, maxOffsetMetadata)
	f.Add(s)
	f.Fuzz(func(t *testing.T, s string) {
		m, err := decodeOffsetMap(s)
		if err != nil {
			return
		}
		// Whatever decodes is well formed: increasing, disjoint runs within [base, end).
		prev := m.base
		for i, r := range m.runs {
			if r.lo < prev || r.hi <= r.lo || r.hi > m.end || (i > 0 && r.lo == prev) {
				t.Fatalf("bad run %d %+v in %+v", i, r, m)
			}
			prev = r.hi
		}
		// And it encodes back to the same map.
		again, err := decodeOffsetMap(encodeRuns(m.base, m.end, m.runs))
		if err != nil || again.base != m.base || again.end != m.end || !slices.Equal(again.runs, m.runs) {
			t.Fatalf("re-encoding changed the map: %v", err)
		}
	})
}

// The tracker's commit point describes exactly the settled messages above the watermark,
// and a skip set built from it skips exactly those.
func TestCommitPointMapsSettled(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	ps := newPartitionState("t", 0)
	ps.start(100, true, nil)
	var offs []int64
	var acks []*msgAck
	for off := int64(100); len(offs) < 500; off += 1 + r.Int64N(3) { // gaps, like compaction
		offs = append(offs, off)
		acks = append(acks, ps.track(&kafka.Message{Offset: off}, 1))
	}
	done := map[int64]bool{}
	for _, i := range r.Perm(len(acks))[:300] {
		acks[i].resolve()
		done[offs[i]] = true
	}
	off, m, _ := ps.commitPoint(nil)
	s, cut := encodeOffsetMap(m, maxOffsetMetadata)
	if cut {
		t.Fatal("cut")
	}
	dm, err := decodeOffsetMap(s)
	if err != nil || dm.base != off {
		t.Fatalf("decode: %v, base %d want %d", err, dm.base, off)
	}
	skip := skipSet{runs: dm.runs}
	for _, o := range offs {
		if o < off {
			if !done[o] {
				t.Fatalf("offset %d below the watermark %d not settled", o, off)
			}
			continue
		}
		if got := skip.settled(o); got != done[o] {
			t.Fatalf("offset %d: skip %v, settled %v", o, got, done[o])
		}
	}
}

// A new owner carries the previous owner's map past where it has fetched, so a second crash
// before it gets there does not forget what the first owner settled.
func TestCommitPointCarriesInherited(t *testing.T) {
	ps := newPartitionState("t", 0)
	ps.start(10, true, []offsetRun{{12, 15}, {20, 22}})
	// The fetch loop skips 12..14 (tracked and completed at once); 10 and 11 are in flight.
	a10 := ps.track(&kafka.Message{Offset: 10}, 1)
	ps.track(&kafka.Message{Offset: 11}, 1)
	for o := int64(12); o < 15; o++ {
		ps.complete(ps.track(&kafka.Message{Offset: o}, 0))
	}
	a10.resolve()
	off, m, _ := ps.commitPoint(nil)
	if off != 11 {
		t.Fatalf("watermark %d, want 11", off)
	}
	want := []offsetRun{{12, 15}, {20, 22}}
	if !slices.Equal(m.runs, want) || m.end != 22 {
		t.Fatalf("runs %v end %d, want %v end 22", m.runs, m.end, want)
	}
}

// Nothing changed since the last commit: nothing to commit; a settled record past the
// watermark changes the map and makes a commit due although the watermark stays.
func TestCommitDueOnMapChange(t *testing.T) {
	ps := newPartitionState("t", 0)
	ps.start(0, true, nil)
	ps.track(&kafka.Message{Offset: 0}, 1)
	a1 := ps.track(&kafka.Message{Offset: 1}, 1)
	if off, _, _ := ps.commitPoint(nil); off != -1 {
		t.Fatalf("commit due at %d with nothing settled", off)
	}
	a1.resolve()
	off, m, seq := ps.commitPoint(nil)
	if off != 0 || len(m.runs) != 1 {
		t.Fatalf("after a settle past the watermark: off %d runs %v", off, m.runs)
	}
	ps.markCommitted(off, seq)
	if off, _, _ := ps.commitPoint(nil); off != -1 {
		t.Fatal("commit due again without a change")
	}
}

// A new group's resolved start offset is due for commit before anything is delivered.
func TestStartOffsetCommittedForNewGroup(t *testing.T) {
	ps := newPartitionState("t", 0)
	ps.start(5000, false, nil)
	if off := ps.toCommit(); off != 5000 {
		t.Fatalf("toCommit %d, want 5000", off)
	}
	ps2 := newPartitionState("t", 0)
	ps2.start(5000, true, nil)
	if off := ps2.toCommit(); off != -1 {
		t.Fatalf("resumed partition recommits %d", off)
	}
}

// BenchmarkCommitMap is the worker-side cost of one partition's part of a commit at the
// run-ahead bound: walking 2,048 tracked messages (every third unsettled) and encoding the map.
func BenchmarkCommitMap(b *testing.B) {
	ps := newPartitionState("t", 0)
	ps.start(0, true, nil)
	ps.track(&kafka.Message{Offset: 0}, 1)
	for off := int64(1); off < DefaultMaxRunAhead; off++ {
		a := ps.track(&kafka.Message{Offset: off}, 1)
		if off%3 != 0 {
			a.resolve()
		}
	}
	var runs []offsetRun
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		ps.mu.Lock()
		ps.seq++ // a change since the last commit
		ps.mu.Unlock()
		_, m, _ := ps.commitPoint(runs)
		s, _ := encodeOffsetMap(m, maxOffsetMetadata)
		runs = m.runs[:0]
		if len(s) == 0 {
			b.Fatal("empty")
		}
	}
}
