// Package telemetry sets up OpenTelemetry for the worker: a Prometheus exposition of every
// metric at /metrics, and OTLP export of traces and metrics when the standard OTEL_*
// environment variables ask for it. With no OTLP endpoint configured, no exporter runs.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Options configure Setup. The OTEL_* environment variables are read by the SDK itself
// (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG),
// OTEL_EXPORTER_OTLP_*).
type Options struct {
	ServiceName    string // default when OTEL_SERVICE_NAME is unset
	ServiceVersion string
	// SpanExporter / MetricReader add exporters (tests use the SDK's in-memory ones).
	SpanExporter sdktrace.SpanExporter
	MetricReader sdkmetric.Reader
	// Getenv overrides os.Getenv (tests).
	Getenv func(string) string
	// Logger, when set, receives the SDK's own errors (failed OTLP exports, dropped data)
	// and internal diagnostics, so they come out as the worker's JSON log lines instead of
	// plain text from the standard log package.
	Logger *slog.Logger
}

// Telemetry owns the providers; call Shutdown on exit to flush.
type Telemetry struct {
	TracerProvider *sdktrace.TracerProvider
	MeterProvider  *sdkmetric.MeterProvider
	registry       *prometheus.Registry
	// OTLPTraces / OTLPMetrics report which OTLP exporters run ("", "grpc" or "http/protobuf").
	OTLPTraces, OTLPMetrics string
}

// Setup builds the providers and installs them as the global OTel providers, with the W3C
// trace-context propagator.
func Setup(ctx context.Context, o Options) (*Telemetry, error) {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", o.ServiceName), attribute.String("service.version", o.ServiceVersion)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override
		resource.WithTelemetrySDK(), resource.WithHost(), resource.WithProcessPID())
	if err != nil && res == nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	t := &Telemetry{registry: prometheus.NewRegistry()}

	promExp, err := otelprom.New(otelprom.WithRegisterer(t.registry))
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	mopts := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithReader(promExp)}
	if o.MetricReader != nil {
		mopts = append(mopts, sdkmetric.WithReader(o.MetricReader))
	}
	if proto := otlpProtocol(getenv, "METRICS"); proto != "" {
		exp, err := newMetricExporter(ctx, proto)
		if err != nil {
			return nil, err
		}
		mopts = append(mopts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(15*time.Second))))
		t.OTLPMetrics = proto
	}
	t.MeterProvider = sdkmetric.NewMeterProvider(mopts...)

	topts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)} // sampler from OTEL_TRACES_SAMPLER
	if o.SpanExporter != nil {
		topts = append(topts, sdktrace.WithSyncer(o.SpanExporter))
	}
	if proto := otlpProtocol(getenv, "TRACES"); proto != "" {
		exp, err := newSpanExporter(ctx, proto)
		if err != nil {
			return nil, err
		}
		topts = append(topts, sdktrace.WithBatcher(exp))
		t.OTLPTraces = proto
	}
	if o.SpanExporter == nil && t.OTLPTraces == "" {
		// Nothing would leave the process: sample nothing, so spans cost (almost) nothing
		// on the hot path instead of being built and dropped.
		topts = append(topts, sdktrace.WithSampler(sdktrace.NeverSample()))
	}
	t.TracerProvider = sdktrace.NewTracerProvider(topts...)

	if o.Logger != nil {
		l := o.Logger.With("component", "opentelemetry")
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { l.Warn("telemetry export problem", "error", err) }))
		otel.SetLogger(logr.FromSlogHandler(l.Handler()))
	}
	otel.SetTracerProvider(t.TracerProvider)
	otel.SetMeterProvider(t.MeterProvider)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return t, nil
}

// otlpProtocol says whether OTLP export of signal ("TRACES" or "METRICS") is configured, and
// with which protocol. An exporter set to "none", or no endpoint at all, means no export.
func otlpProtocol(getenv func(string) string, signal string) string {
	switch strings.ToLower(getenv("OTEL_" + signal + "_EXPORTER")) {
	case "none":
		return ""
	case "", "otlp":
	default:
		return "" // only OTLP is built in; Prometheus is always on at /metrics
	}
	if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_"+signal+"_ENDPOINT") == "" {
		return ""
	}
	proto := getenv("OTEL_EXPORTER_OTLP_" + signal + "_PROTOCOL")
	if proto == "" {
		proto = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	switch proto {
	case "grpc":
		return "grpc"
	default:
		return "http/protobuf" // the spec's default
	}
}

func newSpanExporter(ctx context.Context, proto string) (sdktrace.SpanExporter, error) {
	if proto == "grpc" {
		return otlptracegrpc.New(ctx)
	}
	return otlptracehttp.New(ctx)
}

func newMetricExporter(ctx context.Context, proto string) (sdkmetric.Exporter, error) {
	if proto == "grpc" {
		return otlpmetricgrpc.New(ctx)
	}
	return otlpmetrichttp.New(ctx)
}

// MetricsHandler serves the Prometheus exposition.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{})
}

// Shutdown flushes and stops the providers.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	return errors.Join(t.TracerProvider.Shutdown(ctx), t.MeterProvider.Shutdown(ctx))
}
