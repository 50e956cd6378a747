package brazesim

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

const oneAttr = `{"attributes":[{"external_id":"u1","k":1}]}`

// MAU contract (docs/braze-rules.md §3): the headers describe the hour with Reset as seconds
// remaining; the burst window answers bare 429s with X-Ratelimit-Retry-After.
func TestMAUHourlyHeadersAndBurstWindow(t *testing.T) {
	hour := time.Unix(1_800_000_000, 0).Truncate(time.Hour)
	clk := newClock(hour.Add(30 * time.Minute))
	s := newSim(t, func(c *Config) {
		c.HourlyLimit, c.HourlyUsed = 2_000_000, 900_000
		c.TrackLimit, c.TrackWindow = 3, 3*time.Second
		c.Now = clk.Now
	})
	for i := 1; i <= 3; i++ {
		w := track(s, oneAttr)
		if w.Code != http.StatusCreated {
			t.Fatalf("request %d: %d %s", i, w.Code, w.Body)
		}
		h := w.Header()
		if h.Get("X-RateLimit-Limit") != "2000000" || h.Get("X-RateLimit-Remaining") != fmt.Sprint(1_100_000-i) || h.Get("X-RateLimit-Reset") != "1800" {
			t.Fatalf("request %d: headers %v; want the hour's limit, remaining and seconds remaining", i, h)
		}
	}
	w := track(s, oneAttr)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("X-Ratelimit-Retry-After") == "" || w.Header().Get("X-RateLimit-Remaining") != "" {
		t.Fatalf("4th request in the burst window: %d %v; want 429 with Retry-After and no X-RateLimit-*", w.Code, w.Header())
	}
	// The next burst window admits again; the hour's count went on from 1,099,997.
	clk.Add(3 * time.Second)
	if w := track(s, oneAttr); w.Code != http.StatusCreated || w.Header().Get("X-RateLimit-Remaining") != "1099996" || w.Header().Get("X-RateLimit-Reset") != "1797" {
		t.Fatalf("next window: %d %v", w.Code, w.Header())
	}
	// Reset starts the hour over with the configured other traffic.
	s.Reset()
	if w := track(s, oneAttr); w.Header().Get("X-RateLimit-Remaining") != "1099999" {
		t.Fatalf("after Reset: %v", w.Header())
	}
}

func TestMAUHourExhausted(t *testing.T) {
	hour := time.Unix(1_800_000_000, 0).Truncate(time.Hour)
	clk := newClock(hour.Add(59 * time.Minute))
	s := newSim(t, func(c *Config) {
		c.HourlyLimit, c.HourlyUsed = 10, 9
		c.Now = clk.Now
	})
	if w := track(s, oneAttr); w.Code != http.StatusCreated || w.Header().Get("X-RateLimit-Remaining") != "0" {
		t.Fatalf("last request of the hour: %d %v", w.Code, w.Header())
	}
	w := track(s, oneAttr)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("X-Ratelimit-Retry-After") != "60" {
		t.Fatalf("hour exhausted: %d %v; want 429 until the clock hour (60 s)", w.Code, w.Header())
	}
	clk.Add(time.Minute)
	if w := track(s, oneAttr); w.Code != http.StatusCreated || w.Header().Get("X-RateLimit-Remaining") != "9" || w.Header().Get("X-RateLimit-Reset") != "3600" {
		t.Fatalf("new hour: %d %v", w.Code, w.Header())
	}
}

func TestFatal2xxShare(t *testing.T) {
	s := newSim(t, func(c *Config) { c.Fatal2xxShare = 1 })
	w := track(s, oneAttr)
	m := decode(t, w)
	if w.Code != http.StatusCreated || m["message"] != msgValidData || !strings.Contains(w.Body.String(), `"errors":[`) {
		t.Fatalf("got %d %s; want 201 with the fatal message", w.Code, w.Body)
	}
	if _, ok := s.User("external_id", "u1"); ok {
		t.Fatal("a fatal answer applied the request")
	}
	if st := s.Stats(); st.Fatal2xx != 1 || st.Objects != 0 {
		t.Fatalf("stats %+v", st)
	}
	if _, err := New(Config{Fatal2xxShare: 1.5}); err == nil {
		t.Fatal("share 1.5 accepted")
	}
	if _, err := New(Config{HourlyLimit: 5, HourlyUsed: 6}); err == nil {
		t.Fatal("HourlyUsed above HourlyLimit accepted")
	}
}

// A contract whose object limit is lower than 75 (MAU contracts: 50 updates per request)
// answers a larger request 400 "Max Input Length Exceeded".
func TestContractObjectLimit(t *testing.T) {
	s := newSim(t, func(c *Config) { c.MaxObjects = 50 })
	if w := track(s, body(50, -1, -1)); w.Code != http.StatusCreated {
		t.Fatalf("50 objects: %d %s", w.Code, w.Body)
	}
	w := track(s, body(51, -1, -1))
	if m := decode(t, w); w.Code != http.StatusBadRequest || m["message"] != msgMaxInput {
		t.Fatalf("51 objects: %d %s", w.Code, w.Body)
	}
}
