package brazesim

import (
	"encoding/json"
	"fmt"
	"time"
)

// Alias is a user alias (docs/braze-rules.md §1 "Identifiers": user_alias {alias_name, alias_label}).
type Alias struct {
	Name  string `json:"alias_name"`
	Label string `json:"alias_label"`
}

// User is a snapshot of a simulated user profile.
type User struct {
	ExternalID string         `json:"external_id,omitempty"`
	BrazeID    string         `json:"braze_id"`
	Aliases    []Alias        `json:"user_aliases,omitempty"`
	Email      string         `json:"email,omitempty"`
	Phone      string         `json:"phone,omitempty"`
	Attributes map[string]any `json:"custom_attributes"`
	// Events in arrival order (the order the simulator applied them).
	Events    []Event    `json:"events"`
	Purchases []Purchase `json:"purchases"`
	// DataPoints billed to this user (docs/braze-rules.md §6).
	DataPoints int64 `json:"data_points"`
}

// Event is one stored custom event.
type Event struct {
	Name       string         `json:"name"`
	Time       time.Time      `json:"time"`
	AppID      string         `json:"app_id,omitempty"`
	Properties map[string]any `json:"properties,omitempty"`
	// Seq is the sequence number of the /users/track request that carried the event
	// (requests are numbered in arrival order, from 1).
	Seq uint64 `json:"request_seq"`
}

// Purchase is one stored purchase.
type Purchase struct {
	ProductID  string         `json:"product_id"`
	Currency   string         `json:"currency"`
	Price      float64        `json:"price"`
	Quantity   int            `json:"quantity"`
	Time       time.Time      `json:"time"`
	AppID      string         `json:"app_id,omitempty"`
	Properties map[string]any `json:"properties,omitempty"`
	Seq        uint64         `json:"request_seq"`
}

// Window is a time window [Start, End).
type Window struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// Faults are injected at run time (SetFaults or POST /_sim/faults). Rates are
// probabilities in [0,1] drawn per request, in this order: Outage, ResetRate,
// TimeoutRate, Error5xxRate, then (after auth) InvalidKeys and Rate429.
type Faults struct {
	Error5xxRate float64       `json:"error_5xx_rate"` // spread evenly over 500/502/503/504
	Rate429      float64       `json:"rate_429"`       // 429 with X-Ratelimit-Retry-After: 1
	ExtraLatency time.Duration `json:"extra_latency"`  // added to Config.Latency
	TimeoutRate  float64       `json:"timeout_rate"`   // hang until the request context is done
	ResetRate    float64       `json:"reset_rate"`     // hijack and close the connection (RST)
	InvalidKeys  bool          `json:"invalid_keys"`   // every key answers 401
	Outage       []Window      `json:"outage"`         // 503 while now is inside a window
}

// UnmarshalJSON accepts extra_latency as a Go duration string ("250ms") or nanoseconds.
func (f *Faults) UnmarshalJSON(b []byte) error {
	type plain Faults
	var aux struct {
		plain
		ExtraLatency json.RawMessage `json:"extra_latency"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*f = Faults(aux.plain)
	f.ExtraLatency = 0
	if len(aux.ExtraLatency) > 0 && string(aux.ExtraLatency) != "null" {
		d, err := parseJSONDuration(aux.ExtraLatency)
		if err != nil {
			return fmt.Errorf("extra_latency: %w", err)
		}
		f.ExtraLatency = d
	}
	return nil
}

// MarshalJSON writes extra_latency as a duration string.
func (f Faults) MarshalJSON() ([]byte, error) {
	type plain Faults
	return json.Marshal(struct {
		plain
		ExtraLatency string `json:"extra_latency"`
	}{plain(f), f.ExtraLatency.String()})
}

func parseJSONDuration(b []byte) (time.Duration, error) {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		return time.ParseDuration(s)
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return 0, err
	}
	return time.Duration(n), nil
}

// Stats are the simulator's counters since New or the last Reset.
type Stats struct {
	Requests int64 `json:"requests"` // API requests (the /_sim/ admin API is not counted)
	// ByStatus counts answers by HTTP status; 0 counts requests that got no answer
	// (TimeoutRate, ResetRate).
	ByStatus   map[int]int64    `json:"by_status"`
	ByEndpoint map[string]int64 `json:"by_endpoint"` // requests per path (unknown paths under "other")

	// /users/track objects accepted (applied, or counted in CountOnly mode).
	Objects    int64 `json:"objects"`
	Attributes int64 `json:"attributes"`
	Events     int64 `json:"events"`
	Purchases  int64 `json:"purchases"`
	// ObjectErrors counts objects rejected with a minor error inside a 2xx/400 body.
	ObjectErrors int64 `json:"object_errors"`
	// DataPoints billed (docs/braze-rules.md §6).
	DataPoints int64 `json:"data_points"`

	RateLimited int64 `json:"rate_limited"` // 429 answers (limiter and Rate429 fault)
	// LimitRejected counts requests rejected for a per-request limit: 413 payload too
	// large, 400 "Max Input Length Exceeded", and the 50-per-request limits.
	LimitRejected int64 `json:"limit_rejected"`
	// MaxObjectsInRequest is the largest number of objects seen in one /users/track request.
	MaxObjectsInRequest int64 `json:"max_objects_in_request"`
	// SameUserConcurrency counts overlaps: a /users/track request touching a user
	// profile started while another request touching the same profile was still in
	// the handler (counted once per profile and request).
	SameUserConcurrency int64 `json:"same_user_concurrency"`

	// BulkHeader counts /users/track requests carrying X-Braze-Bulk (docs/braze-rules.md §1:
	// meant for backfills, not real-time traffic).
	BulkHeader int64 `json:"bulk_header"`

	// Fatal2xx counts /users/track requests answered 201 with a fatal body (Config.Fatal2xxShare).
	Fatal2xx int64 `json:"fatal_2xx"`

	Users int64 `json:"users"` // profiles in the store
}
