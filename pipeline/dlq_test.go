package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// TestDLQLetterTooLargeAndTombstone runs the pipeline with the real DLQ writer on kfake.
// Partition 0 holds a 1.5 MB unusable message (its dead letter is over kafka-go's 1 MiB
// default and over the DLQ topic's 256 KiB max.message.bytes), valid records and a
// tombstone; partition 1 holds small unusable messages and valid records. Every partition
// commits to its end, the DLQ stage never fails a write (so partition 1's dead letters wait
// for no retry), and nothing is lost: the big one is a dlq_too_large reference, the
// tombstone a non-null reference with reason tombstone.
//
// With KAFKA_TEST_BROKERS set (scripts/kafka.sh env) it runs on the real broker too.
func TestDLQLetterTooLargeAndTombstone(t *testing.T) {
	for _, mode := range []string{FetchBatch, FetchReader} {
		t.Run("kfake-"+mode, func(t *testing.T) {
			c, err := kfake.NewCluster(kfake.NumBrokers(1))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			dlqTooLargeAndTombstone(t, mode, c.ListenAddrs(), "")
		})
	}
	t.Run("kafka", func(t *testing.T) {
		b := os.Getenv("KAFKA_TEST_BROKERS")
		if b == "" {
			t.Skip(`needs a real Kafka broker: eval "$(scripts/kafka.sh env)"`)
		}
		dlqTooLargeAndTombstone(t, FetchBatch, strings.Split(b, ","), fmt.Sprintf("dlqtest-%d-", time.Now().UnixNano()))
	})
}

func createTopic(t *testing.T, brokers []string, topic string, partitions, maxMessageBytes int) {
	t.Helper()
	cl := &kafka.Client{Addr: kafka.TCP(brokers...)}
	res, err := cl.CreateTopics(context.Background(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: partitions, ReplicationFactor: 1,
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "max.message.bytes", ConfigValue: fmt.Sprint(maxMessageBytes)}}}}})
	if err != nil || res.Errors[topic] != nil {
		t.Fatalf("create %s: %v %v", topic, err, res.Errors)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = cl.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}})
	})
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		md, err := cl.Metadata(context.Background(), &kafka.MetadataRequest{Topics: []string{topic}})
		if err == nil && len(md.Topics) == 1 && md.Topics[0].Error == nil && len(md.Topics[0].Partitions) == partitions &&
			md.Topics[0].Partitions[partitions-1].Leader.Host != "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("topic %s not ready: %v", topic, err)
		}
	}
}

