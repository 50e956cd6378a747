package brazesim

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a settable test clock for Config.Now.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock    { c := &clock{}; c.ns.Store(t.UnixNano()); return c }
func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

func newSim(t testing.TB, mut func(*Config)) *Sim {
	t.Helper()
	cfg := DefaultConfig()
	if mut != nil {
		mut(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type req struct {
	method, path, body string
	hdr                map[string]string // overrides; "" value deletes
	remote             string
}

func (s *Sim) do(r req) *httptest.ResponseRecorder {
	if r.method == "" {
		r.method = http.MethodPost
	}
	if r.path == "" {
		r.path = PathTrack
	}
	hr := httptest.NewRequest(r.method, r.path, strings.NewReader(r.body))
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Authorization", "Bearer dev-key")
	for k, v := range r.hdr {
		if v == "" {
			hr.Header.Del(k)
		} else {
			hr.Header.Set(k, v)
		}
	}
	if r.remote != "" {
		hr.RemoteAddr = r.remote
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, hr)
	return w
}

func track(s *Sim, body string) *httptest.ResponseRecorder { return s.do(req{body: body}) }

func decode(t testing.TB, w *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
		t.Fatalf("body %q: %v", w.Body, err)
	}
	return m
}

func objs(kind string, n int, f func(i int) string) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = f(i)
	}
	return `"` + kind + `":[` + strings.Join(parts, ",") + `]`
}

func attrJSON(i int) string { return fmt.Sprintf(`{"external_id":"u%d","a":%d}`, i, i) }
func eventJSON(i int) string {
	return fmt.Sprintf(`{"external_id":"u%d","name":"e","time":"2026-01-01T00:00:00Z"}`, i)
}
func purchaseJSON(i int) string {
	return fmt.Sprintf(`{"external_id":"u%d","product_id":"p","currency":"USD","price":1.5,"time":"2026-01-01T00:00:00Z"}`, i)
}

func body(nA, nE, nP int) string {
	var parts []string
	if nA >= 0 {
		parts = append(parts, objs("attributes", nA, attrJSON))
	}
	if nE >= 0 {
		parts = append(parts, objs("events", nE, eventJSON))
	}
	if nP >= 0 {
		parts = append(parts, objs("purchases", nP, purchaseJSON))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// docs/braze-rules.md §4 "Authentication, permissions, IP allowlisting" and §1/§2 (routing).
func TestAuthAndRouting(t *testing.T) {
	s := newSim(t, func(c *Config) {
		c.Keys = []Key{
			{Name: "dev", Secret: "dev-key"},
			{Name: "del", Secret: "delete-only", Permissions: []string{PermUsersDelete}},
			{Name: "ip", Secret: "ip-key", AllowedIPs: []string{"10.0.0.0/8", "2001:db8::1"}},
		}
	})
	ok := body(1, -1, -1)
	tests := []struct {
		name   string // docs/braze-rules.md section
		r      req
		code   int
		msgHas string
	}{
		{"§4 bearer key", req{body: ok}, 201, "success"},
		{"§4 scheme is case-insensitive", req{body: ok, hdr: map[string]string{"Authorization": "bEaReR dev-key"}}, 201, "success"},
		{"§4 missing key -> 401", req{body: ok, hdr: map[string]string{"Authorization": ""}}, 401, "Invalid API key: "},
		{"§4 unknown key -> 401", req{body: ok, hdr: map[string]string{"Authorization": "Bearer nope-nope"}}, 401, "Invalid API key: nope****"},
		{"§4 api_key scheme is not Bearer -> 401", req{body: ok, hdr: map[string]string{"Authorization": "Basic dev-key"}}, 401, "Invalid API key"},
		{"§4 key must be sent exactly", req{body: ok, hdr: map[string]string{"Authorization": "Bearer DEV-KEY"}}, 401, "Invalid API key"},
		{"§4 missing permission -> 403", req{body: ok, hdr: map[string]string{"Authorization": "Bearer delete-only"}}, 403, "Access Denied"},
		{"§4 allowlisted IPv4 subnet", req{body: ok, remote: "10.1.2.3:5555", hdr: map[string]string{"Authorization": "Bearer ip-key"}}, 201, "success"},
		{"§4 allowlisted IPv6 address", req{body: ok, remote: "[2001:db8::1]:5555", hdr: map[string]string{"Authorization": "Bearer ip-key"}}, 201, "success"},
		{"§4 IP not allowlisted -> 401 (sim choice, UNCONFIRMED)", req{body: ok, remote: "192.168.1.1:5555", hdr: map[string]string{"Authorization": "Bearer ip-key"}}, 401, "IP address not allowed"},
		{"§1 trailing slash -> 403", req{body: ok, path: "/users/track/"}, 403, "Access Denied"},
		{"§2 unknown path -> 404", req{body: ok, path: "/users/trak"}, 404, "Not Found"},
		{"§2 GET on an endpoint -> 404 (sim choice)", req{method: "GET", path: PathTrack}, 404, "Not Found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := s.do(tc.r)
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.msgHas) {
				t.Fatalf("got %d %s, want %d containing %q", w.Code, w.Body, tc.code, tc.msgHas)
			}
			if strings.Contains(w.Body.String(), "nope-nope") {
				t.Fatalf("answer echoes the whole key: %s", w.Body)
			}
		})
	}
}

// docs/braze-rules.md §1 "Body shape and headers", "Payload size", "Per-request object limits"; §2 status table.
func TestTrackFatalErrors(t *testing.T) {
	small := newSim(t, func(c *Config) { c.MaxBodyBytes = 2048 })
	comb := newSim(t, nil)
	per := newSim(t, func(c *Config) { c.Mode = ModePerArray })
	tests := []struct {
		name string
		s    *Sim
		r    req
		code int
		msg  string
	}{
		{"§1 wrong content type -> 415", comb, req{body: body(1, -1, -1), hdr: map[string]string{"Content-Type": "text/plain"}}, 415, "Unsupported Media Type"},
		{"§1 missing content type -> 415", comb, req{body: body(1, -1, -1), hdr: map[string]string{"Content-Type": ""}}, 415, "Unsupported Media Type"},
		{"§1 content type with charset is fine", comb, req{body: body(1, -1, -1), hdr: map[string]string{"Content-Type": "application/json; charset=utf-8"}}, 201, "success"},
		{"§1 payload over the limit -> 413", small, req{body: `{"attributes":[{"external_id":"x","a":"` + strings.Repeat("x", 3000) + `"}]}`}, 413, "Request Entity Too Large"},
		{"§2 invalid JSON -> 400", comb, req{body: `{"attributes":[{"external_id":"x",}]}`}, 400, "invalid JSON"},
		{"§2 single quotes -> 400", comb, req{body: `{'attributes':[]}`}, 400, "invalid JSON"},
		{"§2 not JSON -> 400", comb, req{body: `hello`}, 400, "invalid JSON"},
		{"§2 trailing garbage -> 400", comb, req{body: body(1, -1, -1) + "x"}, 400, "invalid JSON"},
		{"§2 no arrays -> 400 valid data", comb, req{body: `{}`}, 400, msgValidData},
		{"§2 empty arrays -> 400 valid data", comb, req{body: `{"attributes":[],"events":[]}`}, 400, msgValidData},
		{"§1 combined: 75 in total ok", comb, req{body: body(25, 25, 25)}, 201, "success"},
		{"§1 combined: 76 in total -> 400", comb, req{body: body(26, 25, 25)}, 400, msgMaxInput},
		{"§1 combined: 76 in one array -> 400", comb, req{body: body(76, -1, -1)}, 400, msgMaxInput},
		{"§1 per_array: 75 per array (225) ok", per, req{body: body(75, 75, 75)}, 201, "success"},
		{"§1 per_array: 76 in one array -> 400", per, req{body: body(75, 76, 0)}, 400, msgMaxInput},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := tc.s.do(tc.r)
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.msg) {
				t.Fatalf("got %d %s, want %d containing %q", w.Code, w.Body, tc.code, tc.msg)
			}
			if w.Header().Get("Content-Type") != "application/json" {
				t.Fatalf("content type %q", w.Header().Get("Content-Type"))
			}
		})
	}
	if st := comb.Stats(); st.LimitRejected != 2 || st.MaxObjectsInRequest != 76 {
		t.Fatalf("stats: limit_rejected=%d max_objects=%d", st.LimitRejected, st.MaxObjectsInRequest)
	}
}

