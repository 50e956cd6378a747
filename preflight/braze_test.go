package preflight

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

func brazeStub(t *testing.T, status int, body string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func runBraze(t *testing.T, endpoint, key string) (string, bool) {
	t.Helper()
	var out bytes.Buffer
	p := NewPrinter(&out, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	CheckBraze(ctx, Config{BrazeEndpoint: endpoint, APIKey: key, HTTPTimeout: 5 * time.Second, Version: "test"}, p)
	return out.String(), p.Failed()
}

// TestCheckBrazeLocalHeaderError: a key that cannot be an HTTP header value fails as a local
// configuration error, without a request; before, the HTTP client refused it and check called
// Braze unreachable.
func TestCheckBrazeLocalHeaderError(t *testing.T) {
	srv, requests := brazeStub(t, 400, `{"message":"Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."}`)
	for _, key := range []string{"abcd-1234\nefgh", "abcd-1234\x00", "abcd\r\n1234"} {
		out, failed := runBraze(t, srv.URL, key)
		t.Log(out)
		if !failed {
			t.Errorf("key %q: check passed", key)
		}
		for _, want := range []string{"not contacted", "malformed", "a local configuration error, not an outage"} {
			if !strings.Contains(out, want) {
				t.Errorf("key %q: output lacks %q", key, want)
			}
		}
		if strings.Contains(out, "unreachable") || strings.Contains(out, "1234") {
			t.Errorf("key %q: reported as unreachable or shows the key: %s", key, out)
		}
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("%d requests sent with a malformed key", n)
	}
	// The same stub with a good key passes: the failure above was the key alone.
	if out, failed := runBraze(t, srv.URL, "abcd-1234"); failed || !strings.Contains(out, "key accepted for users.track") {
		t.Errorf("good key: %s", out)
	}
}

// TestCheckBrazeRedactsEchoedKey: an answer that echoes the key never prints it.
func TestCheckBrazeRedactsEchoedKey(t *testing.T) {
	const key = "5ec7e7a0-1111-4a4a-9b9b-0123456789ab"
	srv, _ := brazeStub(t, 401, `{"message":"Invalid API key: `+key+`"}`)
	out, failed := runBraze(t, srv.URL, key)
	if !failed || strings.Contains(out, key) || !strings.Contains(out, "[redacted]") {
		t.Errorf("failed=%v, output %s", failed, out)
	}
}

// TestProbeOutcome: what each classified answer to the probe {} means.
func TestProbeOutcome(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name   string
		res    sink.Response
		want   probe
		output string
	}{
		{"Braze judged the body", sink.Classify(400, nil, []byte(`{"message":"Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."}`), now), probeJudged, "ok   Braze"},
		{"another JSON 400 is still Braze judging the body", sink.Classify(400, nil, []byte(`{"message":"Invalid request"}`), now), probeJudged, "ok   Braze e: key accepted"},
		{"a WAF 400", sink.Classify(400, nil, []byte(`<html>blocked by WAF</html>`), now), probeNotBraze, "FAIL Braze e: HTTP 400: <html>blocked by WAF</html>: the answer is not Braze's"},
		{"a non-JSON 200", sink.Classify(200, nil, []byte(`ok`), now), probeNotBraze, "not Braze's"},
		{"a redirect", sink.Classify(302, nil, nil, now), probeOther, "FAIL Braze e: unexpected answer to the probe: HTTP 302"},
		{"401", sink.Classify(401, nil, []byte(`{"message":"Invalid API key"}`), now), probeKey, "refused: the API key is invalid"},
		{"403", sink.Classify(403, nil, []byte(`{"message":"Access Denied"}`), now), probeKey, "refused: the API key lacks the users.track permission"},
		{"404", sink.Classify(404, nil, nil, now), probeKey, "wrong REST endpoint URL"},
		{"429", sink.Classify(429, nil, nil, now), probeThrottled, "WARN Braze e: HTTP 429: rate limited"},
		{"503", sink.Classify(503, nil, []byte("upstream down"), now), probeOutage, "FAIL Braze e: HTTP 503: upstream down"},
		{"201 for an empty body", sink.Classify(201, nil, []byte(`{"message":"success"}`), now), probeAcceptedEmpty, "does not look like Braze"},
		{"no answer", sink.Response{Class: sink.Retry, Err: errors.New("dial tcp: connection refused")}, probeNoAnswer, "endpoint unreachable"},
		{"gave up", sink.Response{Class: sink.Retry, Err: context.Canceled}, probeNoAnswer, "endpoint unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := probeOutcome(tc.res); got != tc.want {
				t.Errorf("outcome %d, want %d", got, tc.want)
			}
			var out bytes.Buffer
			reportProbe(NewPrinter(&out, true), "e", tc.res, "zz-secret-key", "", keyHint([endpoint.Count]bool{}))
			if !strings.Contains(out.String(), tc.output) {
				t.Errorf("output %q lacks %q", out.String(), tc.output)
			}
		})
	}
}

