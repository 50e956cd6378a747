package main

// Telemetry end-to-end tests: spans, span links, metrics, the Prometheus exposition as a real
// Prometheus server scrapes it, the alert rules, and what the logs and telemetry must never
// contain (secrets, record contents at info level).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/braze-ingestor/braze-ingestor/brazesim"
	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/pipeline"
	"github.com/braze-ingestor/braze-ingestor/synth"
	"github.com/braze-ingestor/braze-ingestor/telemetry"
)

const pipelineScope = "github.com/braze-ingestor/braze-ingestor/pipeline"

// Distinctive values the logs must not show at info level (record contents).
const (
	markerInvalidValue = "MARKER-PII-INVALID-7f3a" // the offending value of an invalid record
	markerInvalidOther = "MARKER-PII-NOTE-7f3a"    // another field of that invalid record
	markerValid        = "MARKER-PII-VALID-7f3a"   // a field of a delivered record
	markerBadJSON      = "MARKER-PII-BADJSON-7f3a" // inside a message that is not JSON
)

// ---- harness -------------------------------------------------------------------------------

// keptSpans is the SDK's in-memory exporter minus its Shutdown, which would drop the spans
// when the worker exits (the final commit's span is recorded during shutdown).
type keptSpans struct{ *tracetest.InMemoryExporter }

func (keptSpans) Shutdown(context.Context) error { return nil }

// syncBuffer collects the worker's log lines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type telWorker struct {
	p      *pipeline.Pipeline
	addr   string // the worker's HTTP address (/metrics, /livez, /readyz)
	spans  *tracetest.InMemoryExporter
	reader *sdkmetric.ManualReader
	logs   *syncBuffer
	stop   func()
}

// startTelWorker runs the worker in-process with in-memory span and metric exporters and its
// logs (at level) going into a buffer.
func startTelWorker(t *testing.T, cfg *Config, level string) *telWorker {
	t.Helper()
	w := &telWorker{spans: tracetest.NewInMemoryExporter(), reader: sdkmetric.NewManualReader(), logs: &syncBuffer{}}
	logger := newLogger(w.logs, level)
	ctx, cancel := context.WithCancel(context.Background())
	type startedT struct {
		p    *pipeline.Pipeline
		addr string
	}
	started := make(chan startedT, 1)
	done := make(chan error, 1)
	hooks := &workerHooks{
		started: func(p *pipeline.Pipeline, addr string) { started <- startedT{p, addr} },
		telemetry: func(o *telemetry.Options) {
			o.SpanExporter = keptSpans{w.spans}
			o.MetricReader = w.reader
			o.Getenv = func(string) string { return "" } // never export OTLP from a test
			o.Logger = logger                            // SDK errors as JSON lines (runWorker does not set it yet)
		},
	}
	go func() { done <- runWorker(ctx, cfg, logger, hooks) }()
	select {
	case s := <-started:
		w.p, w.addr = s.p, s.addr
	case err := <-done:
		cancel()
		t.Fatalf("worker did not start: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("worker did not start within 30s")
	}
	var once sync.Once
	w.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("worker: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("worker did not stop within 30s")
			}
		})
	}
	t.Cleanup(func() {
		w.stop()
		if t.Failed() {
			t.Logf("worker log:\n%s", tail(w.logs.String(), 6000))
		}
	})
	return w
}

// tracedMsg is a produced message that carries a producer's span context.
type tracedMsg struct {
	sc    trace.SpanContext
	msg   synth.Message
	index int
}

// telProducer writes messages with optional trace headers.
type telProducer struct {
	w      *kafka.Writer
	traced map[trace.SpanID]*tracedMsg // by the producer span id (unique per message)
	n      int
}

func newTelProducer(t *testing.T, brokers []string, topic string, tr *kafka.Transport) *telProducer {
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{}, BatchSize: 500,
		BatchTimeout: 5 * time.Millisecond, RequiredAcks: kafka.RequireAll}
	if tr != nil {
		w.Transport = tr
	}
	t.Cleanup(func() { _ = w.Close() })
	return &telProducer{w: w, traced: map[trace.SpanID]*tracedMsg{}}
}

// producerSpanContext makes the i-th producer span context: recognisable ids, every other
// one unsampled (links must not depend on the sampled flag), every third with a tracestate.
func producerSpanContext(i int) trace.SpanContext {
	tid, _ := trace.TraceIDFromHex(fmt.Sprintf("4bf92f3577b34da6%016x", i+1))
	sid, _ := trace.SpanIDFromHex(fmt.Sprintf("00f067aa%08x", i+1))
	cfg := trace.SpanContextConfig{TraceID: tid, SpanID: sid, Remote: true}
	if i%2 == 0 {
		cfg.TraceFlags = trace.FlagsSampled
	}
	if i%3 == 0 {
		ts, _ := trace.ParseTraceState("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
		cfg.TraceState = ts
	}
	return trace.NewSpanContext(cfg)
}

func traceparent(sc trace.SpanContext) string {
	return fmt.Sprintf("00-%s-%s-%s", sc.TraceID(), sc.SpanID(), sc.TraceFlags())
}

// send writes msgs. headerMode(i) says what trace headers message i gets: "traced" (a valid
// traceparent, maybe a tracestate), "bad" (malformed or all-zero traceparent: no link), or ""
// (no headers at all).
func (tp *telProducer) send(t *testing.T, msgs []synth.Message, headerMode func(i int) string) {
	t.Helper()
	batch := make([]kafka.Message, 0, len(msgs))
	for _, m := range msgs {
		i := tp.n
		tp.n++
		km := kafka.Message{Key: m.Key, Value: m.Value}
		switch headerMode(i) {
		case "traced":
			sc := producerSpanContext(i)
			km.Headers = append(km.Headers, kafka.Header{Key: "traceparent", Value: []byte(traceparent(sc))})
			if ts := sc.TraceState().String(); ts != "" {
				km.Headers = append(km.Headers, kafka.Header{Key: "tracestate", Value: []byte(ts)})
			}
			km.Headers = append(km.Headers, kafka.Header{Key: "content-type", Value: []byte("application/json")})
			tp.traced[sc.SpanID()] = &tracedMsg{sc: sc, msg: m, index: i}
		case "bad":
			v := "00-00000000000000000000000000000000-00f067aa0ba902b7-01" // all-zero trace id: invalid
			if i%2 == 0 {
				v = "not-a-traceparent"
			}
			km.Headers = append(km.Headers, kafka.Header{Key: "traceparent", Value: []byte(v)})
		}
		batch = append(batch, km)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := tp.w.WriteMessages(ctx, batch...); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// markerMessages are hand-made messages with distinctive contents: an invalid record, a
// delivered record and a message that is not JSON.
func markerMessages() []synth.Message {
	return []synth.Message{
		{Key: []byte("user-marker-1"), Value: []byte(`{"type":"event","data":{"external_id":"user-marker-1","name":"viewed_product","time":"` +
			markerInvalidValue + `","properties":{"note":"` + markerInvalidOther + `"}}}`),
			Records: []synth.Record{{Kind: "event", User: "user-marker-1", Outcome: synth.Invalid}}},
		{Key: []byte("user-marker-2"), Value: []byte(`{"type":"event","data":{"external_id":"user-marker-2","name":"viewed_product","time":"2026-11-25T10:00:00Z","properties":{"seq":0,"note":"` +
			markerValid + `"}}}`),
			Records: []synth.Record{{Kind: "event", User: "user-marker-2", Outcome: synth.Deliver}}},
		{Key: []byte("garbage"), Value: []byte(`{"type":"event","data":{"note":"` + markerBadJSON), WholeInvalid: true},
	}
}

// settle waits until every record is delivered or dead-lettered and every partition's
// offsets are committed up to the last fetched message.
func settle(t *testing.T, p *pipeline.Pipeline, total int, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, "all records settled", func() bool {
		s := p.Stats().Snapshot()
		return s.RecordsDelivered+s.DeadLetteredAll >= int64(total)
	})
	waitFor(t, 10*time.Second, "offsets committed", func() bool {
		for _, l := range p.Lag() {
			if l.Fetched >= 0 && l.Committed != l.Fetched+1 {
				return false
			}
		}
		return true
	})
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func httpGet(t *testing.T, u string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v %s", u, resp.StatusCode, err, tail(string(b), 500))
	}
	return string(b)
}

// ---- attribute and metric helpers ---------------------------------------------------------

func attrMap(kvs []attribute.KeyValue) map[string]attribute.Value {
	m := make(map[string]attribute.Value, len(kvs))
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value
	}
	return m
}

func findMetric(rm *metricdata.ResourceMetrics, name string) (metricdata.Metrics, bool) {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, true
			}
		}
	}
	return metricdata.Metrics{}, false
}

