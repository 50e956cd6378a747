package pipeline

import (
	"bytes"
	"compress/flate"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// The offset map: with every commit the worker stores, in the offset-commit metadata string,
// which offsets above the committed one are already settled (delivered or dead-lettered), so
// that the next owner of the partition (a restart after a crash, or another member after a
// rebalance) skips them instead of sending them to Braze a second time. The committed offset
// itself stays the plain contiguous watermark: a consumer that ignores the metadata (an
// older version of this worker) resumes correctly, only with more duplicates.
//
// Wire format (docs/offsets.md): offsetMapPrefix, then base64url (no padding) of
//
//	flags byte (0 = plain, 1 = DEFLATE of the rest)
//	uvarint base   the committed offset the map is relative to
//	uvarint span   offsets [base, base+span) are described; those at or past it are not settled
//	uvarint n      number of settled runs
//	n × (uvarint gap, uvarint length)   gap unsettled offsets, then length settled ones
//
// Offsets that do not exist (compaction, transaction markers) may fall on either side.

// offsetMapPrefix marks metadata written by this worker, version 1. Anything else in the
// metadata string (another client's, a newer version's) is ignored.
const offsetMapPrefix = "bzo1:"

// maxOffsetMetadata is the longest metadata string written: the broker's default
// offset.metadata.max.bytes is 4096, and a commit whose metadata is longer fails as a whole.
const maxOffsetMetadata = 4000

// DefaultMaxRunAhead is the default bound on how far past its oldest unsettled offset a
// partition hands out messages. The worst case for the map is alternating single offsets:
// one byte per run boundary, so 2048 offsets take at most ~2.1 KB before base64 (~2.8 KB
// after), within maxOffsetMetadata without relying on compression.
const DefaultMaxRunAhead = 2048

// offsetRun is a run of settled offsets [lo, hi).
type offsetRun struct{ lo, hi int64 }

// offsetMap is the decoded metadata: settled runs above base, below end.
type offsetMap struct {
	base, end int64
	runs      []offsetRun
}

// errForeignMetadata is returned for a metadata string this worker did not write.
var errForeignMetadata = errors.New("offset metadata not written by this worker")

// maxMapRuns bounds what a decoder accepts: far above what maxOffsetMetadata can carry
// uncompressed, so only a hostile or corrupt string reaches it.
const maxMapRuns = 1 << 16

// encodeOffsetMap renders m within limit characters. It returns the metadata and whether
// the map had to be cut short (settled runs past the cut are then replayed by the next
// owner: duplicates, never a loss).
func encodeOffsetMap(m offsetMap, limit int) (string, bool) {
	runs := m.runs
	end := m.end
	for {
		s := encodeRunsWithin(m.base, end, runs, limit)
		if len(s) <= limit {
			return s, len(runs) < len(m.runs)
		}
		if len(runs) == 0 {
			return "", true
		}
		runs = runs[:len(runs)/2]
		if len(runs) == 0 {
			end = m.base
		} else {
			end = runs[len(runs)-1].hi
		}
	}
}

// encodeRuns renders runs, compressed when that is shorter.
func encodeRuns(base, end int64, runs []offsetRun) string {
	return encodeRunsWithin(base, end, runs, 0)
}

// encodeRunsWithin renders runs plainly when that fits in limit characters (the common case:
// the run-ahead bound keeps the plain map within it, and compressing costs far more CPU than
// walking the tracker), and compressed otherwise.
func encodeRunsWithin(base, end int64, runs []offsetRun, limit int) string {
	raw := make([]byte, 1, 16+3*len(runs))
	raw = binary.AppendUvarint(raw, uint64(base))
	raw = binary.AppendUvarint(raw, uint64(end-base))
	raw = binary.AppendUvarint(raw, uint64(len(runs)))
	prev := base
	for _, r := range runs {
		raw = binary.AppendUvarint(raw, uint64(r.lo-prev))
		raw = binary.AppendUvarint(raw, uint64(r.hi-r.lo))
		prev = r.hi
	}
	if len(raw) > 64 && (limit <= 0 || len(offsetMapPrefix)+base64.RawURLEncoding.EncodedLen(len(raw)) > limit) {
		var b bytes.Buffer
		b.WriteByte(1)
		w := flateWriters.Get().(*flate.Writer)
		w.Reset(&b)
		_, _ = w.Write(raw[1:])
		_ = w.Close()
		flateWriters.Put(w)
		if b.Len() < len(raw) {
			raw = b.Bytes()
		}
	}
	return offsetMapPrefix + base64.RawURLEncoding.EncodeToString(raw)
}

// flateWriters keeps compressors for reuse: one holds about 1 MB of state.
var flateWriters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.BestSpeed)
	return w
}}

