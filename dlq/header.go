package dlq

import "github.com/segmentio/kafka-go"

// Header names of a dead letter (docs/dlq.md). Every name starts with Prefix.
const (
	Prefix                = "dlq."
	HeaderReason          = "dlq.reason"
	HeaderError           = "dlq.error"
	HeaderSourceTopic     = "dlq.source.topic"
	HeaderSourcePartition = "dlq.source.partition"
	HeaderSourceOffset    = "dlq.source.offset"
	HeaderRecordIndex     = "dlq.source.record_index"
	HeaderAttempts        = "dlq.attempts"
	HeaderFailedAt        = "dlq.failed_at"
	// HeaderFirstReason is set on a dlq_too_large reference: the reason the record was
	// dead-lettered for before its dead letter proved too large for the DLQ topic.
	HeaderFirstReason = "dlq.first_reason"
	// HeaderLetterBytes is set on a dlq_too_large reference: the size of the refused letter.
	HeaderLetterBytes = "dlq.letter_bytes"
)

// Replay marks: a replayed record carries them back to its source topic, and a record that
// fails again keeps them in the DLQ, so a second failure is visible (docs/dlq.md).
const (
	ReplayPrefix      = "dlq.replay."
	HeaderReplayCount = "dlq.replay.count" // how many times the record was replayed
	HeaderReplayAt    = "dlq.replay.at"    // RFC 3339 time of the last replay
	HeaderReplayFrom  = "dlq.replay.from"  // dlq-topic/partition/offset it was last replayed from
)

// MaxErrorBytes bounds the dlq.error header: longer texts are cut (on a UTF-8 boundary) and
// end in "…".
const MaxErrorBytes = 2048

// Header returns the value of the first header named key.
func Header(hs []kafka.Header, key string) (string, bool) {
	for _, h := range hs {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// HeaderOr returns the value of the first header named key, or "".
func HeaderOr(hs []kafka.Header, key string) string {
	v, _ := Header(hs, key)
	return v
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := n - len(mark)
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + mark
}
