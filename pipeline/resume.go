package pipeline

import (
	"context"
	"time"

	"github.com/braze-ingestor/braze-ingestor/schemas"
)

// Resuming past the previous owner's offset map without breaking per-user order
// (docs/offsets.md "Resuming").
//
// The map says which messages above the committed offset are settled. Skipping all of them can
// put a user's updates out of order: a message the previous owner had not settled (a bundle
// some of whose records were still in flight, e.g. an invalid record's dead letter) is
// delivered again after a later, settled message of the same user was applied, and its older
// attribute write would be the last one.
// So before handing anything out, the new owner reads the mapped range once and keeps as
// skippable only the settled messages none of whose users appears in an earlier message that
// is delivered again; the others are delivered again, in Kafka order. The owner's commits
// carry only what stays skippable, so a later crash cannot skip a message that this owner's
// replay made stale.

// resumeScanTimeout bounds the read of the mapped range (at most KAFKA_MAX_RUN_AHEAD offsets).
// A read cut short keeps the map only below where it got: the rest is delivered again.
const resumeScanTimeout = 15 * time.Second

// orderSafeSkips returns the part of runs (settled offsets past base) that the partition may
// skip without reordering any user's records.
func (p *Pipeline) orderSafeSkips(ctx context.Context, ps *partitionState, base int64, runs []offsetRun) []offsetRun {
	if len(runs) == 0 {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, resumeScanTimeout)
	defer cancel()
	src := &batchSource{p: p, topic: ps.topic, partition: ps.partition, offset: base}
	defer src.Close()
	scan := scanSettled(sctx, src, uncounted(p.newDecoder(ps.topic)), base, runs)
	if scan.reached < runs[len(runs)-1].hi && ctx.Err() == nil { // not the generation ending
		p.log.Warn("offset map: could not read the mapped range; settled messages past the offset reached are delivered again",
			"topic", ps.topic, "partition", ps.partition, "offset", scan.reached)
	}
	if scan.redeliver > 0 {
		p.log.Info("offset map: settled messages delivered again to keep per-user order (an earlier message of one of their users is delivered again)",
			"topic", ps.topic, "partition", ps.partition, "messages", scan.redeliver)
	}
	return scan.safe
}

// countingDecoder is a decoder that counts what it decodes (schemas.SegmentDecoder's calls by
// outcome): the scan reads messages that are counted when they are decoded for delivery.
type countingDecoder interface {
	DecodeUncounted(value []byte, out []schemas.Record) ([]schemas.Record, error)
}

type uncountedDecoder struct{ d countingDecoder }

func (u uncountedDecoder) Decode(value []byte, out []schemas.Record) ([]schemas.Record, error) {
	return u.d.DecodeUncounted(value, out)
}

// uncounted returns d, decoding without counting when d counts.
func uncounted(d Decoder) Decoder {
	if c, ok := d.(countingDecoder); ok {
		return uncountedDecoder{c}
	}
	return d
}

// settledScan is what scanSettled found: the runs that stay skippable, how far the read got
// (offsets at or past reached were not read), and how many settled messages must be
// delivered again.
type settledScan struct {
	safe      []offsetRun
	reached   int64
	redeliver int
}

// scanSettled reads src from base to the end of runs. A settled message stays skippable unless
// one of its users appeared in an earlier message that is delivered again (one not settled,
// or settled but not skippable). Only records that can reach Braze count: a message that does
// not decode, or a record that fails validation, is dead-lettered again and changes no profile.
func scanSettled(ctx context.Context, src messageSource, dec Decoder, base int64, runs []offsetRun) settledScan {
	end := runs[len(runs)-1].hi
	skip := skipSet{runs: runs}
	users := map[uint64]struct{}{}
	var recs []schemas.Record
	var again []int64 // settled offsets delivered again
	reached := base
	for reached < end {
		m, err := src.next(ctx)
		if err != nil {
			break
		}
		if m.Offset >= end {
			reached = end
			break
		}
		reached = m.Offset + 1
		if m.HighWaterMark > 0 && reached >= m.HighWaterMark {
			// The partition's last message: no offset below end is left to read (the map's
			// offsets were all read by its writer, so none is still to come).
			reached = end
		}
		var derr error
		recs, derr = dec.Decode(m.Value, recs[:0])
		if derr != nil {
			continue
		}
		settled := skip.settled(m.Offset)
		if settled && !anyUserIn(users, recs) {
			continue
		}
		if settled {
			again = append(again, m.Offset)
		}
		for i := range recs {
			if recs[i].Err == nil { // a record that fails validation never reaches Braze
				users[recs[i].UserHash] = struct{}{}
			}
		}
	}
	return settledScan{safe: subtractOffsets(runs, again, reached), reached: reached, redeliver: len(again)}
}

func anyUserIn(users map[uint64]struct{}, recs []schemas.Record) bool {
	if len(users) == 0 {
		return false
	}
	for i := range recs {
		if _, ok := users[recs[i].UserHash]; ok {
			return true
		}
	}
	return false
}

// subtractOffsets returns runs without the offsets in drop (increasing, each inside a run) and
// without anything at or past limit.
func subtractOffsets(runs []offsetRun, drop []int64, limit int64) []offsetRun {
	var out []offsetRun
	for _, r := range runs {
		r.hi = min(r.hi, limit)
		for len(drop) > 0 && drop[0] < r.hi {
			if drop[0] > r.lo {
				out = append(out, offsetRun{r.lo, drop[0]})
			}
			r.lo = max(r.lo, drop[0]+1)
			drop = drop[1:]
		}
		if r.lo < r.hi {
			out = append(out, r)
		}
	}
	return out
}
