package sink

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
)

// TestClassifyEndpoints: each endpoint's documented success is delivered, anything else on a
// 2xx is handled as /users/track handles it (a JSON body judges the request as a whole, any
// other body is not Braze's), and the status rows are the same for every endpoint
// (docs/architecture.md "Answers", docs/braze-rules.md).
func TestClassifyEndpoints(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tests := []struct {
		ep     endpoint.Endpoint
		status int
		body   string
		class  Class
		cause  Cause
	}{
		// post_user_alias.md: 201 {"aliases_processed": 1, "message": "success"}
		{endpoint.AliasNew, 201, `{"aliases_processed":1,"message":"success"}`, Delivered, CauseAccepted},
		{endpoint.AliasNew, 201, `{"aliases_processed":0,"message":"success"}`, Delivered, CauseAccepted},
		// post_user_identify.md: same body; a 201 does not say the alias matched.
		{endpoint.Identify, 201, `{"aliases_processed": 1, "message": "success"}`, Delivered, CauseAccepted},
		// post_users_merge.md: 202 {"message":"success"} or 400 with a message.
		{endpoint.Merge, 202, `{"message":"success"}`, Delivered, CauseAccepted},
		{endpoint.Merge, 400, `{"message":"'merge_updates' must be an array of objects"}`, Split, CauseRejected},
		// The merge limit is fixed at 50 (never exceeded): not the contract limit of /users/track.
		{endpoint.Merge, 400, `{"message":"a single request may not contain more than 50 merge updates"}`, Split, CauseRejected},
		{endpoint.Merge, 400, `{"message":"Max Input Length Exceeded"}`, Split, CauseRejected},
		// post_update_user_subscription_group_status.md: 201 {"message":"success"}; the
		// email-and-phone refusal is a message, on whatever status.
		{endpoint.Subscription, 201, `{"message":"success"}`, Delivered, CauseAccepted},
		{endpoint.Subscription, 201, `{"message":"Either an email address or a phone number should be provided, but not both."}`, Split, CauseRejected},
		{endpoint.Subscription, 400, `{"message":"Either an email address or a phone number should be provided, but not both."}`, Split, CauseRejected},
		// post_user_delete.md: {"deleted": n} with no message documented.
		{endpoint.Delete, 201, `{"deleted":2}`, Delivered, CauseAccepted},
		{endpoint.Delete, 200, `{"deleted": 0}`, Delivered, CauseAccepted},
		{endpoint.Delete, 201, `{"deleted":2,"message":"success"}`, Delivered, CauseAccepted},
		{endpoint.Delete, 201, `{"message":"success"}`, Delivered, CauseAccepted},
		// A 2xx with neither a message nor the documented count is no verdict on the
		// records: not Braze's answer (halt), never a dead letter.
		{endpoint.Delete, 201, `{"deleted":-1}`, Halt, CauseNotBraze},
		{endpoint.Delete, 201, `{"deleted":"2"}`, Halt, CauseNotBraze},
		{endpoint.Delete, 201, `{"deleted":1.5}`, Halt, CauseNotBraze},
		{endpoint.Delete, 201, `{}`, Halt, CauseNotBraze},
		{endpoint.AliasNew, 201, `{"aliases_processed":1}`, Halt, CauseNotBraze},
		// Only a top-level message counts.
		{endpoint.Merge, 202, `{"message":"forbidden","detail":{"message":"success"}}`, Split, CauseRejected},
		{endpoint.Merge, 202, `{"detail":{"message":"success"}}`, Halt, CauseNotBraze},
		{endpoint.Track, 201, `{"detail":{"message":"success"},"events_processed":1}`, Halt, CauseNotBraze},
		{endpoint.Delete, 201, `{"deleted":2,"message":"Only one identifier type per request"}`, Split, CauseRejected},
		{endpoint.Delete, 201, `deleted 2`, Halt, CauseNotBraze},
		// errors[] is documented for /users/track only: elsewhere it is a verdict on the
		// request as a whole (bisected), whatever its shape, and never a poison answer.
		{endpoint.Identify, 201, `{"message":"success","errors":[{"type":"alias not found","index":0}]}`, Split, CauseRejected},
		{endpoint.AliasNew, 201, `{"message":"success","errors":["alias_label is required"]}`, Split, CauseRejected},
		{endpoint.Delete, 201, `{"deleted":1,"errors":{"x":1}}`, Split, CauseRejected},
		{endpoint.Merge, 202, `{"message":"success","errors":[]}`, Delivered, CauseAccepted},
		{endpoint.Merge, 202, `{"message":"success","errors":null}`, Delivered, CauseAccepted},
		{endpoint.Merge, 400, `{"message":"bad","errors":["x"]}`, Split, CauseRejected},
		// Track's errors[] of another shape is not Braze's answer, as before.
		{endpoint.Track, 201, `{"message":"success","errors":["x"]}`, Halt, CauseNotBraze},
		{endpoint.Track, 201, `{"message":"success","errors":[{"type":"x","input_array":"events","index":0}]}`, Partial, CauseAccepted},
		{endpoint.Track, 201, `{"deleted":2}`, Halt, CauseNotBraze},
		// Not Braze's JSON, the key, throttling and outages: the same on every endpoint.
		{endpoint.Merge, 202, ``, Halt, CauseNotBraze},
		{endpoint.Subscription, 400, `<html>WAF</html>`, Halt, CauseNotBraze},
		{endpoint.Identify, 413, `Request Entity Too Large`, Split, CauseTooLarge},
		{endpoint.Delete, 401, `{"message":"Invalid API key"}`, Halt, CauseKey},
		{endpoint.Delete, 403, `{"message":"Access Denied"}`, Halt, CauseKey},
		{endpoint.AliasNew, 404, ``, Halt, CauseKey},
		{endpoint.Subscription, 415, ``, Halt, CauseKey},
		{endpoint.Identify, 429, ``, Retry, CauseThrottled},
		{endpoint.Merge, 503, ``, Retry, CauseOutage},
		{endpoint.Delete, 409, ``, Retry, CauseUnexpected},
	}
	for _, tc := range tests {
		r := ClassifyEndpoint(tc.ep, tc.status, http.Header{}, []byte(tc.body), now)
		if r.Class != tc.class || r.Cause() != tc.cause || r.Endpoint != tc.ep {
			t.Errorf("%s %d %s: %v/%v (endpoint %s), want %v/%v", tc.ep, tc.status, tc.body, r.Class, r.Cause(), r.Endpoint, tc.class, tc.cause)
		}
		if tc.ep != endpoint.Track && len(r.Errors) != 0 {
			t.Errorf("%s %s: errors[] mapped to objects: %+v", tc.ep, tc.body, r.Errors)
		}
		// An answer built by hand with its endpoint derives the same cause.
		if d := (Response{Endpoint: tc.ep, Status: r.Status, Class: r.Class, Message: r.Message}).Cause(); d != tc.cause {
			t.Errorf("%s %d %s: derived cause %v, want %v", tc.ep, tc.status, tc.body, d, tc.cause)
		}
	}
}