// points returns an int64 counter's or gauge's data points as label-set -> value.
func points(t *testing.T, rm *metricdata.ResourceMetrics, name string) map[string]int64 {
	t.Helper()
	m, ok := findMetric(rm, name)
	if !ok {
		t.Errorf("metric %s missing", name)
		return nil
	}
	out := map[string]int64{}
	key := func(s attribute.Set) string {
		var parts []string
		for _, kv := range s.ToSlice() {
			parts = append(parts, string(kv.Key)+"="+kv.Value.String())
		}
		return strings.Join(parts, ",")
	}
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		if !d.IsMonotonic || d.Temporality != metricdata.CumulativeTemporality {
			t.Errorf("%s: want a cumulative monotonic sum, got monotonic=%v %v", name, d.IsMonotonic, d.Temporality)
		}
		for _, p := range d.DataPoints {
			out[key(p.Attributes)] = p.Value
		}
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			out[key(p.Attributes)] = p.Value
		}
	default:
		t.Errorf("%s: unexpected data %T", name, m.Data)
	}
	return out
}

func total(m map[string]int64, filter string) int64 {
	var n int64
	for k, v := range m {
		if filter == "" || strings.Contains(","+k+",", ","+filter+",") {
			n += v
		}
	}
	return n
}

// histCount returns a histogram's total count and sum over all its data points.
func histCount(t *testing.T, rm *metricdata.ResourceMetrics, name string) (count uint64, sum float64) {
	t.Helper()
	m, ok := findMetric(rm, name)
	if !ok {
		t.Errorf("metric %s missing", name)
		return 0, 0
	}
	switch d := m.Data.(type) {
	case metricdata.Histogram[int64]:
		for _, p := range d.DataPoints {
			count += p.Count
			sum += float64(p.Sum)
		}
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			count += p.Count
			sum += p.Sum
		}
	default:
		t.Errorf("%s: want a histogram, got %T", name, m.Data)
	}
	return count, sum
}

// wantMetrics is every instrument the pipeline registers: name -> unit, and the Prometheus
// family name the OTel Prometheus exporter exposes it under (docs/observability.md).
var wantMetrics = []struct{ name, unit, prom, typ string }{
	{"http.client.request.duration", "s", "http_client_request_duration_seconds", "histogram"},
	{"ingestor.request.objects", "{object}", "ingestor_request_objects", "histogram"},
	{"ingestor.request.body.size", "By", "ingestor_request_body_size_bytes", "histogram"},
	{"ingestor.limiter.wait", "s", "ingestor_limiter_wait_seconds", "histogram"},
	{"ingestor.commit.duration", "s", "ingestor_commit_duration_seconds", "histogram"},
	{"ingestor.records.consumed", "{record}", "ingestor_records_consumed_total", "counter"},
	{"ingestor.records.delivered", "{record}", "ingestor_records_delivered_total", "counter"},
	{"ingestor.records.dead_lettered", "{record}", "ingestor_records_dead_lettered_total", "counter"},
	{"messaging.client.consumed.messages", "{message}", "messaging_client_consumed_messages_total", "counter"},
	{"ingestor.requests", "{request}", "ingestor_requests_total", "counter"},
	{"ingestor.requests.status", "{request}", "ingestor_requests_status_total", "counter"},
	{"ingestor.retries", "{request}", "ingestor_retries_total", "counter"},
	{"ingestor.requests.saved", "{request}", "ingestor_requests_saved_total", "counter"},
	{"ingestor.dlq.writes", "{write}", "ingestor_dlq_writes_total", "counter"},
	{"ingestor.dlq.errors", "{write}", "ingestor_dlq_errors_total", "counter"},
	{"ingestor.commits", "{commit}", "ingestor_commits_total", "counter"},
	{"ingestor.records.in_flight", "{record}", "ingestor_records_in_flight", "gauge"},
	{"ingestor.users.held", "{user}", "ingestor_users_held", "gauge"},
	{"ingestor.inflight.bytes", "By", "ingestor_inflight_bytes", "gauge"},
	{"ingestor.resume.skipped", "{message}", "ingestor_resume_skipped_total", "counter"},
	{"ingestor.offset_map.truncated", "{commit}", "ingestor_offset_map_truncated_total", "counter"},
	{"ingestor.offset_map.ignored", "{partition}", "ingestor_offset_map_ignored_total", "counter"},
	{"ingestor.halted", "{state}", "ingestor_halted", "gauge"},
	{"ingestor.breaker.state", "{state}", "ingestor_breaker_state", "gauge"},
	{"ingestor.request.object_cap", "{object}", "ingestor_request_object_cap", "gauge"},
	{"messaging.kafka.consumer.lag", "{message}", "messaging_kafka_consumer_lag", "gauge"},
	{"ingestor.commit.lag", "{message}", "ingestor_commit_lag", "gauge"},
	{"ingestor.datapoints.saved", "{datapoint}", "ingestor_datapoints_saved_total", "counter"},
	{"ingestor.records.skipped", "{record}", "ingestor_records_skipped_total", "counter"},
	{"ingestor.objects.coalesced", "{object}", "ingestor_objects_coalesced_total", "counter"},
	{"ingestor.optimize.store_errors", "{error}", "ingestor_optimize_store_errors_total", "counter"},
}

// metricAttrSets returns the attribute sets of every data point of m.
func metricAttrSets(m metricdata.Metrics) []attribute.Set {
	var out []attribute.Set
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes)
		}
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes)
		}
	case metricdata.Histogram[int64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes)
		}
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes)
		}
	}
	return out
}

// ---- the end-to-end telemetry test ---------------------------------------------------------

