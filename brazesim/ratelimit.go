package brazesim

import (
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
)

// initHour starts the hourly window of an MAU contract with the requests other traffic
// has already used this hour (Config.HourlyUsed).
func (s *Sim) initHour() {
	h := &s.hour
	h.mu.Lock()
	h.limit, h.window = s.cfg.HourlyLimit, time.Hour
	h.idx, h.used = s.now().UnixNano()/int64(time.Hour), s.cfg.HourlyUsed
	h.mu.Unlock()
}

// rateLimit applies the endpoint's rate limits (docs/braze-rules.md §3) and writes the
// X-RateLimit-* headers of an allowed request. It answers 429 and returns false when a
// limit refuses the request: then X-Ratelimit-Retry-After, and no X-RateLimit-* headers.
//
// /users/track on an MAU contract (Config.HourlyLimit > 0) counts against the burst window
// first and the hour second; the headers describe the hour, Reset as seconds remaining.
// Elsewhere the headers describe the endpoint's window, Reset as epoch seconds.
func (s *Sim) rateLimit(w http.ResponseWriter, rt *route, now time.Time, f *Faults) bool {
	lim := &s.limits[rt.group]
	ok, remaining, end := lim.take(now)
	mau := rt.group == endpoint.GroupTrack && s.cfg.HourlyLimit > 0
	var hourRemaining int
	var hourEnd time.Time
	if ok && mau {
		ok, hourRemaining, hourEnd = s.hour.take(now)
		if !ok {
			end = hourEnd
		}
	}
	if !ok || (f.Rate429 > 0 && mrand.Float64() < f.Rate429) {
		retry := int64(1)
		if !ok {
			retry = ceilSeconds(end.Sub(now))
		}
		s.ctr.rateLimited.Add(1)
		w.Header()["X-Ratelimit-Retry-After"] = []string{strconv.FormatInt(retry, 10)}
		s.writeMsg(w, rt.ep, http.StatusTooManyRequests, "API rate limit exceeded")
		return false
	}
	h := w.Header()
	switch {
	case mau:
		h["X-Ratelimit-Limit"] = []string{strconv.Itoa(s.cfg.HourlyLimit)}
		h["X-Ratelimit-Remaining"] = []string{strconv.Itoa(hourRemaining)}
		h["X-Ratelimit-Reset"] = []string{strconv.FormatInt(ceilSeconds(hourEnd.Sub(now)), 10)}
	case lim.limit >= 0:
		h["X-Ratelimit-Limit"] = []string{strconv.Itoa(lim.limit)}
		h["X-Ratelimit-Remaining"] = []string{strconv.Itoa(remaining)}
		h["X-Ratelimit-Reset"] = []string{strconv.FormatInt((end.UnixNano()+int64(time.Second)-1)/int64(time.Second), 10)}
	}
	return true
}
