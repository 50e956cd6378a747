package pipeline

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"github.com/braze-ingestor/braze-ingestor/schemas"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

const instrumentationName = "github.com/braze-ingestor/braze-ingestor/pipeline"

// MaxSpanLinks caps the producer links on one span: a request carries up to 75 records (225
// on legacy contracts), and tracing backends cap links too.
const MaxSpanLinks = 32

// instruments are recorded directly on the hot path only per request, never per record;
// per-record counts are observed from Stats.
type instruments struct {
	tracer      trace.Tracer
	propagator  propagation.TextMapPropagator
	reqDuration metric.Float64Histogram
	reqObjects  metric.Int64Histogram
	reqBytes    metric.Int64Histogram
	limiterWait metric.Float64Histogram
	commitDur   metric.Float64Histogram
	statusOpts  sync.Map // statusKey -> metric.MeasurementOption
}

func (p *Pipeline) initTelemetry() error {
	mp, tp := p.cfg.MeterProvider, p.cfg.TracerProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	m := mp.Meter(instrumentationName)
	p.ins.tracer = tp.Tracer(instrumentationName)
	p.ins.propagator = propagation.TraceContext{}
	if err := p.ins.initHistograms(m); err != nil {
		return err
	}
	return p.registerObservers(m)
}

// initHistograms creates the instruments recorded per request and per commit.
func (ins *instruments) initHistograms(m metric.Meter) error {
	var err error
	if ins.reqDuration, err = m.Float64Histogram("http.client.request.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of Braze requests, by endpoint."),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)); err != nil {
		return err
	}
	if ins.reqObjects, err = m.Int64Histogram("ingestor.request.objects", metric.WithUnit("{object}"),
		metric.WithDescription("Objects (attributes, events, purchases) per /users/track request."),
		metric.WithExplicitBucketBoundaries(1, 5, 10, 25, 50, 70, 74, 75, 150, 225)); err != nil {
		return err
	}
	if ins.reqBytes, err = m.Int64Histogram("ingestor.request.body.size", metric.WithUnit("By"),
		metric.WithDescription("Body size of /users/track requests."),
		metric.WithExplicitBucketBoundaries(1e3, 1e4, 3e4, 6e4, 1e5, 3e5, 1e6, 4e6)); err != nil {
		return err
	}
	if ins.limiterWait, err = m.Float64Histogram("ingestor.limiter.wait", metric.WithUnit("s"),
		metric.WithDescription("Time a request waited for the rate limiter, 429 pauses and the circuit breaker."),
		metric.WithExplicitBucketBoundaries(0, 0.001, 0.01, 0.1, 0.5, 1, 3, 10, 30)); err != nil {
		return err
	}
	if ins.commitDur, err = m.Float64Histogram("ingestor.commit.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of Kafka offset commits.")); err != nil {
		return err
	}
	return nil
}

// observerGroup is a group of instruments observed from Stats at collection time.
type observerGroup struct {
	instruments []metric.Observable
	observe     func(metric.Observer)
}

// registerObservers registers every observed instrument under one callback.
func (p *Pipeline) registerObservers(m metric.Meter) error {
	group := attribute.String("messaging.consumer.group.name", p.cfg.GroupID)
	groups := []observerGroup{p.recordObservers(m, group), p.requestObservers(m), p.dlqObservers(m),
		p.kafkaObservers(m, group), p.optimizeObservers(m)}
	var all []metric.Observable
	for _, g := range groups {
		all = append(all, g.instruments...)
	}
	_, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, g := range groups {
			g.observe(o)
		}
		return nil
	}, all...)
	return err
}