// TestCheckAPIKey: printable ASCII without spaces passes; the rest is named by position.
func TestCheckAPIKey(t *testing.T) {
	for key, want := range map[string]string{
		"5ec7e7a0-1111-4a4a-9b9b-0123456789ab": "",
		"":                                     "empty",
		"ab cd":                                "whitespace at byte 3 of 5",
		"ab\tcd":                               "whitespace at byte 3 of 5",
		"abcd\n":                               "control character (0x0a) at byte 5 of 5",
		"ab\x7fcd":                             "control character (0x7f)",
		"abcé":                                 "non-ASCII byte at byte 4 of 5",
	} {
		err := CheckAPIKey(key)
		switch {
		case want == "" && err != nil:
			t.Errorf("%q: %v", key, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("%q: %v, want %q", key, err, want)
		case err != nil && len(key) > 4 && strings.Contains(err.Error(), key[:4]):
			t.Errorf("%q: error shows the key: %v", key, err)
		}
	}
}

// TestCheckBrazeEndpointPermissions: every enabled endpoint is probed with {} (which names no
// user) and gets one line; a key without one endpoint's permission fails that line with the
// permission named, and a disabled endpoint is not contacted.
func TestCheckBrazeEndpointPermissions(t *testing.T) {
	var mu sync.Mutex
	got := map[string]string{} // path -> body
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got[r.URL.Path] = string(b)
		mu.Unlock()
		switch r.URL.Path {
		case "/users/track":
			w.WriteHeader(400)
			fmt.Fprint(w, `{"message":"Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."}`)
		case "/users/delete":
			w.WriteHeader(403)
			fmt.Fprint(w, `{"message":"Access Denied"}`)
		case "/users/merge":
			w.WriteHeader(400)
			fmt.Fprint(w, `{"message":"'merge_updates' must be an array of objects"}`)
		case "/users/identify":
			w.WriteHeader(201)
			fmt.Fprint(w, `{"aliases_processed":0,"message":"success"}`)
		case "/subscription/status/set":
			w.WriteHeader(429)
		default:
			w.WriteHeader(404)
		}
	}))
	defer srv.Close()
	var enabled [endpoint.Count]bool
	for _, e := range []endpoint.Endpoint{endpoint.Track, endpoint.Identify, endpoint.Merge, endpoint.Subscription, endpoint.Delete} {
		enabled[e] = true
	}
	var out bytes.Buffer
	p := NewPrinter(&out, true)
	CheckBraze(context.Background(), Config{BrazeEndpoint: srv.URL, APIKey: "abcd-1234", HTTPTimeout: 5 * time.Second, Endpoints: enabled}, p)
	t.Log(out.String())
	if !p.Failed() {
		t.Error("check passed with a key lacking users.delete")
	}
	for _, want := range []string{
		"ok   Braze " + srv.URL + ": key accepted for users.track",
		"ok   Braze " + srv.URL + " /users/identify: key accepted for users.identify (probe {} names no user; nothing written)",
		"ok   Braze " + srv.URL + " /users/merge: key accepted for users.merge (probe {} refused for its content",
		"WARN Braze " + srv.URL + " /subscription/status/set: HTTP 429: rate limited: subscription.status.set not verified",
		"FAIL Braze " + srv.URL + " /users/delete: HTTP 403: Access Denied: refused: the API key lacks the users.delete permission",
		"with the permissions users.track, users.identify, users.merge, subscription.status.set, users.delete;",
		"or remove delete from ENDPOINTS",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if n := strings.Count(out.String(), "\nok   ") + strings.Count(out.String(), "\nFAIL ") + strings.Count(out.String(), "\nWARN "); n != 4 {
		t.Errorf("%d lines after the /users/track line, want one per other enabled endpoint (4)", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if _, ok := got["/users/alias/new"]; ok {
		t.Error("a disabled endpoint was contacted")
	}
	for path, body := range got {
		if body != "{}" {
			t.Errorf("%s: probe body %q, want {} (names no user)", path, body)
		}
	}
	if len(got) != 5 {
		t.Errorf("probed %d endpoints, want 5: %v", len(got), got)
	}
}

// TestCheckBrazeEndpointsNotProbedWhenUnreachable: when /users/track cannot be reached, the
// other endpoints are reported as not checked rather than each failing the same way.
func TestCheckBrazeEndpointsNotProbedWhenUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	var enabled [endpoint.Count]bool
	enabled[endpoint.Track], enabled[endpoint.Delete] = true, true
	var out bytes.Buffer
	p := NewPrinter(&out, true)
	CheckBraze(context.Background(), Config{BrazeEndpoint: url, APIKey: "abcd-1234", HTTPTimeout: 2 * time.Second, Endpoints: enabled}, p)
	if !p.Failed() || !strings.Contains(out.String(), "endpoint unreachable") ||
		!strings.Contains(out.String(), "WARN Braze "+url+" /users/delete: users.delete permission not checked (the /users/track probe failed)") {
		t.Errorf("output:\n%s", out.String())
	}
}
