package dlq

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"
)

func TestDeadLetterMessage(t *testing.T) {
	d := Letter{
		Reason: ReasonBrazeRejected, Error: "bad email", Attempts: 2, FailedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		SourceTopic: "events", SourcePartition: 3, SourceOffset: 42, RecordIndex: 1, Key: []byte("user-1"),
		Headers: []kafka.Header{{Key: "traceparent", Value: []byte("00-abc-def-01")}, {Key: "dlq.reason", Value: []byte("old")}},
		Type:    "event", Record: []byte(`{"external_id":"u","name":"x","time":"2026-01-01"}`), ID: []byte(`id-"7"`),
	}
	m := d.Message()
	if want := `{"type":"event","data":{"external_id":"u","name":"x","time":"2026-01-01"},"id":"id-\"7\""}`; string(m.Value) != want {
		t.Fatalf("value %s\nwant  %s", m.Value, want)
	}
	got := map[string]string{}
	count := map[string]int{}
	for _, h := range m.Headers {
		got[h.Key] = string(h.Value)
		count[h.Key]++
	}
	want := map[string]string{
		"traceparent": "00-abc-def-01", HeaderReason: "braze_rejected", HeaderError: "bad email", HeaderSourceTopic: "events",
		HeaderSourcePartition: "3", HeaderSourceOffset: "42", HeaderAttempts: "2", HeaderFailedAt: "2026-01-02T03:04:05Z", HeaderRecordIndex: "1",
	}
	for k, v := range want {
		if got[k] != v || count[k] != 1 {
			t.Errorf("header %s = %q (x%d), want %q once", k, got[k], count[k], v)
		}
	}
	if string(m.Key) != "user-1" {
		t.Errorf("key %q", m.Key)
	}
	whole := Letter{Reason: ReasonInvalidJSON, Original: []byte("{not json"), RecordIndex: -1}
	if m := whole.Message(); string(m.Value) != "{not json" {
		t.Errorf("whole-message dead letter value %q", m.Value)
	}
}

type reasonErr struct{ r Reason }

func (e reasonErr) Error() string     { return "bad: " + string(e.r) }
func (e reasonErr) DLQReason() Reason { return e.r }

// A whole message's letter takes its reason from the decoder's error; a tombstone (nil value)
// is dead-lettered as a non-null reference with reason tombstone, so that on a compacted DLQ
// it never deletes earlier dead letters with the same key.
func TestForMessage(t *testing.T) {
	if l := ForMessage([]byte("{"), errors.New("syntax")); l.Reason != ReasonInvalidJSON || string(l.Message().Value) != "{" {
		t.Errorf("plain error: %s %q", l.Reason, l.Message().Value)
	}
	if l := ForMessage([]byte("[]"), fmt.Errorf("wrapped: %w", reasonErr{ReasonInvalidRecord})); l.Reason != ReasonInvalidRecord {
		t.Errorf("decoder error naming invalid_record: %s", l.Reason)
	}
	l := ForMessage(nil, errors.New("empty"))
	l.SourceTopic, l.SourcePartition, l.SourceOffset, l.Key = "src", 2, 9, []byte("user-9")
	m := l.Message()
	var ref Reference
	if l.Reason != ReasonTombstone || m.Value == nil || json.Unmarshal(m.Value, &ref) != nil ||
		ref.Ref.Topic != "src" || ref.Ref.Partition != 2 || ref.Ref.Offset != 9 || ref.Ref.RecordIndex != -1 || ref.Reason != ReasonTombstone {
		t.Errorf("tombstone letter: reason %s value %q", l.Reason, m.Value)
	}
	if string(m.Key) != "user-9" || HeaderOr(m.Headers, HeaderReason) != "tombstone" {
		t.Errorf("tombstone letter: key %q headers %q", m.Key, m.Headers)
	}
}

// dlq.error is bounded; a cut never splits a UTF-8 sequence.
func TestErrorHeaderBounded(t *testing.T) {
	l := Letter{Reason: ReasonBrazeRejected, Error: strings.Repeat("é", MaxErrorBytes), Original: []byte("x")}
	v := HeaderOr(l.Message().Headers, HeaderError)
	if len(v) > MaxErrorBytes || !utf8.ValidString(v) || !strings.HasSuffix(v, "…") {
		t.Errorf("dlq.error of %d bytes (valid UTF-8 %v)", len(v), utf8.ValidString(v))
	}
}