// recordObservers: records consumed, delivered and dead-lettered (by kind), Kafka messages
// consumed, records in flight.
func (p *Pipeline) recordObservers(m metric.Meter, group attribute.KeyValue) observerGroup {
	kindAttr := [schemas.NumKinds]metric.ObserveOption{}
	for k := range kindAttr {
		kindAttr[k] = metric.WithAttributes(attribute.String("kind", schemas.Kind(k).EnvelopeType()))
	}
	consumed, _ := m.Int64ObservableCounter("ingestor.records.consumed", metric.WithUnit("{record}"),
		metric.WithDescription("Records decoded from Kafka messages, by kind."))
	delivered, _ := m.Int64ObservableCounter("ingestor.records.delivered", metric.WithUnit("{record}"),
		metric.WithDescription("Records Braze accepted, by kind."))
	dead, _ := m.Int64ObservableCounter("ingestor.records.dead_lettered", metric.WithUnit("{record}"),
		metric.WithDescription("Records written to the dead-letter topic, by kind and reason."))
	messages, _ := m.Int64ObservableCounter("messaging.client.consumed.messages", metric.WithUnit("{message}"),
		metric.WithDescription("Kafka messages consumed."))
	inflight, _ := m.Int64ObservableGauge("ingestor.records.in_flight", metric.WithUnit("{record}"),
		metric.WithDescription("Records fetched and not yet delivered or dead-lettered."))
	held, _ := m.Int64ObservableGauge("ingestor.users.held", metric.WithUnit("{user}"),
		metric.WithDescription("Users whose records wait in a lane for an earlier record of another endpoint and its spacing (ENDPOINT_SPACING)."))
	return observerGroup{
		instruments: []metric.Observable{consumed, delivered, dead, messages, inflight, held},
		observe: func(o metric.Observer) {
			s := &p.stats
			for k := range kindAttr {
				if p.kindOn(schemas.Kind(k)) || s.RecordsConsumed[k].Load() > 0 {
					o.ObserveInt64(consumed, s.RecordsConsumed[k].Load(), kindAttr[k])
					o.ObserveInt64(delivered, s.RecordsDelivered[k].Load(), kindAttr[k])
				}
			}
			p.observeDeadLettered(o, dead)
			o.ObserveInt64(messages, s.MessagesConsumed.Load(), metric.WithAttributes(attribute.String("messaging.system", "kafka"), group))
			o.ObserveInt64(inflight, s.InFlightRecords.Load())
			o.ObserveInt64(held, s.HeldUsers.Load())
		},
	}
}

// observeDeadLettered observes the dead-lettered records by kind and reason.
func (p *Pipeline) observeDeadLettered(o metric.Observer, dead metric.Int64ObservableCounter) {
	s := &p.stats
	for k := range s.DeadLettered {
		kind := "message"
		if k < kindOther {
			kind = schemas.Kind(k).EnvelopeType()
		}
		for r, reason := range dlq.Reasons {
			// Expected series are exported from the start, at 0: a counter series that
			// first appears with a value loses that first increase in rate()/increase().
			if n := s.DeadLettered[k][r].Load(); n > 0 || (deadLetterSeries(k, reason) && (k == kindOther || p.kindOn(schemas.Kind(k)))) {
				o.ObserveInt64(dead, n, metric.WithAttributes(attribute.String("kind", kind), attribute.String("reason", string(reason))))
			}
		}
	}
}

