package dlq

import (
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

// Record is a dead letter read back from the DLQ topic (docs/dlq.md).
type Record struct {
	Reason          Reason
	Error           string
	SourceTopic     string
	SourcePartition int   // -1 when missing or malformed
	SourceOffset    int64 // -1 when missing or malformed
	FailedAt        time.Time
	// ReplayCount is dlq.replay.count: how many times the record was replayed (0: never).
	ReplayCount int
	// ReplayFrom is dlq.replay.from: the DLQ position it was last replayed from ("" if none).
	ReplayFrom string
}

// Parse reads the dlq.* headers of a DLQ record. Missing or malformed values are left at
// their zero value (or -1 for the source partition and offset); Parse never fails.
func Parse(hs []kafka.Header) Record {
	r := Record{SourcePartition: -1, SourceOffset: -1}
	for _, h := range hs {
		v := string(h.Value)
		switch h.Key {
		case HeaderReason:
			r.Reason = Reason(v)
		case HeaderError:
			r.Error = v
		case HeaderSourceTopic:
			r.SourceTopic = v
		case HeaderSourcePartition:
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				r.SourcePartition = n
			}
		case HeaderSourceOffset:
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
				r.SourceOffset = n
			}
		case HeaderFailedAt:
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
				r.FailedAt = t
			}
		case HeaderReplayCount:
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				r.ReplayCount = n
			}
		case HeaderReplayFrom:
			r.ReplayFrom = v
		}
	}
	return r
}

// Position names a record of the DLQ topic as dlq.replay.from writes it: topic/partition/offset.
func Position(topic string, partition int, offset int64) string {
	return topic + "/" + strconv.Itoa(partition) + "/" + strconv.FormatInt(offset, 10)
}
