package pipeline

import (
	"sync/atomic"

	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"github.com/braze-ingestor/braze-ingestor/schemas"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// kindOther indexes dead letters of whole messages, which have no record kind.
const kindOther = int(schemas.NumKinds)

// Stats are the pipeline's counters. They are the single source of truth: telemetry exports
// them and `ingestor dev` prints them.
type Stats struct {
	MessagesConsumed atomic.Int64
	RecordsConsumed  [schemas.NumKinds]atomic.Int64 // by kind
	RecordsDelivered [schemas.NumKinds]atomic.Int64 // by kind
	// DeadLettered by kind (schemas.Kind, then kindOther: whole messages) and reason
	// (indexed by dlq.Reason.Index).
	DeadLettered [schemas.NumKinds + 1][len(dlq.Reasons)]atomic.Int64
	// Endpoint counts requests and records per endpoint (track: the /users/track kinds).
	Endpoint [endpoint.Count]EndpointStats
	// HeldUsers is the number of users whose records wait in a lane for an earlier record of
	// another endpoint (held.go).
	HeldUsers atomic.Int64
	DLQWrites atomic.Int64
	DLQErrors atomic.Int64

	Requests       [5]atomic.Int64 // by sink.Class
	RequestsStatus [6]atomic.Int64 // by status class: 0 = no answer, 1..5 = 1xx..5xx
	ObjectsSent    atomic.Int64    // objects in requests that got a 2xx
	Retries        atomic.Int64
	Splits         atomic.Int64
	Commits        atomic.Int64
	CommitErrors   atomic.Int64
	Halted         atomic.Bool
	// MassRejections counts lone records not dead-lettered because most recent requests
	// were rejected as a whole with the same answer (massreject.go).
	MassRejections  atomic.Int64
	InFlightRecords atomic.Int64 // fetched, not yet delivered or dead-lettered
	// RequestsSaved counts lane batches sent whole in another lane's request: requests the
	// lane would have sent on its own (lane.go topUp).
	RequestsSaved atomic.Int64

	// ResumeSkipped counts messages not delivered again on resume because the previous
	// owner's offset map (pipeline/offsetmap.go) says they were settled.
	ResumeSkipped atomic.Int64
	// OffsetMapTruncated counts commits whose offset map did not fit the metadata limit and
	// was cut short; OffsetMapIgnored counts commit metadata not written by this worker.
	OffsetMapTruncated atomic.Int64
	OffsetMapIgnored   atomic.Int64

	// Optimize counts coalescing, suppression and de-duplication (optimize.go).
	Optimize OptimizeStats
}

// EndpointStats are one endpoint's counters.
type EndpointStats struct {
	Requests     [5]atomic.Int64 // by sink.Class
	Delivered    atomic.Int64    // records
	DeadLettered atomic.Int64    // records, any reason
}

// EndpointSnapshot is a plain copy of one endpoint's counters.
type EndpointSnapshot struct {
	Requests         int64
	RecordsDelivered int64
	DeadLettered     int64
}

// Snapshot is a plain copy of Stats for reports.
type Snapshot struct {
	MessagesConsumed int64
	RecordsConsumed  int64
	RecordsDelivered int64
	DeadLettered     map[dlq.Reason]int64
	DeadLetteredAll  int64
	Requests         int64
	RequestsByClass  map[string]int64
	ObjectsSent      int64
	SuccessRequests  int64
	Retries          int64
	Commits          int64
	RequestsSaved    int64
	// Endpoints is indexed by endpoint.Endpoint; HeldUsers is the gauge at the time.
	Endpoints [endpoint.Count]EndpointSnapshot
	HeldUsers int64
}

// Snapshot copies the counters.
func (s *Stats) Snapshot() Snapshot {
	out := Snapshot{DeadLettered: map[dlq.Reason]int64{}, RequestsByClass: map[string]int64{}}
	out.MessagesConsumed = s.MessagesConsumed.Load()
	for k := range s.RecordsConsumed {
		out.RecordsConsumed += s.RecordsConsumed[k].Load()
		out.RecordsDelivered += s.RecordsDelivered[k].Load()
	}
	for k := range s.DeadLettered {
		for r := range s.DeadLettered[k] {
			n := s.DeadLettered[k][r].Load()
			out.DeadLettered[dlq.Reasons[r]] += n
			out.DeadLetteredAll += n
		}
	}
	for c := range s.Requests {
		n := s.Requests[c].Load()
		out.Requests += n
		out.RequestsByClass[sink.Class(c).String()] = n
	}
	out.SuccessRequests = out.RequestsByClass["delivered"] + out.RequestsByClass["partial"]
	out.ObjectsSent = s.ObjectsSent.Load()
	out.Retries = s.Retries.Load()
	out.Commits = s.Commits.Load()
	out.RequestsSaved = s.RequestsSaved.Load()
	for e := range s.Endpoint {
		es, o := &s.Endpoint[e], &out.Endpoints[e]
		for c := range es.Requests {
			o.Requests += es.Requests[c].Load()
		}
		o.RecordsDelivered, o.DeadLettered = es.Delivered.Load(), es.DeadLettered.Load()
	}
	out.HeldUsers = s.HeldUsers.Load()
	return out
}