// requestObservers: Braze requests by outcome and status class, retries, requests saved,
// the halt, the circuit breaker and the object cap.
func (p *Pipeline) requestObservers(m metric.Meter) observerGroup {
	requests, _ := m.Int64ObservableCounter("ingestor.requests", metric.WithUnit("{request}"),
		metric.WithDescription("Braze requests by endpoint and outcome."))
	byStatus, _ := m.Int64ObservableCounter("ingestor.requests.status", metric.WithUnit("{request}"),
		metric.WithDescription("Braze /users/track answers by HTTP status class (none = no answer: timeout or connection error)."))
	retries, _ := m.Int64ObservableCounter("ingestor.retries", metric.WithUnit("{request}"),
		metric.WithDescription("Requests retried after a 429, 5xx, timeout or connection error."))
	reqSaved, _ := m.Int64ObservableCounter("ingestor.requests.saved", metric.WithUnit("{request}"),
		metric.WithDescription("Requests saved: lane batches sent whole in another lane's request instead of a request of their own."))
	halted, _ := m.Int64ObservableGauge("ingestor.halted", metric.WithUnit("{state}"),
		metric.WithDescription("1 while delivery is halted on a key or endpoint problem (401/403/404/415)."))
	breaker, _ := m.Int64ObservableGauge("ingestor.breaker.state", metric.WithUnit("{state}"),
		metric.WithDescription("Circuit breaker state: 0 closed, 1 half-open, 2 open (Braze considered down; no lane sends)."))
	objCap, _ := m.Int64ObservableGauge("ingestor.request.object_cap", metric.WithUnit("{object}"),
		metric.WithDescription("Most objects a request carries now: BATCH_MAX_OBJECTS, or lower after Braze refused a request for its number of objects."))
	statusNames := [6]string{"none", "1xx", "2xx", "3xx", "4xx", "5xx"}
	return observerGroup{
		instruments: []metric.Observable{requests, byStatus, retries, reqSaved, halted, breaker, objCap},
		observe: func(o metric.Observer) {
			s := &p.stats
			for e := range s.Endpoint {
				if !p.endpointOn(endpoint.Endpoint(e)) {
					continue
				}
				for c := range s.Endpoint[e].Requests {
					o.ObserveInt64(requests, s.Endpoint[e].Requests[c].Load(), metric.WithAttributes(
						attribute.String("endpoint", endpoint.Endpoint(e).Name()), attribute.String("outcome", sink.Class(c).String())))
				}
			}
			for i, name := range statusNames {
				o.ObserveInt64(byStatus, s.RequestsStatus[i].Load(), metric.WithAttributes(attribute.String("status_class", name)))
			}
			o.ObserveInt64(retries, s.Retries.Load())
			o.ObserveInt64(reqSaved, s.RequestsSaved.Load())
			var h int64
			if s.Halted.Load() {
				h = 1
			}
			o.ObserveInt64(halted, h)
			o.ObserveInt64(objCap, int64(p.objectCap()))
			if bs, ok := p.sender.(breakerStater); ok {
				o.ObserveInt64(breaker, int64(bs.State()))
			}
		},
	}
}

// dlqObservers: dead-letter topic writes and failed writes.
func (p *Pipeline) dlqObservers(m metric.Meter) observerGroup {
	dlqWrites, _ := m.Int64ObservableCounter("ingestor.dlq.writes", metric.WithUnit("{write}"),
		metric.WithDescription("Batches written to the dead-letter topic."))
	dlqErrors, _ := m.Int64ObservableCounter("ingestor.dlq.errors", metric.WithUnit("{write}"),
		metric.WithDescription("Failed dead-letter writes (the pipeline stalls and retries)."))
	return observerGroup{
		instruments: []metric.Observable{dlqWrites, dlqErrors},
		observe: func(o metric.Observer) {
			o.ObserveInt64(dlqWrites, p.stats.DLQWrites.Load())
			o.ObserveInt64(dlqErrors, p.stats.DLQErrors.Load())
		},
	}
}

// kafkaObservers: offset commits, and the consumer and commit lag per partition.
func (p *Pipeline) kafkaObservers(m metric.Meter, group attribute.KeyValue) observerGroup {
	commits, _ := m.Int64ObservableCounter("ingestor.commits", metric.WithUnit("{commit}"),
		metric.WithDescription("Successful Kafka offset commits."))
	lag, _ := m.Int64ObservableGauge("messaging.kafka.consumer.lag", metric.WithUnit("{message}"),
		metric.WithDescription("Messages between the partition end and the last fetched message."))
	commitLag, _ := m.Int64ObservableGauge("ingestor.commit.lag", metric.WithUnit("{message}"),
		metric.WithDescription("Messages between the last fetched and the last committed offset (in flight, not yet committable)."))
	return observerGroup{
		instruments: []metric.Observable{commits, lag, commitLag},
		observe: func(o metric.Observer) {
			o.ObserveInt64(commits, p.stats.Commits.Load())
			for _, l := range p.Lag() {
				attrs := metric.WithAttributes(attribute.String("messaging.destination.name", l.Topic),
					attribute.String("messaging.destination.partition.id", strconv.Itoa(l.Partition)), group)
				if l.HighWater >= 0 && l.Fetched >= 0 {
					o.ObserveInt64(lag, max(0, l.HighWater-l.Fetched-1), attrs)
				}
				if l.Fetched >= 0 {
					committed := l.Committed
					if committed < 0 {
						committed = 0
					}
					o.ObserveInt64(commitLag, max(0, l.Fetched+1-committed), attrs)
				}
			}
		},
	}
}

