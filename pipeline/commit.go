package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// commitCoalesce is the shortest time between two commits while records settle: every
// settled record changes the offset map, and a commit per change would be a request per
// record. KAFKA_COMMIT_INTERVAL, when shorter, takes its place.
const commitCoalesce = 100 * time.Millisecond

// commitRequestTimeout bounds one OffsetCommit or OffsetFetch round trip.
const commitRequestTimeout = 10 * time.Second

// newKafkaClient returns the client for the group's offset requests, on the same security
// settings as the consumer (kafka-go's Generation offers no way to write commit metadata).
func newKafkaClient(brokers []string, d *kafka.Dialer) *kafka.Client {
	t := &kafka.Transport{DialTimeout: 10 * time.Second}
	if d != nil {
		t.TLS, t.SASL = d.TLS, d.SASLMechanism
		if d.Timeout > 0 {
			t.DialTimeout = d.Timeout
		}
	}
	return &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: commitRequestTimeout, Transport: t}
}

// pendingCommit is one partition's part of a commit.
type pendingCommit struct {
	ps  *partitionState
	off int64
	seq uint64
}

// commit commits every partition whose watermark or offset map changed, with the map in the
// commit metadata (offsetmap.go). The commit carries the generation and member id, so the
// broker refuses it once the generation is over (another member may own the partition);
// commits of a partition already revoked are never sent. It reports false when the commit
// failed for every partition it was for.
func (p *Pipeline) commit(gen *kafka.Generation, parts []*partitionState) bool {
	req := &kafka.OffsetCommitRequest{GroupID: gen.GroupID, GenerationID: int(gen.ID), MemberID: gen.MemberID,
		Topics: map[string][]kafka.OffsetCommit{}}
	var moved []pendingCommit
	var runs []offsetRun
	for _, ps := range parts {
		if ps.revoked.Load() {
			continue
		}
		off, m, seq := ps.commitPoint(runs)
		if off < 0 {
			continue
		}
		runs = m.runs[:0]
		meta, cut := encodeOffsetMap(m, maxOffsetMetadata)
		if cut {
			p.stats.OffsetMapTruncated.Add(1)
		}
		req.Topics[ps.topic] = append(req.Topics[ps.topic], kafka.OffsetCommit{Partition: ps.partition, Offset: off, Metadata: meta})
		moved = append(moved, pendingCommit{ps, off, seq})
	}
	if len(moved) == 0 {
		return true
	}
	_, span := p.ins.tracer.Start(context.Background(), "commit offsets", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("messaging.system", "kafka"), attribute.String("messaging.operation.name", "commit"),
			attribute.String("messaging.consumer.group.name", p.cfg.GroupID), attribute.Int("ingestor.commit.partitions", len(moved))))
	start := time.Now()
	failed, err := p.sendCommit(req)
	p.ins.commitDur.Record(context.Background(), time.Since(start).Seconds())
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
	if err != nil {
		p.stats.CommitErrors.Add(1)
		p.log.Warn("offset commit failed; will retry (records may be delivered again after a restart)", "error", err)
	}
	if len(failed) == len(moved) {
		return false
	}
	p.stats.Commits.Add(1)
	for _, m := range moved {
		if !failed[topicPartition{m.ps.topic, m.ps.partition}] {
			m.ps.markCommitted(m.off, m.seq)
		}
	}
	return true
}

type topicPartition struct {
	topic     string
	partition int
}

// sendCommit sends req and returns the partitions it failed for (all of them when the
// request itself failed) and the first error.
func (p *Pipeline) sendCommit(req *kafka.OffsetCommitRequest) (map[topicPartition]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commitRequestTimeout)
	defer cancel()
	failed := map[topicPartition]bool{}
	resp, err := p.client.OffsetCommit(ctx, req)
	if err != nil {
		for t, cs := range req.Topics {
			for _, c := range cs {
				failed[topicPartition{t, c.Partition}] = true
			}
		}
		return failed, err
	}
	var first error
	for t, ps := range resp.Topics {
		for _, r := range ps {
			if r.Error != nil {
				failed[topicPartition{t, r.Partition}] = true
				if first == nil {
					first = fmt.Errorf("commit %s/%d: %w", t, r.Partition, r.Error)
				}
			}
		}
	}
	return failed, first
}

// startPoint is where a partition starts in a generation.
type startPoint struct {
	offset     int64 // committed offset, or kafka.FirstOffset/LastOffset for a partition with none
	fromCommit bool
	settled    []offsetRun // what the previous owner's offset map says is settled past offset
}