// docs/braze-rules.md §2 "Success body": each *_processed count only when that array was sent.
func TestSuccessBody(t *testing.T) {
	s := newSim(t, nil)
	tests := []struct {
		name string
		body string
		want string
	}{
		{"§2 attributes only", body(2, -1, -1), `{"message":"success","attributes_processed":2}`},
		{"§2 events only", body(-1, 3, -1), `{"message":"success","events_processed":3}`},
		{"§2 all three", body(1, 2, 3), `{"message":"success","attributes_processed":1,"events_processed":2,"purchases_processed":3}`},
		{"§2 empty array sent alongside", `{"attributes":[],"purchases":[` + purchaseJSON(1) + `]}`, `{"message":"success","attributes_processed":0,"purchases_processed":1}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := track(s, tc.body)
			if w.Code != 201 || w.Body.String() != tc.want {
				t.Fatalf("got %d %s, want 201 %s", w.Code, w.Body, tc.want)
			}
		})
	}
}

// Per-object validation: minor errors in a 201 body, docs/braze-rules.md §1 "Identifiers",
// "Event object", "Purchase object", §2 "Partial success"/"Errors documented per object".
func TestTrackObjectValidation(t *testing.T) {
	const okT = `"time":"2026-01-01T00:00:00Z"`
	tests := []struct {
		name  string
		array string
		obj   string
		want  string // "" = valid
	}{
		{"§1 identifiers: none", "attributes", `{"a":1}`, ErrIdentifierRequired},
		{"§1 identifiers: external_id", "attributes", `{"external_id":"x","a":1}`, ""},
		{"§1 identifiers: braze_id (unknown: accepted, silently not applied)", "attributes", `{"braze_id":"nope","a":1}`, ""},
		{"§1 identifiers: user_alias", "attributes", `{"user_alias":{"alias_name":"n","alias_label":"l"},"a":1}`, ""},
		{"§1 identifiers: alias without label", "attributes", `{"user_alias":{"alias_name":"n"},"a":1}`, ErrInvalidAlias},
		{"§1 identifiers: two primaries rejected", "attributes", `{"external_id":"x","braze_id":"y","a":1}`, ErrMultiplePrimary},
		{"§1 identifiers: external_id and user_alias exclusive", "attributes", `{"external_id":"x","user_alias":{"alias_name":"n","alias_label":"l"}}`, ErrMultiplePrimary},
		{"§1 identifiers: email only", "attributes", `{"email":"a@example.com","a":1}`, ""},
		{"§1 identifiers: phone only", "attributes", `{"phone":"+14155550100","a":1}`, ""},
		{"§1 identifiers: bad phone only", "attributes", `{"phone":"call me","a":1}`, ErrInvalidPhone},
		{"§2 invalid email", "attributes", `{"external_id":"x","email":"not-an-email"}`, ErrInvalidEmail},
		{"§2 invalid email as identifier", "events", `{"email":"a@@b",` + okT + `,"name":"e"}`, ErrInvalidEmail},
		{"§1 external_id 987 bytes ok", "attributes", `{"external_id":"` + strings.Repeat("x", 987) + `"}`, ""},
		{"§1 external_id 988 bytes too large", "attributes", `{"external_id":"` + strings.Repeat("x", 988) + `"}`, ErrExternalIDTooLarge},
		{"§1 blacklisted prefix", "attributes", `{"external_id":"blacklisted-1","a":1}`, ErrBlacklisted},
		{"§1 blacklisted list", "events", `{"external_id":"spam",` + okT + `,"name":"e"}`, ErrBlacklisted},
		{"§2 external_id not a string", "attributes", `{"external_id":5}`, ErrInvalidIdentifier},
		{"§2 item not an object", "attributes", `"x"`, ErrNotObject},
		{"§2 email_subscribe state", "attributes", `{"external_id":"x","email_subscribe":"yes"}`, ErrEmailSubscribe},
		{"§2 push_subscribe state", "attributes", `{"external_id":"x","push_subscribe":"opted_in"}`, ""},
		{"§2 subscription_groups array", "attributes", `{"external_id":"x","subscription_groups":{"a":1}}`, ErrSubscriptionGroups},
		{"§1 event ok", "events", `{"external_id":"x","name":"e",` + okT + `}`, ""},
		{"§1 event name required", "events", `{"external_id":"x",` + okT + `}`, ErrEventName},
		{"§1 event name empty", "events", `{"external_id":"x","name":"",` + okT + `}`, ErrEventName},
		{"§1 event time required", "events", `{"external_id":"x","name":"e"}`, ErrTimeRequired},
		{"§1 event time invalid", "events", `{"external_id":"x","name":"e","time":"yesterday"}`, ErrInvalidTime},
		{"§1 event time yyyy-MM-ddTHH:mm:ss:SSSZ", "events", `{"external_id":"x","name":"e","time":"2013-02-28T04:38:00:000Z"}`, ""},
		{"§1 event time without offset (UTC)", "events", `{"external_id":"x","name":"e","time":"2013-02-28T04:38:00"}`, ""},
		{"§1 event time date only", "events", `{"external_id":"x","name":"e","time":"2013-02-28"}`, ""},
		{"§1 property key empty", "events", `{"external_id":"x","name":"e",` + okT + `,"properties":{"":1}}`, ErrInvalidProperties},
		{"§1 property key starts with $", "events", `{"external_id":"x","name":"e",` + okT + `,"properties":{"$a":1}}`, ErrInvalidProperties},
		{"§1 property key 255 chars ok", "events", `{"external_id":"x","name":"e",` + okT + `,"properties":{"` + strings.Repeat("k", 255) + `":1}}`, ""},
		{"§1 property key 256 chars", "events", `{"external_id":"x","name":"e",` + okT + `,"properties":{"` + strings.Repeat("k", 256) + `":1}}`, ErrInvalidProperties},
		{"§1 reserved event property time", "events", `{"external_id":"x","name":"e",` + okT + `,"properties":{"time":1}}`, ErrInvalidProperties},
		{"§1 reserved event property event_name", "events", `{"external_id":"x","name":"e",` + okT + `,"properties":{"event_name":1}}`, ErrInvalidProperties},
		{"§1 properties not an object", "events", `{"external_id":"x","name":"e",` + okT + `,"properties":[1]}`, ErrInvalidProperties},
		{"§1 purchase ok", "purchases", purchaseJSON(1), ""},
		{"§1 purchase product_id required", "purchases", `{"external_id":"x","currency":"USD","price":1,` + okT + `}`, ErrProductID},
		{"§1 purchase product_id 256 chars", "purchases", `{"external_id":"x","product_id":"` + strings.Repeat("p", 256) + `","currency":"USD","price":1,` + okT + `}`, ErrProductID},
		{"§1 purchase currency", "purchases", `{"external_id":"x","product_id":"p","currency":"usd","price":1,` + okT + `}`, ErrCurrency},
		{"§1 purchase price required", "purchases", `{"external_id":"x","product_id":"p","currency":"USD",` + okT + `}`, ErrPrice},
		{"§1 purchase price string", "purchases", `{"external_id":"x","product_id":"p","currency":"USD","price":"1",` + okT + `}`, ErrPrice},
		{"§1 purchase quantity null (absent)", "purchases", `{"external_id":"x","product_id":"p","currency":"USD","price":1,"quantity":null,` + okT + `}`, ""},
		{"§1 event time MM/dd/yyyy (attribute layout only)", "events", `{"external_id":"x","name":"e","time":"05/01/2026"}`, ErrInvalidTime},
		{"§1 empty external_id", "attributes", `{"external_id":"","a":1}`, ErrInvalidIdentifier},
		{"§1 purchase quantity 100 ok", "purchases", `{"external_id":"x","product_id":"p","currency":"USD","price":1,"quantity":100,` + okT + `}`, ""},
		{"§1 purchase quantity 101", "purchases", `{"external_id":"x","product_id":"p","currency":"USD","price":1,"quantity":101,` + okT + `}`, ErrQuantity},
		{"§1 purchase quantity 0 (3P lower bound)", "purchases", `{"external_id":"x","product_id":"p","currency":"USD","price":1,"quantity":0,` + okT + `}`, ErrQuantity},
		{"§1 purchase quantity 1.5", "purchases", `{"external_id":"x","product_id":"p","currency":"USD","price":1,"quantity":1.5,` + okT + `}`, ErrQuantity},
		{"§1 purchase property price (only time and event_name are reserved)", "purchases", `{"external_id":"x","product_id":"p","currency":"USD","price":1,` + okT + `,"properties":{"price":1}}`, ""},
		{"§1 reserved purchase property", "purchases", `{"external_id":"x","product_id":"p","currency":"USD","price":1,` + okT + `,"properties":{"event_name":1}}`, ErrInvalidProperties},
		{"§1 anonymous push token import", "attributes", `{"push_token_import":true,"push_tokens":[{"app_id":"a","token":"t"}]}`, ""},
		{"§2 push token import with external_id", "attributes", `{"push_token_import":true,"external_id":"x","push_tokens":[{"app_id":"a","token":"t"}]}`, ErrPushTokenImport},
		{"§1 push_token_import false needs an identifier", "attributes", `{"push_token_import":false,"push_tokens":[]}`, ErrIdentifierRequired},
		{"§1 null external_id is absent", "attributes", `{"external_id":null,"braze_id":"b","a":1}`, ""},
	}
	s := newSim(t, func(c *Config) { c.BlacklistedExternalIDs = []string{"spam"} })
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The object under test sits at index 1, after a valid object, so the
			// answer is a 201 with (or without) one minor error.
			var valid string
			switch tc.array {
			case "attributes":
				valid = attrJSON(0)
			case "events":
				valid = eventJSON(0)
			default:
				valid = purchaseJSON(0)
			}
			w := track(s, `{"`+tc.array+`":[`+valid+`,`+tc.obj+`]}`)
			if w.Code != 201 {
				t.Fatalf("status %d %s", w.Code, w.Body)
			}
			m := decode(t, w)
			processed := m[tc.array+"_processed"].(float64)
			errs, _ := m["errors"].([]any)
			if tc.want == "" {
				if len(errs) != 0 || processed != 2 {
					t.Fatalf("want valid, got %s", w.Body)
				}
				return
			}
			if len(errs) != 1 || processed != 1 {
				t.Fatalf("want one error %q, got %s", tc.want, w.Body)
			}
			e := errs[0].(map[string]any)
			if e["type"] != tc.want || e["input_array"] != tc.array || e["index"] != 1.0 {
				t.Fatalf("error %v, want type %q input_array %q index 1", e, tc.want, tc.array)
			}
		})
	}
}

// docs/braze-rules.md §2 "Fatal errors": when no object is valid nothing is processed; the
// answer is 400 "Valid data must be provided…" carrying the per-object errors.
// Objects with errors are not applied; the others are (§2 "Partial success").
func TestTrackPartialAndAllInvalid(t *testing.T) {
	s := newSim(t, nil)
	w := track(s, `{"attributes":[{"a":1},{"external_id":"ok","a":1}],"events":[{"external_id":"ok"}]}`)
	m := decode(t, w)
	if w.Code != 201 || m["attributes_processed"] != 1.0 || m["events_processed"] != 0.0 || len(m["errors"].([]any)) != 2 {
		t.Fatalf("partial: %d %s", w.Code, w.Body)
	}
	if _, ok := s.User("external_id", "ok"); !ok {
		t.Fatal("valid object not applied")
	}
	w = track(s, `{"attributes":[{"a":1}],"events":[{"external_id":"bad","name":"e"}]}`)
	want := `{"message":"` + msgValidData + `","errors":[{"type":"` + ErrIdentifierRequired + `","input_array":"attributes","index":0},{"type":"'time' is required","input_array":"events","index":0}]}`
	if w.Code != 400 || w.Body.String() != want {
		t.Fatalf("all invalid: %d %s\nwant %s", w.Code, w.Body, want)
	}
	if _, ok := s.User("external_id", "bad"); ok {
		t.Fatal("invalid object applied")
	}
	s.do(req{body: body(1, -1, -1), hdr: map[string]string{"X-Braze-Bulk": "false"}}) // any value counts (§1)
	if st := s.Stats(); st.ObjectErrors != 4 || st.Objects != 2 || st.BulkHeader != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// docs/braze-rules.md §3 "Rate limits": per-workspace fixed windows, X-RateLimit-* headers,
// 429 with X-Ratelimit-Retry-After and no X-RateLimit-* headers.
func TestRateLimits(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 10, 0, 1, 500e6, time.UTC) // 1.5 s into a 3 s window [10:00:00, 10:00:03)
	clk := newClock(t0)
	s := newSim(t, func(c *Config) {
		c.Now = clk.Now
		c.TrackLimit, c.TrackWindow = 3, 3*time.Second
		c.UserOpsLimit, c.UserOpsWindow = 1, time.Minute
		c.Keys = []Key{{Name: "a", Secret: "dev-key"}, {Name: "b", Secret: "other-key"}}
	})
	windowEnd := time.Date(2026, 1, 1, 10, 0, 3, 0, time.UTC).Unix()
	for i := 0; i < 3; i++ {
		r := req{body: body(1, -1, -1)}
		if i == 1 { // the limit is per workspace: all keys share it
			r.hdr = map[string]string{"Authorization": "Bearer other-key"}
		}
		w := s.do(r)
		h := w.Header()
		if w.Code != 201 || h.Get("X-RateLimit-Limit") != "3" || h.Get("X-RateLimit-Remaining") != strconv.Itoa(2-i) ||
			h.Get("X-RateLimit-Reset") != strconv.FormatInt(windowEnd, 10) {
			t.Fatalf("request %d: %d %v", i, w.Code, h)
		}
	}
	w := track(s, body(1, -1, -1))
	h := w.Header()
	if w.Code != 429 || h.Get("X-Ratelimit-Retry-After") != "2" { // 1.5 s left, rounded up
		t.Fatalf("429: %d %v", w.Code, h)
	}
	for _, k := range []string{"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} {
		if h.Get(k) != "" {
			t.Fatalf("429 carries %s", k)
		}
	}
	// Other endpoints have their own limit (§3, §7 shared 20,000/min for user ops).
	del := req{path: PathDelete, body: `{"external_ids":["nobody"]}`}
	if w := s.do(del); w.Code != 201 || w.Header().Get("X-RateLimit-Limit") != "1" {
		t.Fatalf("delete: %d %v %s", w.Code, w.Header(), w.Body)
	}
	if w := s.do(req{path: PathAliasNew, body: `{"user_aliases":[{"alias_name":"n","alias_label":"l"}]}`}); w.Code != 429 {
		t.Fatalf("alias/new shares the user-ops limit: %d", w.Code)
	}
	clk.Add(1600 * time.Millisecond) // next track window
	if w := track(s, body(1, -1, -1)); w.Code != 201 || w.Header().Get("X-RateLimit-Remaining") != "2" {
		t.Fatalf("next window: %d %v", w.Code, w.Header())
	}
	if st := s.Stats(); st.RateLimited != 2 || st.ByStatus[429] != 2 {
		t.Fatalf("stats %+v", st)
	}
	// Hourly windows reset on the clock hour (§3 "Rate limit reset").
	clk2 := newClock(time.Date(2026, 1, 1, 10, 59, 59, 0, time.UTC))
	h1 := newSim(t, func(c *Config) { c.Now = clk2.Now; c.TrackLimit, c.TrackWindow = 1, time.Hour })
	track(h1, body(1, -1, -1))
	if w := track(h1, body(1, -1, -1)); w.Code != 429 || w.Header().Get("X-Ratelimit-Retry-After") != "1" {
		t.Fatalf("hourly: %d %v", w.Code, w.Header())
	}
	clk2.Add(time.Second)
	if w := track(h1, body(1, -1, -1)); w.Code != 201 {
		t.Fatalf("new hour: %d", w.Code)
	}
}

func mustUser(t *testing.T, s *Sim, kind, id string) User {
	t.Helper()
	u, ok := s.User(kind, id)
	if !ok {
		t.Fatalf("no user %s=%q", kind, id)
	}
	return u
}

func mustTrack(t *testing.T, s *Sim, b string) map[string]any {
	t.Helper()
	w := track(s, b)
	if w.Code != 201 || strings.Contains(w.Body.String(), "errors") {
		t.Fatalf("track %s: %d %s", b, w.Code, w.Body)
	}
	return decode(t, w)
}

func jsonEq(t *testing.T, got any, want string) {
	t.Helper()
	g, _ := json.Marshal(got)
	var w any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	wb, _ := json.Marshal(w)
	if string(g) != string(wb) {
		t.Fatalf("got %s\nwant %s", g, wb)
	}
}

// State application, docs/braze-rules.md §1 "Attributes object", "Nested custom attributes",
// "Arrays of objects", "_update_existing_only", "Processing order".
func TestAttributeState(t *testing.T) {
	tests := []struct {
		name  string
		steps []string // attributes objects for external_id "u", one request each
		want  string   // resulting custom attributes
	}{
		{"§1 set values", []string{`{"a":"x","n":1.5,"b":true,"e":""}`}, `{"a":"x","n":1.5,"b":true,"e":""}`},
		{"§1 null removes", []string{`{"a":"x","b":1}`, `{"a":null}`}, `{"b":1}`},
		{"§1 key spaces stripped", []string{`{" a ":"x"}`}, `{"a":"x"}`},
		{"§1 inc", []string{`{"n":{"inc":2}}`, `{"n":{"inc":3}}`, `{"n":{"inc":-1}}`}, `{"n":4}`},
		{"§1 simple array add/remove, unique values", []string{`{"t":{"add":["a","b","a"]}}`, `{"t":{"add":["c"],"remove":["a"]}}`, `{"t":{"remove":["zzz"]}}`}, `{"t":["b","c"]}`},
		{"§1 simple array set keeps unique values", []string{`{"t":["a","a","b"]}`}, `{"t":["a","b"]}`},
		{"§1 nested object overwritten by default", []string{`{"o":{"a":1,"b":{"c":2}}}`, `{"o":{"b":{"d":3}}}`}, `{"o":{"b":{"d":3}}}`},
		{"§1 nested object deep-merged with _merge_objects", []string{`{"o":{"a":1,"b":{"c":2}}}`, `{"_merge_objects":true,"o":{"b":{"d":3}}}`}, `{"o":{"a":1,"b":{"c":2,"d":3}}}`},
		{"§1 arrays of objects $add/$remove/$update", []string{
			`{"p":{"$add":[{"id":1,"v":"a"},{"id":2,"v":"b"}]}}`,
			`{"_merge_objects":true,"p":{"$add":[{"id":3,"v":"c"}],"$remove":[{"$identifier_key":"id","$identifier_value":1}],"$update":[{"$identifier_key":"id","$identifier_value":2,"$new_object":{"v":"B","w":true}}]}}`,
		}, `{"p":[{"id":2,"v":"B","w":true},{"id":3,"v":"c"}]}`},
		{"§1 $add -> $remove -> $update: remove after add in one request is not an upsert", []string{
			`{"p":{"$add":[{"id":1,"v":"new"}],"$remove":[{"$identifier_key":"id","$identifier_value":1}]}}`,
		}, `{"p":[]}`},
		{"§1 $update needs _merge_objects", []string{
			`{"p":{"$add":[{"id":1,"v":"a"}]}}`,
			`{"p":{"$update":[{"$identifier_key":"id","$identifier_value":1,"$new_object":{"v":"b"}}]}}`,
		}, `{"p":[{"id":1,"v":"a"}]}`},
		{"§1 invalid nested value drops every nested update of the request", []string{
			`{"o":{"a":1}}`,
			`{"o":{"a":2},"o2":{"x":null},"plain":"kept"}`,
		}, `{"o":{"a":1},"plain":"kept"}`},
		{"§1 nested object over 100 KB dropped, success still", []string{`{"o":{"a":1}}`, `{"o":{"big":"` + strings.Repeat("x", 100*1024) + `"},"k":2}`}, `{"o":{"a":1},"k":2}`},
		{"§1 array of objects over 100 KB dropped", []string{`{"p":{"$add":[{"big":"` + strings.Repeat("x", 100*1024) + `"}]}}`}, `{}`},
		{"§1 malformed $time drops nested updates", []string{`{"o":{"d":{"$time":"not a time"}},"k":1}`}, `{"k":1}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, nil)
			for _, st := range tc.steps {
				mustTrack(t, s, `{"attributes":[{"external_id":"u",`+st[1:]+`]}`)
			}
			jsonEq(t, mustUser(t, s, "external_id", "u").Attributes, tc.want)
		})
	}
}

