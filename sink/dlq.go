package sink

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/braze-ingestor/braze-ingestor/schemas"
)

// DLQ header names (docs/design.md §4).
const (
	HeaderReason          = "dlq.reason"
	HeaderError           = "dlq.error"
	HeaderSourceTopic     = "dlq.source.topic"
	HeaderSourcePartition = "dlq.source.partition"
	HeaderSourceOffset    = "dlq.source.offset"
	HeaderAttempts        = "dlq.attempts"
	HeaderFailedAt        = "dlq.failed_at"
	HeaderRecordIndex     = "dlq.source.record_index"
)

// DeadLetter is one record (or one unusable message) on its way to the DLQ topic.
type DeadLetter struct {
	Reason   schemas.Reason
	Error    string
	Attempts int
	FailedAt time.Time

	SourceTopic     string
	SourcePartition int
	SourceOffset    int64
	// RecordIndex is the record's position in its source message (-1: the whole message).
	RecordIndex int
	Key         []byte
	Headers     []kafka.Header

	// Kind, Record and ID describe a failing record: the value becomes an envelope.
	Kind   schemas.Kind
	Record []byte
	ID     []byte
	// Original is used instead when the message itself is unusable.
	Original []byte
}

// Message renders the dead letter as a Kafka message: the source key, the record as an
// envelope (or the original bytes), and the source headers followed by the dlq.* headers.
func (d *DeadLetter) Message() kafka.Message {
	var value []byte
	if d.Record != nil {
		value = make([]byte, 0, len(d.Record)+len(d.ID)+40)
		value = append(value, `{"type":"`...)
		value = append(value, d.Kind.EnvelopeType()...)
		value = append(value, `","data":`...)
		value = append(value, d.Record...)
		if len(d.ID) > 0 {
			// ID holds the unescaped id; re-quote it safely.
			value = append(value, `,"id":`...)
			value = strconv.AppendQuote(value, string(d.ID))
		}
		value = append(value, '}')
	} else {
		value = d.Original
	}
	headers := make([]kafka.Header, 0, len(d.Headers)+8)
	for _, h := range d.Headers {
		// A replayed record that fails again gets fresh dlq.* headers, not two sets.
		if strings.HasPrefix(h.Key, "dlq.") && !strings.HasPrefix(h.Key, "dlq.replay") {
			continue
		}
		headers = append(headers, h)
	}
	failedAt := d.FailedAt
	if failedAt.IsZero() {
		failedAt = time.Now()
	}
	headers = append(headers,
		kafka.Header{Key: HeaderReason, Value: []byte(d.Reason)},
		kafka.Header{Key: HeaderError, Value: []byte(d.Error)},
		kafka.Header{Key: HeaderSourceTopic, Value: []byte(d.SourceTopic)},
		kafka.Header{Key: HeaderSourcePartition, Value: []byte(strconv.Itoa(d.SourcePartition))},
		kafka.Header{Key: HeaderSourceOffset, Value: []byte(strconv.FormatInt(d.SourceOffset, 10))},
		kafka.Header{Key: HeaderRecordIndex, Value: []byte(strconv.Itoa(d.RecordIndex))},
		kafka.Header{Key: HeaderAttempts, Value: []byte(strconv.Itoa(d.Attempts))},
		kafka.Header{Key: HeaderFailedAt, Value: []byte(failedAt.UTC().Format(time.RFC3339Nano))},
	)
	return kafka.Message{Key: d.Key, Value: value, Headers: headers}
}

// DLQConfig configures a DLQWriter.
type DLQConfig struct {
	Brokers   []string
	Topic     string
	Transport *kafka.Transport // TLS/SASL; nil = plaintext
	Timeout   time.Duration    // per write
}

// DLQWriter writes dead letters with all-replica acknowledgement.
type DLQWriter struct {
	w       *kafka.Writer
	timeout time.Duration
}

// NewDLQWriter returns a writer for cfg.
func NewDLQWriter(cfg DLQConfig) *DLQWriter {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	w := &kafka.Writer{
		Addr:         kafka.TCP(cfg.Brokers...),
		Topic:        cfg.Topic,
		RequiredAcks: kafka.RequireAll,
		// Keep a dead letter on the partition its key hashes to, like its source.
		Balancer: &kafka.Hash{},
		// Writes are synchronous and already batched by the caller; don't linger.
		BatchTimeout: 5 * time.Millisecond,
		BatchSize:    1000,
		MaxAttempts:  3,
		WriteTimeout: cfg.Timeout,
		ReadTimeout:  cfg.Timeout,
	}
	if cfg.Transport != nil {
		w.Transport = cfg.Transport
	}
	return &DLQWriter{w: w, timeout: cfg.Timeout}
}

// ErrDLQ wraps every failure to write the DLQ.
var ErrDLQ = errors.New("dead-letter write failed")

// Write writes the dead letters and returns only once every one is acknowledged by all
// in-sync replicas, or an error wrapping ErrDLQ.
func (w *DLQWriter) Write(ctx context.Context, letters []DeadLetter) error {
	if len(letters) == 0 {
		return nil
	}
	msgs := make([]kafka.Message, len(letters))
	for i := range letters {
		msgs[i] = letters[i].Message()
	}
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	if err := w.w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("%w: topic %s: %v", ErrDLQ, w.w.Topic, err)
	}
	return nil
}

// Close flushes and closes the writer.
func (w *DLQWriter) Close() error { return w.w.Close() }