// optimizeObservers: what the request optimizations saved, and store errors.
func (p *Pipeline) optimizeObservers(m metric.Meter) observerGroup {
	saved, _ := m.Int64ObservableCounter("ingestor.datapoints.saved", metric.WithUnit("{datapoint}"),
		metric.WithDescription("Attribute writes not sent to Braze: unchanged (suppressed) or overwritten by a later write in the same merged object (coalesced)."))
	optRecords, _ := m.Int64ObservableCounter("ingestor.records.skipped", metric.WithUnit("{record}"),
		metric.WithDescription("Records settled without being sent: every attribute unchanged (suppressed), or an event or purchase whose id was already delivered (duplicate)."))
	coalesced, _ := m.Int64ObservableCounter("ingestor.objects.coalesced", metric.WithUnit("{object}"),
		metric.WithDescription("Objects saved by merging a user's plain attribute updates within a request."))
	storeErrors, _ := m.Int64ObservableCounter("ingestor.optimize.store_errors", metric.WithUnit("{error}"),
		metric.WithDescription("Failed round trips to the suppression/de-duplication store (the request then goes out unoptimized)."))
	return observerGroup{
		instruments: []metric.Observable{saved, optRecords, coalesced, storeErrors},
		observe: func(o metric.Observer) {
			os := &p.stats.Optimize
			o.ObserveInt64(saved, os.SuppressedAttributes.Load(), metric.WithAttributes(attribute.String("how", "suppressed")))
			o.ObserveInt64(saved, os.CoalescedWrites.Load(), metric.WithAttributes(attribute.String("how", "coalesced")))
			o.ObserveInt64(optRecords, os.SuppressedRecords.Load(), metric.WithAttributes(attribute.String("why", "unchanged")))
			o.ObserveInt64(optRecords, os.DuplicatesSkipped.Load(), metric.WithAttributes(attribute.String("why", "duplicate")))
			o.ObserveInt64(coalesced, os.CoalescedObjects.Load())
			o.ObserveInt64(storeErrors, os.StoreErrors.Load())
		},
	}
}

// deadLetterSeries says whether the dead-letter series of kind index k and reason is
// exported even at 0: the reasons a whole message or a record can have (dlq.Reason).
func deadLetterSeries(k int, reason dlq.Reason) bool {
	if k == kindOther {
		return reason.ForMessages()
	}
	return reason.ForRecords()
}

// headerCarrier adapts Kafka headers to the W3C propagator.
type headerCarrier []kafka.Header

