package batcher

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/braze-ingestor/braze-ingestor/schemas"
)

type obj struct {
	kind schemas.Kind
	raw  []byte
}

func (o obj) ObjectKind() schemas.Kind { return o.kind }
func (o obj) ObjectBytes() []byte      { return o.raw }

func mk(kind schemas.Kind, i int) obj {
	return obj{kind, []byte(fmt.Sprintf(`{"external_id":"u%d","n":%d}`, i, i))}
}

func TestEncodeShapeAndOrder(t *testing.T) {
	tests := []struct {
		name string
		objs []obj
		want string
	}{
		{"empty", nil, `{}`},
		{"one event", []obj{mk(schemas.KindEvent, 1)}, `{"events":[{"external_id":"u1","n":1}]}`},
		{"arrays in Braze order, items in input order",
			[]obj{mk(schemas.KindPurchase, 1), mk(schemas.KindEvent, 2), mk(schemas.KindAttributes, 3), mk(schemas.KindEvent, 4)},
			`{"attributes":[{"external_id":"u3","n":3}],"events":[{"external_id":"u2","n":2},{"external_id":"u4","n":4}],"purchases":[{"external_id":"u1","n":1}]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := string(Encode(nil, tc.objs))
			if got != tc.want {
				t.Fatalf("Encode:\n got %s\nwant %s", got, tc.want)
			}
			if !json.Valid([]byte(got)) {
				t.Fatalf("invalid JSON: %s", got)
			}
		})
	}
}

// The packer's byte count must equal the encoded size exactly, or bodies could break the
// 4 MB limit (or waste room).
func TestPackerBytesMatchEncode(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 200; trial++ {
		p := NewPacker(Limits{Mode: PerArray, MaxObjects: 75, MaxBytes: 1 << 30})
		var objs []obj
		for i := 0; i < r.IntN(100); i++ {
			o := mk(schemas.Kind(r.IntN(3)), r.IntN(100000))
			if !p.Fits(o.kind, len(o.raw)) {
				break
			}
			p.Add(o.kind, len(o.raw))
			objs = append(objs, o)
		}
		if got, want := p.Bytes(), len(Encode(nil, objs)); got != want {
			t.Fatalf("trial %d: packer counted %d bytes, Encode wrote %d", trial, got, want)
		}
	}
}

func TestPackerLimits(t *testing.T) {
	tests := []struct {
		name    string
		limits  Limits
		kinds   []schemas.Kind // added in a loop until refused
		wantLen int
	}{
		{"combined 75 total", Limits{Combined, 75, 1 << 20}, []schemas.Kind{0, 1, 2}, 75},
		{"per_array 75 each", Limits{PerArray, 75, 1 << 20}, []schemas.Kind{0, 1, 2}, 225},
		{"per_array one kind", Limits{PerArray, 75, 1 << 20}, []schemas.Kind{1}, 75},
		{"bytes bound", Limits{Combined, 75, 500}, []schemas.Kind{1}, 0}, // checked by size below
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPacker(tc.limits)
			var objs []obj
			for i := 0; ; i++ {
				o := mk(tc.kinds[i%len(tc.kinds)], 10+i%10) // 26-27 byte objects
				if !p.Fits(o.kind, len(o.raw)) {
					break
				}
				p.Add(o.kind, len(o.raw))
				objs = append(objs, o)
			}
			body := Encode(nil, objs)
			if len(body) > tc.limits.MaxBytes {
				t.Fatalf("body %d bytes over limit %d", len(body), tc.limits.MaxBytes)
			}
			if tc.name == "bytes bound" {
				// one more object of the same size must not have fitted
				if len(body)+28 <= tc.limits.MaxBytes {
					t.Fatalf("packer stopped early: %d bytes of %d", len(body), tc.limits.MaxBytes)
				}
				return
			}
			if len(objs) != tc.wantLen {
				t.Fatalf("packed %d objects, want %d", len(objs), tc.wantLen)
			}
			// Full means no kind fits any more; with one kind in PerArray the others still would.
			if wantFull := tc.name != "per_array one kind"; p.Full() != wantFull {
				t.Fatalf("Full() = %v at %d objects, want %v", p.Full(), len(objs), wantFull)
			}
		})
	}
}

func TestLocate(t *testing.T) {
	objs := []obj{mk(schemas.KindEvent, 0), mk(schemas.KindAttributes, 1), mk(schemas.KindEvent, 2), mk(schemas.KindPurchase, 3)}
	tests := []struct {
		array string
		index int
		want  int
	}{
		{"events", 0, 0}, {"events", 1, 2}, {"attributes", 0, 1}, {"purchases", 0, 3},
		{"events", 2, -1}, {"purchases", -1, -1}, {"bogus", 0, -1},
	}
	for _, tc := range tests {
		if got := Locate(objs, tc.array, tc.index); got != tc.want {
			t.Errorf("Locate(%s,%d) = %d, want %d", tc.array, tc.index, got, tc.want)
		}
	}
}

func TestLimitsValidate(t *testing.T) {
	if err := (Limits{Combined, 75, 3_500_000}).Validate(); err != nil {
		t.Fatal(err)
	}
	for _, l := range []Limits{{"x", 75, 1000}, {Combined, 0, 1000}, {PerArray, 75, 5}} {
		if l.Validate() == nil {
			t.Errorf("%+v: want error", l)
		}
	}
}

func BenchmarkPackAndEncode(b *testing.B) {
	objs := make([]obj, 75)
	for i := range objs {
		objs[i] = obj{schemas.Kind(i % 3), []byte(fmt.Sprintf(`{"external_id":"user-%06d","name":"viewed","time":"2026-11-25T10:00:00Z","properties":{"a":"%0300d"}}`, i, i))}
	}
	p := NewPacker(Limits{Combined, 75, 3_500_000})
	var buf []byte
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.Reset()
		for j := range objs {
			if p.Fits(objs[j].kind, len(objs[j].raw)) {
				p.Add(objs[j].kind, len(objs[j].raw))
			}
		}
		buf = Encode(buf[:0], objs)
	}
	b.ReportMetric(float64(b.N*len(objs))/b.Elapsed().Seconds(), "records/s")
}