// startPoints reads the group's committed offsets and their metadata for the assigned
// partitions. kafka-go's assignment carries the offsets but not the metadata; when the
// fetch fails, or its offset disagrees with the assignment's, the partition starts at the
// assignment's offset with no map (as without one: duplicates, never a loss).
func (p *Pipeline) startPoints(gen *kafka.Generation) map[topicPartition]startPoint {
	out := map[topicPartition]startPoint{}
	req := &kafka.OffsetFetchRequest{GroupID: gen.GroupID, Topics: map[string][]int{}}
	for topic, assigned := range gen.Assignments {
		for _, a := range assigned {
			out[topicPartition{topic, a.ID}] = startPoint{offset: a.Offset, fromCommit: a.Offset >= 0}
			req.Topics[topic] = append(req.Topics[topic], a.ID)
		}
	}
	if len(out) == 0 {
		return out
	}
	ctx, cancel := context.WithTimeout(context.Background(), commitRequestTimeout)
	defer cancel()
	resp, err := p.client.OffsetFetch(ctx, req)
	if err == nil {
		err = resp.Error
	}
	if err != nil {
		p.log.Warn("offset map: cannot read the group's commit metadata; resuming from the committed offsets only (settled records after them are sent again)", "error", err)
		return out
	}
	withMap, settled := 0, int64(0)
	for topic, parts := range resp.Topics {
		for _, r := range parts {
			k := topicPartition{topic, r.Partition}
			sp, ok := out[k]
			if !ok || r.Error != nil || r.Metadata == "" || r.CommittedOffset != sp.offset {
				continue
			}
			m, err := decodeOffsetMap(r.Metadata)
			if err == nil && m.base != sp.offset {
				err = errors.New("offset map: base differs from the committed offset")
			}
			if err != nil {
				p.stats.OffsetMapIgnored.Add(1)
				p.mapLog.Do(func() {
					p.log.Warn("offset map: commit metadata ignored (not written by this worker, or unreadable); resuming from the committed offset", "topic", topic, "partition", r.Partition, "error", err)
				})
				continue
			}
			sp.settled = m.runs
			out[k] = sp
			withMap++
			for _, r := range m.runs {
				settled += r.hi - r.lo
			}
		}
	}
	if withMap > 0 {
		p.log.Info("offset map: resuming past records the previous owner settled", "partitions", withMap, "settled_offsets", settled)
	}
	return out
}

// resolveStart turns kafka.FirstOffset/LastOffset into the partition's actual offset, so a
// new group can commit where it starts: a crash before its first delivery then resumes
// there, not at the (moved) end of the partition. It retries until ctx ends.
func (p *Pipeline) resolveStart(ctx context.Context, ps *partitionState, off int64) (int64, bool) {
	for attempt := 1; ; attempt++ {
		resolved, err := p.readEdgeOffset(ctx, ps, off)
		if err == nil {
			return resolved, true
		}
		if attempt == 1 || attempt%20 == 0 {
			p.log.Warn("cannot resolve the start offset, retrying", "topic", ps.topic, "partition", ps.partition, "attempt", attempt, "error", err)
		}
		if !sleepCtx(ctx, backoff(100*time.Millisecond, 5*time.Second, attempt)+50*time.Millisecond) {
			return 0, false
		}
	}
}

func (p *Pipeline) readEdgeOffset(ctx context.Context, ps *partitionState, off int64) (int64, error) {
	var lastErr error
	for _, b := range p.cfg.Brokers {
		conn, err := p.fetchDialer.DialLeader(ctx, "tcp", b, ps.topic, ps.partition)
		if err != nil {
			lastErr = err
			continue
		}
		_ = conn.SetDeadline(time.Now().Add(commitRequestTimeout))
		var resolved int64
		if off == kafka.LastOffset {
			resolved, err = conn.ReadLastOffset()
		} else {
			resolved, err = conn.ReadFirstOffset()
		}
		conn.Close()
		if err == nil {
			return resolved, nil
		}
		lastErr = err
	}
	return 0, fmt.Errorf("read start offset of %s/%d: %w", ps.topic, ps.partition, lastErr)
}

// initOffsetTelemetry exports the offset map's and the flow's counters (Stats fields).
func (p *Pipeline) initOffsetTelemetry() error {
	mp := p.cfg.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(instrumentationName)
	skipped, err1 := m.Int64ObservableCounter("ingestor.resume.skipped", metric.WithUnit("{message}"),
		metric.WithDescription("Messages not delivered again on resume because the previous owner's offset map says they were settled."))
	truncated, err2 := m.Int64ObservableCounter("ingestor.offset_map.truncated", metric.WithUnit("{commit}"),
		metric.WithDescription("Commits whose offset map did not fit the commit metadata and was cut short (records past the cut are sent again after a restart)."))
	ignored, err3 := m.Int64ObservableCounter("ingestor.offset_map.ignored", metric.WithUnit("{partition}"),
		metric.WithDescription("Partitions whose commit metadata was not written by this worker or unreadable, and was ignored."))
	inflightBytes, err4 := m.Int64ObservableGauge("ingestor.inflight.bytes", metric.WithUnit("By"),
		metric.WithDescription("Bytes of fetched messages not yet delivered or dead-lettered (bounded by Config.MaxInflightBytes)."))
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return err
	}
	_, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(skipped, p.stats.ResumeSkipped.Load())
		o.ObserveInt64(truncated, p.stats.OffsetMapTruncated.Load())
		o.ObserveInt64(ignored, p.stats.OffsetMapIgnored.Load())
		o.ObserveInt64(inflightBytes, p.flow.bytes.Load())
		return nil
	}, skipped, truncated, ignored, inflightBytes)
	return err
}
