package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/braze-ingestor/braze-ingestor/worker"
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

// RunInproc runs the worker's own assembly (worker.Run on worker.Defaults, with the Braze
// client unpaced unless RateLimit is set, logs at warn and the HTTP port on a free loopback
// port) until SIGTERM, with CPU and allocation profiles. The broker and the Braze endpoint
// are other processes, so the profile is the worker's alone.
func RunInproc(o InprocOptions, stderr io.Writer) error {
	if o.MemRate > 0 {
		runtime.MemProfileRate = o.MemRate
	}
	worker.SetGCPercent() // as cmd/ingestor's main does, so the profile matches the binary
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	cfg := worker.Defaults()
	cfg.KafkaBrokers, cfg.KafkaTopics, cfg.KafkaGroupID, cfg.KafkaDLQTopic = o.Brokers, []string{o.Topic}, o.Group, o.DLQTopic
	cfg.BrazeEndpoint, cfg.BrazeAPIKey = o.Endpoint, o.APIKey
	cfg.BrazeRateLimit = o.RateLimit
	cfg.HTTPAddr, cfg.LogLevel = "127.0.0.1:0", "warn"
	opts := worker.Options{Version: "bench"}
	if o.WriteBuffer > 0 {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConns, t.MaxIdleConnsPerHost, t.IdleConnTimeout = cfg.Lanes, cfg.Lanes, 90*time.Second
		t.WriteBufferSize = o.WriteBuffer
		opts.Transport = t
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
	err := worker.Run(ctx, &cfg, worker.NewLogger(stderr, cfg.LogLevel), opts)
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
