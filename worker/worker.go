// Package worker assembles the ingestor worker from its configuration: the Braze client
// behind the guard (rate limiter and circuit breaker), the DLQ writer (dlq.NewWriter), the optimization
// store, telemetry, the pipeline and the HTTP port. cmd/ingestor only reads the environment
// and calls Run; the benchmarks run the same assembly.
package worker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/braze-ingestor/braze-ingestor/batcher"
	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"github.com/braze-ingestor/braze-ingestor/pipeline"
	"github.com/braze-ingestor/braze-ingestor/schemas"
	"github.com/braze-ingestor/braze-ingestor/sink"
	"github.com/braze-ingestor/braze-ingestor/telemetry"
)

// Options are what a caller adds to the configuration: none is needed to run the worker.
type Options struct {
	// Version is reported in logs, telemetry and the Braze User-Agent ("dev" when empty).
	Version string
	// Started is called once the pipeline is built and the HTTP port listens.
	Started func(p *pipeline.Pipeline, httpAddr string)
	// Telemetry may adjust the telemetry options (tests add exporters).
	Telemetry func(*telemetry.Options)
	// Transport replaces the Braze client's HTTP transport (benchmark experiments).
	Transport http.RoundTripper
}

// DefaultGCPercent is the worker's GOGC when the environment sets none. Its heap is mostly
// record bytes in flight, bounded by back-pressure (lanes and fetch buffers), so a larger
// heap costs a fixed amount of memory while halving the collector's work (BENCHMARKS.md).
// GOGC and GOMEMLIMIT in the environment are honoured as usual.
const DefaultGCPercent = 200

// SetGCPercent applies DefaultGCPercent unless GOGC is set.
func SetGCPercent() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(DefaultGCPercent)
	}
}

// NewLogger is the worker's JSON logger at level (debug, info, warn or error).
func NewLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(strings.ToUpper(level)))
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

// Run assembles the worker from cfg and runs it until ctx ends.
func Run(ctx context.Context, cfg *Config, log *slog.Logger, o Options) error {
	if o.Version == "" {
		o.Version = "dev"
	}
	tlsCfg, mech, err := KafkaSecurity(cfg)
	if err != nil {
		return err
	}
	client, err := sink.NewClient(sink.ClientConfig{
		Endpoint: cfg.BrazeEndpoint, APIKey: cfg.BrazeAPIKey, Timeout: cfg.BrazeHTTPTimeout,
		MaxIdleConns: cfg.Lanes, UserAgent: "braze-ingestor/" + o.Version, Transport: o.Transport,
	})
	if err != nil {
		return err
	}
	guard := newGuard(cfg, client, log)
	tel, err := setupTelemetry(ctx, o, log)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(sctx)
	}()
	dlqw := dlq.NewWriter(dlq.WriterConfig{Brokers: cfg.KafkaBrokers, Topic: cfg.KafkaDLQTopic, Transport: KafkaTransport(tlsCfg, mech),
		MaxMessageBytes: cfg.KafkaMaxBytes})
	defer dlqw.Close()
	optimize, closeStore, err := optimizeConfig(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeStore()
	newDecoder, segment := cfg.newDecoders()
	pc := pipelineConfig(cfg)
	pc.Dialer = KafkaDialer(tlsCfg, mech)
	pc.Logger, pc.TracerProvider, pc.MeterProvider = log, tel.TracerProvider, tel.MeterProvider
	pc.Optimize, pc.NewDecoder = optimize, newDecoder
	p, err := pipeline.New(pc, guard, dlqw)
	if err != nil {
		return err
	}
	if segment != nil {
		if err := registerSegmentMetrics(tel.MeterProvider, segment); err != nil {
			return fmt.Errorf("telemetry: %w", err)
		}
	}
	addr, stopHTTP, err := serveHTTP(cfg.HTTPAddr, Handler(p, tel.MetricsHandler()), log)
	if err != nil {
		return err
	}
	defer stopHTTP()
	log.Info("worker starting", "version", o.Version, "topics", cfg.KafkaTopics, "group", cfg.KafkaGroupID,
		"dlq_topic", cfg.KafkaDLQTopic, "braze_endpoint", cfg.BrazeEndpoint, "http", addr,
		"lanes", cfg.Lanes, "limit_mode", cfg.BatchLimitMode, "endpoints", cfg.Endpoints)
	if o.Started != nil {
		o.Started(p, addr)
	}
	return p.Run(ctx)
}