func (c headerCarrier) Get(key string) string {
	for _, h := range c {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
func (c headerCarrier) Set(string, string) {}
func (c headerCarrier) Keys() []string {
	out := make([]string, len(c))
	for i, h := range c {
		out[i] = h.Key
	}
	return out
}

// producerLinks returns links to the producers' spans of up to MaxSpanLinks distinct
// messages, so a trace backend can walk from a producer's trace to the request that carried
// its record.
func (p *Pipeline) producerLinks(acks func(yield func(*msgAck) bool)) []trace.Link {
	var links []trace.Link
	var last *msgAck
	var linked []*msgAck // at most MaxSpanLinks: a linear scan is cheapest
	for a := range acks {
		if a == last || slices.Contains(linked, a) {
			continue // records of one bundle share a message, and need not be adjacent
		}
		last = a
		if len(a.headers) == 0 {
			continue
		}
		sc := trace.SpanContextFromContext(p.ins.propagator.Extract(context.Background(), headerCarrier(a.headers)))
		if !sc.IsValid() {
			continue
		}
		linked = append(linked, a)
		links = append(links, trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{
			attribute.String("messaging.destination.name", a.ps.topic),
			attribute.Int("messaging.destination.partition.id", a.ps.partition),
			attribute.Int64("messaging.kafka.offset", a.offset),
		}})
		if len(links) >= MaxSpanLinks {
			break
		}
	}
	return links
}

func itemAcks(items []item) func(yield func(*msgAck) bool) {
	return func(yield func(*msgAck) bool) {
		for i := range items {
			if !yield(items[i].ack) {
				return
			}
		}
	}
}

// spanNames are the client spans' names by endpoint ("POST /users/track").
var spanNames = func() (n [endpoint.Count]string) {
	for e := range n {
		n[e] = "POST " + endpoint.Endpoint(e).Path()
	}
	return n
}()

// startRequestSpan starts the client span of one request to ep.
func (p *Pipeline) startRequestSpan(ctx context.Context, ep endpoint.Endpoint, items []item, body []byte, attempt int) (context.Context, trace.Span) {
	ctx, span := p.ins.tracer.Start(ctx, spanNames[ep], trace.WithSpanKind(trace.SpanKindClient))
	if !span.IsRecording() {
		return ctx, span // unsampled or no exporter: skip the link and attribute work
	}
	var counts [schemas.NumKinds]int
	for i := range items {
		counts[items[i].kind]++
	}
	for _, l := range p.producerLinks(itemAcks(items)) {
		span.AddLink(l)
	}
	span.SetAttributes(
		attribute.String("http.request.method", "POST"),
		attribute.Int("http.request.body.size", len(body)),
		attribute.Int("braze.request.attributes", counts[0]),
		attribute.Int("braze.request.events", counts[1]),
		attribute.Int("braze.request.purchases", counts[2]),
		attribute.Int("braze.request.attempt", attempt),
		attribute.String("braze.endpoint", ep.Name()),
		attribute.Int("braze.request.records", len(items)),
	)
	return ctx, span
}

func (p *Pipeline) endRequestSpan(span trace.Span, ep endpoint.Endpoint, resp sink.Response, wait, took time.Duration, items int, bodyLen int) {
	outcome := resp.Class.String()
	p.endSpan(span, resp, wait, outcome)
	p.recordRequest(ep, resp, wait, took, items, bodyLen, outcome)
}

func (p *Pipeline) endSpan(span trace.Span, resp sink.Response, wait time.Duration, outcome string) {
	defer span.End()
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(
		attribute.String("braze.outcome", outcome),
		attribute.Float64("braze.limiter_wait_seconds", wait.Seconds()),
	)
	if resp.Answered() {
		span.SetAttributes(attribute.Int("http.response.status_code", resp.Status))
	}
	if len(resp.Errors) > 0 {
		span.SetAttributes(attribute.Int("braze.rejected_objects", len(resp.Errors)))
	}
	switch resp.Class {
	case sink.Retry, sink.Halt:
		et := "transport"
		if resp.Answered() {
			et = "http_" + strconv.Itoa(resp.Status)
		}
		span.SetAttributes(attribute.String("error.type", et))
		span.SetStatus(codes.Error, resp.Describe())
	}
}

func (p *Pipeline) recordRequest(ep endpoint.Endpoint, resp sink.Response, wait, took time.Duration, items int, bodyLen int, outcome string) {
	ctx := context.Background()
	p.ins.reqDuration.Record(ctx, took.Seconds(), p.statusAttrs(ep, resp.Status, resp.Class, outcome))
	p.ins.limiterWait.Record(ctx, wait.Seconds())
	if resp.Class == sink.Delivered || resp.Class == sink.Partial {
		p.ins.reqObjects.Record(ctx, int64(items))
		p.ins.reqBytes.Record(ctx, int64(bodyLen))
	}
}

// statusAttrs returns the attribute option of a request-duration point. Building an attribute
// set sorts and allocates; the few (status, outcome) pairs a worker sees are built once.
func (p *Pipeline) statusAttrs(ep endpoint.Endpoint, status int, class sink.Class, outcome string) metric.MeasurementOption {
	key := statusKey{ep, status, class}
	if v, ok := p.ins.statusOpts.Load(key); ok {
		return v.(metric.MeasurementOption)
	}
	opt := metric.WithAttributes(attribute.String("http.request.method", "POST"),
		attribute.Int("http.response.status_code", status), attribute.String("braze.outcome", outcome),
		attribute.String("endpoint", ep.Name()))
	p.ins.statusOpts.Store(key, opt)
	return opt
}

type statusKey struct {
	ep     endpoint.Endpoint
	status int
	class  sink.Class
}