// docs/braze-rules.md §1 "Identifiers" and "_update_existing_only": which objects create profiles.
func TestProfileCreation(t *testing.T) {
	const tm = `"time":"2026-01-01T00:00:00Z"`
	tests := []struct {
		name    string
		body    string
		kind    string
		id      string
		created bool
	}{
		{"§1 external_id creates", `{"attributes":[{"external_id":"x","a":1}]}`, "external_id", "x", true},
		{"§1 _update_existing_only true does not create", `{"attributes":[{"external_id":"x","_update_existing_only":true,"a":1}]}`, "external_id", "x", false},
		{"§1 event with external_id creates", `{"events":[{"external_id":"x","name":"e",` + tm + `}]}`, "external_id", "x", true},
		{"§1 alias attributes default to update-only", `{"attributes":[{"user_alias":{"alias_name":"n","alias_label":"l"},"a":1}]}`, "alias", "l\x00n", false},
		{"§1 alias attributes with _update_existing_only false create", `{"attributes":[{"user_alias":{"alias_name":"n","alias_label":"l"},"_update_existing_only":false,"a":1}]}`, "alias", "l\x00n", true},
		{"§1 alias events are always update-only", `{"events":[{"user_alias":{"alias_name":"n","alias_label":"l"},"_update_existing_only":false,"name":"e",` + tm + `}]}`, "alias", "l\x00n", false},
		{"§1 unknown email creates an email-only profile", `{"attributes":[{"email":"New@Example.com","a":1}]}`, "email", "new@example.com", true},
		{"§1 unknown braze_id creates nothing", `{"attributes":[{"braze_id":"abc","a":1}]}`, "braze_id", "abc", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, nil)
			mustTrack(t, s, tc.body)
			if _, ok := s.User(tc.kind, tc.id); ok != tc.created {
				t.Fatalf("created=%v, want %v (users %+v)", ok, tc.created, s.Users())
			}
		})
	}
}

