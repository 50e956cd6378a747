package bench

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/braze-ingestor/braze-ingestor/synth"
)

// LoadResult describes what was produced.
type LoadResult struct {
	Records  int64 // Braze objects (a bundle message carries several)
	Messages int64
	Bytes    int64 // sum of message values
	Elapsed  time.Duration
}

func (l LoadResult) String() string {
	return fmt.Sprintf("%d records in %d messages (%.2f records/message, %.0f bytes/record, %.1f MB) in %s (%.0f records/s)",
		l.Records, l.Messages, float64(l.Records)/float64(max(1, l.Messages)), float64(l.Bytes)/float64(max(1, l.Records)),
		float64(l.Bytes)/1e6, l.Elapsed.Round(time.Millisecond), float64(l.Records)/l.Elapsed.Seconds())
}

// genOptions are the synthetic traffic options of every run: the synth mix (50% events, 35%
// attributes, 15% purchases, 200-800 bytes per record, 20% bundles of 2-5 records), all
// valid, over Users users.
func genOptions(users int, seed uint64) synth.Options {
	return synth.Options{Users: users, Seed: seed}
}

// Compression is the producer's batch compression: "none" (default), "snappy", "lz4", "zstd"
// or "gzip". The repository's own dev producer (kafka-go Writer) does not compress.
var Compression = "none"

func compression() kgo.CompressionCodec {
	switch Compression {
	case "snappy":
		return kgo.SnappyCompression()
	case "lz4":
		return kgo.Lz4Compression()
	case "zstd":
		return kgo.ZstdCompression()
	case "gzip":
		return kgo.GzipCompression()
	}
	return kgo.NoCompression()
}

func newProducer(brokers []string, topic string, linger time.Duration) (*kgo.Client, error) {
	return kgo.NewClient(
		kgo.ProducerBatchCompression(compression()),
		kgo.SeedBrokers(brokers...),
		kgo.DefaultProduceTopic(topic),
		kgo.ProducerLinger(linger),
		kgo.ProducerBatchMaxBytes(1<<20),
		kgo.MaxBufferedRecords(100_000),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), // murmur2 of the key, like Kafka's default
	)
}

// Load produces synthetic messages until at least records records are written.
func Load(ctx context.Context, brokers []string, topic string, records int64, users int, seed uint64) (LoadResult, error) {
	return LoadWith(ctx, brokers, topic, records, genOptions(users, seed))
}

// LoadWith produces messages of the generator options until at least records records are written.
func LoadWith(ctx context.Context, brokers []string, topic string, records int64, opts synth.Options) (LoadResult, error) {
	cl, err := newProducer(brokers, topic, 5*time.Millisecond)
	if err != nil {
		return LoadResult{}, err
	}
	defer cl.Close()
	gen := synth.New(opts)
	var res LoadResult
	var perr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for res.Records < records {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		m := gen.Next()
		res.Records += int64(len(m.Records))
		res.Messages++
		res.Bytes += int64(len(m.Value))
		wg.Add(1)
		cl.Produce(ctx, &kgo.Record{Key: m.Key, Value: m.Value}, func(_ *kgo.Record, err error) {
			if err != nil {
				perr.Store(err)
			}
			wg.Done()
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return res, err
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	if e, ok := perr.Load().(error); ok {
		return res, fmt.Errorf("produce: %w", e)
	}
	return res, nil
}

// stampPrefix is replaced, in paced (latency) runs, by `"t=` and the produce time in unix
// nanoseconds (19 digits): the same length, so record sizes do not change. Every synth
// object carries a padding string that starts with it (its pad is at least 40 bytes).
var (
	stampPrefix = []byte(`"abcdefghijabcdefghija`)
	stampMark   = []byte(`"t=`)
)

// stamp writes now into every object of v (in place; v is a fresh buffer).
func stamp(v []byte, now time.Time) []byte {
	ts := strconv.AppendInt(make([]byte, 0, 22), now.UnixNano(), 10)
	if len(ts) != 19 {
		return v
	}
	repl := append(append([]byte{}, stampMark...), ts...)
	for i := 0; ; {
		j := bytes.Index(v[i:], stampPrefix)
		if j < 0 {
			return v
		}
		copy(v[i+j:], repl)
		i += j + len(repl)
	}
}

// PacedResult describes a paced produce.
type PacedResult struct {
	LoadResult
	OfferedRate float64 // records/s asked for
	ActualRate  float64
}

// ProducePaced produces synthetic messages at rate records/s for d, stamping each object
// with its produce time. Records are handed to the client with no linger, so the stamp
// is within a millisecond or so of the broker append.
func ProducePaced(ctx context.Context, brokers []string, topic string, rate float64, d time.Duration, users int, seed uint64) (PacedResult, error) {
	return ProducePacedWith(ctx, brokers, topic, rate, d, genOptions(users, seed))
}

// ProducePacedWith is ProducePaced with the generator options.
func ProducePacedWith(ctx context.Context, brokers []string, topic string, rate float64, d time.Duration, opts synth.Options) (PacedResult, error) {
	cl, err := newProducer(brokers, topic, 0)
	if err != nil {
		return PacedResult{}, err
	}
	defer cl.Close()
	gen := synth.New(opts)
	var res PacedResult
	res.OfferedRate = rate
	var perr atomic.Value
	start := time.Now()
	end := start.Add(d)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		now := time.Now()
		if now.After(end) || ctx.Err() != nil {
			break
		}
		due := int64(now.Sub(start).Seconds() * rate)
		for res.Records < due {
			m := gen.Next()
			res.Records += int64(len(m.Records))
			res.Messages++
			res.Bytes += int64(len(m.Value))
			v := stamp(m.Value, time.Now())
			cl.Produce(ctx, &kgo.Record{Key: m.Key, Value: v}, func(_ *kgo.Record, err error) {
				if err != nil {
					perr.Store(err)
				}
			})
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
	if err := cl.Flush(ctx); err != nil {
		return res, err
	}
	res.Elapsed = time.Since(start)
	res.ActualRate = float64(res.Records) / res.Elapsed.Seconds()
	if e, ok := perr.Load().(error); ok {
		return res, fmt.Errorf("produce: %w", e)
	}
	return res, nil
}