// The text of an errors[] Braze does not document reaches the message (and so the dead
// letter's error), with any echo of the key redacted before it is cut to length.
func TestClassifyEndpointErrorsText(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	r := ClassifyEndpoint(endpoint.Identify, 201, nil, []byte(`{"message":"success","errors":[{"type":"alias not found"},{"type":"bad external_id"}]}`), now)
	if r.Message != "success; errors: alias not found; bad external_id" {
		t.Errorf("message %q", r.Message)
	}
	r = ClassifyEndpoint(endpoint.AliasNew, 201, nil, []byte(`{"errors":["alias_label is required"]}`), now)
	if r.Message != "errors: alias_label is required" {
		t.Errorf("message %q", r.Message)
	}
	const key = "sk-0123456789abcdef"
	long := strings.Repeat("x", 190) + key
	r = classify(endpoint.Delete, 201, nil, []byte(`{"deleted":1,"errors":["`+long+`"]}`), now, key)
	if strings.Contains(r.Message, key[:8]) || !strings.Contains(r.Message, Redacted[:5]) {
		t.Errorf("message %q: the key (or a prefix of it) survived", r.Message)
	}
	r = classify(endpoint.Track, 502, nil, []byte(strings.Repeat("y", 195)+key), now, key)
	if strings.Contains(r.Message, key[:5]) {
		t.Errorf("message %q: a prefix of the key survived the cut", r.Message)
	}
}