// docs/braze-rules.md §1 "Identifiers": email lookup picks the most recently updated profile
// with an external_id; with a primary identifier, email is written as an attribute.
func TestEmailResolution(t *testing.T) {
	s := newSim(t, nil)
	mustTrack(t, s, `{"attributes":[{"email":"a@example.com","first":1}]}`)          // email-only profile
	mustTrack(t, s, `{"attributes":[{"external_id":"x1","email":"a@example.com"}]}`) // identified, same email
	mustTrack(t, s, `{"attributes":[{"external_id":"x2","email":"A@example.com"}]}`) // identified, more recent
	mustTrack(t, s, `{"attributes":[{"email":"a@example.com","hit":true}]}`)         // lookup by email
	if u := mustUser(t, s, "external_id", "x2"); u.Attributes["hit"] != true || u.Email != "a@example.com" {
		t.Fatalf("x2 %+v", u)
	}
	if u := mustUser(t, s, "external_id", "x1"); u.Attributes["hit"] != nil {
		t.Fatalf("x1 %+v", u)
	}
	// An unknown external_id creates a new profile even when the email matches one.
	mustTrack(t, s, `{"attributes":[{"external_id":"x3","email":"a@example.com"}]}`)
	if n := len(s.Users()); n != 4 {
		t.Fatalf("%d users", n)
	}
}

