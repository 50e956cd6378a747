package dlq

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
)

// LetterOverhead is what a dead letter may add to its source message: the envelope around a
// record, the dlq.* headers and a dlq.error of at most MaxErrorBytes.
const LetterOverhead = 16 << 10

// DefaultRequestBytes bounds the letters of one produce request to a partition when
// WriterConfig.RequestBytes is 0: under the broker's default message.max.bytes (1,048,588).
const DefaultRequestBytes = 1_000_000

// WriterConfig configures a Writer.
type WriterConfig struct {
	Brokers   []string
	Topic     string
	Transport *kafka.Transport // TLS/SASL; nil = plaintext
	Timeout   time.Duration    // per write; 0 = 10s
	// MaxMessageBytes is the largest source message the worker reads (KAFKA_FETCH_MAX_BYTES).
	// Letters up to MaxMessageBytes+LetterOverhead are sent as they are; a larger one, or one
	// the broker refuses as too large, is replaced by a dlq_too_large reference. 0 = 10 MiB.
	MaxMessageBytes int
	// RequestBytes bounds the letters sent together in one write (a larger letter goes
	// alone). 0 = DefaultRequestBytes.
	RequestBytes int
}

// Writer writes dead letters with all-replica acknowledgement.
type Writer struct {
	w            *kafka.Writer
	timeout      time.Duration
	maxLetter    int
	requestBytes int
}

// NewWriter returns a writer for cfg.
func NewWriter(cfg WriterConfig) *Writer {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = 10 << 20
	}
	if cfg.RequestBytes <= 0 {
		cfg.RequestBytes = DefaultRequestBytes
	}
	maxLetter := cfg.MaxMessageBytes + LetterOverhead
	w := &kafka.Writer{
		Addr:         kafka.TCP(cfg.Brokers...),
		Topic:        cfg.Topic,
		RequiredAcks: kafka.RequireAll,
		// Keep a dead letter on the partition its key hashes to, like its source.
		Balancer: &kafka.Hash{},
		// Writes are synchronous and already batched by the caller; don't linger.
		BatchTimeout: 5 * time.Millisecond,
		BatchSize:    1000,
		// kafka-go refuses, client-side, any message larger than BatchBytes (default 1 MiB):
		// allow the largest letter the worker can produce. Write keeps each call's letters
		// under RequestBytes, so batches stay within the broker's limits.
		BatchBytes:   int64(maxLetter) + 1024,
		MaxAttempts:  3,
		WriteTimeout: cfg.Timeout,
		ReadTimeout:  cfg.Timeout,
	}
	if cfg.Transport != nil {
		w.Transport = cfg.Transport
	}
	return &Writer{w: w, timeout: cfg.Timeout, maxLetter: maxLetter, requestBytes: cfg.RequestBytes}
}

// ErrWrite wraps every failure to write the DLQ.
var ErrWrite = errors.New("dead-letter write failed")

// Write writes the letters not yet Written and returns nil once every one is acknowledged by
// all in-sync replicas; otherwise an error wrapping ErrWrite, with Written set on those that
// were, so that calling Write again with the same slice writes only the rest.
//
// A letter larger than the writer allows, or one the broker refuses as too large (after it
// was tried alone), is replaced in place by its dlq_too_large reference (docs/dlq.md): such
// a letter never stalls the DLQ.
func (w *Writer) Write(ctx context.Context, letters []Letter) error {
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	var firstErr error
	for start := 0; start < len(letters); {
		idx, msgs, next := w.chunk(letters, start)
		start = next
		if len(idx) == 0 {
			continue
		}
		if err := w.writeChunk(ctx, letters, idx, msgs); err != nil && firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	if firstErr != nil {
		return fmt.Errorf("%w: topic %s: %w", ErrWrite, w.w.Topic, firstErr)
	}
	for i := range letters {
		if !letters[i].Written {
			return fmt.Errorf("%w: topic %s: %w", ErrWrite, w.w.Topic, ctx.Err())
		}
	}
	return nil
}

// chunk collects, from start, the unwritten letters that fit in one request of requestBytes
// (at least one), replacing a letter over maxLetter by its reference. It returns their
// indexes, their messages and where the next chunk starts.
func (w *Writer) chunk(letters []Letter, start int) (idx []int, msgs []kafka.Message, next int) {
	total := 0
	for next = start; next < len(letters); next++ {
		l := &letters[next]
		if l.Written {
			continue
		}
		m := l.Message()
		size := messageSize(&m)
		if size > w.maxLetter {
			*l = l.tooLarge(size, fmt.Errorf("over the writer's limit of %d bytes", w.maxLetter))
			m = l.Message()
			size = messageSize(&m)
		}
		if len(idx) > 0 && total+size > w.requestBytes {
			break
		}
		idx = append(idx, next)
		msgs = append(msgs, m)
		total += size
	}
	return idx, msgs, next
}

// writeChunk writes one chunk. Letters the broker refuses as too large are retried alone,
// and a lone letter it refuses is replaced by its reference and written.
func (w *Writer) writeChunk(ctx context.Context, letters []Letter, idx []int, msgs []kafka.Message) error {
	err := w.w.WriteMessages(ctx, msgs...)
	if err == nil {
		for _, i := range idx {
			letters[i].Written = true
		}
		return nil
	}
	var werrs kafka.WriteErrors
	if !errors.As(err, &werrs) || len(werrs) != len(msgs) {
		if !tooLarge(err) {
			return err
		}
		// A size error for the call as a whole: handle it as one per letter.
		werrs = make(kafka.WriteErrors, len(msgs))
		for j := range werrs {
			werrs[j] = err
		}
	}
	var firstErr error
	for j, i := range idx {
		switch e := werrs[j]; {
		case e == nil:
			letters[i].Written = true
		case tooLarge(e) && len(msgs) > 1:
			// The batch may be what is too large: try this letter alone.
			e = w.writeChunk(ctx, letters, []int{i}, msgs[j:j+1])
			if e != nil && firstErr == nil {
				firstErr = e
			}
		case tooLarge(e):
			if e = w.writeReference(ctx, &letters[i], &msgs[j], e); e != nil && firstErr == nil {
				firstErr = e
			}
		default:
			if firstErr == nil {
				firstErr = e
			}
		}
	}
	return firstErr
}

// writeReference replaces *l (rendered as *m, refused with cause) by its reference and writes it.
func (w *Writer) writeReference(ctx context.Context, l *Letter, m *kafka.Message, cause error) error {
	if l.Reason == ReasonLetterTooLarge {
		return fmt.Errorf("even the dlq_too_large reference is refused (check the DLQ topic's max.message.bytes): %w", cause)
	}
	*l = l.tooLarge(messageSize(m), cause)
	ref := l.Message()
	if err := w.w.WriteMessages(ctx, ref); err != nil {
		return fmt.Errorf("writing the dlq_too_large reference: %w", err)
	}
	l.Written = true
	return nil
}

// tooLarge reports whether err says the broker (or kafka-go) refused a message or batch as
// too large.
func tooLarge(err error) bool {
	var mtl kafka.MessageTooLargeError
	return errors.Is(err, kafka.MessageSizeTooLarge) || errors.Is(err, kafka.RecordListTooLarge) || errors.As(err, &mtl)
}

// Close flushes and closes the writer.
func (w *Writer) Close() error { return w.w.Close() }
