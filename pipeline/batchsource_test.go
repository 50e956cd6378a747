package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

// warnings counts the records logged at warning level or above.
type warnings struct{ n atomic.Int64 }

func (w *warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnings) Handle(context.Context, slog.Record) error    { w.n.Add(1); return nil }
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler           { return w }
func (w *warnings) WithGroup(string) slog.Handler                { return w }

// A partition that is caught up is not failing: the fetch loop keeps its connection, logs no
// warning and backs off nothing, and a record produced later arrives at once.
func TestBatchSourceCaughtUpIsNotAFailure(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "src"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := &kafka.Writer{Addr: kafka.TCP(c.ListenAddrs()...), Topic: "src", BatchTimeout: time.Millisecond}
	defer w.Close()
	produce := func(vals ...string) {
		var msgs []kafka.Message
		for _, v := range vals {
			msgs = append(msgs, kafka.Message{Value: []byte(v)})
		}
		if err := w.WriteMessages(context.Background(), msgs...); err != nil {
			t.Fatal(err)
		}
	}
	produce("a", "b", "c")

	var warned warnings
	p, err := New(Config{Brokers: c.ListenAddrs(), Topics: []string{"src"}, GroupID: "g", MaxWait: 100 * time.Millisecond,
		Logger: slog.New(&warned)}, &fakeBraze{}, &memDLQ{})
	if err != nil {
		t.Fatal(err)
	}
	s := &batchSource{p: p, topic: "src", partition: 0, offset: kafka.FirstOffset}
	defer s.Close()
	for want := int64(0); want < 3; want++ {
		m, err := s.next(context.Background())
		if err != nil || m.Offset != want {
			t.Fatalf("message %d: offset %v, error %v", want, m, err)
		}
	}
	conn := s.conn

	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	if _, err := s.next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("caught up: got %v, want the context's deadline", err)
	}
	if s.failures != 0 || s.conn != conn || conn == nil {
		t.Fatalf("caught up counted as a failure: failures %d, connection kept %v", s.failures, s.conn == conn)
	}
	if n := warned.n.Load(); n > 0 {
		t.Fatalf("caught up logged %d warnings", n)
	}

	go func() {
		time.Sleep(50 * time.Millisecond)
		produce("d")
	}()
	start := time.Now()
	m, err := s.next(context.Background())
	if err != nil || m.Offset != 3 || string(m.Value) != "d" {
		t.Fatalf("after new data: %v, %v", m, err)
	}
	// The record arrives within a fetch's MaxWait of being produced, not after a back-off.
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("the new record took %s", el)
	}
}
