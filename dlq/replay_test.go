package dlq

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

func replay(t *testing.T, brokers []string, opt ReplayOptions) *ReplayStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var out bytes.Buffer
	st, err := Replay(ctx, Conn{Brokers: brokers}, opt, &out)
	PrintSummary(&out, opt, st, time.Now())
	t.Logf("replay output:\n%s", out.String())
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	return st
}

// deadLetters renders n letters of about size bytes each, from source topic src partition 0.
func deadLetters(src string, n, size int) []kafka.Message {
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		l := Letter{Reason: ReasonBrazeRejected, Error: "rejected", Attempts: 1, SourceTopic: src, SourceOffset: int64(i), RecordIndex: 0,
			Key: []byte(fmt.Sprintf("u-%d", i)), Type: "attributes", Record: bigRecord(size, fmt.Sprintf("u-%d", i))}
		msgs[i] = l.Message()
	}
	return msgs
}

// 1,000 dead letters of about 3 KB replay in produce requests within the target topic's
// limits: the broker's default max.message.bytes (1 MiB; 500 records per request would be
// 1.5 MB) and a topic allowing only 100 KB.
func TestReplayWithinBrokerLimits(t *testing.T) {
	onBrokers(t, func(t *testing.T, brokers []string) {
		for _, max := range []int{0, 100_000} {
			t.Run(fmt.Sprintf("max.message.bytes=%d", max), func(t *testing.T) {
				src := newTopic(t, brokers, "src", 1, max)
				dlqTopic := newTopic(t, brokers, "dlq", 1, 0)
				writeAll(t, brokers, dlqTopic, deadLetters(src, 1000, 3000)...)
				st := replay(t, brokers, ReplayOptions{DLQ: dlqTopic})
				if st.Replayed != 1000 || st.TooLarge != 0 {
					t.Fatalf("replayed %d (too large %d), want 1000", st.Replayed, st.TooLarge)
				}
				t.Logf("1000 dead letters replayed in %d produce requests", st.Requests)
				// 3 MB in requests of at most 1 MB (or 100 KB): no request refused and resent
				// record by record.
				if st.SentAlone != 0 || st.Requests < 3 || st.Requests > 100 {
					t.Errorf("%d produce requests, %d records resent alone; want batches by bytes", st.Requests, st.SentAlone)
				}
				got := readAll(t, brokers, src)
				if len(got) != 1000 {
					t.Fatalf("%d records in %s, want 1000", len(got), src)
				}
				for i, m := range got {
					if want := fmt.Sprintf("u-%d", i); string(m.Key) != want || HeaderOr(m.Headers, HeaderReplayCount) != "1" {
						t.Fatalf("record %d: key %q replay.count %q, want %s in DLQ order", i, m.Key, HeaderOr(m.Headers, HeaderReplayCount), want)
					}
				}
			})
		}
	})
}

// failAll plays a worker that rejects every record replayed to src since offset from: each
// comes back to the DLQ as the worker writes it (with the replay marks). It returns the new
// end offset of src.
func failAll(t *testing.T, brokers []string, src, dlqTopic string, from int) int {
	t.Helper()
	got := readAll(t, brokers, src)
	w := NewWriter(WriterConfig{Brokers: brokers, Topic: dlqTopic})
	defer w.Close()
	var letters []Letter
	for _, m := range got[from:] {
		letters = append(letters, Letter{Reason: ReasonBrazeRejected, Error: "rejected again", Attempts: 1,
			SourceTopic: src, SourcePartition: m.Partition, SourceOffset: m.Offset, RecordIndex: -1,
			Key: m.Key, Headers: m.Headers, Original: m.Value})
	}
	if err := write(t, w, letters); err != nil {
		t.Fatal(err)
	}
	return len(got)
}

// Repeated runs over records that keep failing replay each record once per run, not the
// previous runs' failed copies as well (5, 5, 5 instead of 5, 10, 20); --max-replays leaves
// out records replayed that many times; tombstones and dlq_too_large references are never
// replayed.
func TestReplayRepeatedRuns(t *testing.T) {
	onBrokers(t, func(t *testing.T, brokers []string) {
		src := newTopic(t, brokers, "src", 1, 0)
		dlqTopic := newTopic(t, brokers, "dlq", 2, 0)
		msgs := deadLetters(src, 5, 100)
		tomb := ForMessage(nil, nil)
		tomb.SourceTopic, tomb.SourceOffset, tomb.Key = src, 50, []byte("gone")
		big := testLetter(51, "big", bigRecord(10, "big"))
		big.SourceTopic = src
		ref := big.tooLarge(5<<20, fmt.Errorf("test"))
		msgs = append(msgs, tomb.Message(), ref.Message())
		writeAll(t, brokers, dlqTopic, msgs...)

		end := 0
		for run, want := range []struct {
			maxReplays, replayed, skippedReplayed, skippedMax int
		}{{0, 5, 0, 0}, {0, 5, 5, 0}, {3, 5, 10, 0}, {3, 0, 15, 5}} {
			st := replay(t, brokers, ReplayOptions{DLQ: dlqTopic, MaxReplays: want.maxReplays})
			if st.Replayed != want.replayed || st.SkippedReplayed != want.skippedReplayed || st.SkippedMax != want.skippedMax || st.NotReplayable != 2 {
				t.Fatalf("run %d: replayed %d, skipped as replayed %d, by --max-replays %d, not replayable %d; want %d, %d, %d, 2",
					run+1, st.Replayed, st.SkippedReplayed, st.SkippedMax, st.NotReplayable, want.replayed, want.skippedReplayed, want.skippedMax)
			}
			end = failAll(t, brokers, src, dlqTopic, end)
		}
		for _, m := range readAll(t, brokers, src) {
			if strings.Contains(string(m.Value), "dlq_ref") {
				t.Errorf("a reference was replayed: %s", m.Value)
			}
		}
	})
}
