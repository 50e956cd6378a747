package sink

import "github.com/braze-ingestor/braze-ingestor/dlq"

// Outcome is what became of one record of a request once the sender chain is done with it
// (docs/architecture.md "Sender chain").
type Outcome uint8

const (
	// OutcomeDelivered: Braze accepted the record; the lane acknowledges it.
	OutcomeDelivered Outcome = iota
	// OutcomeRejected: Braze judged the record (or a bound gave up on it); the lane
	// dead-letters it with Verdict.Reason and Verdict.Error.
	OutcomeRejected
	// OutcomeRetryLater: not settled; sent again by the retry layer, or left to Kafka when
	// the worker stops.
	OutcomeRetryLater
	// OutcomeHalted: not settled because Braze refuses the worker (key, endpoint, an answer
	// that is not Braze's); sent again by the halt layer once it accepts requests again.
	OutcomeHalted
	// OutcomeDropped: the record's partition was revoked; it is already released and the
	// next owner reads it again.
	OutcomeDropped
)

var outcomeNames = [...]string{"delivered", "rejected", "retry_later", "halted", "dropped"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "unknown"
}

// Final reports whether the outcome settles the record for this worker (nothing more is
// sent for it).
func (o Outcome) Final() bool {
	return o == OutcomeDelivered || o == OutcomeRejected || o == OutcomeDropped
}

// Verdict is the typed result for one record.
type Verdict struct {
	Outcome Outcome
	// Reason and Error say why a record is rejected: the dead-letter reason, and Braze's
	// error type(s) or a description of the answer.
	Reason   dlq.Reason
	Error    string
	Attempts int
}
