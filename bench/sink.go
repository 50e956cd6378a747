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
	messages atomic.Int64 // elements of the "events" arrays posted to /events
	first    atomic.Int64 // unix nanos of the first request
	last     atomic.Int64 // unix nanos of the latest request

	latency bool // scan /users/track bodies for produce stamps
	latMu   sync.Mutex
	lat     []int64 // produce-to-acknowledged, nanoseconds, one per stamped object
	latAt   []int64 // unix nanos of the acknowledgement, same index
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
		body, _ := io.ReadAll(r.Body)
		st.bytes.Add(int64(len(body)))
		st.messages.Add(int64(countElements(body)))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(created)
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

// countElements counts the objects at depth 3 of {"events":[{...},{...}]}: the Kafka messages
// a Benthos peer put in one request. It skips strings, so braces inside values do not count.
func countElements(b []byte) int {
	depth, n := 0, 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			for {
				j := bytes.IndexByte(b[i+1:], '"')
				if j < 0 {
					return n
				}
				i += j + 1
				bs := 0
				for k := i - 1; k >= 0 && b[k] == '\\'; k-- {
					bs++
				}
				if bs%2 == 0 {
					break
				}
			}
		case '{', '[':
			depth++
			if depth == 3 && b[i] == '{' {
				n++
			}
		case '}', ']':
			depth--
		}
	}
	return n
}
