package sink

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
)

// Bounds on the rate-limit headers (docs/braze-rules.md §3). A value outside them is treated
// as absent: the normal back-off applies, and the limiter logs the header once.
const (
	// MaxHeaderWait is the longest wait a header may ask for: Braze's longest window is the
	// hour (hourly limits reset on the clock hour), so no documented reset or retry hint is
	// further away.
	MaxHeaderWait = time.Hour
	// resetSecondsMax separates the two documented meanings of X-RateLimit-Reset: a value up
	// to this many seconds is "seconds remaining" (post_user_track.md, MAU contracts), a
	// larger one is a UTC epoch timestamp in seconds (api_limits.md). Seven days is far above
	// any window and far below any epoch since 1970-01-08, so no plausible value is ambiguous;
	// whichever reading applies, the resulting wait must then lie within [0, MaxHeaderWait].
	resetSecondsMax = 7 * 24 * 3600
	// resetSkew tolerates an epoch reset slightly in the past (clocks differ): it means "now".
	resetSkew = 30 * time.Second
	// maxLimitValue bounds X-RateLimit-Limit and -Remaining: far above any contract (the
	// largest documented limits are in the millions per hour) and inside an int on every platform.
	maxLimitValue = 1 << 30
)

// HeaderFlaw names the rate-limit headers of one answer that were present but unusable.
type HeaderFlaw uint8

// The rate-limit headers, as HeaderFlaw bits.
const (
	FlawLimit HeaderFlaw = 1 << iota
	FlawRemaining
	FlawReset
	FlawRetryAfter
)

// flawHeaders are the header names of the HeaderFlaw bits, in bit order.
var flawHeaders = [...]string{"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After"}

// Names lists the headers of f.
func (f HeaderFlaw) Names() []string {
	var out []string
	for i, n := range flawHeaders {
		if f&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return out
}

// RateLimit is what one Braze answer said about rate limits, every value bounded: a value
// that is absent, unparsable or outside its documented range reads as absent (and is
// named in Flaws).
type RateLimit struct {
	Limit     int       // X-RateLimit-Limit, -1 when absent
	Remaining int       // X-RateLimit-Remaining (never above Limit), -1 when absent
	Reset     time.Time // X-RateLimit-Reset as an absolute time within MaxHeaderWait, zero when absent
	// RetryAfter is X-Ratelimit-Retry-After (seconds; the header Braze sends with a 429),
	// else a plain Retry-After (seconds or an HTTP date); 0 when absent. At most MaxHeaderWait.
	RetryAfter time.Duration
	// Flaws names the headers that were present but ignored.
	Flaws HeaderFlaw
}

// within treats a reset or retry hint further than limit from now as absent (named in Flaws):
// an endpoint's answer asking to wait beyond its group's windows (maxWait).
func (rl RateLimit) within(limit time.Duration, now time.Time) RateLimit {
	if !rl.Reset.IsZero() && rl.Reset.Sub(now) > limit {
		rl.Reset = time.Time{}
		rl.Flaws |= FlawReset
	}
	if rl.RetryAfter > limit {
		rl.RetryAfter = 0
		rl.Flaws |= FlawRetryAfter
	}
	return rl
}

// maxWait is the longest wait a rate-limit header of ep's answer may ask for: two of its
// group's longest windows, at most MaxHeaderWait (a per-minute group's header asking for an
// hour would pause its endpoints for an hour on one answer).
func maxWait(ep endpoint.Endpoint) time.Duration {
	return min(MaxHeaderWait, 2*ep.Group().LongestWindow())
}

// Window reports whether the answer described a usable rate-limit window.
func (rl RateLimit) Window() bool {
	return rl.Limit > 0 && rl.Remaining >= 0 && !rl.Reset.IsZero()
}

// ParseRateLimit reads the rate-limit headers of an answer received at now.
func ParseRateLimit(h http.Header, now time.Time) RateLimit {
	rl := RateLimit{Limit: -1, Remaining: -1}
	if v, ok := headerValue(h, "X-RateLimit-Limit"); ok {
		if n, err := strconv.Atoi(v); err == nil && n > 0 && n <= maxLimitValue {
			rl.Limit = n
		} else {
			rl.Flaws |= FlawLimit
		}
	}
	if v, ok := headerValue(h, "X-RateLimit-Remaining"); ok {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 && n <= maxLimitValue && (rl.Limit < 0 || n <= rl.Limit) {
			rl.Remaining = n
		} else {
			rl.Flaws |= FlawRemaining
		}
	}
	if v, ok := headerValue(h, "X-RateLimit-Reset"); ok {
		if t, ok := parseReset(v, now); ok {
			rl.Reset = t
		} else {
			rl.Flaws |= FlawReset
		}
	}
	for _, name := range [...]string{"X-Ratelimit-Retry-After", "Retry-After"} {
		v, ok := headerValue(h, name)
		if !ok {
			continue
		}
		if d, ok := parseRetryAfter(v, now); ok {
			rl.RetryAfter = d
		} else {
			rl.Flaws |= FlawRetryAfter
		}
		break
	}
	return rl
}

func headerValue(h http.Header, name string) (string, bool) {
	v := strings.TrimSpace(h.Get(name))
	return v, v != ""
}

// parseReset reads X-RateLimit-Reset: seconds remaining up to resetSecondsMax, else epoch
// seconds. The reset must fall within [now-resetSkew, now+MaxHeaderWait].
func parseReset(v string, now time.Time) (time.Time, bool) {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || f != f {
		return time.Time{}, false
	}
	var d time.Duration
	if f <= resetSecondsMax {
		d = time.Duration(f * float64(time.Second))
	} else {
		if f > float64(now.Unix())+MaxHeaderWait.Seconds()+1 {
			return time.Time{}, false // also keeps the conversion below in range
		}
		d = time.Unix(0, int64(f*float64(time.Second))).Sub(now)
	}
	switch {
	case d > MaxHeaderWait:
		return time.Time{}, false
	case d < -resetSkew:
		return time.Time{}, false
	case d < 0:
		d = 0
	}
	return now.Add(d), true
}

// parseRetryAfter reads a retry hint: seconds (integer or decimal) or an HTTP date, giving a
// wait in [0, MaxHeaderWait]. "0" and a date in the past are valid and mean "no wait asked
// for" (the normal back-off applies); negative, unparsable or too far is a flaw.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f != f || f <= 0 || f > MaxHeaderWait.Seconds() {
			return 0, f == 0 // "0" is valid; NaN, negative and too far are flaws
		}
		return time.Duration(f * float64(time.Second)), true
	}
	if t, err := http.ParseTime(v); err == nil {
		d := t.Sub(now)
		if d > MaxHeaderWait {
			return 0, false
		}
		if d < 0 {
			d = 0
		}
		return d, true
	}
	return 0, false
}