// docs/braze-rules.md §1 "Processing order": attributes -> events -> purchases within a
// request; events kept in arrival order with the request sequence; quantity kept.
func TestEventsPurchasesOrder(t *testing.T) {
	s := newSim(t, func(c *Config) { c.Now = func() time.Time { return time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC) } })
	// The event is update-only, but the attributes array (processed first) creates the user.
	mustTrack(t, s, `{"events":[{"external_id":"u","_update_existing_only":true,"name":"first","time":"2026-01-01T00:00:00Z","properties":{"k":"v","n":[1,2]}}],`+
		`"attributes":[{"external_id":"u","a":1}]}`)
	mustTrack(t, s, `{"purchases":[{"external_id":"u","product_id":"p","currency":"EUR","price":9.5,"quantity":3,"time":"2030-01-01T00:00:00Z"}],`+
		`"events":[{"external_id":"u","name":"second","time":"2026-01-02T00:00:00+02:00"},{"external_id":"u","name":"third","time":"2026-01-03"}]}`)
	u := mustUser(t, s, "external_id", "u")
	var names []string
	for _, e := range u.Events {
		names = append(names, fmt.Sprintf("%s@%d", e.Name, e.Seq))
	}
	if strings.Join(names, ",") != "first@1,second@2,third@2" {
		t.Fatalf("events %v", names)
	}
	jsonEq(t, u.Events[0].Properties, `{"k":"v","n":[1,2]}`)
	if !u.Events[1].Time.Equal(time.Date(2026, 1, 1, 22, 0, 0, 0, time.UTC)) {
		t.Fatalf("time %v", u.Events[1].Time)
	}
	p := u.Purchases[0]
	// Future timestamps are set to the current time (§1 "Attributes object" Dates).
	if p.Quantity != 3 || p.Price != 9.5 || p.Currency != "EUR" || !p.Time.Equal(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("purchase %+v", p)
	}
	// Duplicates are not removed (§1 "Event object").
	mustTrack(t, s, `{"events":[{"external_id":"u","name":"first","time":"2026-01-01T00:00:00Z"}]}`)
	if n := len(mustUser(t, s, "external_id", "u").Events); n != 4 {
		t.Fatalf("%d events", n)
	}
}

// docs/braze-rules.md §6 "Data points".
func TestDataPoints(t *testing.T) {
	tests := []struct {
		name string
		body string
		want int64
	}{
		{"§6 each attribute sent = 1", `{"attributes":[{"external_id":"u","a":1,"b":"x"}]}`, 2},
		{"§6 unchanged value still billed", `{"attributes":[{"external_id":"u","a":1},{"external_id":"u","a":1}]}`, 2},
		{"§6 null = 1", `{"attributes":[{"external_id":"u","a":null}]}`, 1},
		{"§6 array add = 1 per value", `{"attributes":[{"external_id":"u","t":{"add":["a","b","c"]}}]}`, 3},
		{"§6 remove of a missing value still billed", `{"attributes":[{"external_id":"u","t":{"remove":["zzz"]}}]}`, 1},
		{"§6 whole array = 1", `{"attributes":[{"external_id":"u","t":["a","b","c"]}]}`, 1},
		{"§6 nested object: every key sent", `{"attributes":[{"external_id":"u","o":{"a":1,"b":{"c":2}}}]}`, 3},
		{"§6 subscription fields and push tokens free", `{"attributes":[{"external_id":"u","email_subscribe":"opted_in","push_subscribe":"subscribed","subscription_groups":[{"subscription_group_id":"g","subscription_state":"subscribed"}]}]}`, 0},
		{"§6 email with a primary identifier billed", `{"attributes":[{"external_id":"u","email":"a@example.com"}]}`, 1},
		{"§6 email used for lookup not billed", `{"attributes":[{"email":"a@example.com","a":1}]}`, 1},
		{"§6 each event = 1", body(-1, 3, -1), 3},
		{"§6 each purchase = 1", `{"purchases":[` + purchaseJSON(1) + `,` + purchaseJSON(1) + `]}`, 2},
		{"§6 not applied (update-only, unknown user) not billed", `{"attributes":[{"external_id":"u","_update_existing_only":true,"a":1}]}`, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, nil)
			mustTrack(t, s, tc.body)
			if got := s.Stats().DataPoints; got != tc.want {
				t.Fatalf("data points %d, want %d", got, tc.want)
			}
			var sum int64
			for _, u := range s.Users() {
				sum += u.DataPoints
			}
			if sum != tc.want {
				t.Fatalf("per-user data points %d, want %d", sum, tc.want)
			}
		})
	}
}

// Faults: docs/braze-rules.md §2 status table (5XX, 429) and §4 (401); sim-only behaviour otherwise.
func TestFaults(t *testing.T) {
	clk := newClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := newSim(t, func(c *Config) { c.Now = clk.Now })
	tests := []struct {
		name  string
		f     Faults
		codes []int
	}{
		{"5xx rate 1.0 spreads over 500/502/503/504", Faults{Error5xxRate: 1}, []int{500, 502, 503, 504}},
		{"InvalidKeys: every key 401", Faults{InvalidKeys: true}, []int{401}},
		{"Rate429 1.0", Faults{Rate429: 1}, []int{429}},
		{"outage window -> 503", Faults{Outage: []Window{{Start: clk.Now().Add(-time.Second), End: clk.Now().Add(time.Second)}}}, []int{503}},
		{"outage window in the past", Faults{Outage: []Window{{Start: clk.Now().Add(-time.Hour), End: clk.Now().Add(-time.Second)}}}, []int{201}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s.SetFaults(tc.f)
			seen := map[int]bool{}
			for i := 0; i < 200; i++ {
				w := track(s, body(1, -1, -1))
				seen[w.Code] = true
				if w.Code == 429 && w.Header().Get("X-Ratelimit-Retry-After") == "" {
					t.Fatal("429 without X-Ratelimit-Retry-After")
				}
			}
			if len(seen) != len(tc.codes) {
				t.Fatalf("codes %v, want %v", seen, tc.codes)
			}
			for _, c := range tc.codes {
				if !seen[c] {
					t.Fatalf("codes %v, want %v", seen, tc.codes)
				}
			}
		})
	}
	// Every third request answers 503, counted from when the faults were set.
	s.SetFaults(Faults{Error5xxEvery: 3})
	var codes []int
	for i := 0; i < 7; i++ {
		codes = append(codes, track(s, body(1, -1, -1)).Code)
	}
	if want := []int{201, 201, 503, 201, 201, 503, 201}; fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Fatalf("Error5xxEvery 3: codes %v, want %v", codes, want)
	}
	s.SetFaults(Faults{})
}

