package main

import (
	"testing"
	"time"

	"github.com/braze-ingestor/braze-ingestor/brazesim"
	"github.com/braze-ingestor/braze-ingestor/synth"
)

// On an MAU contract (docs/braze-rules.md §3) the X-RateLimit-* headers describe the hour and
// Reset is the number of seconds remaining. With 900,000 of 2,000,000 hourly requests used by
// other traffic before the worker started, a single replica still runs at its configured rate:
// the 1,100,000 requests left afford at least 305 requests/s wherever in the hour the test runs,
// above the configured 100/s. The limiter's share of the hour is measured from recent traffic;
// before, it was this worker's count over the hour's total, which pinned the pace at 1 request/s
// (the run's ~300 requests would take minutes, not the seconds allowed below).
func TestMAUContractDeliversAtConfiguredRate(t *testing.T) {
	k := newTestKafka(t, 12)
	sim := newSim(t, func(c *brazesim.Config) {
		c.HourlyLimit, c.HourlyUsed = 2_000_000, 900_000
	})
	exp := newExpectation()
	produceN(t, k, synth.New(synth.Options{Users: 500, Seed: 14}), 13_500, exp) // about 20,000 records

	cfg := testConfig(k, sim, "mau")
	const rate = 100.0
	cfg.BrazeRateLimit = rate
	cfg.BrazeRateBurst = 10 // a small burst, so the pace shows within the run
	start := time.Now()
	p, stop := startWorker(t, cfg)
	waitFor(t, 60*time.Second, "all records delivered", func() bool {
		return p.Stats().Snapshot().RecordsDelivered >= int64(exp.deliver)
	})
	elapsed := time.Since(start)
	stop()

	st := sim.Sim.Stats()
	perSecond := float64(st.ByStatus[201]) / elapsed.Seconds()
	t.Logf("delivered %d records in %d requests (%d 429s) in %v: %.1f requests/s against %.0f configured",
		exp.deliver, st.ByStatus[201], st.RateLimited, elapsed.Round(time.Millisecond), perSecond, rate)
	if rep := checkDeliveries(t, sim.Sim, exp); rep.missing != 0 || rep.duplicates != 0 {
		t.Fatalf("deliveries: missing %d, duplicates %d", rep.missing, rep.duplicates)
	}
}
