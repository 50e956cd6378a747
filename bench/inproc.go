package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/pipeline"
	"github.com/braze-ingestor/braze-ingestor/sink"
	"github.com/braze-ingestor/braze-ingestor/telemetry"
)

// InprocOptions configures the in-process worker used for profiling.
type InprocOptions struct {
	Brokers    []string
	Topic      string
	DLQTopic   string
	Group      string
	Endpoint   string
	APIKey     string
	CPUProfile string
	MemProfile string  // allocation profile (alloc_space / alloc_objects) written at exit
	MemRate    int     // runtime.MemProfileRate (0 = default 512 KiB)
	RateLimit  float64 // client rate limit, requests/s (0 = unpaced, as in the throughput phases)
	// WriteBuffer > 0 gives the Braze client a transport like sink.NewClient's own but with this
	// WriteBufferSize (experiment for the per-request body-copy allocation in net/http).
	WriteBuffer int
}

// RunInproc wires the worker the way cmd/ingestor's runWorker does (pipeline.New with the
// default configuration, sink.NewClient behind sink.NewGuard (limiter off by default, breaker
// on), dlq.NewWriter, telemetry.Setup with the
// Prometheus reader) and runs it until SIGTERM, with CPU and allocation profiles. The broker
// and the Braze endpoint are other processes, so the profile is the worker's alone.
func RunInproc(o InprocOptions, stderr io.Writer) error {
	if o.MemRate > 0 {
		runtime.MemProfileRate = o.MemRate
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(200) // as cmd/ingestor's main does, so the profile matches the binary
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var tr http.RoundTripper
	if o.WriteBuffer > 0 {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConns, t.MaxIdleConnsPerHost, t.IdleConnTimeout = 64, 64, 90*time.Second
		t.WriteBufferSize = o.WriteBuffer
		tr = t
	}
	client, err := sink.NewClient(sink.ClientConfig{Endpoint: o.Endpoint, APIKey: o.APIKey, Timeout: 10 * time.Second,
		MaxIdleConns: 64, UserAgent: "braze-ingestor/bench", Transport: tr})
	if err != nil {
		return err
	}
	tel, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: "braze-ingestor", ServiceVersion: "bench"})
	if err != nil {
		return err
	}
	defer func() { _ = tel.Shutdown(context.Background()) }()
	guard := sink.NewGuard(client, sink.NewLimiter(o.RateLimit, 3000), sink.BreakerConfig{Failures: 5, OpenFor: 10 * time.Second}, log)
	dlq := dlq.NewWriter(dlq.WriterConfig{Brokers: o.Brokers, Topic: o.DLQTopic})
	defer dlq.Close()
	p, err := pipeline.New(pipeline.Config{Brokers: o.Brokers, Topics: []string{o.Topic}, GroupID: o.Group,
		Logger: log, TracerProvider: tel.TracerProvider, MeterProvider: tel.MeterProvider}, guard, dlq)
	if err != nil {
		return err
	}
	if o.CPUProfile != "" {
		f, err := os.Create(o.CPUProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	err = p.Run(ctx)
	if o.MemProfile != "" {
		f, ferr := os.Create(o.MemProfile)
		if ferr != nil {
			return ferr
		}
		defer f.Close()
		if werr := pprof.Lookup("allocs").WriteTo(f, 0); werr != nil {
			return fmt.Errorf("write allocs profile: %w", werr)
		}
	}
	return err
}
