package brazesim_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/braze-ingestor/braze-ingestor/batcher"
	"github.com/braze-ingestor/braze-ingestor/brazesim"
	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"github.com/braze-ingestor/braze-ingestor/schemas"
)

type wireObj struct {
	k   schemas.Kind
	raw string
}

func (o wireObj) ObjectKind() schemas.Kind { return o.k }
func (o wireObj) ObjectBytes() []byte      { return []byte(o.raw) }

// The bodies the worker encodes (batcher.EncodeEndpoint) are accepted by the simulator
// and have their documented effects.
func TestWorkerBodiesAccepted(t *testing.T) {
	s, err := brazesim.New(brazesim.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	post := func(ep endpoint.Endpoint, objs []wireObj, code int) {
		t.Helper()
		body := batcher.EncodeEndpoint(nil, objs)
		r := httptest.NewRequest(http.MethodPost, ep.Path(), strings.NewReader(string(body)))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer dev-key")
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		if w.Code != code {
			t.Fatalf("%s %s: %d %s", ep, body, w.Code, w.Body)
		}
	}
	track := func(body string) {
		r := httptest.NewRequest(http.MethodPost, "/users/track", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer dev-key")
		s.ServeHTTP(httptest.NewRecorder(), r)
	}
	post(endpoint.AliasNew, []wireObj{{schemas.KindAlias, `{"alias_name":"a1","alias_label":"anon"}`},
		{schemas.KindAlias, `{"alias_name":"a2","alias_label":"anon"}`}}, 201)
	track(`{"attributes":[{"email":"e@example.com","x":1}],"events":[{"user_alias":{"alias_name":"a1","alias_label":"anon"},"name":"v","time":"2026-01-01T00:00:00Z"}]}`)
	post(endpoint.Identify, []wireObj{
		{schemas.KindIdentify, `{"external_id":"k1","user_alias":{"alias_name":"a1","alias_label":"anon"}}`},
		{schemas.KindIdentify, `{"external_id":"k2","email":"e@example.com","prioritization":["unidentified","most_recently_updated"]}`}}, 201)
	if u, ok := s.User("external_id", "k1"); !ok || len(u.Events) != 1 {
		t.Fatalf("k1 %+v", u)
	}
	if u, ok := s.User("external_id", "k2"); !ok || u.Attributes["x"] != 1.0 {
		t.Fatalf("k2 %+v", u)
	}
	post(endpoint.Merge, []wireObj{{schemas.KindMerge, `{"identifier_to_merge":{"external_id":"k2"},"identifier_to_keep":{"external_id":"k1"}}`}}, 202)
	if u, _ := s.User("external_id", "k1"); u.Attributes["x"] != 1.0 {
		t.Fatalf("merged %+v", u)
	}
	post(endpoint.Subscription, []wireObj{{schemas.KindSubscription, `{"subscription_group_id":"g","subscription_state":"subscribed","email":"e@example.com"}`}}, 201)
	if u, _ := s.User("external_id", "k1"); u.Subscriptions["g"] != "subscribed" {
		t.Fatalf("subscription %+v", u)
	}
	post(endpoint.Delete, []wireObj{{schemas.KindDelete, `{"email":"e@example.com","prioritization":["identified"]}`}}, 201)
	post(endpoint.Delete, []wireObj{{schemas.KindDelete, `{"user_alias":{"alias_name":"a2","alias_label":"anon"}}`}}, 201)
	if n := len(s.Users()); n != 0 {
		t.Fatalf("%d users left: %+v", n, s.Users())
	}
}
