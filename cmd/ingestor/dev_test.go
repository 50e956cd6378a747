package main

import "testing"

// TestProduceChunkPacesSmoothly: a paced producer writes at most one tick's worth of messages
// at a time, so `dev -rate 50` is a trickle of single messages, not 500 every 10 s.
func TestProduceChunkPacesSmoothly(t *testing.T) {
	for _, c := range []struct{ rate, want int }{
		{0, 500}, {1, 1}, {50, 1}, {100, 2}, {5000, 100}, {25000, 500}, {1_000_000, 500},
	} {
		if got := produceChunk(c.rate); got != c.want {
			t.Errorf("produceChunk(%d) = %d, want %d", c.rate, got, c.want)
		}
		if c.rate > 0 {
			// The time one chunk represents at that rate stays within a few ticks.
			if per := float64(produceChunk(c.rate)) / float64(c.rate); c.rate >= 50 && per > 0.05 {
				t.Errorf("rate %d: one chunk is %.3fs of traffic", c.rate, per)
			}
		}
	}
}
