// Command ingestor reads user events, attributes and purchases from Kafka and delivers them to
// Braze's /users/track endpoint. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/braze-ingestor/braze-ingestor/batcher"
	"github.com/braze-ingestor/braze-ingestor/pipeline"
	"github.com/braze-ingestor/braze-ingestor/schemas"
	"github.com/braze-ingestor/braze-ingestor/sink"
	"github.com/braze-ingestor/braze-ingestor/telemetry"
)

// version is stamped at build time: -ldflags "-X main.version=1.2.3".
var version = "dev"

const usage = `ingestor: Kafka to Braze /users/track, at-least-once, per-user order.

Usage:
  ingestor [run]        run the worker (configuration from the environment; see README)
  ingestor check        preflight: config, brokers, topics, DLQ writable, Braze key (exit 1 on failure)
  ingestor replay ...   move dead letters back to their source topic (ingestor replay -h)
  ingestor dev [flags]  the whole pipeline on embedded defaults (in-process Kafka and Braze)
  ingestor brazesim     run the Braze REST simulator
  ingestor version      print the version
`

func main() {
	setGCPercent()
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
}

// defaultGCPercent is the worker's GOGC when the environment sets none. Its heap is mostly
// record bytes in flight, bounded by back-pressure (lanes and fetch buffers), so a larger
// heap costs a fixed amount of memory while halving the collector's work: about 4% less
// CPU for ~35 MiB more peak RSS at full speed (BENCHMARKS.md). GOGC and GOMEMLIMIT in the
// environment are honoured as usual.
const defaultGCPercent = 200

func setGCPercent() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
}

// Main runs a subcommand and returns the process exit status: 0 ok, 1 failure, 2 bad
// configuration or usage.
func Main(args []string, stdout, stderr io.Writer) int {
	sub := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	switch sub {
	case "run":
		return cmdRun(ctx, stderr)
	case "dev":
		return cmdDev(ctx, args, stdout, stderr)
	case "check":
		return cmdCheck(ctx, args, stdout, stderr)
	case "replay":
		return cmdReplay(ctx, args, stdout, stderr)
	case "brazesim":
		return cmdBrazesim(ctx, args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "ingestor", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "ingestor: unknown command %q\n\n%s", sub, usage)
		return 2
	}
}

