package pipeline

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/braze-ingestor/braze-ingestor/schemas"
)

// BenchmarkAcceptTrack is a lane's per-record path for /users/track records (accept into the
// batch), which routing by endpoint (held.go) must not slow down: BENCHMARKS.md.
func BenchmarkAcceptTrack(b *testing.B) {
	p, err := New(Config{Brokers: []string{"x"}, Topics: []string{"t"}, GroupID: "g", Lanes: 1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, &fakeBraze{}, &memDLQ{})
	if err != nil {
		b.Fatal(err)
	}
	l := p.lanes[0]
	l.slot.acct = p.newLaneAcct()
	r := &laneRun{l: l}
	ps := newPartitionState("t", 0)
	it := item{kind: schemas.KindEvent, idKind: schemas.IDExternal, user: 7, raw: ev("u1", 1), ack: ps.track(&kafka.Message{}, 1)}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.accept(ctx, r, it)
		if s := &l.slot; s.acct.full() {
			clear(s.items)
			s.items = s.items[:0]
			s.acct.reset()
			s.n.Store(0)
		}
	}
}

// BenchmarkTrackSettlesNote is the per-request cost, on the settle path, of remembering the
// users' track settles while another endpoint is enabled (75 users per request, a steady
// population of 100k users per lane within the window).
func BenchmarkTrackSettlesNote(b *testing.B) {
	sp, _ := ParseSpacing("track>*=3s")
	ts := newTrackSettles(&sp)
	its := make([]item, 75)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		for j := range its {
			its[j].user = uint64((i*75 + j) % 100_000)
		}
		ts.note(its, int64(i))
	}
}