func dlqTooLargeAndTombstone(t *testing.T, mode string, brokers []string, prefix string) {
	src, dlqTopic, group := prefix+"src", prefix+"dlq", prefix+"g"
	createTopic(t, brokers, src, 2, 4<<20)
	createTopic(t, brokers, dlqTopic, 2, 256<<10)
	event := func(i int) []byte {
		return []byte(fmt.Sprintf(`{"type":"event","data":{"external_id":"u%d","name":"e","time":"2026-01-01T00:00:00Z"}}`, i))
	}
	var p0, p1 []kafka.Message
	p0 = append(p0, kafka.Message{Key: []byte("big"), Value: []byte("{" + strings.Repeat("x", 1500_000))})
	for i := 0; i < 10; i++ {
		p0 = append(p0, kafka.Message{Key: []byte(fmt.Sprint(i)), Value: event(i)})
	}
	p0 = append(p0, kafka.Message{Key: []byte("gone-user"), Value: nil}) // a tombstone
	for i := 0; i < 25; i++ {
		v := []byte(`{"type":"event","data":`)
		if i%5 == 0 {
			v = event(100 + i)
		}
		p1 = append(p1, kafka.Message{Key: []byte(fmt.Sprint(i)), Value: v})
	}
	for part, msgs := range [][]kafka.Message{p0, p1} {
		w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: src, BatchTimeout: time.Millisecond, BatchBytes: 8 << 20,
			Balancer: kafka.BalancerFunc(func(kafka.Message, ...int) int { return part })}
		if err := w.WriteMessages(context.Background(), msgs...); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}

	braze := &fakeBraze{answer: func(map[string][]map[string]any) sink.Response {
		return sink.Response{Status: 201, Class: sink.Delivered}
	}}
	w := dlq.NewWriter(dlq.WriterConfig{Brokers: brokers, Topic: dlqTopic, MaxMessageBytes: 10 << 20})
	defer w.Close()
	p, err := New(Config{Brokers: brokers, Topics: []string{src}, GroupID: group, FetchMode: mode, Lanes: 2, Linger: 5 * time.Millisecond,
		CommitInterval: 50 * time.Millisecond, MaxWait: 50 * time.Millisecond, ShutdownTimeout: 5 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, braze, w)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	committed := func() (p0, p1 int64) {
		cl := &kafka.Client{Addr: kafka.TCP(brokers...)}
		resp, err := cl.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{src: {0, 1}}})
		if err != nil {
			return -1, -1
		}
		for _, part := range resp.Topics[src] {
			if part.Partition == 0 {
				p0 = part.CommittedOffset
			} else {
				p1 = part.CommittedOffset
			}
		}
		return p0, p1
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c0, c1 := committed()
		if c0 == int64(len(p0)) && c1 == int64(len(p1)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("partitions committed to %d and %d, want %d and %d; stats %+v (DLQ errors %d)",
				c0, c1, len(p0), len(p1), p.Stats().Snapshot(), p.Stats().DLQErrors.Load())
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s := p.Stats().Snapshot()
	if n := p.Stats().DLQErrors.Load(); n != 0 {
		t.Errorf("%d failed DLQ writes: the stage retried (and held every partition's dead letters) instead of writing a reference", n)
	}
	want := map[dlq.Reason]int64{dlq.ReasonLetterTooLarge: 1, dlq.ReasonTombstone: 1, dlq.ReasonInvalidJSON: 20}
	for r, n := range want {
		if s.DeadLettered[r] != n {
			t.Errorf("dead-lettered %s: %d, want %d (all: %v)", r, s.DeadLettered[r], n, s.DeadLettered)
		}
	}
	if s.RecordsDelivered != 15 {
		t.Errorf("delivered %d, want 15", s.RecordsDelivered)
	}
	checkDLQTopic(t, brokers, src, dlqTopic)
}

// checkDLQTopic reads the DLQ topic: 22 dead letters, none with a null value.
func checkDLQTopic(t *testing.T, brokers []string, src, dlqTopic string) {
	t.Helper()
	var got []kafka.Message
	for part := 0; part < 2; part++ {
		rd := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: dlqTopic, Partition: part, MaxWait: 50 * time.Millisecond})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		for {
			m, err := rd.ReadMessage(ctx)
			if err != nil {
				break
			}
			got = append(got, m)
		}
		cancel()
		rd.Close()
	}
	if len(got) != 22 {
		t.Fatalf("%d records in the DLQ topic, want 22", len(got))
	}
	for _, m := range got {
		d := dlq.Parse(m.Headers)
		if m.Value == nil {
			t.Errorf("dead letter for src/%d/%d has a null value (a tombstone on a compacted DLQ)", d.SourcePartition, d.SourceOffset)
		}
		switch d.Reason {
		case dlq.ReasonLetterTooLarge, dlq.ReasonTombstone:
			var ref dlq.Reference
			if err := json.Unmarshal(m.Value, &ref); err != nil || ref.Ref.Topic != src || ref.Ref.Partition != 0 || ref.Reason != d.Reason {
				t.Errorf("%s reference %s: %v", d.Reason, m.Value, err)
			}
			if d.Reason == dlq.ReasonTombstone && (ref.Ref.Offset != 11 || string(m.Key) != "gone-user") {
				t.Errorf("tombstone reference for offset %d key %q, want 11 gone-user", ref.Ref.Offset, m.Key)
			}
			if d.Reason == dlq.ReasonLetterTooLarge && (ref.Ref.Offset != 0 || ref.FirstReason != dlq.ReasonInvalidJSON) {
				t.Errorf("dlq_too_large reference %s", m.Value)
			}
		case dlq.ReasonInvalidJSON:
			if d.SourcePartition != 1 {
				t.Errorf("invalid_json dead letter from partition %d", d.SourcePartition)
			}
		default:
			t.Errorf("unexpected reason %s", d.Reason)
		}
	}
}