// HaltCause names the permission of the endpoint that refused the key.
func TestHaltCauseNamesEndpointPermission(t *testing.T) {
	for ep := endpoint.Endpoint(0); ep < endpoint.Count; ep++ {
		r := ClassifyEndpoint(ep, 403, nil, []byte(`{"message":"Access Denied"}`), time.Now())
		if got := HaltCause(r); !strings.Contains(got, "the "+ep.Permission()+" permission") {
			t.Errorf("%s: %q", ep, got)
		}
	}
}

// FuzzClassifyEndpoint: FuzzClassify's invariants for every endpoint, with each endpoint's
// own confirmation: a 2xx is delivered only when its body is the documented success.
func FuzzClassifyEndpoint(f *testing.F) {
	f.Add(uint8(endpoint.Delete), 201, `{"deleted":3}`, "")
	f.Add(uint8(endpoint.Merge), 202, `{"message":"success"}`, "")
	f.Add(uint8(endpoint.Identify), 201, `{"message":"success","errors":["x"]}`, "")
	f.Add(uint8(endpoint.Subscription), 400, `{"message":"Max Input Length Exceeded"}`, "")
	f.Add(uint8(endpoint.AliasNew), 429, ``, "7")
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, e uint8, status int, body, retryAfter string) {
		ep := endpoint.Endpoint(e % uint8(endpoint.Count))
		h := http.Header{}
		h.Set("X-Ratelimit-Retry-After", retryAfter)
		r := ClassifyEndpoint(ep, status, h, []byte(body), now)
		if r.Class < Delivered || r.Class > Retry || r.Cause() == causeUnset || r.Endpoint != ep {
			t.Fatalf("class %v cause %v endpoint %v", r.Class, r.Cause(), r.Endpoint)
		}
		if r.RetryAfter < 0 || r.RetryAfter > time.Hour {
			t.Fatalf("wait %v out of bounds", r.RetryAfter)
		}
		var said struct {
			Message string          `json:"message"`
			Deleted json.RawMessage `json:"deleted"`
		}
		_ = json.Unmarshal([]byte(body), &said)
		success := said.Message == "success" || said.Message == "queued" || ep == endpoint.Delete && said.Message == "" && isCount(said.Deleted)
		if (r.Class == Delivered || r.Class == Partial) && !success {
			t.Fatalf("%s %d %q delivered without its documented success", ep, status, body)
		}
		if ep != endpoint.Track && (r.Class == Partial || len(r.Errors) > 0) {
			t.Fatalf("%s %q: errors[] mapped to objects", ep, body)
		}
		if r.Cause() == CauseNotBraze && r.Class != Halt {
			t.Fatalf("a non-Braze answer acts as %v", r.Class)
		}
		if r.Cause() == CauseTooMany && ep != endpoint.Track {
			t.Fatalf("%s: too many objects (a /users/track contract limit)", ep)
		}
		if d := deriveCause(Response{Endpoint: ep, Status: r.Status, Class: r.Class, Message: r.Message}); r.Status >= 100 && r.Status < 600 && d != r.Cause() {
			t.Fatalf("%s %d %q: classified cause %v, derived %v", ep, status, body, r.Cause(), d)
		}
	})
}

