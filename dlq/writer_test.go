package dlq

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

func bigRecord(n int, id string) []byte {
	return []byte(`{"external_id":"` + id + `","blob":"` + strings.Repeat("x", n) + `"}`)
}

func testLetter(i int, key string, record []byte) Letter {
	return Letter{Reason: ReasonBrazeRejected, Error: fmt.Sprintf("rejected %d", i), Attempts: 1,
		SourceTopic: "src", SourcePartition: i % 3, SourceOffset: int64(100 + i), RecordIndex: 0,
		Key: []byte(key), Type: "attributes", Record: record,
		Headers: []kafka.Header{{Key: "traceparent", Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")}}}
}

func write(t *testing.T, w *Writer, letters []Letter) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return w.Write(ctx, letters)
}

// A letter over kafka-go's client-side default of 1,048,576 bytes, which the topic accepts, is
// written as it is: the writer allows the largest letter the worker can produce.
func TestWriterLetterOverKafkaGoDefault(t *testing.T) {
	onBrokers(t, func(t *testing.T, brokers []string) {
		topic := newTopic(t, brokers, "big", 1, 4<<20)
		w := NewWriter(WriterConfig{Brokers: brokers, Topic: topic})
		defer w.Close()
		rec := bigRecord(2<<20, "u-big")
		letters := []Letter{testLetter(0, "u-big", rec)}
		if err := write(t, w, letters); err != nil {
			t.Fatalf("write a 2 MiB letter to a topic allowing 4 MiB: %v", err)
		}
		got := readAll(t, brokers, topic)
		if len(got) != 1 || HeaderOr(got[0].Headers, HeaderReason) != string(ReasonBrazeRejected) ||
			!bytes.Contains(got[0].Value, rec) {
			t.Fatalf("got %d records (reason %q, %d bytes), want the letter as it is", len(got), HeaderOr(got[0].Headers, HeaderReason), len(got[0].Value))
		}
	})
}

// The topic refuses one letter as too large: that letter becomes a dlq_too_large reference
// keeping the source coordinates and the first reason, every other letter is written as it
// is, exactly once, and Write returns nil (the DLQ stage never stalls on it). Letters that
// are refused only because they were batched together (40 letters of 2 KB with one key, in a
// topic allowing 64 KiB per batch) are written one by one, not turned into references.
func TestWriterRefusedLetterBecomesReference(t *testing.T) {
	onBrokers(t, func(t *testing.T, brokers []string) {
		topic := newTopic(t, brokers, "small", 3, 64<<10)
		w := NewWriter(WriterConfig{Brokers: brokers, Topic: topic})
		defer w.Close()
		var letters []Letter
		letters = append(letters, testLetter(0, "u-big", bigRecord(200<<10, "u-big")))
		for i := 1; i <= 50; i++ {
			letters = append(letters, testLetter(i, fmt.Sprintf("u-%d", i), bigRecord(100, fmt.Sprintf("u-%d", i))))
		}
		for i := 51; i <= 90; i++ {
			letters = append(letters, testLetter(i, "u-same", bigRecord(2000, fmt.Sprintf("u-same-%d", i))))
		}
		if err := write(t, w, letters); err != nil {
			t.Fatalf("Write: %v", err)
		}
		for i := range letters {
			if !letters[i].Written {
				t.Fatalf("letter %d not marked written", i)
			}
			if want := ReasonBrazeRejected; i > 0 && letters[i].Reason != want {
				t.Errorf("letter %d reason %s, want %s", i, letters[i].Reason, want)
			}
		}
		if letters[0].Reason != ReasonLetterTooLarge || letters[0].FirstReason != ReasonBrazeRejected {
			t.Errorf("refused letter: reason %s first %s, want dlq_too_large / braze_rejected", letters[0].Reason, letters[0].FirstReason)
		}
		got := readAll(t, brokers, topic)
		seen := map[int64]int{}
		for _, m := range got {
			d := Parse(m.Headers)
			seen[d.SourceOffset]++
			if d.SourceOffset != 100 {
				if d.Reason != ReasonBrazeRejected || !bytes.HasPrefix(m.Value, []byte(`{"type":"attributes","data":{"external_id":"u-`)) {
					t.Errorf("letter for offset %d: reason %s value %.60s", d.SourceOffset, d.Reason, m.Value)
				}
				continue
			}
			checkReference(t, m, d)
		}
		if len(got) != len(letters) || len(seen) != len(letters) {
			t.Errorf("%d records for %d distinct source offsets, want %d of each (nothing lost, nothing twice)", len(got), len(seen), len(letters))
		}
	})
}

func checkReference(t *testing.T, m kafka.Message, d Record) {
	t.Helper()
	if d.Reason != ReasonLetterTooLarge || HeaderOr(m.Headers, HeaderFirstReason) != string(ReasonBrazeRejected) ||
		d.SourceTopic != "src" || d.SourcePartition != 0 || d.SourceOffset != 100 || string(m.Key) != "u-big" {
		t.Errorf("reference: reason %s first %q source %s/%d/%d key %q", d.Reason, HeaderOr(m.Headers, HeaderFirstReason),
			d.SourceTopic, d.SourcePartition, d.SourceOffset, m.Key)
	}
	if HeaderOr(m.Headers, "traceparent") == "" || !strings.Contains(d.Error, "rejected 0") {
		t.Errorf("reference lost the trace context or the first error: headers %q", m.Headers)
	}
	var ref Reference
	if err := json.Unmarshal(m.Value, &ref); err != nil || ref.Ref.Topic != "src" || ref.Ref.Offset != 100 ||
		ref.Reason != ReasonLetterTooLarge || ref.FirstReason != ReasonBrazeRejected || ref.LetterBytes < 200<<10 {
		t.Errorf("reference value %s (%v)", m.Value, err)
	}
	if len(m.Value) > 1024 {
		t.Errorf("reference value is %d bytes, want a small envelope", len(m.Value))
	}
}

// A letter over the writer's own limit (MaxMessageBytes + LetterOverhead) is replaced by its
// reference before it is sent.
func TestWriterLetterOverWriterLimit(t *testing.T) {
	onBrokers(t, func(t *testing.T, brokers []string) {
		topic := newTopic(t, brokers, "limit", 1, 4<<20)
		w := NewWriter(WriterConfig{Brokers: brokers, Topic: topic, MaxMessageBytes: 64 << 10})
		defer w.Close()
		letters := []Letter{testLetter(0, "u-big", bigRecord(200<<10, "u-big")), testLetter(1, "u-1", bigRecord(10, "u-1"))}
		if err := write(t, w, letters); err != nil {
			t.Fatal(err)
		}
		got := readAll(t, brokers, topic)
		if len(got) != 2 {
			t.Fatalf("%d records, want 2", len(got))
		}
		for _, m := range got {
			if d := Parse(m.Headers); d.SourceOffset == 100 {
				checkReference(t, m, d)
			}
		}
	})
}

// A failure that is not about size is returned (the pipeline retries), and a second Write
// with the same slice writes only what the first did not.
func TestWriterRetryWritesOnlyTheRest(t *testing.T) {
	onBrokers(t, func(t *testing.T, brokers []string) {
		topic := newTopic(t, brokers, "retry", 1, 0)
		w := NewWriter(WriterConfig{Brokers: brokers, Topic: topic})
		defer w.Close()
		letters := []Letter{testLetter(0, "a", bigRecord(10, "a")), testLetter(1, "b", bigRecord(10, "b"))}
		letters[0].Written = true // as if an earlier attempt had written it
		if err := write(t, w, letters); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, brokers, topic); len(got) != 1 || string(got[0].Key) != "b" {
			t.Fatalf("got %d records, want only the unwritten letter", len(got))
		}
		gone := NewWriter(WriterConfig{Brokers: brokers, Topic: topic + "-missing", Timeout: 2 * time.Second})
		defer gone.Close()
		err := write(t, gone, []Letter{testLetter(2, "c", bigRecord(10, "c"))})
		if !errors.Is(err, ErrWrite) {
			t.Fatalf("write to a missing topic: %v, want ErrWrite", err)
		}
	})
}
