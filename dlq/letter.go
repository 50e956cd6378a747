package dlq

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// Letter is one record (or one unusable message) on its way to the DLQ topic. Its wire
// format is described in docs/dlq.md.
type Letter struct {
	Reason   Reason
	Error    string // why, for people; cut to MaxErrorBytes on the wire
	Attempts int
	FailedAt time.Time

	SourceTopic     string
	SourcePartition int
	SourceOffset    int64
	// RecordIndex is the record's position in its source message (-1: the whole message).
	RecordIndex int
	Key         []byte
	Headers     []kafka.Header // the source message's own headers

	// Type, Record and ID describe a failing record: the value becomes an envelope
	// {"type":Type,"data":Record,"id":ID}. Type is the envelope type ("attributes", "event",
	// "purchase").
	Type   string
	Record []byte
	ID     []byte
	// Original is the value instead when the message itself is unusable. A nil Original with
	// no Record (a tombstone) is written as a reference envelope, never as a null value.
	Original []byte

	// FirstReason and LetterBytes are set on a dlq_too_large reference (Writer): the reason
	// and size of the letter the broker refused.
	FirstReason Reason
	LetterBytes int

	// Written is set by Writer.Write once the letter is acknowledged, so that a retry of the
	// same slice writes only the rest.
	Written bool
}

// MessageError is the error shape of a whole message the decoder refused: it names a reason.
type MessageError interface {
	error
	DLQReason() Reason
}

// ForMessage returns the letter for a whole source message the decoder refused with err:
// a tombstone (nil value) gets ReasonTombstone, a decoder error naming its reason that reason,
// anything else ReasonInvalidJSON. The caller sets the attempts and source coordinates.
func ForMessage(value []byte, err error) Letter {
	l := Letter{Reason: ReasonInvalidJSON, Original: value, RecordIndex: -1}
	if err != nil {
		l.Error = err.Error()
	}
	var me MessageError
	switch {
	case value == nil:
		l.Reason = ReasonTombstone
		l.Error = "tombstone: the source message has a null value"
	case errors.As(err, &me):
		l.Reason = me.DLQReason()
	}
	return l
}

// value renders the dead letter's value: the record as an envelope, the original bytes, or
// (tombstone, dlq_too_large) a reference envelope.
func (d *Letter) value() []byte {
	switch {
	case d.Record != nil:
		value := make([]byte, 0, len(d.Record)+len(d.ID)+len(d.Type)+40)
		value = append(value, `{"type":"`...)
		value = append(value, d.Type...)
		value = append(value, `","data":`...)
		value = append(value, d.Record...)
		if len(d.ID) > 0 {
			// ID holds the unescaped id; re-quote it safely.
			value = append(value, `,"id":`...)
			value = appendJSONString(value, string(d.ID))
		}
		return append(value, '}')
	case d.Original != nil:
		return d.Original
	}
	return d.reference()
}

// Reference is the value of a dead letter that does not hold the record (docs/dlq.md).
type Reference struct {
	Ref struct {
		Topic       string `json:"topic"`
		Partition   int    `json:"partition"`
		Offset      int64  `json:"offset"`
		RecordIndex int    `json:"record_index"`
	} `json:"dlq_ref"`
	Reason      Reason `json:"reason"`
	FirstReason Reason `json:"first_reason,omitempty"`
	LetterBytes int    `json:"letter_bytes,omitempty"`
}

func (d *Letter) reference() []byte {
	var r Reference
	r.Ref.Topic, r.Ref.Partition, r.Ref.Offset, r.Ref.RecordIndex = d.SourceTopic, d.SourcePartition, d.SourceOffset, d.RecordIndex
	r.Reason, r.FirstReason, r.LetterBytes = d.Reason, d.FirstReason, d.LetterBytes
	b, _ := json.Marshal(&r) // cannot fail: strings and numbers only
	return b
}

func appendJSONString(dst []byte, s string) []byte {
	b, _ := json.Marshal(s) // a string always marshals; invalid UTF-8 becomes U+FFFD
	return append(dst, b...)
}