// Client.Post sends to each endpoint's path and tags the answer with the endpoint.
func TestClientPostPaths(t *testing.T) {
	var mu sync.Mutex
	paths := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths[r.URL.Path]++
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer k" || r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(401)
			return
		}
		switch r.URL.Path {
		case "/users/delete":
			w.WriteHeader(200)
			io.WriteString(w, `{"deleted":1}`)
		case "/users/merge":
			w.WriteHeader(202)
			io.WriteString(w, `{"message":"success"}`)
		default:
			w.WriteHeader(201)
			io.WriteString(w, `{"message":"success"}`)
		}
	}))
	defer srv.Close()
	c, err := NewClient(ClientConfig{Endpoint: srv.URL, APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	for ep := endpoint.Endpoint(0); ep < endpoint.Count; ep++ {
		r := c.Post(context.Background(), ep, []byte(`{}`))
		if r.Class != Delivered || r.Endpoint != ep {
			t.Errorf("%s: %+v", ep, r)
		}
		if paths[ep.Path()] != 1 {
			t.Errorf("%s: %d requests to %s", ep, paths[ep.Path()], ep.Path())
		}
	}
	srv.Close()
	if r := c.Post(context.Background(), endpoint.Delete, []byte(`{}`)); r.Class != Retry || r.Endpoint != endpoint.Delete || r.Err == nil {
		t.Errorf("transport error: %+v", r)
	}
}

// poster answers by endpoint; it counts requests per endpoint.
type poster struct {
	calls  [endpoint.Count]atomic.Int32
	answer func(ep endpoint.Endpoint) Response
}

func (p *poster) Track(ctx context.Context, body []byte) Response {
	return p.Post(ctx, endpoint.Track, body)
}

func (p *poster) Post(_ context.Context, ep endpoint.Endpoint, _ []byte) Response {
	p.calls[ep].Add(1)
	r := p.answer(ep)
	r.Endpoint = ep
	return r
}

// A 429 from a users endpoint pauses the users group only; the rate-limit headers of
// /subscription/status/set feed the subscription limiter only; /users/track keeps going.
func TestGuardGroupLimitersApart(t *testing.T) {
	now := time.Now()
	p := &poster{answer: func(ep endpoint.Endpoint) Response {
		switch ep {
		case endpoint.Delete:
			return ClassifyEndpoint(ep, 429, http.Header{"X-Ratelimit-Retry-After": {"30"}}, nil, now)
		case endpoint.Subscription:
			return ClassifyEndpoint(ep, 201, windowHeader("5000", "0", "40"), []byte(`{"message":"success"}`), now)
		}
		return ClassifyEndpoint(ep, 201, nil, []byte(`{"message":"success"}`), now)
	}}
	g := NewGuard(p, NewLimiter(0, 100), BreakerConfig{}, nil)
	g.SetGroupLimiter(endpoint.GroupUsers, PerMinuteLimiter(600_000))
	g.SetGroupLimiter(endpoint.GroupSubscription, PerMinuteLimiter(600_000))
	ctx := context.Background()
	if r := g.Post(ctx, endpoint.Delete, nil); !r.Throttled || r.Endpoint != endpoint.Delete {
		t.Fatalf("delete: %+v", r)
	}
	if r := g.Post(ctx, endpoint.Subscription, nil); r.Class != Delivered {
		t.Fatalf("subscription: %+v", r)
	}
	users, sub, track := g.GroupLimiter(endpoint.GroupUsers), g.GroupLimiter(endpoint.GroupSubscription), g.Limiter()
	if u := users.PausedUntil(); u.Before(now.Add(20 * time.Second)) {
		t.Errorf("users group not paused by its 429: until %v", u)
	}
	if s := sub.PausedUntil(); s.Before(now.Add(20 * time.Second)) {
		t.Errorf("subscription group not paused by its own Remaining 0: until %v", s)
	}
	if !track.PausedUntil().IsZero() {
		t.Errorf("track paused by another group's answers until %v", track.PausedUntil())
	}
	// /users/track still goes out at once; a users endpoint waits (until the context ends).
	for range 10 {
		if r := g.Track(ctx, nil); r.Class != Delivered || r.Waited > time.Second {
			t.Fatalf("track: %+v", r)
		}
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if r := g.Post(short, endpoint.Identify, nil); r.Class != Retry || !errors.Is(r.Err, context.DeadlineExceeded) || r.Endpoint != endpoint.Identify {
		t.Errorf("identify during the users pause: %+v", r)
	}
	if n := p.calls[endpoint.Identify].Load(); n != 0 {
		t.Errorf("%d identify requests sent while the users group was paused", n)
	}
}

// Each endpoint has its own breaker: outages on /users/delete open the delete breaker (no
// delete is sent while it is open) and leave /users/track sending, with the worker's breaker
// state (State, Paused) closed.
func TestGuardBreakerPerEndpoint(t *testing.T) {
	p := &poster{answer: func(ep endpoint.Endpoint) Response {
		if ep == endpoint.Delete {
			return Response{Status: 503, Class: Retry}
		}
		return Response{Status: 201, Class: Delivered}
	}}
	g := NewGuard(p, nil, BreakerConfig{Failures: 3, OpenFor: time.Hour}, nil)
	for range 3 {
		g.Post(context.Background(), endpoint.Delete, nil)
	}
	if g.breakerState(endpoint.Delete) != BreakerOpen {
		t.Fatal("delete breaker closed after three outages on /users/delete")
	}
	if g.State() != BreakerClosed || g.Paused() {
		t.Fatalf("the worker's (track) breaker is %v after outages on /users/delete only", g.State())
	}
	if r := g.Track(context.Background(), nil); r.Class != Delivered || p.calls[endpoint.Track].Load() != 1 {
		t.Fatalf("track not sent while only /users/delete is down: %+v", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	if r := g.Post(ctx, endpoint.Delete, nil); r.Class != Retry || p.calls[endpoint.Delete].Load() != 3 {
		t.Fatalf("delete sent through its open breaker: %+v (%d calls)", r, p.calls[endpoint.Delete].Load())
	}
}

// A grant is used by the first request of its own group only.
func TestGuardGrantPerGroup(t *testing.T) {
	p := &poster{answer: func(endpoint.Endpoint) Response { return Response{Status: 201, Class: Delivered} }}
	g := NewGuard(p, NewLimiter(0.5, 1), BreakerConfig{}, nil)
	g.SetGroupLimiter(endpoint.GroupUsers, PerMinuteLimiter(30)) // one per 2 s, burst 1
	ctx := context.Background()
	if err := g.GrantFor(ctx, endpoint.Merge); err != nil { // the users bucket is empty now
		t.Fatal(err)
	}
	// A users grant does not pass the track limiter's wait... (its bucket still has its token)
	gctx := WithGrantFor(ctx, endpoint.Merge)
	if r := g.Post(gctx, endpoint.Merge, nil); r.Class != Delivered || r.Waited > 500*time.Millisecond {
		t.Fatalf("merge with its grant waited %v", r.Waited)
	}
	// ...and a second request under the same (used) grant waits for the users bucket.
	short, cancel := context.WithTimeout(gctx, 300*time.Millisecond)
	defer cancel()
	if r := g.Post(short, endpoint.Delete, nil); r.Class != Retry || r.Err == nil {
		t.Fatalf("second users request under a used grant: %+v", r)
	}
	// A track grant is not a users grant: identify waits for its own bucket.
	tctx, cancel2 := context.WithTimeout(WithGrant(ctx), 300*time.Millisecond)
	defer cancel2()
	if r := g.Post(tctx, endpoint.Identify, nil); r.Class != Retry || r.Err == nil {
		t.Fatalf("identify under a track grant: %+v", r)
	}
	if got := p.calls[endpoint.Delete].Load() + p.calls[endpoint.Identify].Load(); got != 0 {
		t.Fatalf("%d users requests beyond the grant", got)
	}
}

// A guard around a client that only tracks halts a request to another endpoint instead of
// retrying it forever or dead-lettering it.
func TestGuardTrackerOnly(t *testing.T) {
	s := &scripted{answer: func(int32) Response { return Response{Status: 201, Class: Delivered} }}
	g := NewGuard(s, nil, BreakerConfig{}, nil)
	if r := g.Post(context.Background(), endpoint.Merge, nil); r.Class != Halt || r.Endpoint != endpoint.Merge || !errors.Is(r.Err, errNoPoster) {
		t.Fatalf("%+v", r)
	}
	if r := g.Post(context.Background(), endpoint.Track, nil); r.Class != Delivered {
		t.Fatalf("%+v", r)
	}
}
