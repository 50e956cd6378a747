package bench

import (
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/braze-ingestor/braze-ingestor/batcher"
	"github.com/braze-ingestor/braze-ingestor/schemas"
	"github.com/braze-ingestor/braze-ingestor/synth"
)

// obj is what a lane holds per record (the pipeline's item minus the ack pointer).
type obj struct {
	kind  schemas.Kind
	raw   []byte
	index int
	id    []byte
	ack   *int
}

func (o obj) ObjectKind() schemas.Kind { return o.kind }
func (o obj) ObjectBytes() []byte      { return o.raw }

// corpus is the synth mix the end-to-end runs load: 50% events, 35% attributes, 15%
// purchases, 200-800 bytes per record, 20% bundles of 2-5 records, 5000 users.
func corpus(tb testing.TB, messages int) ([][]byte, int) {
	gen := synth.New(genOptions(5000, 1))
	out := make([][]byte, messages)
	recs := 0
	for i := range out {
		m := gen.Next()
		out[i] = m.Value
		recs += len(m.Records)
	}
	return out, recs
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDecodePack decodes a realistic message mix and packs the records into
// /users/track bodies (Packer.Fits/Add, Encode at 75 objects), the per-record work of a
// fetch loop plus a lane without the channel hop and the HTTP call. One op is one message.
// The bar: >= 1,000,000 records/s on one core with <= 2 allocations per record.
func BenchmarkDecodePack(b *testing.B) {
	msgs, nrec := corpus(b, 20000)
	lim := batcher.Limits{Mode: batcher.Combined, MaxObjects: 75, MaxBytes: 3_500_000}
	dec := schemas.Decoder{MaxRecordBytes: lim.MaxRecordBytes()}
	packer := batcher.NewPacker(lim)
	batch := make([]obj, 0, 75)
	var body []byte
	recs := make([]schemas.Record, 0, 16)
	var ack int
	var bodies, bodyBytes int64
	flush := func() {
		body = batcher.Encode(body[:0], batch)
		bodies++
		bodyBytes += int64(len(body))
		clear(batch)
		batch = batch[:0]
		packer.Reset()
	}
	// Warm up: sizes buffers as a long-running lane would have them.
	for _, m := range msgs[:1000] {
		recs, _ = dec.Decode(m, recs[:0])
	}
	runtime.GC()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0 := cpuTime()
	records := 0
	i := 0
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		m := msgs[i]
		if i++; i == len(msgs) {
			i = 0
		}
		var err error
		recs, err = dec.Decode(m, recs[:0])
		if err != nil {
			b.Fatal(err)
		}
		for j := range recs {
			r := &recs[j]
			if r.Err != nil {
				b.Fatal(r.Err)
			}
			if !packer.Fits(r.Kind, len(r.Raw)) {
				flush()
			}
			packer.Add(r.Kind, len(r.Raw))
			batch = append(batch, obj{kind: r.Kind, raw: r.Raw, index: r.Index, id: r.ID, ack: &ack})
			if packer.Full() {
				flush()
			}
		}
		records += len(recs)
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	runtime.ReadMemStats(&ms1)
	_ = nrec
	b.ReportMetric(float64(records)/b.Elapsed().Seconds(), "records/s")
	if cpu > 0 {
		b.ReportMetric(float64(records)/cpu.Seconds(), "records/cpu-s")
	}
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(max(1, records)), "allocs/record")
	if bodies > 0 {
		b.ReportMetric(float64(records)/float64(bodies), "records/body")
	}
}