// decodeOffsetMap parses metadata written by encodeOffsetMap. Every length is checked:
// the string comes from the broker, and any client of the group can write it.
func decodeOffsetMap(s string) (offsetMap, error) {
	var m offsetMap
	if len(s) < len(offsetMapPrefix) || s[:len(offsetMapPrefix)] != offsetMapPrefix {
		return m, errForeignMetadata
	}
	raw, err := base64.RawURLEncoding.DecodeString(s[len(offsetMapPrefix):])
	if err != nil || len(raw) == 0 {
		return m, fmt.Errorf("offset map: bad encoding: %w", errors.Join(err, errForeignMetadata))
	}
	switch raw[0] {
	case 0:
		raw = raw[1:]
	case 1:
		// Bounded: the uncompressed map of maxMapRuns runs fits in 20 bytes a run.
		raw, err = io.ReadAll(io.LimitReader(flate.NewReader(bytes.NewReader(raw[1:])), 20*maxMapRuns+32))
		if err != nil {
			return m, fmt.Errorf("offset map: %w", err)
		}
	default:
		return m, fmt.Errorf("offset map: unknown flags %d", raw[0])
	}
	d := uvarints{b: raw}
	base, width, n := d.next(), d.next(), d.next()
	if d.err || base > 1<<62 || width > 1<<40 || n > maxMapRuns {
		return m, errors.New("offset map: header out of range")
	}
	m.base, m.end = int64(base), int64(base+width)
	m.runs = make([]offsetRun, 0, min(n, uint64(len(raw))))
	prev := m.base
	for i := uint64(0); i < n; i++ {
		gap, length := d.next(), d.next()
		if d.err || gap > uint64(m.end-prev) || length == 0 || length > uint64(m.end-prev)-gap || (i > 0 && gap == 0) {
			return offsetMap{}, errors.New("offset map: run out of range")
		}
		lo := prev + int64(gap)
		m.runs = append(m.runs, offsetRun{lo, lo + int64(length)})
		prev = lo + int64(length)
	}
	if len(d.b) != 0 {
		return offsetMap{}, errors.New("offset map: trailing bytes")
	}
	return m, nil
}

type uvarints struct {
	b   []byte
	err bool
}

func (u *uvarints) next() uint64 {
	if u.err {
		return 0
	}
	v, n := binary.Uvarint(u.b)
	if n <= 0 {
		u.err = true
		return 0
	}
	u.b = u.b[n:]
	return v
}

// skipSet answers, for increasing offsets, whether the previous owner settled them.
type skipSet struct {
	runs []offsetRun
}

// settled reports whether off was settled; offsets must be asked in increasing order.
func (s *skipSet) settled(off int64) bool {
	for len(s.runs) > 0 && s.runs[0].hi <= off {
		s.runs = s.runs[1:]
	}
	return len(s.runs) > 0 && s.runs[0].lo <= off
}

// beyond returns the runs at or past off (what the map still says that fetching has not
// reached yet), clipped to start at off.
func (s *skipSet) beyond(off int64) []offsetRun {
	for i, r := range s.runs {
		if r.hi > off {
			out := s.runs[i:]
			if out[0].lo < off {
				out = append([]offsetRun{{off, out[0].hi}}, out[1:]...)
			}
			return out
		}
	}
	return nil
}

// SettledOffsets decodes commit metadata written by the worker (docs/offsets.md): the
// committed offset it is relative to and the settled ranges [lo, hi) above it. It is for
// tools and tests that inspect a group's commits; metadata not written by this worker is an
// error.
func SettledOffsets(metadata string) (base int64, settled [][2]int64, err error) {
	m, err := decodeOffsetMap(metadata)
	if err != nil {
		return 0, nil, err
	}
	for _, r := range m.runs {
		settled = append(settled, [2]int64{r.lo, r.hi})
	}
	return m.base, settled, nil
}
