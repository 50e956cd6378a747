package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/braze-ingestor/braze-ingestor/brazesim"
	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/pipeline"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// BenchmarkPipeline runs the whole pipeline in-process (pipeline.New + sink.NewClient behind
// sink.NewGuard with the limiter off + dlq.NewWriter) against an in-process kfake broker
// and brazesim CountOnly; one op drains the whole preloaded topic with a fresh consumer
// group. Everything shares this process, so a CPU profile (-cpuprofile) includes kfake and
// the simulator: use `go run ./cmd/bench -contenders worker-inproc` for a worker-only profile.
//
//	go test ./bench -run '^$' -bench Pipeline -benchtime 3x -cpuprofile cpu.out
//
// BENCH_PIPELINE_RECORDS sets the backlog (default 200000).
func BenchmarkPipeline(b *testing.B) {
	n := int64(200_000)
	if v := os.Getenv("BENCH_PIPELINE_RECORDS"); v != "" {
		fmt.Sscan(v, &n)
	}
	const topic, dlqTopic = "bench-src", "bench-dlq"
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(12, topic), kfake.SeedTopics(3, dlqTopic))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	ctx := context.Background()
	lr, err := Load(ctx, brokers, topic, n, 5000, 1)
	if err != nil {
		b.Fatal(err)
	}
	cfg := brazesim.DefaultConfig()
	cfg.CountOnly, cfg.TrackLimit = true, -1
	sim, err := brazesim.NewServer(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer sim.Close()
	log := slog.New(slog.DiscardHandler)
	b.ReportAllocs()
	b.ResetTimer()
	var total int64
	var busy time.Duration
	for i := 0; i < b.N; i++ {
		client, err := sink.NewClient(sink.ClientConfig{Endpoint: sim.URL, APIKey: "dev-key", MaxIdleConns: 64})
		if err != nil {
			b.Fatal(err)
		}
		guard := sink.NewGuard(client, sink.NewLimiter(0, 3000), sink.BreakerConfig{}, log)
		w := dlq.NewWriter(dlq.WriterConfig{Brokers: brokers, Topic: dlqTopic})
		p, err := pipeline.New(pipeline.Config{Brokers: brokers, Topics: []string{topic}, GroupID: fmt.Sprintf("bench-%d", i), Logger: log}, guard, w)
		if err != nil {
			b.Fatal(err)
		}
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- p.Run(runCtx) }()
		for p.Stats().Snapshot().RecordsDelivered < lr.Records {
			time.Sleep(5 * time.Millisecond)
		}
		busy += time.Since(start)
		total += lr.Records
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		w.Close()
	}
	b.ReportMetric(float64(total)/busy.Seconds(), "records/s")
	b.ReportMetric(0, "ns/op")
}
