package sink

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
)

// Each row is a row of docs/design.md §3.
func TestClassify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tests := []struct {
		name      string
		status    int
		headers   map[string]string
		body      string
		class     Class
		errors    int
		retryWait time.Duration
	}{
		{"201 success", 201, nil, `{"message":"success","events_processed":2}`, Delivered, 0, 0},
		{"200 empty body is not Braze's confirmation", 200, nil, ``, Halt, 0, 0},
		{"201 queued (historical) delivered", 201, nil, `{"message":"queued"}`, Delivered, 0, 0},
		{"201 success with spaces", 201, nil, `{"message": "success"}`, Delivered, 0, 0},
		{"201 fatal message is a whole-request failure", 201, nil, `{"message":"Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."}`, Split, 0, 0},
		{"200 html page is not Braze", 200, nil, `<html>ok</html>`, Halt, 0, 0},
		{"400 html WAF page is not Braze's verdict", 400, nil, `<html><body>Request blocked by WAF</body></html>`, Halt, 0, 0},
		{"201 with errors is partial", 201, nil, `{"message":"success","errors":[{"type":"bad email","input_array":"attributes","index":1}]}`, Partial, 1, 0},
		{"400 splits", 400, nil, `{"message":"Valid data must be provided"}`, Split, 0, 0},
		{"400 max input length splits", 400, nil, `{"message":"Max Input Length Exceeded"}`, Split, 0, 0},
		{"413 splits", 413, nil, `Request Entity Too Large`, Split, 0, 0},
		{"401 halts", 401, nil, `{"message":"Invalid API key"}`, Halt, 0, 0},
		{"403 halts", 403, nil, `{"message":"Access Denied"}`, Halt, 0, 0},
		{"404 halts", 404, nil, ``, Halt, 0, 0},
		{"415 halts", 415, nil, ``, Halt, 0, 0},
		{"429 retry-after seconds", 429, map[string]string{"X-Ratelimit-Retry-After": "3"}, ``, Retry, 0, 3 * time.Second},
		{"429 reset epoch", 429, map[string]string{"X-RateLimit-Reset": "1800000005"}, ``, Retry, 0, 5 * time.Second},
		{"429 reset seconds remaining", 429, map[string]string{"X-RateLimit-Reset": "2"}, ``, Retry, 0, 2 * time.Second},
		{"429 no hint", 429, nil, ``, Retry, 0, 0},
		{"429 retry-after beyond an hour is ignored", 429, map[string]string{"X-Ratelimit-Retry-After": "3000000000"}, ``, Retry, 0, 0},
		{"429 negative retry-after is ignored", 429, map[string]string{"Retry-After": "-5"}, ``, Retry, 0, 0},
		{"429 unparsable retry-after is ignored", 429, map[string]string{"Retry-After": "soon"}, ``, Retry, 0, 0},
		{"429 retry-after of an hour is kept", 429, map[string]string{"Retry-After": "3600"}, ``, Retry, 0, time.Hour},
		{"429 retry-after http date", 429, map[string]string{"Retry-After": "Fri, 15 Jan 2027 08:00:04 GMT"}, ``, Retry, 0, 4 * time.Second},
		{"500 retries", 500, nil, `oops`, Retry, 0, 0},
		{"503 retries", 503, nil, ``, Retry, 0, 0},
		{"408 retries", 408, nil, ``, Retry, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tc.headers {
				h.Set(k, v)
			}
			r := Classify(tc.status, h, []byte(tc.body), now)
			if r.Class != tc.class || len(r.Errors) != tc.errors || r.RetryAfter != tc.retryWait {
				t.Fatalf("got class %v errors %d wait %v; want %v %d %v", r.Class, len(r.Errors), r.RetryAfter, tc.class, tc.errors, tc.retryWait)
			}
		})
	}
}

func TestRateLimitHeaders(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	h := windowHeader("3000", "12", "1800000002")
	rl := Classify(201, h, nil, now).RateLimit
	if rl.Limit != 3000 || rl.Remaining != 12 || !rl.Reset.Equal(now.Add(2*time.Second)) {
		t.Fatalf("rate limit %+v", rl)
	}
	if rl := Classify(201, http.Header{}, nil, now).RateLimit; rl.Limit != -1 || rl.Remaining != -1 || !rl.Reset.IsZero() {
		t.Fatalf("absent headers: %+v", rl)
	}
}