// setupTelemetry starts tracing and metrics (o.Telemetry may adjust the options).
func setupTelemetry(ctx context.Context, o Options, log *slog.Logger) (*telemetry.Telemetry, error) {
	topts := telemetry.Options{ServiceName: "braze-ingestor", ServiceVersion: o.Version, Logger: log}
	if o.Telemetry != nil {
		o.Telemetry(&topts)
	}
	tel, err := telemetry.Setup(ctx, topts)
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	return tel, nil
}

// pipelineConfig is the part of the pipeline's configuration that comes from cfg.
func pipelineConfig(cfg *Config) pipeline.Config {
	start := kafka.FirstOffset
	if cfg.KafkaStartOffset == "latest" {
		start = kafka.LastOffset
	}
	spacing, _ := pipeline.ParseSpacing(cfg.EndpointSpacing) // validated with the configuration
	return pipeline.Config{
		Spacing: &spacing,
		Brokers: cfg.KafkaBrokers, Topics: cfg.KafkaTopics, GroupID: cfg.KafkaGroupID, StartOffset: start,
		CommitInterval: cfg.KafkaCommitInterval, SessionTimeout: cfg.KafkaSessionTimeout,
		RebalanceTimeout: cfg.KafkaRebalanceTimeout, HeartbeatInterval: cfg.KafkaHeartbeatInterval,
		DrainTimeout: cfg.KafkaDrainTimeout, ShutdownTimeout: cfg.ShutdownTimeout,
		FetchMode: cfg.KafkaFetcher, MinBytes: cfg.KafkaMinBytes, MaxBytes: cfg.KafkaMaxBytes, MaxWait: cfg.KafkaMaxWait, QueueCapacity: cfg.KafkaQueueCapacity,
		MaxRunAhead: cfg.KafkaMaxRunAhead, MaxInflightBytes: int64(cfg.MaxInflightBytes),
		Lanes: cfg.Lanes, LaneQueue: cfg.LaneQueue, Linger: cfg.BatchLinger, MaxLatency: cfg.MaxLatency,
		Limits:       batcher.Limits{Mode: batcher.Mode(cfg.BatchLimitMode), MaxObjects: cfg.BatchMaxObjects, MaxBytes: cfg.BatchMaxBytes},
		RetryInitial: cfg.RetryInitial, RetryMax: cfg.RetryMax, RetryMaxDuration: cfg.RetryMaxDuration, HaltProbeMax: cfg.HaltProbeMax,
		UserMinSpacing: cfg.UserMinSpacing, Isolate5xxAfter: isolateAfter(cfg.Isolate5xxAfter), StuckAfter: cfg.LivenessStuckAfter,
		Endpoints: cfg.EnabledEndpoints(),
	}
}

// newGuard puts the rate limiters (one per rate-limit group: BRAZE_RATE_LIMIT for
// /users/track, BRAZE_USERS_RATE_LIMIT and BRAZE_SUBSCRIPTION_RATE_LIMIT per minute) and the
// circuit breaker in front of client.
func newGuard(cfg *Config, client *sink.Client, log *slog.Logger) *sink.Guard {
	guard := sink.NewGuard(client, sink.NewLimiter(cfg.BrazeRateLimit, cfg.BrazeRateBurst),
		sink.BreakerConfig{Failures: cfg.BreakerFailures, OpenFor: cfg.BreakerOpenFor}, log)
	guard.SetGroupLimiter(endpoint.GroupUsers, sink.PerMinuteLimiter(cfg.BrazeUsersRateLimit))
	guard.SetGroupLimiter(endpoint.GroupSubscription, sink.PerMinuteLimiter(cfg.BrazeSubscriptionRateLimit))
	return guard
}

// isolateAfter maps ISOLATE_5XX_AFTER (0 = never) to pipeline.Config.Isolate5xxAfter (< 0 = never).
func isolateAfter(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
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
