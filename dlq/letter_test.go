package dlq

import (
	"testing"
	"time"

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
