package brazesim

import (
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
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
	// Subscriptions is the state ("subscribed" or "unsubscribed") per subscription group
	// id set through /subscription/status/set.
	Subscriptions map[string]string `json:"subscriptions,omitempty"`
}

// Op is one entry of a profile's operation log (Sim.Ops): a request of some endpoint
// that was applied to the profile. Consecutive /users/track requests on one profile, each
// applied after the requests that arrived before it, are one Op (a run of Count requests,
// from Order/Request/Time to LastOrder/LastRequest/LastTime); a request applied after a
// later-arriving one starts a new Op, and every other request is an Op of its own (Count 1).
type Op struct {
	// Order is the global order of application across all endpoints and users: for one
	// user, a smaller Order was applied earlier.
	Order uint64 `json:"order"`
	// Request is the request's sequence number (numbered in arrival order from 1, shared
	// by all endpoints; equals Event.Seq and Purchase.Seq for /users/track).
	Request  uint64    `json:"request_seq"`
	Endpoint string    `json:"endpoint"` // endpoint name: track, alias, identify, merge, subscription, delete
	Time     time.Time `json:"time"`     // Config.Now when the request arrived
	// Detail says what the operation did, e.g. "created", "alias added", "unchanged",
	// "identified", "merged from <braze_id>", "merged into <braze_id>", "deleted",
	// "<group id> subscribed"; empty for /users/track.
	Detail  string `json:"detail,omitempty"`
	BrazeID string `json:"braze_id"` // the profile it was applied to

	Count       int64     `json:"count"`
	LastOrder   uint64    `json:"last_order"`
	LastRequest uint64    `json:"last_request_seq"`
	LastTime    time.Time `json:"last_time"`
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

	// Error5xxEvery > 0 answers every n-th request 503 (counted from when these faults were
	// set; checked just before Error5xxRate): a fault a test can count on, where a rate over
	// a few requests may draw none.
	Error5xxEvery int `json:"error_5xx_every,omitempty"`

	// Endpoints holds faults of single endpoints, keyed by endpoint name ("track",
	// "alias", "identify", "merge", "subscription", "delete").
	Endpoints map[string]EndpointFaults `json:"endpoints,omitempty"`

	ep  [endpoint.Count]EndpointFaults // Endpoints by endpoint (compile)
	seq *atomic.Uint64                 // requests seen since these faults were set (compile)
}

// EndpointFaults are the faults of one endpoint.
type EndpointFaults struct {
	// Error5xxRate answers this share of the endpoint's requests 500/502/503/504 (the
	// larger of this and Faults.Error5xxRate applies).
	Error5xxRate float64 `json:"error_5xx_rate,omitempty"`
	// Forbidden answers 403 "Access Denied", as for a key without the endpoint's permission.
	Forbidden bool `json:"forbidden,omitempty"`
	// RejectMarker: a request with an entry naming an identifier (external_id, alias name
	// or label, braze_id, email, phone, subscription group id) that contains this text is
	// answered 400 {"message": "..."} and nothing in it is applied, so a client can
	// bisect down to the entry and dead-letter it. Ignored for /users/track (use
	// Config.BlacklistedExternalIDs there). Empty = off.
	RejectMarker string `json:"reject_marker,omitempty"`
}

// compile indexes Endpoints by endpoint; unknown names are ignored (see Check).
func (f *Faults) compile() {
	f.seq = new(atomic.Uint64)
	f.ep = [endpoint.Count]EndpointFaults{}
	for name, ef := range f.Endpoints {
		if e, ok := endpoint.Parse(name); ok {
			f.ep[e] = ef
		}
	}
}

// Check reports an unknown endpoint name in Endpoints.
func (f *Faults) Check() error {
	for name := range f.Endpoints {
		if _, ok := endpoint.Parse(name); !ok {
			return fmt.Errorf("unknown endpoint %q in faults (want one of track, alias, identify, merge, subscription, delete)", name)
		}
	}
	return nil
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

	// Endpoints has the counters of each endpoint that saw a request, keyed by endpoint
	// name (track, alias, identify, merge, subscription, delete; "other" for unknown paths).
	Endpoints map[string]EndpointStats `json:"endpoints"`
}

// EndpointStats are the counters of one endpoint.
type EndpointStats struct {
	Requests int64 `json:"requests"`
	// Entries counts the entries (track: objects; alias: user_aliases; identify: the
	// aliases, emails and phones to identify; merge: merge_updates; delete: identifiers;
	// subscription: identifiers) of the requests answered 2xx.
	Entries int64 `json:"entries"`
	// ByStatus counts answers by HTTP status (0: no answer, as in Stats.ByStatus).
	ByStatus map[int]int64 `json:"by_status"`
}
