package brazesim

import (
	"testing"
	"time"
)

// BenchmarkTrackCoreEvents is BenchmarkTrackCore for the 75-event body.
func BenchmarkTrackCoreEvents(b *testing.B) {
	cfg := DefaultConfig()
	cfg.MaxHistoryPerUser = 100
	s, _ := New(cfg)
	bodies := make([][]byte, 64)
	for i := range bodies {
		bodies[i] = eventsBody((i * 75) % 5000)
	}
	var tr trackReq
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tr.reset()
		o := parseOpts{validate: true, now: time.Now(), blackPfx: "blacklisted-"}
		if f := parseTrack(bodies[i%len(bodies)], &tr, &o); f != "" {
			b.Fatal(f)
		}
		s.resolveAll(s.st, &tr)
		s.apply(s.st, &tr, uint64(i))
	}
}
