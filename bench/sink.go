package bench

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/braze-ingestor/braze-ingestor/brazesim"
)

// sinkState is the endpoint state of one phase. /users/track goes to a brazesim Sim
// (CountOnly or validating); /events (the Benthos peers' output) is a trivial counter that
// answers 201.
type sinkState struct {
	sim *brazesim.Sim

	requests atomic.Int64 // /users/track and /events requests seen
	bytes    atomic.Int64 // request body bytes seen (counted on /events only)
	first    atomic.Int64 // unix nanos of the first request
	last     atomic.Int64 // unix nanos of the latest request

	null  bool // answer /users/track 201 without parsing (counts requests and bytes only)
	count bool // the counting endpoint (count.go) answers /users/track

	objects    atomic.Int64 // objects counted by the counting endpoint
	maxObjects atomic.Int64 // most objects in one of its requests
	overLimit  atomic.Int64 // its requests refused for more than 75 objects
	latency    bool         // scan /users/track bodies for produce stamps
	latMu      sync.Mutex
	lat        []int64 // produce-to-acknowledged, nanoseconds, one per stamped object
	latAt      []int64 // unix nanos of the acknowledgement, same index
}

func newSinkState(cfg *brazesim.Config, latency bool) (*sinkState, error) {
	s := &sinkState{latency: latency}
	if cfg != nil {
		sim, err := brazesim.New(*cfg)
		if err != nil {
			return nil, err
		}
		s.sim = sim
	}
	return s, nil
}

func (s *sinkState) mark() {
	now := time.Now().UnixNano()
	s.first.CompareAndSwap(0, now)
	s.last.Store(now)
	s.requests.Add(1)
}

// sinkServer serves the current phase's sinkState.
type sinkServer struct {
	URL   string
	state atomic.Pointer[sinkState]
	srv   *http.Server
}

func startSink() (*sinkServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &sinkServer{URL: "http://" + ln.Addr().String()}
	s.state.Store(&sinkState{})
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

func (s *sinkServer) Close() { _ = s.srv.Close() }

var created = []byte(`{"message":"success"}`)

func (s *sinkServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st := s.state.Load()
	switch {
	case r.URL.Path == "/events":
		st.mark()
		// Count bytes only (io.Discard reads through a pooled buffer): scanning the body
		// cost the harness ~2-3 CPU-s per million records, which on two cores slowed the
		// peer. Messages per request come from the known total; progress from bytes.
		n, _ := io.Copy(io.Discard, r.Body)
		st.bytes.Add(n)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(created)
	case st.null && r.URL.Path == "/users/track":
		st.mark()
		n, _ := io.Copy(io.Discard, r.Body)
		st.bytes.Add(n)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(created)
	case st.count && r.URL.Path == "/users/track":
		st.mark()
		st.serveCount(w, r)
	case st.sim == nil:
		http.Error(w, "no Braze simulator in this phase", http.StatusServiceUnavailable)
	case !st.latency:
		st.mark()
		st.sim.ServeHTTP(w, r)
	default:
		st.mark()
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "read", http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		st.sim.ServeHTTP(w, r)
		if f, ok := w.(http.Flusher); ok {
			f.Flush() // the answer is on the wire: acknowledged
		}
		if r.Header.Get("Authorization") == "" {
			return
		}
		st.recordLatency(body, time.Now())
	}
}

// recordLatency finds every produce stamp in body and records now minus it.
func (s *sinkState) recordLatency(body []byte, now time.Time) {
	var found []int64
	for i := 0; ; {
		j := bytes.Index(body[i:], stampMark)
		if j < 0 {
			break
		}
		i += j + len(stampMark)
		if i+19 > len(body) {
			break
		}
		var ns int64
		ok := true
		for _, c := range body[i : i+19] {
			if c < '0' || c > '9' {
				ok = false
				break
			}
			ns = ns*10 + int64(c-'0')
		}
		if ok {
			found = append(found, now.UnixNano()-ns)
		}
	}
	if len(found) == 0 {
		return
	}
	s.latMu.Lock()
	s.lat = append(s.lat, found...)
	for range found {
		s.latAt = append(s.latAt, now.UnixNano())
	}
	s.latMu.Unlock()
}

// LatencyStats summarises produce-to-acknowledged latencies.
type LatencyStats struct {
	Samples            int
	P50, P90, P99, Max time.Duration
	Mean               time.Duration
}

func latencyStats(ns []int64) LatencyStats {
	if len(ns) == 0 {
		return LatencyStats{}
	}
	s := slices.Clone(ns)
	slices.Sort(s)
	q := func(p float64) time.Duration {
		i := int(p * float64(len(s)-1))
		return time.Duration(s[i])
	}
	var sum float64
	for _, v := range s {
		sum += float64(v)
	}
	return LatencyStats{Samples: len(s), P50: q(0.50), P90: q(0.90), P99: q(0.99), Max: time.Duration(s[len(s)-1]),
		Mean: time.Duration(sum / float64(len(s)))}
}