// TestTelemetryEndToEnd runs a few hundred mixed records (some carrying a producer's
// traceparent) through the worker and checks the spans, their links, the metrics, the
// Prometheus exposition, the DLQ's trace headers and that info-level logs hold no record
// contents.
func TestTelemetryEndToEnd(t *testing.T) {
	k := newTestKafka(t, 4)
	sim := newSim(t, nil)
	exp := newExpectation()
	gen := synth.New(synth.Options{Users: 60, InvalidShare: 0.06, RejectShare: 0.06, Seed: 2026})
	var msgs []synth.Message
	for i := 0; i < 320; i++ {
		msgs = append(msgs, gen.Next())
	}
	msgs = append(msgs, markerMessages()...)
	for _, m := range msgs {
		exp.add(m)
	}
	if exp.invalid == 0 || exp.rejected == 0 || exp.badJSON == 0 {
		t.Fatalf("no bad records generated: %+v", exp)
	}
	prod := newTelProducer(t, k.Brokers, k.Topic, nil)
	// 2 of 3 messages carry a valid traceparent, 1 of 12 a malformed one, the rest none.
	prod.send(t, msgs, func(i int) string {
		switch {
		case i%12 == 5:
			return "bad"
		case i%3 != 2:
			return "traced"
		}
		return ""
	})

	// A fifth of the answers are 5xx (every fifth, so that a short run cannot draw none: a
	// 20% rate drew none of 17 requests once): retried requests show up as spans with an
	// error status, error.type and attempt > 1, and in the retry and status-class metrics.
	sim.Sim.SetFaults(brazesim.Faults{Error5xxEvery: 5})
	cfg := testConfig(k, sim, "telemetry")
	cfg.KafkaGroupID = "telemetry" // the assertions below name the group
	cfg.BreakerFailures = 1000     // keep the breaker closed: its 10 s open time would slow the test
	cfg.Lanes = 8
	// Fewer objects per request than MaxSpanLinks, so no request span's links are capped and
	// every traced message must be reachable from a request or DLQ span.
	cfg.BatchMaxObjects = 30
	if cfg.BatchMaxObjects >= pipeline.MaxSpanLinks {
		t.Fatal("test assumes requests below the link cap")
	}
	start := time.Now()
	w := startTelWorker(t, cfg, "info")
	settle(t, w.p, exp.total, 60*time.Second)
	t.Logf("settled in %s", time.Since(start).Round(time.Millisecond))

	// Metrics, collected while the worker still runs (the ManualReader stops with the
	// provider).
	var rm metricdata.ResourceMetrics
	if err := w.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	exposition := httpGet(t, "http://"+w.addr+"/metrics")
	if f := os.Getenv("TELEMETRY_TEST_DUMP"); f != "" {
		_ = os.WriteFile(f, []byte(exposition), 0o644)
	}
	s := w.p.Stats().Snapshot()
	st := w.p.Stats()
	w.stop()
	final := w.p.Stats().Snapshot()

	// The pipeline's own accounting is right (the rest of the test compares against it).
	if s.RecordsDelivered != int64(exp.deliver) {
		t.Errorf("delivered %d records, want %d", s.RecordsDelivered, exp.deliver)
	}
	wantDLQ := map[dlq.Reason]int64{dlq.ReasonInvalidJSON: int64(exp.badJSON),
		dlq.ReasonInvalidRecord: int64(exp.invalid), dlq.ReasonBrazeRejected: int64(exp.rejected)}
	for r, n := range wantDLQ {
		if s.DeadLettered[r] != n {
			t.Errorf("dead-lettered %s: %d, want %d", r, s.DeadLettered[r], n)
		}
	}

	spans := w.spans.GetSpans()
	checkMetrics(t, &rm, s, st, exp, len(msgs))
	dl := readDLQ(t, k)
	checkSpans(t, spans, final, st.DLQWrites.Load()+st.DLQErrors.Load(), st.CommitErrors.Load(), k, prod, dl)
	checkExposition(t, exposition, s)
	checkInfoLogs(t, w.logs.String())
	t.Logf("%d messages (%d traced), %d records: delivered %d, DLQ %v; %d requests, %d spans; %d metrics",
		len(msgs), len(prod.traced), exp.total, s.RecordsDelivered, s.DeadLettered, s.Requests, len(spans), len(rm.ScopeMetrics[0].Metrics))
}

