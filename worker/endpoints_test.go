package worker

import (
	"io"
	"strings"
	"testing"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// TestEndpointsConfig: ENDPOINTS names endpoints by their short names, track is required, an
// unknown entry is named in the problem, and the per-minute limits are bounded.
func TestEndpointsConfig(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mut      func(*Config)
		problems []string // substrings, one problem each; none = valid
	}{
		{"default", func(*Config) {}, nil},
		{"all, with spaces", func(c *Config) {
			c.Endpoints = strings.Split(" track, alias,identify , merge,subscription,delete,", ",")
		}, nil},
		{"unknown entries named", func(c *Config) { c.Endpoints = []string{"track", "deletes", "users.merge"} },
			[]string{`ENDPOINTS: unknown endpoint "deletes", "users.merge": want a comma-separated list of track, alias, identify, merge, subscription, delete`}},
		{"track missing", func(c *Config) { c.Endpoints = []string{"delete"} }, []string{`ENDPOINTS "delete": must include track`}},
		{"empty", func(c *Config) { c.Endpoints = []string{" ", ""} }, []string{`ENDPOINTS "": must include track`}},
		{"users rate 0", func(c *Config) { c.BrazeUsersRateLimit = 0 }, []string{"BRAZE_USERS_RATE_LIMIT 0: want 1..1000000 requests per minute"}},
		{"rates too high", func(c *Config) { c.BrazeUsersRateLimit, c.BrazeSubscriptionRateLimit = 1_000_001, 2_000_000 },
			[]string{"BRAZE_SUBSCRIPTION_RATE_LIMIT 2000000: want 1..1000000", "BRAZE_USERS_RATE_LIMIT 1000001: want 1..1000000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Defaults()
			tc.mut(&c)
			p := &problems{bad: map[string]bool{}, seen: map[string]bool{}}
			c.validateEndpoints(p)
			if len(p.list) != len(tc.problems) {
				t.Fatalf("problems %q, want %d", p.list, len(tc.problems))
			}
			for i, want := range tc.problems {
				if !strings.Contains(p.list[i], want) {
					t.Errorf("problem %q, want %q", p.list[i], want)
				}
			}
		})
	}
	c := Defaults()
	if on := c.EnabledEndpoints(); on != [endpoint.Count]bool{endpoint.Track: true} {
		t.Errorf("default enabled %v, want track only", on)
	}
	c.Endpoints = []string{"track", "delete", "subscription"}
	want := [endpoint.Count]bool{endpoint.Track: true, endpoint.Delete: true, endpoint.Subscription: true}
	if on := c.EnabledEndpoints(); on != want {
		t.Errorf("enabled %v, want %v", on, want)
	}
	if got := pipelineConfig(&c).Endpoints; got != want {
		t.Errorf("pipeline.Config.Endpoints %v, want %v", got, want)
	}
}

// TestEndpointsFromEnvironment: LoadConfig reads ENDPOINTS and reports a bad entry by name.
func TestEndpointsFromEnvironment(t *testing.T) {
	for k, v := range map[string]string{"KAFKA_BROKERS": "b:9092", "KAFKA_TOPICS": "t", "KAFKA_GROUP_ID": "g",
		"KAFKA_DLQ_TOPIC": "dlq", "BRAZE_REST_ENDPOINT": "https://rest.iad-01.braze.com", "BRAZE_API_KEY": "k"} {
		t.Setenv(k, v)
	}
	t.Setenv("ENDPOINTS", "track,identify")
	t.Setenv("BRAZE_USERS_RATE_LIMIT", "600")
	c, err := LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if on := c.EnabledEndpoints(); !on[endpoint.Identify] || on[endpoint.Delete] || c.BrazeUsersRateLimit != 600 || c.BrazeSubscriptionRateLimit != 5000 {
		t.Errorf("loaded %v users %d subscription %d", on, c.BrazeUsersRateLimit, c.BrazeSubscriptionRateLimit)
	}
	t.Setenv("ENDPOINTS", "track,identfy")
	if _, err := LoadConfig(); err == nil || !strings.Contains(err.Error(), `unknown endpoint "identfy"`) {
		t.Errorf("typo accepted or not named: %v", err)
	}
	t.Setenv("ENDPOINTS", "track")
	t.Setenv("BRAZE_SUBSCRIPTION_RATE_LIMIT", "5000/min")
	if _, err := LoadConfig(); err == nil || !strings.Contains(err.Error(), `BRAZE_SUBSCRIPTION_RATE_LIMIT="5000/min": want a whole number`) {
		t.Errorf("unparsable rate: %v", err)
	}
}

// TestGuardGroupRates: the guard paces each group at its configured rate (BRAZE_RATE_LIMIT per
// second for /users/track, the others per minute).
func TestGuardGroupRates(t *testing.T) {
	c := Defaults()
	c.BrazeEndpoint, c.BrazeAPIKey = "https://rest.iad-01.braze.com", "k"
	c.BrazeUsersRateLimit, c.BrazeSubscriptionRateLimit = 1200, 300
	client, err := sink.NewClient(sink.ClientConfig{Endpoint: c.BrazeEndpoint, APIKey: c.BrazeAPIKey})
	if err != nil {
		t.Fatal(err)
	}
	g := newGuard(&c, client, NewLogger(io.Discard, "error"))
	for _, tc := range []struct {
		group endpoint.Group
		perS  float64
	}{{endpoint.GroupTrack, 1000}, {endpoint.GroupUsers, 20}, {endpoint.GroupSubscription, 5}} {
		if got := g.GroupLimiter(tc.group).Limit(); got != tc.perS {
			t.Errorf("%s: %v requests/s, want %v", tc.group, got, tc.perS)
		}
	}
	if g.Limiter() != g.GroupLimiter(endpoint.GroupTrack) {
		t.Error("Limiter() is not the track group's")
	}
}
