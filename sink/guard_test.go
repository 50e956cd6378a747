package sink

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type scripted struct {
	calls  atomic.Int32
	answer func(n int32) Response
}

func (s *scripted) Track(ctx context.Context, body []byte) Response {
	n := s.calls.Add(1)
	return s.answer(n)
}

func TestBreakerCountsOnlyOutages(t *testing.T) {
	tests := []struct {
		name     string
		resp     Response
		wantOpen bool
	}{
		{"5xx opens", Response{Status: 503, Class: Retry}, true},
		{"timeout opens", Response{Class: Retry, Err: context.DeadlineExceeded}, true},
		{"400 does not", Response{Status: 400, Class: Split}, false},
		{"401 does not", Response{Status: 401, Class: Halt}, false},
		{"429 does not", Response{Status: 429, Class: Retry}, false},
		{"caller cancel does not", Response{Class: Retry, Err: context.Canceled}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &scripted{answer: func(int32) Response { return tc.resp }}
			g := NewGuard(s, nil, BreakerConfig{Failures: 3, OpenFor: time.Hour}, nil)
			for i := 0; i < 3; i++ {
				g.Track(context.Background(), nil)
			}
			if got := g.State() == BreakerOpen; got != tc.wantOpen {
				t.Fatalf("open = %v, want %v", got, tc.wantOpen)
			}
			if g.Paused() != tc.wantOpen {
				t.Fatalf("Paused() = %v", g.Paused())
			}
		})
	}
}

// While open nothing is sent; after OpenFor one probe goes out and closes the breaker.
func TestBreakerOpenProbeClose(t *testing.T) {
	var healthy atomic.Bool
	s := &scripted{answer: func(int32) Response {
		if healthy.Load() {
			return Response{Status: 201, Class: Delivered}
		}
		return Response{Status: 500, Class: Retry}
	}}
	var transitions []string
	var mu sync.Mutex
	g := NewGuard(s, nil, BreakerConfig{Failures: 2, OpenFor: 200 * time.Millisecond}, nil)
	g.OnStateChange = func(from, to BreakerState) { mu.Lock(); transitions = append(transitions, to.String()); mu.Unlock() }
	g.Track(context.Background(), nil)
	g.Track(context.Background(), nil)
	if g.State() != BreakerOpen {
		t.Fatal("breaker should be open")
	}
	before := s.calls.Load()
	healthy.Store(true)
	// Several lanes wait on the open breaker; only one probe may go out in half-open.
	var wg sync.WaitGroup
	results := make([]Response, 4)
	for i := range results {
		wg.Add(1)
		go func() { defer wg.Done(); results[i] = g.Track(context.Background(), nil) }()
	}
	time.Sleep(100 * time.Millisecond)
	if s.calls.Load() != before {
		t.Fatalf("sent %d requests while open", s.calls.Load()-before)
	}
	wg.Wait()
	for _, r := range results {
		if r.Class != Delivered || r.Waited < 50*time.Millisecond {
			t.Fatalf("after recovery: %+v", r)
		}
	}
	if g.State() != BreakerClosed {
		t.Fatal("breaker should be closed")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(transitions) != 3 || transitions[0] != "open" || transitions[1] != "half-open" || transitions[2] != "closed" {
		t.Fatalf("transitions %v", transitions)
	}
}

var _ = http.StatusOK
