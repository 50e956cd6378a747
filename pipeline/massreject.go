package pipeline

import (
	"sync"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// massGuard tells Braze judging records from something else failing every request. It keeps
// the last massWindow answers that accepted a request or rejected it as a whole (no object
// named in errors[]); when at least massShare of them are whole-request rejections with one
// and the same answer, a lone record's rejection is not taken as a verdict on the record: the
// split layer halts instead of dead-lettering (docs/architecture.md "Answers"). A 2xx or 400
// that is not Braze's JSON never gets this far (the client classifies it as a halt); a 413
// does, whatever its body (Braze's own may be a load balancer's page), so a proxy refusing
// every body as too large is caught here.
//
// Each endpoint keeps its own history: a run of rejected deletes says nothing about
// /users/track, and track's answers must not dilute the deletes' run.
type massGuard struct {
	mu  sync.Mutex
	per [endpoint.Count]massRing
}

type massRing struct {
	ring [massWindow]massEntry
	n    int // answers seen (the ring holds the last massWindow)
}

const (
	massWindow = 20
	massShare  = 18 // of massWindow
)

type massEntry struct {
	rejected bool
	answer   string
}

// observe records an answer of ep that accepted a request or rejected it as a whole.
func (g *massGuard) observe(ep endpoint.Endpoint, resp sink.Response) {
	var e massEntry
	switch {
	case resp.Class == sink.Delivered || resp.Class == sink.Partial:
	case resp.Class == sink.Split && len(resp.Errors) == 0 && (resp.Cause() == sink.CauseRejected || resp.Cause() == sink.CauseTooLarge):
		e = massEntry{rejected: true, answer: resp.Describe()}
	default:
		return
	}
	g.mu.Lock()
	r := &g.per[ep]
	r.ring[r.n%massWindow] = e
	r.n++
	g.mu.Unlock()
}

// mass reports whether ep's recent requests are mostly rejected as a whole with this answer.
func (g *massGuard) mass(ep endpoint.Endpoint, resp sink.Response) bool {
	answer := resp.Describe()
	g.mu.Lock()
	defer g.mu.Unlock()
	r := &g.per[ep]
	if r.n < massWindow {
		return false
	}
	same := 0
	for _, e := range r.ring {
		if e.rejected && e.answer == answer {
			same++
		}
	}
	return same >= massShare
}
