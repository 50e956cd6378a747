package sink

import (
	"net/http"
	"testing"
	"time"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
)

// windowHeader is an answer's rate-limit window headers.
func windowHeader(limit, remaining, reset string) http.Header {
	h := http.Header{}
	h.Set("X-RateLimit-Limit", limit)
	h.Set("X-RateLimit-Remaining", remaining)
	h.Set("X-RateLimit-Reset", reset)
	return h
}

func TestParseRateLimitBounds(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tests := []struct {
		name      string
		headers   map[string]string
		limit     int
		remaining int
		reset     time.Duration // from now; -1 = absent
		retry     time.Duration
		flaws     HeaderFlaw
	}{
		{"none", nil, -1, -1, -1, 0, 0},
		{"epoch reset", map[string]string{"X-RateLimit-Limit": "3000", "X-RateLimit-Remaining": "12", "X-RateLimit-Reset": "1800000002"}, 3000, 12, 2 * time.Second, 0, 0},
		{"seconds-remaining reset (MAU hourly)", map[string]string{"X-RateLimit-Limit": "2000000", "X-RateLimit-Remaining": "1100000", "X-RateLimit-Reset": "1800"}, 2000000, 1100000, 30 * time.Minute, 0, 0},
		{"reset 0 seconds remaining", map[string]string{"X-RateLimit-Reset": "0"}, -1, -1, 0, 0, 0},
		{"epoch reset a little in the past is now", map[string]string{"X-RateLimit-Reset": "1799999990"}, -1, -1, 0, 0, 0},
		{"epoch reset far in the past", map[string]string{"X-RateLimit-Reset": "1700000000"}, -1, -1, -1, 0, FlawReset},
		{"epoch reset beyond an hour", map[string]string{"X-RateLimit-Reset": "9000000000"}, -1, -1, -1, 0, FlawReset},
		{"seconds-remaining beyond an hour", map[string]string{"X-RateLimit-Reset": "86400"}, -1, -1, -1, 0, FlawReset},
		{"negative reset", map[string]string{"X-RateLimit-Reset": "-5"}, -1, -1, -1, 0, FlawReset},
		{"garbage reset", map[string]string{"X-RateLimit-Reset": "soon"}, -1, -1, -1, 0, FlawReset},
		{"NaN reset", map[string]string{"X-RateLimit-Reset": "NaN"}, -1, -1, -1, 0, FlawReset},
		{"Inf reset", map[string]string{"X-RateLimit-Reset": "+Inf"}, -1, -1, -1, 0, FlawReset},
		{"remaining above limit", map[string]string{"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "11"}, 10, -1, -1, 0, FlawRemaining},
		{"negative remaining", map[string]string{"X-RateLimit-Remaining": "-1"}, -1, -1, -1, 0, FlawRemaining},
		{"zero limit", map[string]string{"X-RateLimit-Limit": "0"}, -1, -1, -1, 0, FlawLimit},
		{"huge limit", map[string]string{"X-RateLimit-Limit": "99999999999999"}, -1, -1, -1, 0, FlawLimit},
		{"retry-after seconds", map[string]string{"X-Ratelimit-Retry-After": "3"}, -1, -1, -1, 3 * time.Second, 0},
		{"retry-after decimal", map[string]string{"X-Ratelimit-Retry-After": "0.5"}, -1, -1, -1, 500 * time.Millisecond, 0},
		{"retry-after zero is no hint", map[string]string{"X-Ratelimit-Retry-After": "0"}, -1, -1, -1, 0, 0},
		{"retry-after beyond an hour", map[string]string{"X-Ratelimit-Retry-After": "3000000000"}, -1, -1, -1, 0, FlawRetryAfter},
		{"retry-after negative", map[string]string{"X-Ratelimit-Retry-After": "-1"}, -1, -1, -1, 0, FlawRetryAfter},
		{"retry-after NaN", map[string]string{"X-Ratelimit-Retry-After": "NaN"}, -1, -1, -1, 0, FlawRetryAfter},
		{"plain Retry-After date", map[string]string{"Retry-After": now.Add(90 * time.Second).UTC().Format(http.TimeFormat)}, -1, -1, -1, 90 * time.Second, 0},
		{"plain Retry-After date far away", map[string]string{"Retry-After": now.Add(48 * time.Hour).UTC().Format(http.TimeFormat)}, -1, -1, -1, 0, FlawRetryAfter},
		{"Braze's header wins over Retry-After", map[string]string{"X-Ratelimit-Retry-After": "2", "Retry-After": "9"}, -1, -1, -1, 2 * time.Second, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tc.headers {
				h.Set(k, v)
			}
			rl := ParseRateLimit(h, now)
			wantReset := time.Time{}
			if tc.reset >= 0 {
				wantReset = now.Add(tc.reset)
			}
			if rl.Limit != tc.limit || rl.Remaining != tc.remaining || !rl.Reset.Equal(wantReset) || rl.RetryAfter != tc.retry || rl.Flaws != tc.flaws {
				t.Fatalf("got %+v; want limit %d remaining %d reset %v retry %v flaws %v", rl, tc.limit, tc.remaining, wantReset, tc.retry, tc.flaws)
			}
		})
	}
}

func TestHeaderFlawNames(t *testing.T) {
	got := (FlawReset | FlawRetryAfter).Names()
	if len(got) != 2 || got[0] != "X-RateLimit-Reset" || got[1] != "Retry-After" {
		t.Fatalf("names %v", got)
	}
}

// A 429 whose retry hint is out of range falls back to the normal back-off (RetryAfter 0).
func TestClassify429WithAbsurdRetryAfter(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	h := http.Header{}
	h.Set("X-Ratelimit-Retry-After", "3000000000")
	r := Classify(429, h, nil, now)
	if !r.Throttled || r.RetryAfter != 0 || r.RateLimit.Flaws != FlawRetryAfter {
		t.Fatalf("got throttled %v wait %v flaws %v; want throttled, no wait, flaw", r.Throttled, r.RetryAfter, r.RateLimit.Flaws)
	}
	if r := Classify(503, nil, nil, now); r.Throttled {
		t.Fatal("a 503 is not a throttle")
	}
}

// A rate-limit header on an answer of a per-minute group (/users/* and subscriptions) asking
// to wait beyond two minutes is ignored (named in Flaws, normal back-off), while /users/track,
// with hourly windows on MAU contracts, may still be asked to wait up to the hour.
func TestGroupBoundsHeaderWaits(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	h := windowHeader("20000", "0", "3599")
	h.Set("X-Ratelimit-Retry-After", "3599")
	for _, tc := range []struct {
		ep   endpoint.Endpoint
		wait time.Duration
	}{{endpoint.Track, 3599 * time.Second}, {endpoint.Delete, 0}, {endpoint.Subscription, 0}} {
		r := ClassifyEndpoint(tc.ep, 429, h, nil, now)
		if r.RetryAfter != tc.wait || (tc.wait == 0) != (r.RateLimit.Flaws&(FlawReset|FlawRetryAfter) == FlawReset|FlawRetryAfter) {
			t.Errorf("%s: wait %v, flaws %v; want %v", tc.ep.Name(), r.RetryAfter, r.RateLimit.Flaws.Names(), tc.wait)
		}
	}
	// Within two minutes, a per-minute group's hint is taken.
	h.Set("X-RateLimit-Reset", "90")
	h.Set("X-Ratelimit-Retry-After", "90")
	if r := ClassifyEndpoint(endpoint.Identify, 429, h, nil, now); r.RetryAfter != 90*time.Second || r.RateLimit.Flaws != 0 {
		t.Errorf("identify: wait %v, flaws %v; want 90s and none", r.RetryAfter, r.RateLimit.Flaws.Names())
	}
}
