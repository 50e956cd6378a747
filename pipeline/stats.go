package pipeline

import (
	"sync/atomic"

	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// kindOther indexes dead letters of whole messages, which have no record kind.
const kindOther = 3

// Stats are the pipeline's counters. They are the single source of truth: telemetry exports
// them and `ingestor dev` prints them.
type Stats struct {
	MessagesConsumed atomic.Int64
	RecordsConsumed  [3]atomic.Int64 // by kind
	RecordsDelivered [3]atomic.Int64 // by kind
	// DeadLettered by kind (attributes, events, purchases, whole message) and reason
	// (indexed by dlq.Reason.Index).
	DeadLettered [4][len(dlq.Reasons)]atomic.Int64
	DLQWrites    atomic.Int64
	DLQErrors    atomic.Int64

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
}

// Snapshot copies the counters.
func (s *Stats) Snapshot() Snapshot {
	out := Snapshot{DeadLettered: map[dlq.Reason]int64{}, RequestsByClass: map[string]int64{}}
	out.MessagesConsumed = s.MessagesConsumed.Load()
	for k := 0; k < 3; k++ {
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
	return out
}
