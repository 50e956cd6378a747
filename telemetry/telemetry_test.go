package telemetry

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// clearOTELEnv blanks every OTEL_* variable the SDK or Setup reads, so the developer's
// environment cannot leak into a test.
func clearOTELEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{
		"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
		"OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER",
		"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
		"OTEL_EXPORTER_OTLP_INSECURE", "OTEL_EXPORTER_OTLP_TRACES_INSECURE", "OTEL_EXPORTER_OTLP_METRICS_INSECURE",
		"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_COMPRESSION", "OTEL_METRIC_EXPORT_INTERVAL",
	} {
		t.Setenv(k, "")
	}
}

func envMap(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestOTLPProtocol(t *testing.T) {
	cases := []struct {
		name            string
		env             map[string]string
		traces, metrics string
	}{
		{"nothing set", nil, "", ""},
		{"protocol without endpoint", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "", ""},
		{"endpoint: default http/protobuf", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "http/protobuf", "http/protobuf"},
		{"endpoint + grpc", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc", "grpc"},
		{"per-signal protocol wins", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
			"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf"}, "grpc", "http/protobuf"},
		{"traces endpoint only", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, "http/protobuf", ""},
		{"metrics endpoint only", map[string]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4318/v1/metrics"}, "", "http/protobuf"},
		{"traces exporter none", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, "", "http/protobuf"},
		{"metrics exporter NONE", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_METRICS_EXPORTER": "NONE"}, "http/protobuf", ""},
		{"exporter otlp explicit", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "otlp"}, "http/protobuf", "http/protobuf"},
		{"unsupported exporter", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_METRICS_EXPORTER": "prometheus"}, "http/protobuf", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := envMap(c.env)
			if got := otlpProtocol(g, "TRACES"); got != c.traces {
				t.Errorf("traces: %q, want %q", got, c.traces)
			}
			if got := otlpProtocol(g, "METRICS"); got != c.metrics {
				t.Errorf("metrics: %q, want %q", got, c.metrics)
			}
		})
	}
}

// TestSetupPrometheusOnly: with no OTLP configuration, no exporter runs, the providers are
// global, test exporters receive data, and /metrics shows it with the resource.
func TestSetupPrometheusOnly(t *testing.T) {
	clearOTELEnv(t)
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
	spans := tracetest.NewInMemoryExporter()
	reader := sdkmetric.NewManualReader()
	tel, err := Setup(context.Background(), Options{ServiceName: "svc-a", ServiceVersion: "1.2.3", SpanExporter: spans, MetricReader: reader})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	if tel.OTLPTraces != "" || tel.OTLPMetrics != "" {
		t.Errorf("OTLP exporters running without an endpoint: %q %q", tel.OTLPTraces, tel.OTLPMetrics)
	}
	if otel.GetTracerProvider() != trace.TracerProvider(tel.TracerProvider) || otel.GetMeterProvider() != metric.MeterProvider(tel.MeterProvider) {
		t.Error("providers are not installed globally")
	}

	// The global propagator speaks W3C trace context.
	ctx, span := tel.TracerProvider.Tracer("t").Start(context.Background(), "op")
	carrier := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(ctx, carrier)
	if tp := carrier["traceparent"]; !strings.HasPrefix(tp, "00-"+span.SpanContext().TraceID().String()) {
		t.Errorf("traceparent %q", tp)
	}
	span.End()
	if got := spans.GetSpans(); len(got) != 1 || got[0].Name != "op" {
		t.Errorf("in-memory exporter got %v (spans must be exported synchronously)", got)
	} else if v, _ := got[0].Resource.Set().Value("service.name"); v.AsString() != "svc-a" {
		t.Errorf("span resource service.name %q", v.AsString())
	}

	c, _ := tel.MeterProvider.Meter("m").Int64Counter("test.things", metric.WithUnit("{thing}"))
	c.Add(context.Background(), 3, metric.WithAttributes(attribute.String("colour.name", "red")))
	h, _ := tel.MeterProvider.Meter("m").Float64Histogram("test.latency", metric.WithUnit("s"))
	h.Record(context.Background(), 0.2)
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil || len(rm.ScopeMetrics) != 1 {
		t.Fatalf("manual reader: %v %v", err, rm.ScopeMetrics)
	}

	body := get(t, tel.MetricsHandler())
	for _, want := range []string{
		"# TYPE test_things_total counter",
		`test_things_total{colour_name="red",otel_scope_name="m",otel_scope_schema_url="",otel_scope_version=""} 3`,
		"# TYPE test_latency_seconds histogram",
		`test_latency_seconds_count{otel_scope_name="m",otel_scope_schema_url="",otel_scope_version=""} 1`,
		`service_name="svc-a"`, `service_version="1.2.3"`, `deployment_environment="test"`, "# TYPE target_info gauge",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
}

func get(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d", rec.Code)
	}
	return rec.Body.String()
}

// TestSetupServiceNameFromEnv: OTEL_SERVICE_NAME overrides the default name.
func TestSetupServiceNameFromEnv(t *testing.T) {
	clearOTELEnv(t)
	t.Setenv("OTEL_SERVICE_NAME", "ingestor-eu")
	tel, err := Setup(context.Background(), Options{ServiceName: "braze-ingestor"})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	if body := get(t, tel.MetricsHandler()); !strings.Contains(body, `service_name="ingestor-eu"`) {
		t.Errorf("OTEL_SERVICE_NAME not applied:\n%s", body)
	}
}

// Two Setups (e.g. two workers in one test binary) keep separate /metrics registries.
func TestSetupRegistriesAreSeparate(t *testing.T) {
	clearOTELEnv(t)
	a, err := Setup(context.Background(), Options{ServiceName: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	b, err := Setup(context.Background(), Options{ServiceName: "b"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown(context.Background())
	c, _ := a.MeterProvider.Meter("m").Int64Counter("only.in.a")
	c.Add(context.Background(), 1)
	if strings.Contains(get(t, b.MetricsHandler()), "only_in_a") {
		t.Error("b's /metrics shows a's metric")
	}
	if !strings.Contains(get(t, a.MetricsHandler()), "only_in_a_total") {
		t.Error("a's /metrics lacks its metric")
	}
}

// otlpHTTPCollector records OTLP/HTTP requests.
type otlpHTTPCollector struct {
	mu      sync.Mutex
	spans   []string // span names
	metrics []string // metric names
	ctypes  []string
	service []string
}

func (c *otlpHTTPCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ctypes = append(c.ctypes, r.URL.Path+" "+r.Header.Get("Content-Type"))
	switch r.URL.Path {
	case "/v1/traces":
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		for _, rs := range req.ResourceSpans {
			for _, a := range rs.Resource.Attributes {
				if a.Key == "service.name" {
					c.service = append(c.service, a.Value.GetStringValue())
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					c.spans = append(c.spans, s.Name)
				}
			}
		}
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	case "/v1/metrics":
		var req colmetricpb.ExportMetricsServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		for _, rm := range req.ResourceMetrics {
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					c.metrics = append(c.metrics, m.Name)
				}
			}
		}
		out, _ := proto.Marshal(&colmetricpb.ExportMetricsServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	default:
		http.NotFound(w, r)
	}
}

// TestSetupOTLPHTTP exports spans and metrics over OTLP/HTTP to a local collector.
func TestSetupOTLPHTTP(t *testing.T) {
	clearOTELEnv(t)
	col := &otlpHTTPCollector{}
	srv := httptest.NewServer(col)
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	tel, err := Setup(context.Background(), Options{ServiceName: "braze-ingestor"})
	if err != nil {
		t.Fatal(err)
	}
	if tel.OTLPTraces != "http/protobuf" || tel.OTLPMetrics != "http/protobuf" {
		t.Fatalf("OTLP: traces %q metrics %q", tel.OTLPTraces, tel.OTLPMetrics)
	}
	_, span := tel.TracerProvider.Tracer("t").Start(context.Background(), "POST /users/track")
	span.End()
	c, _ := tel.MeterProvider.Meter("m").Int64Counter("ingestor.test")
	c.Add(context.Background(), 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := tel.Shutdown(ctx); err != nil { // flushes both
		t.Fatalf("shutdown: %v", err)
	}
	t.Logf("shutdown flushed in %s", time.Since(start).Round(time.Millisecond))
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.spans) != 1 || col.spans[0] != "POST /users/track" || len(col.service) == 0 || col.service[0] != "braze-ingestor" {
		t.Errorf("collector spans %v service %v", col.spans, col.service)
	}
	if !contains(col.metrics, "ingestor.test") {
		t.Errorf("collector metrics %v", col.metrics)
	}
	for _, ct := range col.ctypes {
		if !strings.HasSuffix(ct, "application/x-protobuf") {
			t.Errorf("request %s", ct)
		}
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

type grpcCollector struct {
	coltracepb.UnimplementedTraceServiceServer
	mu      sync.Mutex
	spans   []string
	metrics []string
}

func (g *grpcCollector) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				g.spans = append(g.spans, s.Name)
			}
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

type grpcMetrics struct{ g *grpcCollector }

func (m grpcMetrics) Export(_ context.Context, req *colmetricpb.ExportMetricsServiceRequest) (*colmetricpb.ExportMetricsServiceResponse, error) {
	m.g.mu.Lock()
	defer m.g.mu.Unlock()
	for _, rm := range req.ResourceMetrics {
		for _, sm := range rm.ScopeMetrics {
			for _, x := range sm.Metrics {
				m.g.metrics = append(m.g.metrics, x.Name)
			}
		}
	}
	return &colmetricpb.ExportMetricsServiceResponse{}, nil
}

type grpcMetricsServer struct {
	colmetricpb.UnimplementedMetricsServiceServer
	grpcMetrics
}

func (s grpcMetricsServer) Export(ctx context.Context, req *colmetricpb.ExportMetricsServiceRequest) (*colmetricpb.ExportMetricsServiceResponse, error) {
	return s.grpcMetrics.Export(ctx, req)
}

// TestSetupOTLPGRPC exports spans and metrics over OTLP/gRPC to a local collector.
func TestSetupOTLPGRPC(t *testing.T) {
	clearOTELEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	col := &grpcCollector{}
	gs := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(gs, col)
	colmetricpb.RegisterMetricsServiceServer(gs, grpcMetricsServer{grpcMetrics: grpcMetrics{col}})
	go func() { _ = gs.Serve(ln) }()
	defer gs.Stop()

	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+ln.Addr().String()) // http:// = insecure
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	tel, err := Setup(context.Background(), Options{ServiceName: "braze-ingestor"})
	if err != nil {
		t.Fatal(err)
	}
	if tel.OTLPTraces != "grpc" || tel.OTLPMetrics != "grpc" {
		t.Fatalf("OTLP: traces %q metrics %q", tel.OTLPTraces, tel.OTLPMetrics)
	}
	_, span := tel.TracerProvider.Tracer("t").Start(context.Background(), "dlq publish")
	span.End()
	c, _ := tel.MeterProvider.Meter("m").Int64Counter("ingestor.test")
	c.Add(context.Background(), 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tel.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if !contains(col.spans, "dlq publish") || !contains(col.metrics, "ingestor.test") {
		t.Errorf("collector got spans %v metrics %v", col.spans, col.metrics)
	}
}

// TestSetupOTLPUnreachable: an unreachable collector does not fail Setup, and Shutdown is
// bounded by its context.
func TestSetupOTLPUnreachable(t *testing.T) {
	clearOTELEnv(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close() // nothing listens here now
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+addr)
	tel, err := Setup(context.Background(), Options{ServiceName: "x"})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.TracerProvider.Tracer("t").Start(context.Background(), "op")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_ = tel.Shutdown(ctx) // an export error is expected
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("shutdown took %s with a 2s context", d)
	}
}

// TestSetupLoggerGetsSDKErrors: with Options.Logger, the SDK's export errors are JSON log
// lines of the worker's logger.
func TestSetupLoggerGetsSDKErrors(t *testing.T) {
	clearOTELEnv(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://"+addr+"/v1/traces")
	var buf syncBuf
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	tel, err := Setup(context.Background(), Options{ServiceName: "x", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer otel.SetErrorHandler(otel.ErrorHandlerFunc(func(error) {}))
	_, span := tel.TracerProvider.Tracer("t").Start(context.Background(), "op")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = tel.Shutdown(ctx)
	out := buf.String()
	if !strings.Contains(out, `"msg":"telemetry export problem"`) || !strings.Contains(out, `"component":"opentelemetry"`) || !strings.Contains(out, "connection refused") {
		t.Errorf("SDK export error not logged as JSON: %q", out)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(line, "{") {
			t.Errorf("non-JSON log line %q", line)
		}
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