// Faults over a real connection: ResetRate, TimeoutRate, ExtraLatency, and the admin endpoint.
func TestFaultsOverTCP(t *testing.T) {
	srv, err := NewServer(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	post := func(c *http.Client, path, b string) (*http.Response, error) {
		r, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(b))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer dev-key")
		return c.Do(r)
	}
	setFaults := func(f string) {
		resp, err := http.Post(srv.URL+"/_sim/faults", "application/json", strings.NewReader(f))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("faults: %v %v", err, resp)
		}
		resp.Body.Close()
	}
	setFaults(`{"reset_rate":1}`)
	if resp, err := post(http.DefaultClient, PathTrack, body(1, -1, -1)); err == nil {
		resp.Body.Close()
		t.Fatalf("reset: got %d", resp.StatusCode)
	}
	setFaults(`{"timeout_rate":1}`)
	c := &http.Client{Timeout: 150 * time.Millisecond}
	if resp, err := post(c, PathTrack, body(1, -1, -1)); err == nil {
		resp.Body.Close()
		t.Fatalf("timeout: got %d", resp.StatusCode)
	}
	setFaults(`{"extra_latency":"120ms"}`)
	if f := srv.Sim.Faults(); f.ExtraLatency != 120*time.Millisecond {
		t.Fatalf("faults %+v", f)
	}
	start := time.Now()
	resp, err := post(http.DefaultClient, PathTrack, body(1, -1, -1))
	if err != nil || resp.StatusCode != 201 || time.Since(start) < 120*time.Millisecond {
		t.Fatalf("latency: %v %v %v", err, resp, time.Since(start))
	}
	resp.Body.Close()
	setFaults(`{}`)
}

// Ordering/concurrency observation (docs/braze-rules.md §1 "Processing order and ordering
// guarantees": no ordering across requests, so overlapping requests for one user are flagged).
func TestSameUserConcurrency(t *testing.T) {
	s := newSim(t, func(c *Config) { c.Latency = 150 * time.Millisecond })
	run := func(bodies ...string) {
		var wg sync.WaitGroup
		for _, b := range bodies {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if w := track(s, b); w.Code != 201 {
					t.Errorf("%d %s", w.Code, w.Body)
				}
			}()
		}
		wg.Wait()
	}
	// Different users at once: no violation; one request touching a user twice: none.
	run(`{"attributes":[{"external_id":"a","x":1},{"external_id":"a","y":1}]}`, `{"attributes":[{"external_id":"b","x":1}]}`)
	if n := s.Stats().SameUserConcurrency; n != 0 {
		t.Fatalf("violations %d", n)
	}
	// Same user in two overlapping requests.
	run(`{"attributes":[{"external_id":"a","x":2}]}`, `{"events":[{"external_id":"a","name":"e","time":"2026-01-01T00:00:00Z"}]}`)
	if n := s.Stats().SameUserConcurrency; n != 1 {
		t.Fatalf("violations %d, want 1", n)
	}
	// The same user named by another identifier (email) is the same user.
	track(s, `{"attributes":[{"external_id":"c","email":"c@example.com"}]}`)
	run(`{"attributes":[{"external_id":"c","x":1}]}`, `{"attributes":[{"email":"c@example.com","y":1}]}`)
	if n := s.Stats().SameUserConcurrency; n != 2 {
		t.Fatalf("violations %d, want 2", n)
	}
	// Sequential requests for the same user: no violation.
	track(s, `{"attributes":[{"external_id":"a","x":3}]}`)
	track(s, `{"attributes":[{"external_id":"a","x":4}]}`)
	if n := s.Stats().SameUserConcurrency; n != 2 {
		t.Fatalf("violations %d, want 2", n)
	}
}

