package bench

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
)

// RawConsumeOptions configures the plain kafka-go consumer group (the ceiling).
type RawConsumeOptions struct {
	Brokers []string
	Topic   string
	Group   string
	Expect  int64 // messages; prints "consumed <n> first <ns> last <ns>" when reached
}

// RunRawConsume reads the topic with a kafka-go group Reader configured as the BENCHMARKS.md method says
// (CommitInterval 1s, MinBytes 64 KiB, MaxBytes 10 MiB, MaxWait 100ms, QueueCapacity 10000),
// doing nothing with the messages, until SIGTERM. Closing the reader commits.
func RunRawConsume(o RawConsumeOptions, stdout io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:        o.Brokers,
		GroupID:        o.Group,
		Topic:          o.Topic,
		StartOffset:    kafka.FirstOffset,
		CommitInterval: time.Second,
		MinBytes:       64 << 10,
		MaxBytes:       10 << 20,
		MaxWait:        100 * time.Millisecond,
		QueueCapacity:  10000,
	})
	defer r.Close()
	var n, bytes int64
	var first time.Time
	for {
		m, err := r.ReadMessage(ctx) // with CommitInterval: marks for the next interval commit
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if n == 0 {
			first = time.Now()
		}
		n++
		bytes += int64(len(m.Value))
		if n == o.Expect {
			fmt.Fprintf(stdout, "consumed %d first %d last %d bytes %d\n", n, first.UnixNano(), time.Now().UnixNano(), bytes)
		}
	}
}
