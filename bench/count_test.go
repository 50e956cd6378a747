package bench

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/braze-ingestor/braze-ingestor/batcher"
	"github.com/braze-ingestor/braze-ingestor/brazesim"
	"github.com/braze-ingestor/braze-ingestor/schemas"
)

func TestCountTrack(t *testing.T) {
	tests := []struct {
		name string
		body string
		want int
		err  bool
	}{
		{"events", `{"events":[{"external_id":"a","name":"x"},{"external_id":"b","name":"y"}]}`, 2, false},
		{"three arrays", `{"attributes":[{"external_id":"a","n":{"x":1}}],"events":[{"name":"e"}],"purchases":[{"product_id":"p"},{"product_id":"q"}]}`, 4, false},
		{"nested objects are not counted", `{"attributes":[{"external_id":"a","o":{"p":{"q":[{"r":1}]}}}]}`, 1, false},
		{"brackets in strings", `{"events":[{"name":"{[{\"}"}, {"name":"]}]"}]}`, 2, false},
		{"escaped backslash before quote", `{"events":[{"name":"a\\"},{"name":"b\\\\"}]}`, 2, false},
		{"long strings with escapes", `{"events":[{"name":"` + strings.Repeat("x", 40) + `\"]}` + strings.Repeat("y", 20) + `\\\\"},{"n":"` + strings.Repeat("z", 30) + `\\"}]}`, 2, false},
		{"long unterminated string", `{"events":[{"name":"` + strings.Repeat("x", 40) + `\"}]}`, 0, true},
		{"whitespace", " {\n \"events\" : [ { \"name\" : \"x\" } ] }\n", 1, false},
		{"empty arrays", `{"events":[]}`, 0, false},
		{"unterminated string", `{"events":[{"name":"x}]}`, 0, true},
		{"unbalanced", `{"events":[{"name":"x"}]`, 0, true},
		{"extra close", `{"events":[]}]`, 0, true},
		{"empty body", ``, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := countTrack([]byte(tc.body))
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("countTrack(%s) = %d, %v; want %d, error %v", tc.body, got, err, tc.want, tc.err)
			}
		})
	}
}

// The counting endpoint and the simulator must agree on the object count of the bodies
// the worker sends, or the phase's delivered figure would be wrong.
func TestCountTrackAgreesWithSimulator(t *testing.T) {
	cfg := brazesim.DefaultConfig()
	cfg.CountOnly = true
	sim, err := brazesim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	bodies := []string{
		`{"attributes":[{"external_id":"u1","tags":{"add":["a","b"]},"x":"}{"}],"events":[{"external_id":"u1","name":"n","time":"2024-01-01T00:00:00Z","properties":{"k":[1,2,{"z":"\""}]}}]}`,
		`{"purchases":[{"external_id":"u2","product_id":"p","currency":"USD","price":1.5,"time":"2024-01-01T00:00:00Z"}]}`,
	}
	for _, b := range bodies {
		want0 := sim.Stats().Objects
		req := httptest.NewRequest(http.MethodPost, "/users/track", strings.NewReader(b))
		req.Header.Set("Authorization", "Bearer dev-key")
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		sim.ServeHTTP(w, req)
		if w.Code != http.StatusCreated {
			t.Fatalf("simulator: %d %s", w.Code, w.Body)
		}
		got, err := countTrack([]byte(b))
		if err != nil || int64(got) != sim.Stats().Objects-want0 {
			t.Fatalf("countTrack = %d, %v; simulator counted %d", got, err, sim.Stats().Objects-want0)
		}
	}
}

func TestServeCount(t *testing.T) {
	many := `{"events":[` + strings.Repeat(`{"name":"x"},`, 75) + `{"name":"x"}]}`
	tests := []struct {
		name, auth, ctype, body string
		status                  int
		objects                 int64
	}{
		{"ok", "Bearer k", "application/json", `{"events":[{"name":"x"},{"name":"y"}]}`, 201, 2},
		{"no key", "", "application/json", `{"events":[{"name":"x"}]}`, 401, 0},
		{"content type", "Bearer k", "text/plain", `{"events":[{"name":"x"}]}`, 415, 0},
		{"bad json", "Bearer k", "application/json", `{"events":[{"name":"x}]}`, 400, 0},
		{"nothing", "Bearer k", "application/json", `{"events":[]}`, 400, 0},
		{"76 objects", "Bearer k", "application/json", many, 400, 0},
		{"too large", "Bearer k", "application/json", strings.Repeat(" ", maxTrackBody+1), 413, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &sinkState{count: true}
			req := httptest.NewRequest(http.MethodPost, "/users/track", strings.NewReader(tc.body))
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			req.Header.Set("Content-Type", tc.ctype)
			w := httptest.NewRecorder()
			s.serveCount(w, req)
			if w.Code != tc.status || s.objects.Load() != tc.objects {
				t.Fatalf("status %d, objects %d; want %d, %d (%s)", w.Code, s.objects.Load(), tc.status, tc.objects, w.Body)
			}
		})
	}
}

// BenchmarkCountTrack counts bodies of 75 synth records, as the worker sends them.
func BenchmarkCountTrack(b *testing.B) {
	msgs, _ := corpus(b, 200)
	var dec schemas.Decoder
	var objs []obj
	for _, m := range msgs {
		recs, err := dec.Decode(m, nil)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range recs {
			objs = append(objs, obj{kind: r.Kind, raw: r.Raw})
		}
	}
	body := batcher.Encode(nil, objs[:75])
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if n, err := countTrack(body); err != nil || n != 75 {
			b.Fatal(n, err)
		}
	}
}