func checkMetrics(t *testing.T, rm *metricdata.ResourceMetrics, s pipeline.Snapshot, st *pipeline.Stats, exp *expectation, messages int) {
	t.Helper()
	if len(rm.ScopeMetrics) != 1 || rm.ScopeMetrics[0].Scope.Name != pipelineScope {
		t.Errorf("want one instrumentation scope %s, got %d", pipelineScope, len(rm.ScopeMetrics))
	}
	if v, ok := rm.Resource.Set().Value("service.name"); !ok || v.AsString() != "braze-ingestor" {
		t.Errorf("resource service.name = %v", v)
	}
	// Every instrument exists with its unit; nothing undocumented is exported.
	names := map[string]bool{}
	for _, w := range wantMetrics {
		names[w.name] = true
		m, ok := findMetric(rm, w.name)
		if !ok {
			t.Errorf("metric %s not exported", w.name)
			continue
		}
		if m.Unit != w.unit {
			t.Errorf("metric %s: unit %q, want %q", w.name, m.Unit, w.unit)
		}
		if m.Description == "" {
			t.Errorf("metric %s has no description", w.name)
		}
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if !names[m.Name] {
				t.Errorf("metric %s (%s) is not in the documented list", m.Name, m.Unit)
			}
		}
	}

	delivered := points(t, rm, "ingestor.records.delivered")
	if total(delivered, "") != s.RecordsDelivered {
		t.Errorf("ingestor.records.delivered = %d, pipeline says %d", total(delivered, ""), s.RecordsDelivered)
	}
	for k, kind := range []string{"attributes", "event", "purchase"} {
		if got, want := total(delivered, "kind="+kind), st.RecordsDelivered[k].Load(); got != want {
			t.Errorf("ingestor.records.delivered{kind=%s} = %d, want %d", kind, got, want)
		}
	}
	consumed := points(t, rm, "ingestor.records.consumed")
	if total(consumed, "") != s.RecordsConsumed {
		t.Errorf("ingestor.records.consumed = %d, pipeline says %d", total(consumed, ""), s.RecordsConsumed)
	}
	dead := points(t, rm, "ingestor.records.dead_lettered")
	for r, n := range map[string]int{"invalid_json": exp.badJSON, "invalid_record": exp.invalid, "braze_rejected": exp.rejected} {
		if got := total(dead, "reason="+r); got != int64(n) {
			t.Errorf("ingestor.records.dead_lettered{reason=%s} = %d, want %d (all %v)", r, got, n, dead)
		}
	}
	if got := total(dead, "kind=message"); got != int64(exp.badJSON) {
		t.Errorf("whole-message dead letters (kind=message) = %d, want %d", got, exp.badJSON)
	}
	if total(dead, "") != s.DeadLetteredAll {
		t.Errorf("dead_lettered total %d, pipeline says %d", total(dead, ""), s.DeadLetteredAll)
	}
	if m := points(t, rm, "messaging.client.consumed.messages"); total(m, "messaging.consumer.group.name=telemetry") != int64(messages) ||
		total(m, "messaging.system=kafka") != int64(messages) {
		t.Errorf("messaging.client.consumed.messages = %v, want %d with the group and system", m, messages)
	}
	reqs := points(t, rm, "ingestor.requests")
	for class, n := range s.RequestsByClass {
		if got := total(reqs, "outcome="+class); got != n {
			t.Errorf("ingestor.requests{outcome=%s} = %d, pipeline says %d", class, got, n)
		}
	}
	if len(reqs) != 5 {
		t.Errorf("ingestor.requests should report all 5 outcomes (zeros too): %v", reqs)
	}
	status := points(t, rm, "ingestor.requests.status")
	if total(status, "status_class=2xx") != s.SuccessRequests || total(status, "") != s.Requests {
		t.Errorf("ingestor.requests.status = %v; want 2xx = %d, all = %d", status, s.SuccessRequests, s.Requests)
	}
	// Expected series exist from the start at 0 (a series first seen with a value loses that
	// increase in rate()): 3 record kinds x 6 record reasons + whole messages x 4 (docs/dlq.md).
	if len(dead) != 22 || len(status) != 6 {
		t.Errorf("want 22 dead_lettered series and 6 status classes, got %d %v and %d %v", len(dead), dead, len(status), status)
	}
	if got := total(points(t, rm, "ingestor.retries"), ""); got != s.Retries || got == 0 {
		t.Errorf("ingestor.retries = %d, want %d (> 0: the simulator answers 5xx)", got, s.Retries)
	}
	if got := total(status, "status_class=5xx"); got != s.RequestsByClass["retry"] || got == 0 {
		t.Errorf("ingestor.requests.status{status_class=5xx} = %d, want %d retried answers", got, s.RequestsByClass["retry"])
	}
	if got := total(points(t, rm, "ingestor.dlq.writes"), ""); got != st.DLQWrites.Load() || got == 0 {
		t.Errorf("ingestor.dlq.writes = %d, pipeline says %d", got, st.DLQWrites.Load())
	}
	if got := total(points(t, rm, "ingestor.dlq.errors"), ""); got != 0 {
		t.Errorf("ingestor.dlq.errors = %d, want 0", got)
	}
	if got := total(points(t, rm, "ingestor.commits"), ""); got != s.Commits || got == 0 {
		t.Errorf("ingestor.commits = %d, pipeline says %d", got, s.Commits)
	}
	if got := total(points(t, rm, "ingestor.records.in_flight"), ""); got != 0 {
		t.Errorf("ingestor.records.in_flight = %d after settling, want 0", got)
	}
	if got := points(t, rm, "ingestor.halted"); len(got) != 1 || total(got, "") != 0 {
		t.Errorf("ingestor.halted = %v, want one point 0", got)
	}
	if got := points(t, rm, "ingestor.breaker.state"); len(got) != 1 || total(got, "") != 0 {
		t.Errorf("ingestor.breaker.state = %v, want one point 0 (closed)", got)
	}
	for _, name := range []string{"messaging.kafka.consumer.lag", "ingestor.commit.lag"} {
		lag := points(t, rm, name)
		if len(lag) != 4 {
			t.Errorf("%s: want one series per partition (4), got %v", name, lag)
		}
		for labels, v := range lag {
			if v != 0 || !strings.Contains(labels, "messaging.destination.partition.id=") || !strings.Contains(labels, "messaging.consumer.group.name=telemetry") {
				t.Errorf("%s{%s} = %d after settling, want 0", name, labels, v)
			}
		}
	}

	// Histograms: one request-duration sample per request; objects and body size per
	// successful request; objects' sum is every object Braze answered with a 2xx.
	if n, _ := histCount(t, rm, "http.client.request.duration"); int64(n) != s.Requests {
		t.Errorf("http.client.request.duration count %d, want %d requests", n, s.Requests)
	}
	if n, sum := histCount(t, rm, "ingestor.request.objects"); int64(n) != s.SuccessRequests || int64(sum) != s.ObjectsSent {
		t.Errorf("ingestor.request.objects count %d sum %v, want %d successful requests with %d objects", n, sum, s.SuccessRequests, s.ObjectsSent)
	}
	if n, sum := histCount(t, rm, "ingestor.request.body.size"); int64(n) != s.SuccessRequests || sum <= 0 {
		t.Errorf("ingestor.request.body.size count %d sum %v, want %d", n, sum, s.SuccessRequests)
	}
	if n, _ := histCount(t, rm, "ingestor.limiter.wait"); int64(n) != s.Requests {
		t.Errorf("ingestor.limiter.wait count %d, want %d", n, s.Requests)
	}
	if n, _ := histCount(t, rm, "ingestor.commit.duration"); int64(n) < s.Commits {
		t.Errorf("ingestor.commit.duration count %d, want at least %d commits", n, s.Commits)
	}
	if m, ok := findMetric(rm, "http.client.request.duration"); ok {
		for _, p := range m.Data.(metricdata.Histogram[float64]).DataPoints {
			a := attrMap(p.Attributes.ToSlice())
			if a["http.request.method"].AsString() != "POST" || a["braze.outcome"].AsString() == "" {
				t.Errorf("http.client.request.duration point attributes %v", p.Attributes.ToSlice())
			}
		}
	}
}

