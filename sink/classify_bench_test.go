package sink

import (
	"testing"
	"time"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
)

// BenchmarkClassifySuccess is the answer to nearly every request: Braze's success body with
// its rate-limit headers (the hot path of sink.classify; results in BENCHMARKS.md).
func BenchmarkClassifySuccess(b *testing.B) {
	body := []byte(`{"message":"success","attributes_processed":25,"events_processed":40,"purchases_processed":10}`)
	h := windowHeader("250000", "249000", "1800000060")
	now := time.Unix(1_800_000_000, 0)
	b.ReportAllocs()
	for b.Loop() {
		if r := ClassifyEndpoint(endpoint.Track, 201, h, body, now); r.Class != Delivered {
			b.Fatal(r.Class)
		}
	}
}
