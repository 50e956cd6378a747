package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
)

// batchSource fetches one partition with kafka-go's Conn.ReadBatch instead of a Reader: a
// whole fetch response is read into memory and handed out message by message on the fetch
// loop's own goroutine. A Reader runs a goroutine per partition and passes every message
// through a channel to its caller; at hundreds of thousands of messages per second that
// hand-off is a large share of the CPU.
type batchSource struct {
	p         *Pipeline
	topic     string
	partition int
	offset    int64 // next offset to fetch (kafka.FirstOffset / LastOffset until resolved)
	conn      *kafka.Conn
	buf       []kafka.Message
	pos       int // index of the next message in buf
	failures  int
}

// batchMaxBytes bounds one fetch: memory per partition is about this much while a batch is
// being handed out (12 partitions × 1 MiB), independent of KAFKA_FETCH_MAX_BYTES.
const batchMaxBytes = 1 << 20

// next returns the next message, fetching a new batch when the last one is used up. It
// returns ctx's error once ctx ends.
func (s *batchSource) next(ctx context.Context) (*kafka.Message, error) {
	if s.pos > 0 {
		s.buf[s.pos-1] = kafka.Message{} // handed out before; the tracker keeps what it needs
	}
	for s.pos >= len(s.buf) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := s.fill(ctx); err != nil {
			s.failures++
			if s.failures == 1 || s.failures%20 == 0 {
				s.p.log.Warn("fetch failed, retrying", "topic", s.topic, "partition", s.partition, "offset", s.offset, "attempt", s.failures, "error", err)
			}
			if !sleepCtx(ctx, backoff(100*time.Millisecond, 5*time.Second, s.failures)+50*time.Millisecond) {
				return nil, ctx.Err()
			}
			continue
		}
		s.failures = 0
	}
	s.pos++
	return &s.buf[s.pos-1], nil
}

func (s *batchSource) fill(ctx context.Context) error {
	if s.conn == nil {
		if err := s.connect(ctx); err != nil {
			return err
		}
	}
	maxBytes := min(s.p.cfg.MaxBytes, batchMaxBytes)
	// The broker answers within MaxWait; the rest of the deadline is for reading the answer.
	start := time.Now()
	_ = s.conn.SetReadDeadline(start.Add(s.p.cfg.MaxWait + 10*time.Second))
	batch := s.conn.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: min(s.p.cfg.MinBytes, maxBytes), MaxBytes: maxBytes, MaxWait: s.p.cfg.MaxWait})
	s.buf, s.pos = s.buf[:0], 0
	for {
		m, err := batch.ReadMessage()
		if err != nil {
			break
		}
		s.buf = append(s.buf, m)
	}
	hw := batch.HighWaterMark()
	err := batch.Close()
	for i := range s.buf {
		s.buf[i].HighWaterMark = hw
	}
	if n := len(s.buf); n > 0 {
		s.offset = s.buf[n-1].Offset + 1
	}
	if err == nil {
		return nil
	}
	if len(s.buf) == 0 && errors.Is(err, kafka.RequestTimedOut) {
		// Caught up: kafka-go reports a fetch at the high watermark, which the broker held
		// for MaxWait without new data, as RequestTimedOut. That is no failure: keep the
		// connection, log nothing, and ask again at once (closing and backing off here
		// cost a reconnect per idle partition per MaxWait and delayed the next records).
		if el := time.Since(start); el < s.p.cfg.MaxWait/2 {
			sleepCtx(ctx, s.p.cfg.MaxWait/2-el) // a broker that answers at once must not make this spin
		}
		return nil
	}
	if len(s.buf) > 0 {
		// Hand out what arrived; the next fill reconnects and resumes after it.
		s.reset()
		return nil
	}
	if errors.Is(err, kafka.OffsetOutOfRange) {
		// The offset is gone (retention) or not there yet: resume from the earliest offset,
		// as a new consumer group would.
		s.p.log.Warn("offset out of range; resuming from the earliest available offset", "topic", s.topic, "partition", s.partition, "offset", s.offset)
		s.offset = kafka.FirstOffset
	}
	s.reset()
	return fmt.Errorf("fetch %s/%d at offset %d: %w", s.topic, s.partition, s.offset, err)
}

// connect dials the partition leader through any broker and seeks to the offset.
func (s *batchSource) connect(ctx context.Context) error {
	var lastErr error
	for _, b := range s.p.cfg.Brokers {
		conn, err := s.p.fetchDialer.DialLeader(ctx, "tcp", b, s.topic, s.partition)
		if err != nil {
			lastErr = err
			continue
		}
		if s.offset < 0 {
			var off int64
			if s.offset == kafka.LastOffset {
				off, err = conn.ReadLastOffset()
			} else {
				off, err = conn.ReadFirstOffset()
			}
			if err != nil {
				conn.Close()
				lastErr = err
				continue
			}
			s.offset = off
		}
		if _, err := conn.Seek(s.offset, kafka.SeekAbsolute|kafka.SeekDontCheck); err != nil {
			conn.Close()
			lastErr = err
			continue
		}
		s.conn = conn
		return nil
	}
	return fmt.Errorf("connect to the leader of %s/%d: %w", s.topic, s.partition, lastErr)
}

func (s *batchSource) reset() {
	if s.conn != nil {
		_ = s.conn.Close()
		s.conn = nil
	}
}

func (s *batchSource) Close() error {
	s.reset()
	return nil
}