func TestClientSendsBraze(t *testing.T) {
	var got *http.Request
	var body string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r
		b, _ := io.ReadAll(r.Body)
		body = string(b)
		w.WriteHeader(201)
		io.WriteString(w, `{"message":"success"}`)
	}))
	defer srv.Close()
	c, err := NewClient(ClientConfig{Endpoint: srv.URL, APIKey: "secret-key", UserAgent: "t/1"})
	if err != nil {
		t.Fatal(err)
	}
	r := c.Track(context.Background(), []byte(`{"events":[]}`))
	if r.Class != Delivered || got.URL.Path != "/users/track" || got.Method != "POST" ||
		got.Header.Get("Authorization") != "Bearer secret-key" || got.Header.Get("Content-Type") != "application/json" || body != `{"events":[]}` {
		t.Fatalf("request %s %s %v body %q -> %+v", got.Method, got.URL, got.Header, body, r)
	}
}

func TestClientTransportErrorIsRetryWithoutSecret(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(200 * time.Millisecond)
	}))
	defer srv.Close()
	c, _ := NewClient(ClientConfig{Endpoint: srv.URL, APIKey: "very-secret", Timeout: 50 * time.Millisecond})
	r := c.Track(context.Background(), []byte(`{}`))
	if r.Class != Retry || r.Err == nil || r.Status != 0 {
		t.Fatalf("want Retry with error, got %+v", r)
	}
	if !errors.Is(r.Err, context.DeadlineExceeded) {
		t.Fatalf("want the client's timeout, got %v", r.Err)
	}
	if strings.Contains(r.Describe(), "very-secret") || strings.Contains(r.Err.Error(), "very-secret") {
		t.Fatalf("secret leaked: %s", r.Describe())
	}
}