// Message renders the dead letter as a Kafka message: the source key, the value, and the
// source headers followed by the dlq.* headers (docs/dlq.md).
func (d *Letter) Message() kafka.Message {
	headers := make([]kafka.Header, 0, len(d.Headers)+10)
	for _, h := range d.Headers {
		// A replayed record that fails again gets fresh dlq.* headers, not two sets; the
		// replay marks stay so that the second failure is visible.
		if strings.HasPrefix(h.Key, Prefix) && !strings.HasPrefix(h.Key, ReplayPrefix) {
			continue
		}
		headers = append(headers, h)
	}
	failedAt := d.FailedAt
	if failedAt.IsZero() {
		failedAt = time.Now()
	}
	headers = append(headers,
		kafka.Header{Key: HeaderReason, Value: []byte(d.Reason)},
		kafka.Header{Key: HeaderError, Value: []byte(truncate(d.Error, MaxErrorBytes))},
		kafka.Header{Key: HeaderSourceTopic, Value: []byte(d.SourceTopic)},
		kafka.Header{Key: HeaderSourcePartition, Value: []byte(strconv.Itoa(d.SourcePartition))},
		kafka.Header{Key: HeaderSourceOffset, Value: []byte(strconv.FormatInt(d.SourceOffset, 10))},
		kafka.Header{Key: HeaderRecordIndex, Value: []byte(strconv.Itoa(d.RecordIndex))},
		kafka.Header{Key: HeaderAttempts, Value: []byte(strconv.Itoa(d.Attempts))},
		kafka.Header{Key: HeaderFailedAt, Value: []byte(failedAt.UTC().Format(time.RFC3339Nano))},
	)
	if d.FirstReason != "" {
		headers = append(headers,
			kafka.Header{Key: HeaderFirstReason, Value: []byte(d.FirstReason)},
			kafka.Header{Key: HeaderLetterBytes, Value: []byte(strconv.Itoa(d.LetterBytes))})
	}
	return kafka.Message{Key: d.Key, Value: d.value(), Headers: headers}
}

// maxRefKeyBytes bounds the key a reference keeps; a longer source key is replaced by the
// source coordinates (a compacted DLQ needs a key).
const maxRefKeyBytes = 1024

// maxRefHeaderBytes bounds each source header a reference keeps (trace context, replay marks).
const maxRefHeaderBytes = 512

// tooLarge returns the small reference written instead of d when the DLQ refuses d as too
// large (size bytes): the source coordinates and d's reason, trace context and replay marks,
// without the record.
func (d *Letter) tooLarge(size int, cause error) Letter {
	r := Letter{
		Reason: ReasonLetterTooLarge, FirstReason: d.Reason, LetterBytes: size,
		Attempts: d.Attempts, FailedAt: d.FailedAt,
		SourceTopic: d.SourceTopic, SourcePartition: d.SourcePartition, SourceOffset: d.SourceOffset,
		RecordIndex: d.RecordIndex, Key: d.Key,
		Error: truncate("dead letter of "+strconv.Itoa(size)+" bytes refused by the DLQ topic ("+cause.Error()+
			"); the record is still at its source coordinates. First error: "+d.Error, MaxErrorBytes),
	}
	if len(r.Key) > maxRefKeyBytes {
		r.Key = []byte(d.SourceTopic + "/" + strconv.Itoa(d.SourcePartition) + "/" + strconv.FormatInt(d.SourceOffset, 10))
	}
	for _, h := range d.Headers {
		keep := h.Key == "traceparent" || h.Key == "tracestate" || strings.HasPrefix(h.Key, ReplayPrefix)
		if keep && len(h.Value) <= maxRefHeaderBytes {
			r.Headers = append(r.Headers, h)
		}
	}
	return r
}

// messageSize is the bytes a message adds to a produce request, near enough for budgeting
// (key, value, header names and values, and a per-record allowance for varints and framing).
func messageSize(m *kafka.Message) int {
	n := len(m.Key) + len(m.Value) + 32
	for _, h := range m.Headers {
		n += len(h.Key) + len(h.Value) + 8
	}
	return n
}
