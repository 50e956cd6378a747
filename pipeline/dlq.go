package pipeline

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/schemas"
)

type dlqEntry struct {
	ack    *msgAck
	kind   int // record kind, or kindOther for a whole message
	letter dlq.Letter
}

// toDLQ queues a dead letter; it reports false if ctx ended first.
func (p *Pipeline) toDLQ(ctx context.Context, e dlqEntry) bool {
	a := e.ack
	e.letter.SourceTopic = a.ps.topic
	e.letter.SourcePartition = a.ps.partition
	e.letter.SourceOffset = a.offset
	e.letter.Key = a.key
	e.letter.Headers = a.headers
	if e.letter.FailedAt.IsZero() {
		e.letter.FailedAt = time.Now()
	}
	select {
	case p.dlqCh <- e:
		return true
	case <-ctx.Done():
		return false
	}
}

// runDLQ writes dead letters in batches. A record is acknowledged only after its dead letter
// is durably written; if the DLQ cannot be written the stage retries forever and the
// pipeline stalls behind it (it never drops and never commits past the record). A retry
// writes only the letters not yet written. A letter the DLQ topic refuses as too large is
// not a reason to stall: dlq.Writer writes a dlq_too_large reference instead (docs/dlq.md).
func (p *Pipeline) runDLQ(ctx context.Context) {
	batch := make([]dlqEntry, 0, 512)
	letters := make([]dlq.Letter, 0, 512)
	for {
		select {
		case e := <-p.dlqCh:
			batch = append(batch, e)
		case <-ctx.Done():
			return
		}
	fill:
		for len(batch) < cap(batch) {
			select {
			case e := <-p.dlqCh:
				batch = append(batch, e)
			default:
				break fill
			}
		}
		live := batch[:0]
		for _, e := range batch {
			if e.ack.ps.revoked.Load() {
				// The next owner reads the source again and dead-letters it itself.
				e.ack.resolve()
				continue
			}
			live = append(live, e)
		}
		letters = letters[:0]
		for i := range live {
			letters = append(letters, live[i].letter)
		}
		for attempt := 1; len(letters) > 0; attempt++ {
			// Write marks what it wrote, so a retry sends only the rest (no duplicates).
			err := p.writeDLQ(ctx, live, letters, attempt)
			if err == nil {
				break
			}
			p.stats.DLQErrors.Add(1)
			p.log.Error("dead-letter topic cannot be written; the pipeline stalls until it can (nothing is dropped or committed past these records)",
				"records", len(letters), "attempt", attempt, "error", err)
			if !sleepCtx(ctx, backoff(500*time.Millisecond, 10*time.Second, attempt)) {
				return
			}
		}
		if len(letters) > 0 {
			p.stats.DLQWrites.Add(1)
		}
		for i, e := range live {
			// Count the reason written: dlq.Writer may have replaced a letter by its reference.
			p.stats.DeadLettered[e.kind][letters[i].Reason.Index()].Add(1)
			if e.kind < kindOther {
				p.stats.Endpoint[schemas.Kind(e.kind).Endpoint()].DeadLettered.Add(1)
			}
			e.ack.resolve()
		}
		clear(batch)
		clear(letters)
		batch = batch[:0]
	}
}

// writeDLQ writes one batch under a producer span linked to the source records' producers.
func (p *Pipeline) writeDLQ(ctx context.Context, live []dlqEntry, letters []dlq.Letter, attempt int) error {
	_, span := p.ins.tracer.Start(ctx, "dlq publish", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithLinks(p.producerLinks(func(yield func(*msgAck) bool) {
			for i := range live {
				if !yield(live[i].ack) {
					return
				}
			}
		})...),
		trace.WithAttributes(attribute.String("messaging.system", "kafka"), attribute.String("messaging.operation.name", "publish"),
			attribute.Int("messaging.batch.message_count", len(letters)), attribute.Int("ingestor.dlq.attempt", attempt)))
	defer span.End()
	err := p.dlq.Write(ctx, letters)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}
