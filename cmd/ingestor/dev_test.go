package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
)

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

// TestDevSummaryPerEndpoint runs `ingestor dev` on a small mixed stream with a large share of
// the kinds beyond /users/track: it settles and stops by itself, and its summary has a line
// per endpoint where the records produced are the records delivered plus dead-lettered.
func TestDevSummaryPerEndpoint(t *testing.T) {
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if rc := cmdDev(ctx, []string{"-records", "1500", "-rate", "0", "-partitions", "4", "-lifecycle", "0.2", "-invalid", "0", "-reject", "0"}, &out, &errOut); rc != 0 {
		t.Fatalf("dev exited %d: %s", rc, errOut.String())
	}
	if ctx.Err() != nil {
		t.Fatal("dev did not stop by itself after settling -records")
	}
	summary := out.String()[strings.Index(out.String(), "per endpoint"):]
	for e := endpoint.Endpoint(0); e < endpoint.Count; e++ {
		var produced, requests, delivered, dead int64
		i := strings.Index(summary, "\n    "+e.Name()+" ")
		if i < 0 {
			t.Errorf("no summary line for %s:\n%s", e.Name(), summary)
			continue
		}
		line := summary[i+1:]
		line = line[:strings.IndexByte(line, '\n')]
		if _, err := fmt.Sscanf(strings.Fields(line)[2]+" "+strings.Fields(line)[3]+" "+strings.Fields(line)[4]+" "+strings.Fields(line)[5],
			"%d %d %d %d", &produced, &requests, &delivered, &dead); err != nil {
			t.Errorf("%s line %q: %v", e.Name(), line, err)
			continue
		}
		if produced == 0 || requests == 0 || delivered+dead != produced {
			t.Errorf("%s: produced %d, requests %d, delivered %d, dead-lettered %d", e.Name(), produced, requests, delivered, dead)
		}
	}
	t.Logf("%s", summary)
}