func checkSpans(t *testing.T, spans tracetest.SpanStubs, s pipeline.Snapshot, dlqAttempts, commitErrors int64, k *testKafka, prod *telProducer, dl []kafka.Message) {
	t.Helper()
	byName := map[string][]tracetest.SpanStub{}
	for _, sp := range spans {
		byName[sp.Name] = append(byName[sp.Name], sp)
		if sp.InstrumentationScope.Name != pipelineScope {
			t.Errorf("span %s from scope %q", sp.Name, sp.InstrumentationScope.Name)
		}
		if sp.Parent.IsValid() {
			t.Errorf("span %s has a parent %s; producers' contexts belong in links", sp.Name, sp.Parent.SpanID())
		}
	}
	// linked: which producer spans are linked, from which span names.
	linked := map[trace.SpanID]map[string]bool{}
	checkLinks := func(sp tracetest.SpanStub, maxLinks int) {
		if len(sp.Links) > maxLinks {
			t.Errorf("%s: %d links, over the cap %d", sp.Name, len(sp.Links), maxLinks)
		}
		seen := map[trace.SpanID]bool{}
		for _, l := range sp.Links {
			tm, ok := prod.traced[l.SpanContext.SpanID()]
			if !ok {
				t.Errorf("%s links to unknown span context %s/%s", sp.Name, l.SpanContext.TraceID(), l.SpanContext.SpanID())
				continue
			}
			if seen[tm.sc.SpanID()] {
				t.Errorf("%s links message %d twice", sp.Name, tm.index)
			}
			seen[tm.sc.SpanID()] = true
			if l.SpanContext.TraceID() != tm.sc.TraceID() || l.SpanContext.TraceFlags() != tm.sc.TraceFlags() ||
				l.SpanContext.TraceState().String() != tm.sc.TraceState().String() || !l.SpanContext.IsRemote() {
				t.Errorf("%s link %s: got trace %s flags %s state %q remote %v, want trace %s flags %s state %q remote",
					sp.Name, l.SpanContext.SpanID(), l.SpanContext.TraceID(), l.SpanContext.TraceFlags(), l.SpanContext.TraceState(), l.SpanContext.IsRemote(),
					tm.sc.TraceID(), tm.sc.TraceFlags(), tm.sc.TraceState())
			}
			a := attrMap(l.Attributes)
			if a["messaging.destination.name"].AsString() != k.Topic {
				t.Errorf("%s link attributes %v: want messaging.destination.name %s", sp.Name, l.Attributes, k.Topic)
			}
			if _, ok := a["messaging.kafka.offset"]; !ok {
				t.Errorf("%s link without messaging.kafka.offset: %v", sp.Name, l.Attributes)
			}
			if _, ok := a["messaging.destination.partition.id"]; !ok {
				t.Errorf("%s link without messaging.destination.partition.id: %v", sp.Name, l.Attributes)
			}
			if linked[tm.sc.SpanID()] == nil {
				linked[tm.sc.SpanID()] = map[string]bool{}
			}
			linked[tm.sc.SpanID()][sp.Name] = true
		}
	}

	// Request spans: one per request, by outcome, with their attributes.
	reqSpans := byName["POST /users/track"]
	if int64(len(reqSpans)) != s.Requests {
		t.Errorf("%d request spans, pipeline made %d requests", len(reqSpans), s.Requests)
	}
	byOutcome := map[string]int64{}
	var okObjects, rejected, retried int64
	for _, sp := range reqSpans {
		a := attrMap(sp.Attributes)
		outcome := a["braze.outcome"].AsString()
		byOutcome[outcome]++
		if sp.SpanKind != trace.SpanKindClient {
			t.Errorf("request span kind %s", sp.SpanKind)
		}
		objs := a["braze.request.attributes"].AsInt64() + a["braze.request.events"].AsInt64() + a["braze.request.purchases"].AsInt64()
		for _, key := range []string{"http.request.method", "http.request.body.size", "braze.request.attributes", "braze.request.events",
			"braze.request.purchases", "braze.request.attempt", "braze.outcome", "braze.limiter_wait_seconds"} {
			if _, ok := a[key]; !ok {
				t.Errorf("request span without %s: %v", key, sp.Attributes)
			}
		}
		if a["http.request.method"].AsString() != "POST" || a["http.request.body.size"].AsInt64() <= 0 || objs <= 0 || objs > 30 ||
			a["braze.request.attempt"].AsInt64() < 1 || a["braze.limiter_wait_seconds"].AsFloat64() < 0 {
			t.Errorf("request span attributes out of range: %v", sp.Attributes)
		}
		code := a["http.response.status_code"].AsInt64()
		switch outcome {
		case "delivered", "partial":
			okObjects += objs
			rejected += a["braze.rejected_objects"].AsInt64()
			if code < 200 || code > 299 || sp.Status.Code == codes.Error {
				t.Errorf("successful request span: status code %d, span status %v", code, sp.Status)
			}
			if _, ok := a["error.type"]; ok {
				t.Errorf("successful request span with error.type: %v", sp.Attributes)
			}
			if outcome == "partial" && a["braze.rejected_objects"].AsInt64() == 0 {
				t.Errorf("partial request span without braze.rejected_objects: %v", sp.Attributes)
			}
		case "retry", "halt":
			if sp.Status.Code != codes.Error || a["error.type"].AsString() != fmt.Sprintf("http_%d", code) || code < 500 || sp.Status.Description == "" {
				t.Errorf("%s request span: status %v, code %d, error.type %q", outcome, sp.Status, code, a["error.type"].AsString())
			}
		}
		if a["braze.request.attempt"].AsInt64() > 1 {
			retried++
		}
		checkLinks(sp, pipeline.MaxSpanLinks)
	}
	for class, n := range s.RequestsByClass {
		if byOutcome[class] != n {
			t.Errorf("%d request spans with braze.outcome=%s, pipeline says %d (spans: %v)", byOutcome[class], class, n, byOutcome)
		}
	}
	if retried == 0 || byOutcome["retry"] == 0 {
		t.Errorf("no request span with braze.request.attempt > 1 (%d) or outcome retry (%d)", retried, byOutcome["retry"])
	}
	if okObjects != s.ObjectsSent {
		t.Errorf("successful request spans carry %d objects, pipeline sent %d", okObjects, s.ObjectsSent)
	}
	if s.RequestsByClass["split"] == 0 && okObjects-rejected != s.RecordsDelivered {
		t.Errorf("successful request spans: %d objects - %d rejected != %d delivered", okObjects, rejected, s.RecordsDelivered)
	}

	// DLQ spans: one per write attempt, producer kind, linked to the sources' producers.
	dlqSpans := byName["dlq publish"]
	var letters int64
	for _, sp := range dlqSpans {
		a := attrMap(sp.Attributes)
		if sp.SpanKind != trace.SpanKindProducer || a["messaging.system"].AsString() != "kafka" ||
			a["messaging.operation.name"].AsString() != "publish" || a["ingestor.dlq.attempt"].AsInt64() != 1 || sp.Status.Code == codes.Error {
			t.Errorf("dlq publish span: kind %s status %v attributes %v", sp.SpanKind, sp.Status, sp.Attributes)
		}
		letters += a["messaging.batch.message_count"].AsInt64()
		checkLinks(sp, pipeline.MaxSpanLinks)
	}
	if int64(len(dlqSpans)) != dlqAttempts {
		t.Errorf("%d dlq publish spans, want %d", len(dlqSpans), dlqAttempts)
	}
	if letters != s.DeadLetteredAll {
		t.Errorf("dlq publish spans carry %d letters, want %d", letters, s.DeadLetteredAll)
	}

	// Commit spans: one per commit.
	commits := byName["commit offsets"]
	if int64(len(commits)) != s.Commits+commitErrors || s.Commits == 0 {
		t.Errorf("%d commit spans, pipeline made %d commits and %d failed ones", len(commits), s.Commits, commitErrors)
	}
	for _, sp := range commits {
		a := attrMap(sp.Attributes)
		if sp.SpanKind != trace.SpanKindClient || a["messaging.operation.name"].AsString() != "commit" || a["messaging.system"].AsString() != "kafka" ||
			a["messaging.consumer.group.name"].AsString() != "telemetry" || a["ingestor.commit.partitions"].AsInt64() < 1 || (sp.Status.Code == codes.Error) != (commitErrors > 0 && sp.Status.Description != "") {
			t.Errorf("commit span: kind %s status %v attributes %v", sp.SpanKind, sp.Status, sp.Attributes)
		}
	}
	for name := range byName {
		switch name {
		case "POST /users/track", "dlq publish", "commit offsets":
		default:
			t.Errorf("undocumented span %q", name)
		}
	}

	// Every traced message is linked: from a request span when it had a deliverable record,
	// from a DLQ span when it had a dead letter (DLQ spans may hit the cap: then only check
	// what is linked).
	dlqCapped := false
	for _, sp := range dlqSpans {
		dlqCapped = dlqCapped || len(sp.Links) >= pipeline.MaxSpanLinks
	}
	var wantReq, wantDLQ int
	for sid, tm := range prod.traced {
		var deliverable, bad bool
		for _, r := range tm.msg.Records {
			if r.Outcome == synth.Deliver {
				deliverable = true
			} else {
				bad = true
			}
		}
		bad = bad || tm.msg.WholeInvalid
		if deliverable {
			wantReq++
			if !linked[sid]["POST /users/track"] {
				t.Errorf("message %d (%s) has a delivered record but no request span links to it", tm.index, traceparent(tm.sc))
			}
		}
		if bad {
			wantDLQ++
			if !dlqCapped && !linked[sid]["dlq publish"] {
				t.Errorf("message %d (%s) was dead-lettered but no dlq publish span links to it", tm.index, traceparent(tm.sc))
			}
		}
	}

	// The DLQ records carry the source's trace headers, and the DLQ span's link points at
	// the same source offset.
	var dlTraced int
	for _, m := range dl {
		tpH := header(m, "traceparent")
		if tpH == "" {
			continue
		}
		dlTraced++
		sc := parseTP(tpH)
		tm, ok := prod.traced[sc.SpanID()]
		if !ok {
			if tpH != "not-a-traceparent" && !strings.HasPrefix(tpH, "00-000000") {
				t.Errorf("dead letter with unknown traceparent %q", tpH)
			}
			continue
		}
		if tpH != traceparent(tm.sc) || header(m, "tracestate") != tm.sc.TraceState().String() || header(m, "content-type") != "application/json" {
			t.Errorf("dead letter headers %v, want traceparent %s tracestate %q", m.Headers, traceparent(tm.sc), tm.sc.TraceState())
		}
		off, _ := strconv.ParseInt(header(m, dlq.HeaderSourceOffset), 10, 64)
		found := false
		for _, sp := range dlqSpans {
			for _, l := range sp.Links {
				if l.SpanContext.SpanID() == sc.SpanID() && attrMap(l.Attributes)["messaging.kafka.offset"].AsInt64() == off {
					found = true
				}
			}
		}
		if !found && !dlqCapped {
			t.Errorf("no dlq publish link for %s at source offset %d", tpH, off)
		}
	}
	if dlTraced == 0 {
		t.Errorf("no dead letter carries a traceparent header")
	}
	t.Logf("spans: %d requests %v, %d dlq publish, %d commits; %d traced messages linked (%d expected from requests, %d from DLQ); %d traced dead letters",
		len(reqSpans), byOutcome, len(dlqSpans), len(commits), len(linked), wantReq, wantDLQ, dlTraced)
}

