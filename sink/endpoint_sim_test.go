package sink

import (
	"context"
	"testing"

	"github.com/braze-ingestor/braze-ingestor/brazesim"
	"github.com/braze-ingestor/braze-ingestor/endpoint"
)

// The simulator's answers to documented request bodies classify as delivered, and its
// refusals as whole-request rejections, on every endpoint (the classification follows
// Braze's pages, docs/braze-rules.md §2; this checks the simulator agrees with it).
func TestClassifyEndpointsAgainstSimulator(t *testing.T) {
	cfg := brazesim.DefaultConfig()
	srv, err := brazesim.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c, err := NewClient(ClientConfig{Endpoint: srv.URL, APIKey: "dev-key"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if r := c.Track(ctx, []byte(`{"attributes":[{"external_id":"u1","a":1},{"external_id":"u2","a":2}]}`)); r.Class != Delivered {
		t.Fatalf("track: %s", r.Describe())
	}
	for _, tc := range []struct {
		ep        endpoint.Endpoint
		good, bad string
	}{
		{endpoint.AliasNew, `{"user_aliases":[{"alias_name":"n1","alias_label":"l"}]}`, `{"user_aliases":[]}`},
		{endpoint.Identify, `{"aliases_to_identify":[{"external_id":"u3","user_alias":{"alias_name":"n1","alias_label":"l"}}]}`, `{}`},
		{endpoint.Merge, `{"merge_updates":[{"identifier_to_merge":{"external_id":"u2"},"identifier_to_keep":{"external_id":"u1"}}]}`, `{"merge_updates":"x"}`},
		{endpoint.Subscription, `{"subscription_group_id":"g1","subscription_state":"subscribed","external_id":["u1"]}`, `{}`},
		{endpoint.Delete, `{"external_ids":["u1"]}`, `{"external_ids":["u1"],"braze_ids":["b"]}`},
	} {
		if r := c.Post(ctx, tc.ep, []byte(tc.good)); r.Class != Delivered || r.Endpoint != tc.ep {
			t.Errorf("%s %s: %v/%v %s", tc.ep, tc.good, r.Class, r.Cause(), r.Describe())
		}
		if r := c.Post(ctx, tc.ep, []byte(tc.bad)); r.Class != Split || r.Cause() != CauseRejected {
			t.Errorf("%s %s: %v/%v %s", tc.ep, tc.bad, r.Class, r.Cause(), r.Describe())
		}
	}
}
