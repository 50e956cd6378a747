// Package dlq owns the dead-letter protocol of the worker: the reasons, the headers, the wire
// format of a dead letter, writing dead letters (Writer), reading them back (Parse) and
// replaying them to a source topic (Replay). docs/dlq.md describes the format.
package dlq

// Reason is a dead-letter reason, as written to the dlq.reason header (docs/dlq.md).
type Reason string

// Input-side reasons: the message or one of its records is unusable as it is.
const (
	ReasonInvalidJSON   Reason = "invalid_json"
	ReasonInvalidRecord Reason = "invalid_record"
	ReasonTooLarge      Reason = "too_large"
	// ReasonTombstone: the source message has a null value (a Kafka tombstone). The dead
	// letter's value is a reference envelope, never null (docs/dlq.md).
	ReasonTombstone Reason = "tombstone"
)

// Output-side reasons: Braze refused the record, or it could not be delivered in time.
const (
	ReasonBrazeRejected    Reason = "braze_rejected"
	ReasonRetriesExhausted Reason = "retries_exhausted"
	// ReasonPersistent5xx: the record alone got only 5xx answers for longer than the
	// isolation bound while Braze accepted other requests (the sender chain,
	// docs/architecture.md); during an outage nothing is dead-lettered for it.
	ReasonPersistent5xx Reason = "persistent_5xx"
)

// ReasonLetterTooLarge: the dead letter itself was refused by the DLQ broker as too large; a
// small reference envelope keeping the source coordinates and the first reason was written
// instead (the source message is still in its topic).
const ReasonLetterTooLarge Reason = "dlq_too_large"

// ReasonPreflightCheck marks the one record `ingestor check` writes to the DLQ topic to prove it
// is writable. It is not a dead letter: Replay always skips it, and Stats never count it.
const ReasonPreflightCheck Reason = "preflight_check"

// Reasons lists the reasons the worker writes, in the order its counters index them (see
// Reason.Index). New reasons go at the end.
var Reasons = [...]Reason{
	ReasonInvalidJSON, ReasonInvalidRecord, ReasonTooLarge,
	ReasonBrazeRejected, ReasonRetriesExhausted,
	ReasonTombstone, ReasonLetterTooLarge, ReasonPersistent5xx,
}

// Index returns r's position in Reasons (0 for an unknown reason).
func (r Reason) Index() int {
	for i, x := range Reasons {
		if x == r {
			return i
		}
	}
	return 0
}

// Replayable reports whether a dead letter of this reason holds a record that can be sent
// back to a source topic: a tombstone, a reference envelope or a preflight marker cannot.
func (r Reason) Replayable() bool {
	switch r {
	case ReasonTombstone, ReasonLetterTooLarge, ReasonPreflightCheck:
		return false
	}
	return true
}

// ForMessages reports whether a whole message (no record kind) can be dead-lettered for r.
func (r Reason) ForMessages() bool {
	switch r {
	case ReasonInvalidJSON, ReasonInvalidRecord, ReasonTombstone, ReasonLetterTooLarge:
		return true
	}
	return false
}

// ForRecords reports whether a single record can be dead-lettered for r.
func (r Reason) ForRecords() bool {
	switch r {
	case ReasonInvalidJSON, ReasonTombstone, ReasonPreflightCheck:
		return false
	}
	return true
}