func cmdRun(ctx context.Context, stderr io.Writer) int {
	cfg, err := LoadConfig()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	log := newLogger(stderr, cfg.LogLevel)
	if err := runWorker(ctx, cfg, log, nil); err != nil {
		log.Error("worker failed", "error", err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(strings.ToUpper(level)))
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

// workerHooks lets `ingestor dev` and tests see inside a running worker.
type workerHooks struct {
	started   func(p *pipeline.Pipeline, httpAddr string)
	telemetry func(*telemetry.Options) // adds test exporters
}

// runWorker wires the worker from cfg and runs it until ctx ends.
func runWorker(ctx context.Context, cfg *Config, log *slog.Logger, hooks *workerHooks) error {
	tlsCfg, mech, err := kafkaSecurity(cfg)
	if err != nil {
		return err
	}
	client, err := sink.NewClient(sink.ClientConfig{
		Endpoint: cfg.BrazeEndpoint, APIKey: cfg.BrazeAPIKey, Timeout: cfg.BrazeHTTPTimeout,
		MaxIdleConns: cfg.Lanes, UserAgent: "braze-ingestor/" + version,
	})
	if err != nil {
		return err
	}
	newDecoder, segment := cfg.newDecoders()
	guard := sink.NewGuard(client, sink.NewLimiter(cfg.BrazeRateLimit, cfg.BrazeRateBurst),
		sink.BreakerConfig{Failures: cfg.BreakerFailures, OpenFor: cfg.BreakerOpenFor}, log)
	topts := telemetry.Options{ServiceName: "braze-ingestor", ServiceVersion: version, Logger: log}
	if hooks != nil && hooks.telemetry != nil {
		hooks.telemetry(&topts)
	}
	tel, err := telemetry.Setup(ctx, topts)
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(sctx)
	}()
	dlq := sink.NewDLQWriter(sink.DLQConfig{Brokers: cfg.KafkaBrokers, Topic: cfg.KafkaDLQTopic, Transport: kafkaTransport(tlsCfg, mech)})
	defer dlq.Close()
	optimize, closeStore, err := optimizeConfig(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeStore()
	start := kafka.FirstOffset
	if cfg.KafkaStartOffset == "latest" {
		start = kafka.LastOffset
	}
	p, err := pipeline.New(pipeline.Config{
		Brokers: cfg.KafkaBrokers, Topics: cfg.KafkaTopics, GroupID: cfg.KafkaGroupID, StartOffset: start,
		Dialer:         kafkaDialer(tlsCfg, mech),
		CommitInterval: cfg.KafkaCommitInterval, SessionTimeout: cfg.KafkaSessionTimeout,
		RebalanceTimeout: cfg.KafkaRebalanceTimeout, HeartbeatInterval: cfg.KafkaHeartbeatInterval,
		DrainTimeout: cfg.KafkaDrainTimeout, ShutdownTimeout: cfg.ShutdownTimeout,
		FetchMode: cfg.KafkaFetcher, MinBytes: cfg.KafkaMinBytes, MaxBytes: cfg.KafkaMaxBytes, MaxWait: cfg.KafkaMaxWait, QueueCapacity: cfg.KafkaQueueCapacity,
		MaxRunAhead: cfg.KafkaMaxRunAhead, MaxInflightBytes: cfg.MaxInflightBytes,
		Lanes: cfg.Lanes, LaneQueue: cfg.LaneQueue, Linger: cfg.BatchLinger,
		Limits:       batcher.Limits{Mode: batcher.Mode(cfg.BatchLimitMode), MaxObjects: cfg.BatchMaxObjects, MaxBytes: cfg.BatchMaxBytes},
		RetryInitial: cfg.RetryInitial, RetryMax: cfg.RetryMax, RetryMaxDuration: cfg.RetryMaxDuration, HaltProbeMax: cfg.HaltProbeMax,
		Logger: log, TracerProvider: tel.TracerProvider, MeterProvider: tel.MeterProvider, Optimize: optimize,
		NewDecoder: newDecoder,
	}, guard, dlq)
	if err != nil {
		return err
	}
	if segment != nil {
		if err := registerSegmentMetrics(tel.MeterProvider, segment); err != nil {
			return fmt.Errorf("telemetry: %w", err)
		}
	}

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("HTTP_ADDR %s: %w", cfg.HTTPAddr, err)
	}
	srv := &http.Server{Handler: httpHandler(p, tel.MetricsHandler()), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "error", err)
		}
	}()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("worker starting", "version", version, "topics", cfg.KafkaTopics, "group", cfg.KafkaGroupID,
		"dlq_topic", cfg.KafkaDLQTopic, "braze_endpoint", cfg.BrazeEndpoint, "http", ln.Addr().String(),
		"lanes", cfg.Lanes, "limit_mode", cfg.BatchLimitMode)
	if hooks != nil && hooks.started != nil {
		hooks.started(p, ln.Addr().String())
	}
	return p.Run(ctx)
}

// httpHandler serves the health probes (and, with telemetry, /metrics) on one port.
func httpHandler(p *pipeline.Pipeline, metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) {
		if !p.Alive(15 * time.Second) {
			http.Error(w, "run loop stalled", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case p.Halted():
			http.Error(w, "halted: Braze refuses the key or endpoint", http.StatusServiceUnavailable)
		case p.Paused():
			http.Error(w, "paused: circuit breaker open, Braze considered down", http.StatusServiceUnavailable)
		case !p.Ready():
			http.Error(w, "not in the consumer group yet", http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "ok")
		}
	})
	return mux
}

// registerSegmentMetrics exports the Segment decoder's counts: messages by call and outcome,
// and fields dropped because Braze would refuse them.
func registerSegmentMetrics(mp metric.MeterProvider, seg *schemas.SegmentDecoder) error {
	m := mp.Meter("github.com/braze-ingestor/braze-ingestor/schemas")
	msgs, err := m.Int64ObservableCounter("ingestor.segment.messages", metric.WithUnit("{message}"),
		metric.WithDescription("Segment-spec messages by call (identify, track, order_completed, page, screen, group, alias, invalid) and outcome (mapped, skipped, dead_lettered)."))
	if err != nil {
		return err
	}
	dropped, err := m.Int64ObservableCounter("ingestor.segment.dropped_fields", metric.WithUnit("{field}"),
		metric.WithDescription("Segment fields left out because Braze would refuse them (reserved or invalid keys)."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		seg.EachCount(func(call schemas.SegmentCall, outcome schemas.SegmentOutcome, n int64) {
			o.ObserveInt64(msgs, n, metric.WithAttributes(attribute.String("call", call.String()), attribute.String("outcome", outcome.String())))
		})
		o.ObserveInt64(dropped, seg.DroppedFields())
		return nil
	}, msgs, dropped)
	return err
}