func TestValidateEndpoint(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"https://rest.iad-01.braze.com", true},
		{"https://rest.fra-01.braze.eu/", true},
		{"http://127.0.0.1:4610", true},
		{"http://localhost:4610", true},
		{"http://[::1]:4610", true},
		{"http://rest.iad-01.braze.com", false},
		{"rest.iad-01.braze.com", false},
		{"https://rest.iad-01.braze.com/users/track", false},
		{"https://user:pw@rest.iad-01.braze.com", false},
		{"ftp://x", false},
	}
	for _, tc := range tests {
		_, err := ValidateEndpoint(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateEndpoint(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func TestClassifyCause(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tests := []struct {
		status int
		body   string
		want   Cause
	}{
		{201, `{"message":"success"}`, CauseAccepted},
		{201, `{"message":"queued"}`, CauseAccepted},
		{201, `{"message":"Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."}`, CauseRejected},
		{200, ``, CauseNotBraze},
		{400, `<html>WAF</html>`, CauseNotBraze},
		{400, `{"message":"Max Input Length Exceeded"}`, CauseTooMany},
		{400, `{"message":"bad"}`, CauseRejected},
		{413, `Request Entity Too Large`, CauseTooLarge},
		{401, `{"message":"Invalid API key"}`, CauseKey},
		{429, ``, CauseThrottled},
		{503, ``, CauseOutage},
		{409, ``, CauseUnexpected},
	}
	for _, tc := range tests {
		r := Classify(tc.status, http.Header{}, []byte(tc.body), now)
		if r.Cause() != tc.want {
			t.Errorf("%d %s: cause %v, want %v", tc.status, tc.body, r.Cause(), tc.want)
		}
		// An answer built by hand (a test sender) derives the same cause from its fields.
		if d := (Response{Status: r.Status, Class: r.Class, Message: r.Message}).Cause(); d != tc.want {
			t.Errorf("%d %s: derived cause %v, want %v", tc.status, tc.body, d, tc.want)
		}
	}
	if c := (Response{Class: Retry, Err: context.Canceled}).Cause(); c != CauseCanceled {
		t.Errorf("canceled: %v", c)
	}
	if c := (Response{Class: Retry, Err: context.DeadlineExceeded}).Cause(); c != CauseOutage {
		t.Errorf("timeout: %v", c)
	}
}

// The key an upstream echoes never leaves the client.
func TestClientRedactsEchoedKey(t *testing.T) {
	const key = "sk-secret-0123456789"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(401)
		_, _ = io.WriteString(w, `{"message":"invalid key `+strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")+`","errors":[{"type":"key `+key+`"}]}`)
	}))
	defer srv.Close()
	c, err := NewClient(ClientConfig{Endpoint: srv.URL, APIKey: key})
	if err != nil {
		t.Fatal(err)
	}
	r := c.Track(context.Background(), []byte(`{}`))
	if strings.Contains(r.Message, key) || strings.Contains(r.Describe(), key) || strings.Contains(r.Errors[0].Type, key) {
		t.Fatalf("key in answer: %q %q", r.Message, r.Errors[0].Type)
	}
	if !strings.Contains(r.Message, Redacted) {
		t.Fatalf("message %q: want the key replaced by %s", r.Message, Redacted)
	}
}

// FuzzClassify: any status, body and headers classify without panic into one consistent
// action; a 2xx is delivered only when its message says so, a non-JSON body is never a
// verdict on records, and every wait stays within its bound.
func FuzzClassify(f *testing.F) {
	f.Add(201, `{"message":"success"}`, "")
	f.Add(201, `{"message":"Valid data must be provided"}`, "")
	f.Add(400, `<html>WAF</html>`, "")
	f.Add(429, ``, "3000000000")
	f.Add(503, `oops`, "-1")
	f.Add(200, `{"message":"queued","errors":[{"type":"x","input_array":"events","index":0}]}`, "")
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, status int, body, retryAfter string) {
		h := http.Header{}
		h.Set("X-Ratelimit-Retry-After", retryAfter)
		r := Classify(status, h, []byte(body), now)
		if r.Class < Delivered || r.Class > Retry || r.Cause() == causeUnset {
			t.Fatalf("class %v cause %v", r.Class, r.Cause())
		}
		if r.RetryAfter < 0 || r.RetryAfter > time.Hour {
			t.Fatalf("wait %v out of bounds", r.RetryAfter)
		}
		var said answerBody
		_ = json.Unmarshal([]byte(body), &said)
		if (r.Class == Delivered || r.Class == Partial) && said.Message != "success" && said.Message != "queued" {
			t.Fatalf("%d %q delivered without a success message", status, body)
		}
		if r.Cause() == CauseNotBraze && r.Class != Halt {
			t.Fatalf("a non-Braze answer acts as %v", r.Class)
		}
		if d := deriveCause(Response{Status: r.Status, Class: r.Class, Message: r.Message}); r.Answered() && r.Status >= 100 && r.Status < 600 && d != r.Cause() {
			t.Fatalf("%d %q: classified cause %v, derived %v", status, body, r.Cause(), d)
		}
	})
}

// A key an upstream echoes JSON-escaped ("\u002d" for "-") inside an errors[] that is shown
// raw is redacted all the same, on /users/track and on the other endpoints.
func TestClientRedactsEscapedEchoedKey(t *testing.T) {
	const key = "sk-ATTACK-0123456789abcdef"
	escaped := strings.ReplaceAll(key, "-", `\u002d`)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(400)
		_, _ = io.WriteString(w, `{"message":"x","errors":[{"auth":"Bearer `+escaped+`"},"x"]}`)
	}))
	defer srv.Close()
	c, err := NewClient(ClientConfig{Endpoint: srv.URL, APIKey: key})
	if err != nil {
		t.Fatal(err)
	}
	for _, ep := range []endpoint.Endpoint{endpoint.Track, endpoint.Delete} {
		r := c.Post(context.Background(), ep, []byte(`{}`))
		if d := r.Describe(); strings.Contains(d, escaped) || strings.Contains(d, key) || !strings.Contains(d, Redacted) {
			t.Errorf("%s: answer %q: want the escaped key replaced by %s", ep.Name(), d, Redacted)
		}
	}
}

// A 2xx whose body is cut off (the connection hangs after part of it, then the client's
// timeout) is no answer: retried, neither delivered nor halted nor a verdict on records.
func TestClientCutOff2xxIsRetry(t *testing.T) {
	for _, part := range []string{``, `{"message":"suc`, `{"message":"internal hiccup"}`} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(201)
			_, _ = io.WriteString(w, part)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}))
		c, _ := NewClient(ClientConfig{Endpoint: srv.URL, APIKey: "k", Timeout: 100 * time.Millisecond})
		for _, ep := range []endpoint.Endpoint{endpoint.Track, endpoint.Merge} {
			if r := c.Post(context.Background(), ep, []byte(`{}`)); r.Class != Retry || r.Cause() != CauseOutage || r.Err == nil {
				t.Errorf("%s, 201 cut off after %q: %v/%v (%v), want retry/outage", ep.Name(), part, r.Class, r.Cause(), r.Err)
			}
		}
		srv.Close()
	}
}