func parseTP(v string) trace.SpanContext {
	parts := strings.Split(v, "-")
	if len(parts) != 4 {
		return trace.SpanContext{}
	}
	tid, _ := trace.TraceIDFromHex(parts[1])
	sid, _ := trace.SpanIDFromHex(parts[2])
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid})
}

// promFamilies parses an exposition into family name -> TYPE, and sample lines.
func promFamilies(text string) (types map[string]string, samples []string) {
	types = map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			types[f[2]] = f[3]
		} else if line != "" && !strings.HasPrefix(line, "#") {
			samples = append(samples, line)
		}
	}
	return types, samples
}

// promValue sums the samples of series name whose labels contain every filter (k="v").
func promValue(samples []string, name string, filters ...string) (float64, int) {
	var sum float64
	var n int
	for _, l := range samples {
		if !strings.HasPrefix(l, name+"{") && !strings.HasPrefix(l, name+" ") {
			continue
		}
		ok := true
		for _, f := range filters {
			ok = ok && strings.Contains(l, f)
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
		if err == nil {
			sum += v
			n++
		}
	}
	return sum, n
}

func checkExposition(t *testing.T, text string, s pipeline.Snapshot) {
	t.Helper()
	types, samples := promFamilies(text)
	for _, w := range wantMetrics {
		if types[w.prom] != w.typ {
			t.Errorf("/metrics: family %s has TYPE %q, want %s", w.prom, types[w.prom], w.typ)
		}
	}
	if v, n := promValue(samples, "ingestor_records_delivered_total"); n != 3 || int64(v) != s.RecordsDelivered {
		t.Errorf("/metrics ingestor_records_delivered_total = %v over %d series, want %d over 3 kinds", v, n, s.RecordsDelivered)
	}
	if v, _ := promValue(samples, "ingestor_records_dead_lettered_total", `reason="braze_rejected"`); int64(v) != s.DeadLettered[dlq.ReasonBrazeRejected] {
		t.Errorf("/metrics braze_rejected dead letters = %v, want %d", v, s.DeadLettered[dlq.ReasonBrazeRejected])
	}
	if v, _ := promValue(samples, "ingestor_request_objects_count"); int64(v) != s.SuccessRequests {
		t.Errorf("/metrics ingestor_request_objects_count = %v, want %d", v, s.SuccessRequests)
	}
	if _, n := promValue(samples, "target_info", `service_name="braze-ingestor"`); n != 1 {
		t.Errorf("/metrics: no target_info with service_name")
	}
	if _, n := promValue(samples, "ingestor_records_delivered_total", `otel_scope_name="`+pipelineScope+`"`); n == 0 {
		t.Errorf("/metrics: series lack the otel_scope_name label")
	}
	// Every exposed family is documented, under its exact name.
	doc, err := os.ReadFile("../../docs/observability.md")
	if err != nil {
		t.Fatalf("docs: %v", err)
	}
	for fam := range types {
		if !strings.Contains(string(doc), "`"+fam+"`") {
			t.Errorf("docs/observability.md does not list the exposed family `%s`", fam)
		}
	}
	for _, w := range wantMetrics {
		if !strings.Contains(string(doc), "`"+w.name+"`") {
			t.Errorf("docs/observability.md does not list the instrument `%s`", w.name)
		}
	}
	checkPromtoolMetrics(t, text)
}

// checkPromtoolMetrics lints the exposition with promtool (when it is installed).
func checkPromtoolMetrics(t *testing.T, text string) {
	t.Helper()
	promtool, ok := prometheusTool(t, "promtool")
	if !ok {
		return
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// prometheusTool finds a Prometheus binary. Absent, the check is skipped locally with a
// message, but fails under CI=true or REQUIRE_PROMETHEUS=1.
func prometheusTool(t *testing.T, name string) (string, bool) {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path, true
	}
	msg := fmt.Sprintf("%s not installed (Debian package prometheus; run scripts/prereqs.sh as root)", name)
	if os.Getenv("CI") == "true" || os.Getenv("REQUIRE_PROMETHEUS") == "1" {
		t.Fatalf("%s; CI=true or REQUIRE_PROMETHEUS=1 requires it", msg)
	}
	t.Log("SKIPPING CHECK: " + msg)
	return "", false
}

// checkInfoLogs: at info level no log line holds record contents.
func checkInfoLogs(t *testing.T, logs string) {
	t.Helper()
	if !strings.Contains(logs, `"msg":"worker starting"`) {
		t.Errorf("no info-level log lines captured:\n%s", tail(logs, 2000))
	}
	for _, marker := range []string{markerInvalidValue, markerInvalidOther, markerValid, markerBadJSON, "@example.com", "abcdefghijabcdefghij", "not-an-email", `"external_id"`} {
		for _, line := range strings.Split(logs, "\n") {
			if strings.Contains(line, marker) {
				t.Errorf("info-level log line holds record contents (%q): %s", marker, line)
				break
			}
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("log line is not JSON: %q", line)
			continue
		}
		if rec["level"] == "DEBUG" {
			t.Errorf("debug line at info level: %s", line)
		}
	}
}

// TestTelemetrySpanLinkCap: a request of 75 records from 75 traced messages links exactly
// MaxSpanLinks of them; every span links min(distinct traced messages, MaxSpanLinks).
func TestTelemetrySpanLinkCap(t *testing.T) {
	k := newTestKafka(t, 1)
	sim := newSim(t, nil)
	var msgs []synth.Message
	for i := 0; i < 150; i++ {
		tm := "2026-11-25T10:00:00Z"
		outcome := synth.Deliver
		if i%3 == 2 {
			tm, outcome = "not-a-time", synth.Invalid
		}
		msgs = append(msgs, synth.Message{Key: []byte("user-cap"),
			Value:   []byte(fmt.Sprintf(`{"type":"event","data":{"external_id":"user-cap","name":"e","time":"%s","properties":{"seq":%d}}}`, tm, i)),
			Records: []synth.Record{{Kind: "event", User: "user-cap", Seq: i, Outcome: outcome}}})
	}
	prod := newTelProducer(t, k.Brokers, k.Topic, nil)
	prod.send(t, msgs, func(int) string { return "traced" })
	cfg := testConfig(k, sim, "linkcap")
	cfg.BatchLinger = 200 * time.Millisecond // let the single lane fill whole requests
	w := startTelWorker(t, cfg, "warn")
	settle(t, w.p, len(msgs), 30*time.Second)
	w.stop()

	var capped int
	for _, sp := range w.spans.GetSpans() {
		a := attrMap(sp.Attributes)
		var n int64
		switch sp.Name {
		case "POST /users/track":
			n = a["braze.request.events"].AsInt64()
		case "dlq publish":
			n = a["messaging.batch.message_count"].AsInt64()
		default:
			continue
		}
		if want := min(n, int64(pipeline.MaxSpanLinks)); int64(len(sp.Links)) != want {
			t.Errorf("%s with %d single-record traced messages has %d links, want %d", sp.Name, n, len(sp.Links), want)
		}
		if n > int64(pipeline.MaxSpanLinks) {
			capped++
		}
	}
	if capped == 0 {
		t.Errorf("no span had more than %d traced messages; the cap was not exercised", pipeline.MaxSpanLinks)
	}
	t.Logf("%d spans hit the %d-link cap", capped, pipeline.MaxSpanLinks)
}

// ---- secrets -------------------------------------------------------------------------------

const (
	secretAPIKey   = "sk-live-SECRET-123"
	secretSASLPass = "sasl-PASSWORD-s3cr3t-456"
)

// TestTelemetryNoSecrets runs the worker at debug level against a broker that requires SASL
// PLAIN (the password really is used) and a Braze key with a distinctive value, and checks
// that neither appears in any log line, span, link, event, resource, metric or /metrics.
func TestTelemetryNoSecrets(t *testing.T) {
	const user = "ingestor"
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser("PLAIN", user, secretSASLPass),
		kfake.SeedTopics(2, "secret-src"), kfake.SeedTopics(1, "secret-dlq"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	k := &testKafka{Brokers: c.ListenAddrs(), Topic: "secret-src", DLQ: "secret-dlq", Cluster: c}
	sim := newSim(t, func(c *brazesim.Config) { c.Keys = []brazesim.Key{{Name: "prod", Secret: secretAPIKey}} })

	exp := newExpectation()
	gen := synth.New(synth.Options{Users: 30, InvalidShare: 0.05, RejectShare: 0.05, Seed: 99})
	var msgs []synth.Message
	for i := 0; i < 150; i++ {
		msgs = append(msgs, gen.Next())
	}
	for _, m := range msgs {
		exp.add(m)
	}
	prod := newTelProducer(t, k.Brokers, k.Topic, &kafka.Transport{SASL: plain.Mechanism{Username: user, Password: secretSASLPass}})
	prod.send(t, msgs, func(i int) string {
		if i%2 == 0 {
			return "traced"
		}
		return ""
	})

	cfg := testConfig(k, sim, "secrets")
	cfg.BrazeAPIKey = secretAPIKey
	cfg.KafkaSASLMechanism, cfg.KafkaSASLUsername, cfg.KafkaSASLPassword = "plain", user, secretSASLPass
	cfg.Lanes = 4
	cfg.LogLevel = "debug"
	w := startTelWorker(t, cfg, "debug")
	settle(t, w.p, exp.total, 60*time.Second)
	var rm metricdata.ResourceMetrics
	if err := w.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	exposition := httpGet(t, "http://"+w.addr+"/metrics")
	probes := httpGet(t, "http://"+w.addr+"/livez") + httpGet(t, "http://"+w.addr+"/readyz")
	w.stop()
	if s := w.p.Stats().Snapshot(); s.RecordsDelivered != int64(exp.deliver) || s.DeadLetteredAll != int64(exp.total-exp.deliver) {
		t.Errorf("delivered %d dead-lettered %d, want %d and %d", s.RecordsDelivered, s.DeadLetteredAll, exp.deliver, exp.total-exp.deliver)
	}

	logs := w.logs.String()
	if !strings.Contains(logs, `"level":"DEBUG"`) {
		t.Errorf("no debug lines logged at LOG_LEVEL=debug")
	}
	// Not even debug lines hold record contents.
	for _, marker := range []string{"@example.com", "abcdefghijabcdefghij", "not-an-email", `"external_id"`, "blacklisted-"} {
		if strings.Contains(logs, marker) {
			t.Errorf("debug log holds record contents (%q)", marker)
		}
	}
	var haystack []string
	add := func(where string, v ...any) { haystack = append(haystack, where+": "+fmt.Sprint(v...)) }
	for _, line := range strings.Split(logs, "\n") {
		add("log", line)
	}
	spans := w.spans.GetSpans()
	if len(spans) == 0 {
		t.Fatal("no spans recorded")
	}
	for _, sp := range spans {
		add("span "+sp.Name, sp.Name, sp.Attributes, sp.Status, sp.Resource.Attributes())
		for _, l := range sp.Links {
			add("span link", l.SpanContext.TraceState().String(), l.Attributes)
		}
		for _, e := range sp.Events {
			add("span event", e.Name, e.Attributes)
		}
	}
	add("resource", rm.Resource.Attributes())
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			add("metric", fmt.Sprintf("%s %s %s %+v", m.Name, m.Unit, m.Description, m.Data))
			for _, set := range metricAttrSets(m) {
				for _, kv := range set.ToSlice() {
					add("metric "+m.Name+" label", string(kv.Key), "=", kv.Value.String())
				}
			}
		}
	}
	add("/metrics", exposition)
	add("/readyz /livez", probes)
	for _, secret := range []string{secretAPIKey, secretSASLPass, "SECRET", "PASSWORD"} {
		for _, h := range haystack {
			if strings.Contains(h, secret) {
				t.Errorf("secret %q found in %s", secret, tail(h, 400))
				break
			}
		}
	}
	t.Logf("searched %d log lines (%d debug), %d spans, %d metrics and %d bytes of /metrics: no secret",
		strings.Count(logs, "\n"), strings.Count(logs, `"level":"DEBUG"`), len(spans), len(rm.ScopeMetrics[0].Metrics), len(exposition))
}

// TestSecretsNotInErrors: configuration and connection errors name the setting, never the
// secret value.
func TestSecretsNotInErrors(t *testing.T) {
	// A wrong SASL password against a SASL broker: the worker's errors must not echo it.
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser("PLAIN", "ingestor", "the-right-one"),
		kfake.SeedTopics(1, "s-src"), kfake.SeedTopics(1, "s-dlq"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	k := &testKafka{Brokers: c.ListenAddrs(), Topic: "s-src", DLQ: "s-dlq", Cluster: c}
	sim := newSim(t, nil)
	cfg := testConfig(k, sim, "secrets-bad")
	cfg.BrazeAPIKey = secretAPIKey
	cfg.KafkaSASLMechanism, cfg.KafkaSASLUsername, cfg.KafkaSASLPassword = "plain", "ingestor", secretSASLPass
	w := startTelWorker(t, cfg, "debug")
	waitFor(t, 15*time.Second, "a failed join logged", func() bool { return strings.Contains(w.logs.String(), "join failed") })
	w.stop()
	for _, line := range strings.Split(w.logs.String(), "\n") {
		if strings.Contains(line, "join failed") {
			if !strings.Contains(strings.ToLower(line), "sasl") && !strings.Contains(strings.ToLower(line), "auth") {
				t.Errorf("join failure does not say it is an authentication problem: %s", line)
			}
			t.Logf("logged: %s", line)
			break
		}
	}
	if strings.Contains(w.logs.String(), secretSASLPass) || strings.Contains(w.logs.String(), secretAPIKey) {
		t.Errorf("secret in logs after a SASL failure:\n%s", tail(w.logs.String(), 3000))
	}
	// Scram with a bad mechanism name: the error names the mechanism only.
	cfg.KafkaSASLMechanism = "scram-sha-256"
	if _, _, err := kafkaSecurity(cfg); err != nil && strings.Contains(err.Error(), secretSASLPass) {
		t.Errorf("kafkaSecurity error holds the password: %v", err)
	}
	// Config errors.
	for _, env := range [][2]string{{"BRAZE_API_KEY_FILE", "/nonexistent/" + secretAPIKey}} {
		t.Setenv(env[0], env[1])
	}
	t.Setenv("BRAZE_API_KEY", "")
	t.Setenv("KAFKA_SASL_PASSWORD", secretSASLPass)
	t.Setenv("KAFKA_SASL_MECHANISM", "bogus")
	_, err = LoadConfig()
	if err == nil {
		t.Fatal("LoadConfig accepted a bad configuration")
	}
	if strings.Contains(err.Error(), secretSASLPass) {
		t.Errorf("config error holds the SASL password: %v", err)
	}
}

// ---- Prometheus ----------------------------------------------------------------------------

// TestPrometheusScrape has a real Prometheus (scripts/prometheus.sh) scrape a worker and
// checks the delivered-records series through Prometheus's query API.
func TestPrometheusScrape(t *testing.T) {
	if _, ok := prometheusTool(t, "prometheus"); !ok {
		t.Skip("prometheus not installed (run scripts/prereqs.sh as root); set CI=true or REQUIRE_PROMETHEUS=1 to make this a failure")
	}
	k := newTestKafka(t, 2)
	sim := newSim(t, nil)
	exp := newExpectation()
	gen := synth.New(synth.Options{Users: 40, InvalidShare: 0.05, RejectShare: 0.05, Seed: 5})
	var msgs []synth.Message
	for i := 0; i < 200; i++ {
		msgs = append(msgs, gen.Next())
	}
	for _, m := range msgs {
		exp.add(m)
	}
	newTelProducer(t, k.Brokers, k.Topic, nil).send(t, msgs, func(int) string { return "" })

	cfg := testConfig(k, sim, "prom")
	cfg.Lanes = 4
	cfg.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	w := startTelWorker(t, cfg, "info")
	if w.addr != cfg.HTTPAddr {
		t.Fatalf("worker listens on %s, want %s", w.addr, cfg.HTTPAddr)
	}

	// Start Prometheus while the worker works; it scrapes every second. (Prometheus hands
	// discovered targets to the scraper at most every 5 s, so the first scrape comes ~5 s
	// after start-up: most of this test's run time.)
	promAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	dir := t.TempDir()
	script, _ := filepath.Abs("../../scripts/prometheus.sh")
	env := append(os.Environ(), "PROMETHEUS_LISTEN="+promAddr, "PROMETHEUS_DIR="+dir)
	run := func(args ...string) string {
		cmd := exec.Command(script, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("prometheus.sh %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	t0 := time.Now()
	run("start", w.addr)
	t.Logf("prometheus ready in %s", time.Since(t0).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", tail(string(b), 3000))
		}
		run("stop")
	})
	if st := run("status"); !strings.Contains(st, "running") {
		t.Errorf("prometheus.sh status: %q", st)
	}

	settle(t, w.p, exp.total, 60*time.Second)
	want := w.p.Stats().Snapshot().RecordsDelivered
	if want != int64(exp.deliver) {
		t.Errorf("delivered %d, want %d", want, exp.deliver)
	}
	query := func(q string) (float64, bool) {
		body := httpGet(t, "http://"+promAddr+"/api/v1/query?query="+url.QueryEscape(q))
		var r struct {
			Status string
			Data   struct {
				Result []struct {
					Value [2]any
				}
			}
		}
		if err := json.Unmarshal([]byte(body), &r); err != nil || r.Status != "success" {
			t.Fatalf("query %s: %v %s", q, err, body)
		}
		if len(r.Data.Result) != 1 {
			return 0, false
		}
		v, err := strconv.ParseFloat(fmt.Sprint(r.Data.Result[0].Value[1]), 64)
		return v, err == nil
	}
	const q = `sum(ingestor_records_delivered_total{job="braze-ingestor"})`
	var got float64
	t0 = time.Now()
	defer func() {
		t.Logf("Prometheus had the final count %s after settling", time.Since(t0).Round(time.Millisecond))
	}()
	waitFor(t, 15*time.Second, "Prometheus to scrape the final delivered count", func() bool {
		v, ok := query(q)
		got = v
		return ok && int64(v) == want
	})
	if up, ok := query(`up{job="braze-ingestor"}`); !ok || up != 1 {
		t.Errorf("up = %v (%v)", up, ok)
	}
	// Every documented family made it into Prometheus's TSDB under its exact name.
	for _, m := range wantMetrics {
		name := m.prom
		if m.typ == "histogram" {
			name += "_count"
		}
		if _, ok := query(fmt.Sprintf(`count(%s{job="braze-ingestor"})`, name)); !ok {
			t.Errorf("Prometheus has no series %s", name)
		}
	}
	t.Logf("Prometheus query %s = %v (pipeline delivered %d)", q, got, want)
}

// TestAlertRules validates deploy/prometheus/alerts.yml with promtool check rules and runs
// its unit tests (deploy/prometheus/alerts_test.yml) with promtool test rules.
func TestAlertRules(t *testing.T) {
	promtool, ok := prometheusTool(t, "promtool")
	if !ok {
		t.Skip("promtool not installed (run scripts/prereqs.sh as root); set CI=true or REQUIRE_PROMETHEUS=1 to make this a failure")
	}
	for _, args := range [][]string{
		{"check", "rules", "../../deploy/prometheus/alerts.yml"},
		{"test", "rules", "../../deploy/prometheus/alerts_test.yml"},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		} else {
			t.Logf("promtool %s: %s", strings.Join(args, " "), strings.TrimSpace(string(out)))
		}
	}
	// The rules only use metric names the worker exposes.
	b, err := os.ReadFile("../../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{"messaging_consumer_group_name": true, "messaging_destination_name": true} // labels
	for _, m := range wantMetrics {
		known[m.prom] = true
		for _, sfx := range []string{"_bucket", "_sum", "_count"} {
			known[m.prom+sfx] = true
		}
	}
	var used []string
	for _, name := range regexp.MustCompile(`\b(?:ingestor|messaging|http_client)_[a-z_]+\b`).FindAllString(string(b), -1) {
		if !known[name] {
			t.Errorf("alerts.yml uses %s, which the worker does not expose", name)
		}
		used = append(used, name)
	}
	sort.Strings(used)
	if len(used) == 0 {
		t.Error("alerts.yml uses no worker metric")
	}
}

// ---- unit checks of the exported names ------------------------------------------------------

// TestObservabilityDocTable: docs/observability.md has a table row per metric (exposed name,
// instrument name, type) and documents every span. (The end-to-end test checks the exposed
// names against a live /metrics.)
func TestObservabilityDocTable(t *testing.T) {
	doc, err := os.ReadFile("../../docs/observability.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range wantMetrics {
		re := regexp.MustCompile("(?m)^\\|[^\\n]*`" + regexp.QuoteMeta(m.prom) + "`[^\\n]*`" + regexp.QuoteMeta(m.name) + "`[^\\n]*\\| *" + m.typ)
		if !re.Match(doc) {
			t.Errorf("docs/observability.md: no table row for %s (%s, %s)", m.prom, m.name, m.typ)
		}
	}
	for _, span := range []string{"POST /users/track", "dlq publish", "commit offsets"} {
		if !strings.Contains(string(doc), "`"+span+"`") {
			t.Errorf("docs/observability.md does not document span %q", span)
		}
	}
}