// docs/braze-rules.md §7: /users/alias/new, /users/identify, /users/delete.
func TestUserOps(t *testing.T) {
	s := newSim(t, nil)
	op := func(path, b string, code int, want string) {
		t.Helper()
		w := s.do(req{path: path, body: b})
		if w.Code != code || !strings.Contains(w.Body.String(), want) {
			t.Fatalf("%s %s: %d %s", path, b, w.Code, w.Body)
		}
	}
	op(PathAliasNew, `{"user_aliases":[{"alias_name":"n1","alias_label":"l"}]}`, 201, `"aliases_processed":1`)
	// An existing label/name pair changes nothing and still answers success (§7).
	op(PathAliasNew, `{"user_aliases":[{"alias_name":"n1","alias_label":"l"}]}`, 201, `"aliases_processed":1`)
	if n := len(s.Users()); n != 1 {
		t.Fatalf("%d users", n)
	}
	// The alias-only user can now be updated through its alias (update-only default, §1).
	mustTrack(t, s, `{"attributes":[{"user_alias":{"alias_name":"n1","alias_label":"l"},"anon":true}],"events":[{"user_alias":{"alias_name":"n1","alias_label":"l"},"name":"e","time":"2026-01-01T00:00:00Z"}]}`)
	// Identify onto a new external_id: the alias-only profile gains it.
	op(PathIdentify, `{"aliases_to_identify":[{"external_id":"x","user_alias":{"alias_name":"n1","alias_label":"l"}}]}`, 201, `"aliases_processed":1`)
	if u := mustUser(t, s, "external_id", "x"); u.Attributes["anon"] != true || len(u.Aliases) != 1 || len(u.Events) != 1 {
		t.Fatalf("identified %+v", u)
	}
	// Identify onto an existing identified profile: the anonymous profile's exclusive
	// fields merge in (post_user_identify.md "Merging behavior", by default).
	op(PathAliasNew, `{"user_aliases":[{"alias_name":"n2","alias_label":"l2"}]}`, 201, "success")
	mustTrack(t, s, `{"attributes":[{"user_alias":{"alias_name":"n2","alias_label":"l2"},"from_alias":1,"anon":false}]}`)
	op(PathIdentify, `{"aliases_to_identify":[{"external_id":"x","user_alias":{"alias_name":"n2","alias_label":"l2"}}]}`, 201, "success")
	u := mustUser(t, s, "external_id", "x")
	if u.Attributes["from_alias"] != 1.0 || u.Attributes["anon"] != true || len(u.Aliases) != 2 || len(s.Users()) != 1 {
		t.Fatalf("merged %+v (%d users)", u, len(s.Users()))
	}
	if a, ok := s.User("alias", "l2\x00n2"); !ok || a.ExternalID != "x" {
		t.Fatalf("alias now points to %+v", a)
	}
	// The known profile already has an alias with label "l": an alias-only profile with
	// label "l" is not combined (post_user_identify.md).
	op(PathAliasNew, `{"user_aliases":[{"alias_name":"n3","alias_label":"l"}]}`, 201, "success")
	op(PathIdentify, `{"aliases_to_identify":[{"external_id":"x","user_alias":{"alias_name":"n3","alias_label":"l"}}]}`, 201, "success")
	if a, ok := s.User("alias", "l\x00n3"); !ok || a.ExternalID != "" || len(s.Users()) != 2 {
		t.Fatalf("label conflict combined: %+v", a)
	}
	op(PathDelete, `{"user_aliases":[{"alias_name":"n3","alias_label":"l"}]}`, 201, `{"deleted":1}`)
	// An unmatched alias is a silent no-op (§2 "Silent drops").
	op(PathIdentify, `{"aliases_to_identify":[{"external_id":"y","user_alias":{"alias_name":"none","alias_label":"l"}}]}`, 201, "success")
	// Limits: 50 per request (§7).
	many := make([]string, 51)
	for i := range many {
		many[i] = strconv.Quote(fmt.Sprint("id", i))
	}
	op(PathDelete, `{"external_ids":[`+strings.Join(many, ",")+`]}`, 400, "more than 50")
	op(PathDelete, `{"external_ids":["x"],"braze_ids":["y"]}`, 400, "exactly one")
	op(PathDelete, `{"external_ids":["x"]}`, 201, `"deleted":1`)
	if _, ok := s.User("external_id", "x"); ok || len(s.Users()) != 0 {
		t.Fatal("not deleted")
	}
	if _, ok := s.User("alias", "l\x00n1"); ok {
		t.Fatal("alias of a deleted user still resolves")
	}
	if st := s.Stats(); st.ByEndpoint[PathIdentify] != 4 || st.ByEndpoint[PathDelete] != 4 || st.LimitRejected != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// The /_sim/ admin API (no auth).
func TestAdminAPI(t *testing.T) {
	s := newSim(t, nil)
	mustTrack(t, s, `{"attributes":[{"external_id":"a/b c","k":"v"}]}`)
	get := func(path string) (int, string) {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		return w.Code, w.Body.String()
	}
	if c, b := get("/_sim/users/a%2Fb%20c"); c != 200 || !strings.Contains(b, `"k": "v"`) {
		t.Fatalf("user: %d %s", c, b)
	}
	if c, _ := get("/_sim/users/nobody"); c != 404 {
		t.Fatalf("missing user: %d", c)
	}
	if c, b := get("/_sim/user?kind=external_id&id=a/b+c"); c != 200 || !strings.Contains(b, `"k": "v"`) {
		t.Fatalf("user by kind: %d %s", c, b)
	}
	if c, b := get("/_sim/stats"); c != 200 || !strings.Contains(b, `"attributes": 1`) {
		t.Fatalf("stats: %d %s", c, b)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/_sim/reset", nil))
	if w.Code != 200 || len(s.Users()) != 0 || s.Stats().Requests != 0 {
		t.Fatalf("reset: %d %+v", w.Code, s.Stats())
	}
	w = httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/_sim/faults", strings.NewReader(`{"error_5xx_rate":1,"outage":[{"start":"2026-01-01T00:00:00Z","end":"2026-01-01T01:00:00Z"}]}`)))
	if f := s.Faults(); w.Code != 200 || f.Error5xxRate != 1 || len(f.Outage) != 1 {
		t.Fatalf("faults: %d %s %+v", w.Code, w.Body, f)
	}
}

// Config.CountOnly and Config.Validate=false.
func TestCountOnlyAndNoValidate(t *testing.T) {
	s := newSim(t, func(c *Config) { c.CountOnly = true })
	w := track(s, `{"attributes":[{"a":1}],"events":[{"external_id":"x"}]}`)
	if w.Code != 201 || w.Body.String() != `{"message":"success","attributes_processed":1,"events_processed":1}` {
		t.Fatalf("count only: %d %s", w.Code, w.Body)
	}
	if w := track(s, body(76, -1, -1)); w.Code != 400 {
		t.Fatalf("count only still enforces the object limit: %d", w.Code)
	}
	if st := s.Stats(); st.Objects != 2 || len(s.Users()) != 0 {
		t.Fatalf("stats %+v", st)
	}
	nv := newSim(t, func(c *Config) { c.Validate = false })
	w = track(nv, `{"attributes":[{"a":1}],"events":[{"external_id":"x","name":"e","time":"garbage"}]}`)
	if m := decode(t, w); w.Code != 201 || m["events_processed"] != 1.0 || len(m["errors"].([]any)) != 1 {
		t.Fatalf("no validate: %d %s", w.Code, w.Body)
	}
}

func TestParseKeyAndConfig(t *testing.T) {
	k, err := ParseKey("ci:s3cret:users.track,users.delete:10.0.0.0/8,2001:db8::/32")
	if err != nil || k.Name != "ci" || k.Secret != "s3cret" || strings.Join(k.Permissions, "|") != "users.track|users.delete" ||
		strings.Join(k.AllowedIPs, "|") != "10.0.0.0/8|2001:db8::/32" {
		t.Fatalf("%+v %v", k, err)
	}
	if k, err := ParseKey("a:b"); err != nil || k.Permissions != nil {
		t.Fatalf("%+v %v", k, err)
	}
	for _, bad := range []string{"a", ":b", "a:"} {
		if _, err := ParseKey(bad); err == nil {
			t.Fatalf("ParseKey(%q) accepted", bad)
		}
	}
	for _, c := range []Config{{Mode: "x"}, {Keys: []Key{{Name: "k", AllowedIPs: []string{"nope"}, Secret: "s"}}}, {Keys: []Key{{Name: "k"}}}} {
		if _, err := New(c); err == nil {
			t.Fatalf("New(%+v) accepted", c)
		}
	}
}

func TestRunCLI(t *testing.T) {
	dir := t.TempDir()
	cfgPath := dir + "/sim.json"
	if err := writeFile(cfgPath, `{"mode":"per_array","track_window":"1m","faults":{"extra_latency":"1ms"}}`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := contextWithCancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- RunCLI(ctx, []string{"-addr", "127.0.0.1:0", "-config", cfgPath, "-track-limit", "7", "-key", "ci:ci-secret:users.track"}, pw)
		pw.Close()
	}()
	line := make([]byte, 512)
	n, _ := pr.Read(line)
	out := string(line[:n])
	if !strings.Contains(out, "mode=per_array") || !strings.Contains(out, "track_limit=7/1m0s") {
		t.Fatalf("banner %q", out)
	}
	url := strings.Fields(strings.TrimPrefix(out, "brazesim listening on "))[0]
	r, _ := http.NewRequest(http.MethodPost, url+PathTrack, strings.NewReader(body(1, -1, -1)))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer ci-secret")
	resp, err := http.DefaultClient.Do(r)
	if err != nil || resp.StatusCode != 201 || resp.Header.Get("X-RateLimit-Limit") != "7" {
		t.Fatalf("%v %+v", err, resp)
	}
	resp.Body.Close()
	cancel()
	go io.Copy(io.Discard, pr)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// The scanner agrees with encoding/json on what is valid JSON.
func TestScannerValidity(t *testing.T) {
	cases := []string{`{}`, `{"a":[1,2,{"b":null}]}`, `{"a":"\u00e9\ud83d\ude00\n"}`, `{"a":-0.5e+3}`, `{"a":01}`, `{"a":1.}`,
		`{"a":"x` + "\x01" + `"}`, `{"a":"\x"}`, `{"a":tru}`, `{"a":[1,]}`, `{"a" 1}`, `{"a":1}}`, ` {"a" : [ ] } `, `{"a":"\u12"}`,
		`{"a":"` + strings.Repeat("abcdefgh", 10) + `\"` + `"}`, `[1]`, `{"a":{"b":{"c":[true,false,null]}}}`}
	for _, c := range cases {
		want := json.Valid([]byte(c))
		s := scanner{b: []byte(c)}
		s.span()
		s.end()
		if got := s.err == nil; got != want {
			t.Errorf("%q: scanner valid=%v, encoding/json %v", c, got, want)
		}
		if want {
			var ref any
			_ = json.Unmarshal([]byte(c), &ref)
			s := scanner{b: []byte(c)}
			jsonEqAny(t, s.value(0), ref)
		}
	}
}

func jsonEqAny(t *testing.T, got, want any) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Errorf("decoded %s, want %s", g, w)
	}
}

// docs/braze-rules.md §7 "/users/merge": up to 50 merge_updates, 202 {"message":"success"}.
func TestUsersMerge(t *testing.T) {
	s := newSim(t, nil)
	mustTrack(t, s, `{"attributes":[{"external_id":"old","a":1,"b":1},{"external_id":"keep","b":2}],`+
		`"events":[{"external_id":"old","name":"e","time":"2026-01-01T00:00:00Z"}]}`)
	w := s.do(req{path: PathMerge, body: `{"merge_updates":[{"identifier_to_merge":{"external_id":"old"},"identifier_to_keep":{"external_id":"keep"}}]}`})
	if w.Code != 202 || w.Body.String() != `{"message":"success"}` {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	u := mustUser(t, s, "external_id", "keep")
	if u.Attributes["a"] != 1.0 || u.Attributes["b"] != 2.0 || len(u.Events) != 1 {
		t.Fatalf("kept %+v", u)
	}
	if _, ok := s.User("external_id", "old"); ok {
		t.Fatal("merged user still there")
	}
	many := strings.Repeat(`{"identifier_to_merge":{"external_id":"a"},"identifier_to_keep":{"external_id":"b"}},`, 51)
	w = s.do(req{path: PathMerge, body: `{"merge_updates":[` + strings.TrimSuffix(many, ",") + `]}`})
	if w.Code != 400 || !strings.Contains(w.Body.String(), "more than 50 merge updates") {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
}

func TestAttrSetIndex(t *testing.T) {
	var a attrSet
	ref := map[string]int{}
	for i := 0; i < 200; i++ {
		k := fmt.Sprint("k", i%60)
		if i%7 == 3 {
			a.del(k)
			delete(ref, k)
			continue
		}
		a.set(k, aval{x: float64(i)})
		ref[k] = i
	}
	if a.len() != len(ref) {
		t.Fatalf("len %d, want %d", a.len(), len(ref))
	}
	for k, v := range ref {
		if got, ok := a.get(k); !ok || got.x != float64(v) {
			t.Fatalf("%s: %v %v, want %d", k, got, ok, v)
		}
	}
}

// Concurrent /users/track, user ops, snapshots and resets: no data race, no deadlock
// (run with -race).
func TestConcurrentStress(t *testing.T) {
	s := newSim(t, func(c *Config) { c.TrackLimit = -1; c.UserOpsLimit = -1 })
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				u := fmt.Sprint("u", (i*7+g)%20)
				track(s, `{"attributes":[{"external_id":"`+u+`","email":"`+u+`@example.com","n":{"inc":1},"t":{"add":["x"]},"o":{"a":1}}],`+
					`"events":[{"email":"`+u+`@example.com","name":"e","time":"2026-01-01T00:00:00Z"}],`+
					`"purchases":[{"user_alias":{"alias_name":"`+u+`","alias_label":"l"},"product_id":"p","currency":"USD","price":1,"time":"2026-01-01T00:00:00Z"}]}`)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			u := fmt.Sprint("u", i%20)
			s.do(req{path: PathAliasNew, body: `{"user_aliases":[{"alias_name":"` + u + `","alias_label":"l"}]}`})
			s.do(req{path: PathIdentify, body: `{"aliases_to_identify":[{"external_id":"` + u + `","user_alias":{"alias_name":"` + u + `","alias_label":"l"}}]}`})
			if i%5 == 0 {
				s.do(req{path: PathDelete, body: `{"external_ids":["` + u + `"]}`})
			}
			s.Users()
			s.User("email", u+"@example.com")
			s.Stats()
			if i%50 == 49 {
				s.Reset()
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
}

// Config.MaxHistoryPerUser keeps the newest events in arrival order.
func TestHistoryLimit(t *testing.T) {
	s := newSim(t, func(c *Config) { c.MaxHistoryPerUser = 3 })
	for i := 0; i < 7; i++ {
		mustTrack(t, s, fmt.Sprintf(`{"events":[{"external_id":"u","name":"e%d","time":"2026-01-01T00:00:00Z"}]}`, i))
	}
	var names []string
	for _, e := range mustUser(t, s, "external_id", "u").Events {
		names = append(names, e.Name)
	}
	if strings.Join(names, ",") != "e4,e5,e6" {
		t.Fatalf("events %v", names)
	}
	if st := s.Stats(); st.Events != 7 || st.DataPoints != 7 {
		t.Fatalf("stats %+v", st)
	}
}

// docs/braze-rules.md §8 poison-1..3: inputs that fail a whole request (measured, not
// documented by Braze) are answered 400 with nothing applied.
func TestTrackPoison(t *testing.T) {
	s := newSim(t, nil)
	for _, tc := range []struct{ name, body, msg string }{
		{"number out of range", `{"attributes":[` + attrJSON(1) + `,{"external_id":"x","n":1e400}]}`, msgNumberRange},
		{"long number", `{"purchases":[{"external_id":"x","product_id":"p","currency":"USD","price":` + strings.Repeat("9", 400) + `,"time":"2026-01-01"}]}`, msgNumberRange},
		{"number deep in properties", `{"events":[{"external_id":"x","name":"e","time":"2026-01-01","properties":{"a":[{"b":-2e308}]}}]}`, msgNumberRange},
		{"duplicate key", `{"attributes":[{"external_id":"x","a":1,"a":2}]}`, msgDuplicateKey},
		{"duplicate escaped key", `{"attributes":[{"external_id":"x","a":1,"\u0061":2}]}`, msgDuplicateKey},
		{"duplicate property key", `{"events":[{"external_id":"x","name":"e","time":"2026-01-01","properties":{"p":1,"q":[1,{"p":2}],"p":3}}]}`, msgDuplicateKey},
		{"NUL in external_id", `{"attributes":[{"external_id":"x\u0000y","a":1}]}`, msgNULExternal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := track(s, tc.body)
			if w.Code != 400 || !strings.Contains(w.Body.String(), tc.msg) {
				t.Fatalf("status %d %s, want 400 %q", w.Code, w.Body, tc.msg)
			}
		})
	}
	for _, ok := range []string{
		`{"attributes":[{"external_id":"x","a":1.7976931348623157e308,"b":1e-400,"c":{"a":1},"d":{"a":2},"note":"a\u0000b"}]}`,
		`{"events":[{"external_id":"x","name":"e","time":"2026-01-01","properties":{"a":{"k":1},"b":{"k":1}}}]}`,
	} {
		if w := track(s, ok); w.Code != 201 {
			t.Errorf("%s: status %d %s", ok, w.Code, w.Body)
		}
	}
}

// docs/braze-rules.md §8 nested-1: an invalid value or key inside a nested custom attribute
// (object, array of objects, $add) drops every nested update of the request.
func TestTrackNestedRequestWideDrop(t *testing.T) {
	for _, bad := range []string{
		`{"external_id":"bad","o":{"a":null}}`,
		`{"external_id":"bad","o":{"a b":1}}`,
		`{"external_id":"bad","o":{"a.b":1}}`,
		`{"external_id":"bad","o":{"d":{"$time":"nope"}}}`,
		`{"external_id":"bad","pets":[{"name":null}]}`,
		`{"external_id":"bad","pets":{"$add":[null]}}`,
	} {
		s := newSim(t, nil)
		w := track(s, `{"attributes":[{"external_id":"canary","o":{"k":1}},`+bad+`]}`)
		if w.Code != 201 {
			t.Fatalf("%s: status %d %s", bad, w.Code, w.Body)
		}
		if u, _ := s.User("external_id", "canary"); u.Attributes["o"] != nil {
			t.Errorf("%s: the canary's nested update was applied: %v", bad, u.Attributes)
		}
	}
	s := newSim(t, nil)
	track(s, `{"attributes":[{"external_id":"canary","o":{"k":1}},{"external_id":"good","pets":[{"name":"a"}],"o":{"d":{"$time":"2026-01-01"}}}]}`)
	if u, _ := s.User("external_id", "canary"); u.Attributes["o"] == nil {
		t.Errorf("valid nested updates were dropped: %v", u.Attributes)
	}
}
