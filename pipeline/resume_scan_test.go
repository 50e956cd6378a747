package pipeline

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/braze-ingestor/braze-ingestor/schemas"
)

// sliceSource hands out msgs, then fails as a fetch cut short by its deadline would.
type sliceSource struct {
	msgs []kafka.Message
	i    int
}

func (s *sliceSource) next(context.Context) (*kafka.Message, error) {
	if s.i >= len(s.msgs) {
		return nil, context.DeadlineExceeded
	}
	s.i++
	return &s.msgs[s.i-1], nil
}

func (s *sliceSource) Close() error { return nil }

// usersDecoder reads "u1 u2 …" as one record per user; "!u1" is a record that fails
// validation, and "?" a message that does not decode.
type usersDecoder struct{}

func (usersDecoder) Decode(v []byte, out []schemas.Record) ([]schemas.Record, error) {
	if string(v) == "?" {
		return out, errors.New("not JSON")
	}
	for _, u := range strings.Fields(string(v)) {
		r := schemas.Record{UserHash: schemas.UserHash(schemas.IDExternal, []byte(strings.TrimPrefix(u, "!")))}
		if strings.HasPrefix(u, "!") {
			r.Err = &schemas.RecordError{Msg: "invalid"}
		}
		out = append(out, r)
	}
	return out, nil
}

func scanOf(values map[int64]string, from, to int64) *sliceSource {
	s := &sliceSource{}
	for o := from; o < to; o++ {
		if v, ok := values[o]; ok { // offsets may have gaps
			s.msgs = append(s.msgs, kafka.Message{Offset: o, Value: []byte(v)})
		}
	}
	return s
}

func TestScanSettledKeepsUserOrder(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values map[int64]string
		runs   []offsetRun
		stop   int64 // the source ends before this offset (a read cut short); 0 = never
		hw     int64 // the partition's high watermark, when the messages carry it
		want   []offsetRun
		again  int
	}{
		{
			// 10 is a bundle of a and b not settled (b's request was in flight); 12 is a's later
			// write, settled: delivering 10 again makes 12 stale, so 12 goes again too.
			name:   "bundle left unsettled",
			values: map[int64]string{10: "a b", 11: "c", 12: "a", 13: "d", 14: "b"},
			runs:   []offsetRun{{11, 14}, {14, 15}},
			want:   []offsetRun{{11, 12}, {13, 14}},
			again:  2,
		},
		{
			// 12 is delivered again because of 10; that makes e's later 13 stale as well.
			name:   "redelivery spreads to the users it carries",
			values: map[int64]string{10: "a", 11: "x", 12: "a e", 13: "e", 14: "y"},
			runs:   []offsetRun{{11, 15}},
			want:   []offsetRun{{11, 12}, {14, 15}},
			again:  2,
		},
		{
			// Neither a message that does not decode nor a record that fails validation
			// reaches Braze, so neither makes a later write stale.
			name:   "dead letters change no profile",
			values: map[int64]string{10: "?", 11: "!a", 12: "a", 13: "a"},
			runs:   []offsetRun{{12, 14}},
			want:   []offsetRun{{12, 14}},
		},
		{
			// Offsets 12 and 15 do not exist (compaction): the runs keep their span.
			name:   "gaps stay inside runs",
			values: map[int64]string{10: "a", 11: "b", 13: "a", 14: "c", 16: "d"},
			runs:   []offsetRun{{11, 17}},
			want:   []offsetRun{{11, 13}, {14, 17}},
			again:  1,
		},
		{
			// The read ends at 13: what it did not reach is delivered again.
			name:   "read cut short",
			values: map[int64]string{10: "a", 11: "b", 12: "c", 13: "d", 14: "e"},
			runs:   []offsetRun{{11, 15}},
			stop:   13,
			want:   []offsetRun{{11, 13}},
		},
		{
			// The map's last offsets are gone (compacted): the read stops at the partition's
			// last message instead of waiting for offsets that will never come.
			name:   "caught up",
			values: map[int64]string{10: "a", 11: "b", 12: "c", 13: "a"},
			runs:   []offsetRun{{11, 13}, {17, 20}},
			hw:     14,
			want:   []offsetRun{{11, 13}, {17, 20}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			to := tc.runs[len(tc.runs)-1].hi + 5
			if tc.stop > 0 {
				to = tc.stop
			}
			src := scanOf(tc.values, 10, to)
			for i := range src.msgs {
				src.msgs[i].HighWaterMark = tc.hw
			}
			got := scanSettled(context.Background(), src, usersDecoder{}, 10, tc.runs)
			if !reflect.DeepEqual(got.safe, tc.want) || got.redeliver != tc.again {
				t.Fatalf("skippable %v, %d delivered again; want %v, %d", got.safe, got.redeliver, tc.want, tc.again)
			}
		})
	}
}

func TestSubtractOffsets(t *testing.T) {
	runs := []offsetRun{{10, 15}, {20, 21}, {30, 40}}
	for _, tc := range []struct {
		drop  []int64
		limit int64
		want  []offsetRun
	}{
		{nil, 100, runs},
		{[]int64{10, 14, 20, 35}, 100, []offsetRun{{11, 14}, {30, 35}, {36, 40}}},
		{[]int64{12}, 31, []offsetRun{{10, 12}, {13, 15}, {20, 21}, {30, 31}}},
		{nil, 10, nil},
	} {
		if got := subtractOffsets(runs, tc.drop, tc.limit); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("drop %v below %d: %v, want %v", tc.drop, tc.limit, got, tc.want)
		}
	}
}

// The scan reads messages that are counted when they are decoded for delivery: it must not
// count them again (the Segment decoder's calls by outcome are exported as metrics).
func TestScanSettledCountsNothing(t *testing.T) {
	seg := &schemas.SegmentDecoder{}
	src := &sliceSource{msgs: []kafka.Message{
		{Offset: 10, Value: []byte(`{"type":"identify","userId":"u1","traits":{"plan":"a"}}`)},
		{Offset: 11, Value: []byte(`{"type":"identify","userId":"u1","traits":{"plan":"b"}}`)},
	}}
	got := scanSettled(context.Background(), src, uncounted(seg), 10, []offsetRun{{11, 12}})
	if got.redeliver != 1 {
		t.Fatalf("u1's settled write after its unsettled one: %d delivered again, want 1", got.redeliver)
	}
	seg.EachCount(func(c schemas.SegmentCall, o schemas.SegmentOutcome, n int64) {
		if n != 0 {
			t.Errorf("the scan counted %d %s/%s calls", n, c, o)
		}
	})
}
