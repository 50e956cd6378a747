package sink

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/braze-ingestor/braze-ingestor/brazesim"
)

// TestLimiterLoopbackReplicas checks the model against real HTTP: three replicas (a Client,
// Guard and Limiter each, 64 lanes) at 1,000 requests/s share brazesim's 3,000-per-3-s
// /users/track limit for 15 s. It loads the machine, so it runs only with LIMITER_LOOPBACK=1
// (BENCHMARKS.md records its figures).
func TestLimiterLoopbackReplicas(t *testing.T) {
	if os.Getenv("LIMITER_LOOPBACK") == "" {
		t.Skip("set LIMITER_LOOPBACK=1")
	}
	for _, mau := range []bool{false, true} {
		cfg := brazesim.DefaultConfig()
		cfg.CountOnly = true
		cfg.Latency = 20 * time.Millisecond
		if mau {
			cfg.HourlyLimit, cfg.HourlyUsed = 20_000_000, 900_000
		}
		srv, err := brazesim.NewServer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		var ok, throttled, inWindows atomic.Int64
		// Count what Braze accepted inside whole 3-s windows (brazesim aligns them to the epoch).
		from := time.Now().Truncate(3 * time.Second).Add(6 * time.Second)
		to := from.Add(9 * time.Second)
		var wg sync.WaitGroup
		body := []byte(`{"attributes":[{"external_id":"u","k":1}]}`)
		for range 3 {
			c, err := NewClient(ClientConfig{Endpoint: srv.URL, APIKey: "dev-key", MaxIdleConns: 64})
			if err != nil {
				t.Fatal(err)
			}
			g := NewGuard(c, NewLimiter(1000, 3000), BreakerConfig{}, nil)
			for range 64 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for ctx.Err() == nil {
						r := g.Track(ctx, body)
						switch {
						case r.Throttled:
							throttled.Add(1)
						case r.Status == 201:
							ok.Add(1)
							if now := time.Now(); !now.Before(from) && now.Before(to) {
								inWindows.Add(1)
							}
						}
					}
				}()
			}
		}
		wg.Wait()
		cancel()
		srv.Close()
		n, th := ok.Load(), throttled.Load()
		t.Logf("MAU headers %v: %d accepted, %.1f%% of the limit over three whole windows, %d 429s (%.2f%%)",
			mau, n, float64(inWindows.Load())/90, th, 100*float64(th)/float64(n+th))
	}
}
