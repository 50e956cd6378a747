package synth

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestLifecycleTraffic: with a lifecycle share, the generator produces every kind beyond
// /users/track in the contract's shapes, deletes the rarest; every identify comes after its
// anonymous visitor's tracks and every merge after its duplicate profile's; a deleted user is
// never written again; each user's records are numbered 0, 1, 2, … in production order.
func TestLifecycleTraffic(t *testing.T) {
	g := New(Options{Users: 200, LifecycleShare: 0.05, InvalidShare: 0.01, Seed: 3})
	const n = 20000
	kinds := map[string]int{}
	msgs := map[string]int{}
	nextSeq := map[string]int{}
	deleted := map[string]bool{}
	sideSeen := map[string]bool{} // identities of anonymous and duplicate profiles written so far
	known := map[string]bool{}    // users with a deliverable /users/track record so far
	for i := 0; i < n; i++ {
		m := g.Next()
		if m.WholeInvalid {
			continue
		}
		var v map[string]json.RawMessage
		if err := json.Unmarshal(m.Value, &v); err != nil {
			t.Fatalf("message %d is not a JSON object: %v: %s", i, err, m.Value)
		}
		if typ, ok := v["type"]; ok {
			var s string
			_ = json.Unmarshal(typ, &s)
			msgs[s]++
			if len(m.Records) != 1 || m.Records[0].Kind != s {
				t.Fatalf("envelope %s with records %+v", m.Value, m.Records)
			}
		} else if _, ok := v["subscriptions"]; ok {
			msgs["bundle with subscription"]++
		}
		for _, r := range m.Records {
			kinds[r.Kind]++
			if r.Kind == "alias" || r.Kind == "merge" || r.Kind == "subscription" || r.Kind == "delete" {
				if !known[r.User] {
					t.Errorf("%s record for %s before any deliverable /users/track record of theirs", r.Kind, r.User)
				}
			}
			if r.Identity != "" {
				if r.Kind == "alias" {
					continue
				}
				sideSeen[r.Identity] = true
				if r.Outcome != Deliver || strings.Contains(string(m.Value), `"seq"`) {
					t.Errorf("side profile record %+v in %s", r, m.Value)
				}
				continue
			}
			if deleted[r.User] {
				t.Fatalf("record for deleted user %s: %s", r.User, m.Value)
			}
			if r.Seq != nextSeq[r.User] {
				t.Fatalf("%s: seq %d, want %d (%s)", r.User, r.Seq, nextSeq[r.User], m.Value)
			}
			nextSeq[r.User]++
			if (r.Kind == "attributes" || r.Kind == "event" || r.Kind == "purchase") && r.Outcome == Deliver {
				known[r.User] = true
			}
			switch r.Kind {
			case "delete":
				deleted[r.User] = true
			case "identify":
				if !sideSeen[aliasIdentity(r.Alias)] {
					t.Errorf("identify of %v before its anonymous tracks", r.Alias)
				}
			case "merge":
				if r.Outcome == Deliver && !sideSeen["external_id:"+r.Merged] {
					t.Errorf("merge of %s before its tracks", r.Merged)
				}
			case "subscription":
				if r.Group == "" || (r.State != "subscribed" && r.State != "unsubscribed") {
					t.Errorf("subscription record %+v", r)
				}
			}
		}
	}
	t.Logf("records by kind %v; messages %v", kinds, msgs)
	for _, k := range []string{"alias", "identify", "merge", "subscription", "delete"} {
		if kinds[k] == 0 {
			t.Errorf("no %s records", k)
		}
		if k != "delete" && kinds[k] <= kinds["delete"] {
			t.Errorf("%d %s records, not more than the %d deletes", kinds[k], k, kinds["delete"])
		}
	}
	lifecycle := kinds["alias"] + kinds["identify"] + kinds["merge"] + kinds["subscription"] + kinds["delete"]
	if share := float64(lifecycle) / float64(n); share < 0.03 || share > 0.12 {
		t.Errorf("lifecycle records are %.3f of messages", share)
	}
	if msgs["bundle with subscription"] == 0 {
		t.Error("no bundle carries a subscription change")
	}
}

// TestNoLifecycleByDefault: without a lifecycle share, only /users/track kinds.
func TestNoLifecycleByDefault(t *testing.T) {
	g := New(Options{Users: 50, Seed: 1})
	for i := 0; i < 5000; i++ {
		for _, r := range g.Next().Records {
			if r.Kind != "attributes" && r.Kind != "event" && r.Kind != "purchase" || r.Identity != "" {
				t.Fatalf("record %+v without LifecycleShare", r)
			}
		}
	}
}
