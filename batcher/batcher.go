// Package batcher packs Braze objects into /users/track request bodies. It is pure: no I/O,
// no goroutines, no clocks. The pipeline decides when to flush; the batcher decides what fits.
package batcher

import (
	"fmt"

	"github.com/braze-ingestor/braze-ingestor/schemas"
)

// Mode is the per-request object limit that applies to the Braze contract.
type Mode string

const (
	// Combined allows MaxObjects objects in total across the three arrays (current Braze
	// contracts, and the safe default).
	Combined Mode = "combined"
	// PerArray allows MaxObjects objects in each array (legacy rate-limit contracts).
	PerArray Mode = "per_array"
)

// DefaultMaxObjects is Braze's per-request object limit.
const DefaultMaxObjects = 75

// Limits bounds one request.
type Limits struct {
	Mode       Mode
	MaxObjects int // objects per request (Combined) or per array (PerArray)
	MaxBytes   int // encoded body size
}

// Validate reports a problem with the limits, or nil.
func (l Limits) Validate() error {
	if l.Mode != Combined && l.Mode != PerArray {
		return fmt.Errorf("limit mode %q: want %q or %q", l.Mode, Combined, PerArray)
	}
	if l.MaxObjects < 1 {
		return fmt.Errorf("max objects %d: want at least 1", l.MaxObjects)
	}
	if l.MaxBytes < MaxRecordOverhead+2 {
		return fmt.Errorf("max bytes %d: too small for any request", l.MaxBytes)
	}
	return nil
}

// MaxRecordBytes is the largest object that fits in a request on its own: anything larger
// can never be sent and is rejected before it costs a request.
func (l Limits) MaxRecordBytes() int { return l.MaxBytes - MaxRecordOverhead }

// MaxRecordOverhead is the most framing a single object needs in a body of its own:
// {"attributes":[ ... ]} is 17 bytes plus the object.
const MaxRecordOverhead = len(`{"attributes":[]}`)

var arrayNames = [3]string{"attributes", "events", "purchases"}

// Packer accounts for the objects of one request as they are added, so that a body never
// breaks the object or byte limits. The zero value is not usable: call NewPacker.
type Packer struct {
	limits Limits
	counts [3]int
	total  int
	bytes  int // exact size of the body Encode will produce
}

// NewPacker returns an empty packer for limits.
func NewPacker(l Limits) *Packer {
	p := &Packer{limits: l}
	p.Reset()
	return p
}

// Reset empties the packer.
func (p *Packer) Reset() {
	p.counts = [3]int{}
	p.total = 0
	p.bytes = 2 // "{}"
}

// Len is the number of objects added.
func (p *Packer) Len() int { return p.total }

// Bytes is the size of the body the added objects encode to.
func (p *Packer) Bytes() int { return p.bytes }

// Counts returns the number of objects per array (attributes, events, purchases).
func (p *Packer) Counts() [3]int { return p.counts }

// cost is how many bytes adding an object of kind and size would add.
func (p *Packer) cost(kind schemas.Kind, size int) int {
	c := size
	if p.counts[kind] == 0 {
		// "name":[ ] plus a comma when another array is already present.
		c += len(arrayNames[kind]) + 5
		if p.total > 0 {
			c++
		}
	} else {
		c++ // comma between objects
	}
	return c
}

// Fits reports whether one more object of kind and size fits.
func (p *Packer) Fits(kind schemas.Kind, size int) bool {
	if kind > schemas.KindPurchase {
		return false
	}
	switch p.limits.Mode {
	case PerArray:
		if p.counts[kind] >= p.limits.MaxObjects {
			return false
		}
	default:
		if p.total >= p.limits.MaxObjects {
			return false
		}
	}
	return p.bytes+p.cost(kind, size) <= p.limits.MaxBytes
}

// Add accounts for an object. Call Fits first; Add does not check.
func (p *Packer) Add(kind schemas.Kind, size int) {
	p.bytes += p.cost(kind, size)
	p.counts[kind]++
	p.total++
}

// Full reports whether no further object of any kind can be added (the object limits are
// reached). A packer that is not full may still refuse a large object by bytes.
func (p *Packer) Full() bool {
	if p.limits.Mode == PerArray {
		return p.counts[0] >= p.limits.MaxObjects && p.counts[1] >= p.limits.MaxObjects && p.counts[2] >= p.limits.MaxObjects
	}
	return p.total >= p.limits.MaxObjects
}

// Object is what Encode needs of an item.
type Object interface {
	ObjectKind() schemas.Kind
	ObjectBytes() []byte
}

// Encode appends the /users/track body for objs to dst: attributes, then events, then
// purchases, each array in the order of objs. The objects' bytes are copied as they are.
//
// Objects of another endpoint's kinds (all of one Kind and PackKey) are encoded as that
// endpoint's body by EncodeEndpoint.
func Encode[T Object](dst []byte, objs []T) []byte {
	if len(objs) > 0 && !objs[0].ObjectKind().Tracked() {
		return EncodeEndpoint(dst, objs)
	}
	// Each object's kind is asked once, not once per array: through a generic method call
	// it costs more than the check (measured at ~2% of the worker's CPU).
	var small [128]schemas.Kind
	kinds := small[:0]
	if len(objs) > len(small) {
		kinds = make([]schemas.Kind, 0, len(objs))
	}
	for i := range objs {
		kinds = append(kinds, objs[i].ObjectKind())
	}
	dst = append(dst, '{')
	first := true
	for k := schemas.KindAttributes; k <= schemas.KindPurchase; k++ {
		open := false
		for i, kind := range kinds {
			if kind != k {
				continue
			}
			if !open {
				if !first {
					dst = append(dst, ',')
				}
				first = false
				dst = append(dst, '"')
				dst = append(dst, arrayNames[k]...)
				dst = append(dst, `":[`...)
				open = true
			} else {
				dst = append(dst, ',')
			}
			dst = append(dst, objs[i].ObjectBytes()...)
		}
		if open {
			dst = append(dst, ']')
		}
	}
	return append(dst, '}')
}

// Locate maps a Braze error position (array name and 0-based index within that array, as in
// the errors[] of a /users/track answer) back to the position in objs that Encode put there.
// It returns -1 when nothing is at that position.
//
// For the other endpoints it always returns -1: Braze documents no per-entry error positions
// in their answers (docs/braze-rules.md "Endpoints beyond /users/track"), so an answer of
// theirs judges the whole request.
func Locate[T Object](objs []T, array string, index int) int {
	if len(objs) > 0 && !objs[0].ObjectKind().Tracked() {
		return -1
	}
	kind := -1
	for k, n := range arrayNames {
		if n == array {
			kind = k
		}
	}
	if kind < 0 || index < 0 {
		return -1
	}
	seen := 0
	for i := range objs {
		if int(objs[i].ObjectKind()) == kind {
			if seen == index {
				return i
			}
			seen++
		}
	}
	return -1
}
