package pipeline

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/braze-ingestor/braze-ingestor/sink"
)

// A full run against the in-process broker: everything settles, offsets are committed, and
// after shutdown no goroutine of the pipeline is left behind.
func TestRunSettlesCommitsAndLeaksNothing(t *testing.T) {
	for _, mode := range []string{FetchBatch, FetchReader} {
		t.Run(mode, func(t *testing.T) { runSettles(t, mode) })
	}
}

func runSettles(t *testing.T, mode string) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "src"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := &kafka.Writer{Addr: kafka.TCP(c.ListenAddrs()...), Topic: "src", Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond}
	var msgs []kafka.Message
	for i := 0; i < 400; i++ {
		v := fmt.Sprintf(`{"type":"event","data":{"external_id":"u%d","name":"e","time":"2026-01-01T00:00:00Z"}}`, i%37)
		if i%50 == 0 {
			v = `{"type":"event","data":` // unusable
		}
		msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprint(i % 37)), Value: []byte(v)})
	}
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()
	time.Sleep(100 * time.Millisecond)
	// The in-process broker's server-side connection readers end on their own schedule;
	// everything of the pipeline must be gone.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(),
		goleak.IgnoreAnyFunction("github.com/twmb/franz-go/pkg/kfake.(*clientConn).read.func1"),
		goleak.IgnoreAnyFunction("github.com/twmb/franz-go/pkg/kfake.(*clientConn).write"))

	braze := &fakeBraze{answer: func(map[string][]map[string]any) sink.Response {
		return sink.Response{Status: 201, Class: sink.Delivered}
	}}
	dlq := &memDLQ{}
	p, err := New(Config{Brokers: c.ListenAddrs(), Topics: []string{"src"}, GroupID: "g", FetchMode: mode, Lanes: 4, Linger: 5 * time.Millisecond,
		CommitInterval: 50 * time.Millisecond, MaxWait: 50 * time.Millisecond, ShutdownTimeout: 5 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, braze, dlq)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s := p.Stats().Snapshot()
		if s.RecordsDelivered == 392 && s.DeadLetteredAll == 8 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not settled: %+v", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Every partition is committed to its end.
	cl := &kafka.Client{Addr: kafka.TCP(c.ListenAddrs()...)}
	resp, err := cl.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: "g", Topics: map[string][]int{"src": {0, 1, 2, 3}}})
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, part := range resp.Topics["src"] {
		total += part.CommittedOffset
	}
	if total != 400 {
		t.Errorf("committed offsets sum to %d, want 400", total)
	}
	if len(dlq.snapshot()) != 8 {
		t.Errorf("%d dead letters, want 8", len(dlq.snapshot()))
	}
}
