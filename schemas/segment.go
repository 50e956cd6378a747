package schemas

import (
	"strconv"
	"strings"
	"sync/atomic"
	"unicode/utf8"
)

// Segment-spec input (docs/segment.md has the full mapping table and the reasons behind
// each decision).
//
// A topic configured as "segment" carries one Segment call per Kafka message, in the shape of
// the Segment HTTP Tracking API / analytics libraries ({"type":"identify","userId":…,
// "traits":{…}}, {"type":"track","event":…,"properties":{…}}, …). SegmentDecoder turns each
// call into new Braze objects:
//
//   - identify → one attributes object: Segment's special traits become Braze standard
//     fields (firstName → first_name, birthday → dob, address.city → home_city, …), the
//     rest become custom attributes (objects as nested custom attributes);
//   - track → one event; track "Order Completed" with products → one purchase per product
//     (no event);
//   - page, screen → skipped, or events "Viewed Page"/"Viewed Screen" (PageAsEvent);
//   - group → skipped, or an ab_segment_group_<groupId>: true attribute (GroupAsAttribute);
//   - alias → skipped, or one /users/merge entry (AliasAsMerge);
//   - delete (Segment's user-deletion request) → one /users/delete identifier;
//   - identify with userId and a prior anonymousId → also one /users/identify entry before
//     the attributes object (IdentifyAlias).
//
// segment_identity.go builds the records of the other endpoints.
//
// Skipped calls yield no records (the pipeline acknowledges such a message at once), or are
// dead-lettered as invalid_record when Unsupported is SegmentDeadLetter.
//
// Every problem with a Segment message is message-level (*MessageError): the original
// Segment bytes are dead-lettered, so a fixed message can be replayed to the same topic
// without duplicating the records of it that were fine.

// SegmentSchemaID is the $id of the JSON Schema (2020-12) of the Segment subset
// SegmentDecoder accepts with its default options (embedded in SchemaFS as
// segment.schema.json, next to common.schema.json, which it refers to).
const SegmentSchemaID = BaseURL + "segment.schema.json"

// SegmentUnsupported says what happens to Segment calls that map to nothing.
type SegmentUnsupported uint8

const (
	// SegmentSkip acknowledges the message without sending anything (counted as skipped).
	SegmentSkip SegmentUnsupported = iota
	// SegmentDeadLetter dead-letters the message as invalid_record.
	SegmentDeadLetter
)

// SegmentCall is the kind of Segment call a message holds, for counting.
type SegmentCall uint8

const (
	SegmentIdentify SegmentCall = iota
	SegmentTrack
	SegmentOrderCompleted // track "Order Completed" with products
	SegmentPage
	SegmentScreen
	SegmentGroup
	SegmentAlias
	SegmentDelete  // a user-deletion request (type "delete")
	SegmentInvalid // not a Segment call: no or unknown type, not an object, not JSON
	numSegmentCalls
)

var segmentCallNames = [...]string{"identify", "track", "order_completed", "page", "screen", "group", "alias", "delete", "invalid"}

func (c SegmentCall) String() string {
	if int(c) < len(segmentCallNames) {
		return segmentCallNames[c]
	}
	return "unknown"
}

// SegmentOutcome is what the decoder did with a message.
type SegmentOutcome uint8

const (
	SegmentMapped       SegmentOutcome = iota // turned into one or more Braze objects
	SegmentSkipped                            // unsupported call, acknowledged without records
	SegmentDeadLettered                       // returned a *MessageError
	numSegmentOutcomes
)

var segmentOutcomeNames = [...]string{"mapped", "skipped", "dead_lettered"}

func (o SegmentOutcome) String() string {
	if int(o) < len(segmentOutcomeNames) {
		return segmentOutcomeNames[o]
	}
	return "unknown"
}

// SegmentOrderMapping says what a track "Order Completed" becomes.
type SegmentOrderMapping uint8

const (
	// SegmentOrderPurchases sends one purchase per product (legacy purchase events).
	SegmentOrderPurchases SegmentOrderMapping = iota
	// SegmentOrderEcommerce sends one ecommerce.order_placed event (eCommerce recommended
	// events).
	SegmentOrderEcommerce
)

// DefaultSegmentAliasLabel is the alias_label of anonymous users by default.
const DefaultSegmentAliasLabel = "anonymous_id"

// SegmentDecoder decodes Segment calls into Braze objects. Set the options before the first
// Decode; after that a SegmentDecoder may be shared by any number of goroutines (its counters
// are atomic), and it must not be copied.
type SegmentDecoder struct {
	// AliasLabel is the alias_label of the user_alias built from anonymousId when a call has
	// no userId ("" = DefaultSegmentAliasLabel).
	AliasLabel string
	// Unsupported says what to do with calls that map to nothing (alias without
	// AliasAsMerge; page and screen without PageAsEvent; group without GroupAsAttribute).
	Unsupported SegmentUnsupported
	// PageAsEvent sends page and screen calls as events named "Viewed Page" and
	// "Viewed Screen", with the call's properties plus its name and category.
	PageAsEvent bool
	// GroupAsAttribute sends group calls as the custom attribute
	// ab_segment_group_<groupId>: true, as Braze's classic Segment destination does.
	GroupAsAttribute bool
	// OrderCompleted says what a track "Order Completed" with products becomes: one purchase
	// per product (SegmentOrderPurchases, the default) or one eCommerce recommended event
	// ecommerce.order_placed (SegmentOrderEcommerce): Braze's purchase events are in
	// maintenance mode (docs/braze-rules.md §1 "Purchase object").
	OrderCompleted SegmentOrderMapping
	// DefaultCurrency is the purchase currency when neither the product nor the order
	// names one ("" = USD).
	DefaultCurrency string
	// IdentifyAlias adds, to an identify with a userId and an anonymousId, a /users/identify
	// record (aliases_to_identify: the anonymous user's alias to external_id userId) before
	// its attributes record, so that the anonymous profile's history moves to the known
	// user, as RudderStack's Braze destination does.
	IdentifyAlias bool
	// AliasAsMerge sends alias calls as one /users/merge record: previousId's profile is
	// merged into userId's, as both Segment's and RudderStack's Braze destinations do.
	AliasAsMerge bool
	// MaxRecordBytes is the largest Braze object a call may produce (0 = no limit); a call
	// producing a larger one is dead-lettered as too_large.
	MaxRecordBytes int

	counts  [numSegmentCalls][numSegmentOutcomes]atomic.Int64
	dropped atomic.Int64
}

// Count returns how many messages of a call kind had an outcome since the decoder was made.
func (d *SegmentDecoder) Count(call SegmentCall, outcome SegmentOutcome) int64 {
	if call >= numSegmentCalls || outcome >= numSegmentOutcomes {
		return 0
	}
	return d.counts[call][outcome].Load()
}

// EachCount calls fn for every (call, outcome) pair, zeros included: the shape an
// observable metric callback wants.
func (d *SegmentDecoder) EachCount(fn func(call SegmentCall, outcome SegmentOutcome, n int64)) {
	for c := range numSegmentCalls {
		for o := range numSegmentOutcomes {
			fn(c, o, d.counts[c][o].Load())
		}
	}
}

// DroppedFields counts trait, property and nested keys or values left out of otherwise
// mapped calls because Braze would reject or misread them ($-prefixed or reserved keys, an
// unparsable birthday, an unknown gender, a country that is not ISO 3166-1 alpha-2, a null
// inside a nested object, …).
func (d *SegmentDecoder) DroppedFields() int64 { return d.dropped.Load() }

// Decode appends the Braze records of one Segment call to out. See the package comment
// above SegmentSchemaID; the records' Raw, UserID and ID are new bytes that do not alias
// value.
func (d *SegmentDecoder) Decode(value []byte, out []Record) ([]Record, error) {
	return d.decode(value, out, true)
}

// DecodeUncounted is Decode without counting the call: for a reader that looks at messages
// which are counted when they are decoded for delivery (the pipeline's resume scan).
func (d *SegmentDecoder) DecodeUncounted(value []byte, out []Record) ([]Record, error) {
	return d.decode(value, out, false)
}

func (d *SegmentDecoder) decode(value []byte, out []Record, count bool) ([]Record, error) {
	sd := segDecode{d: d, buf: value, out: out, n0: len(out)}
	call, skip, err := sd.decode()
	outcome := SegmentMapped
	switch {
	case err != nil:
		clear(sd.out[len(out):])
		outcome, sd.out = SegmentDeadLettered, out
	case skip:
		outcome, sd.out = SegmentSkipped, out
	}
	if count {
		if outcome == SegmentMapped && sd.dropped > 0 {
			d.dropped.Add(int64(sd.dropped))
		}
		d.counts[call][outcome].Add(1)
	}
	return sd.out, err
}

// val is the raw span of a JSON value in the message ([start, end), strings with quotes).
type val struct{ start, end int }

func (v val) ok() bool { return v.end > v.start }

// segMsg holds the spans of the top-level members a mapping looks at.
type segMsg struct {
	typ, userID, anonID, previousID, event, name, category, groupID val
	messageID                                                       val
	properties, traits                                              val
	times                                                           [4]val // timestamp, originalTimestamp, sentAt, receivedAt
}

var segTimeKeys = [4]string{"timestamp", "originalTimestamp", "sentAt", "receivedAt"}

// segDecode is the state of one Decode call.
type segDecode struct {
	d       *SegmentDecoder
	buf     []byte // the message
	m       segMsg
	out     []Record
	n0      int
	b       []byte   // the Braze objects being built, back to back
	objs    []segObj // their spans and kinds
	dropped int
	tmp     []byte // scratch for unescaping
}

type segObj struct {
	kind       Kind
	start, end int
	// who is the identity of a record of another endpoint (segment_identity.go).
	who segWho
	// item is 1 + the index of the order product a purchase was built from (0: not one).
	item int
	// err is set for a product that could not become a purchase: start:end then hold the
	// product's own bytes, dead-lettered alone.
	err *RecordError
}

func segErr(field, msg string) *MessageError {
	return &MessageError{Reason: ReasonInvalidRecord, Field: field, Offset: -1, Msg: msg}
}

func (sd *segDecode) decode() (call SegmentCall, skip bool, err error) {
	call = SegmentInvalid
	if err := sd.top(); err != nil {
		return call, false, err
	}
	m := &sd.m
	if !m.typ.ok() {
		return call, false, segErr("/type", "is required: a Segment call has a type (identify, track, page, screen, group, alias or delete)")
	}
	typ, isStr := sd.str(m.typ)
	if !isStr {
		return call, false, segErr("/type", "must be a string")
	}
	switch string(typ) {
	case "identify":
		call = SegmentIdentify
	case "track":
		call = SegmentTrack
	case "page":
		call = SegmentPage
	case "screen":
		call = SegmentScreen
	case "group":
		call = SegmentGroup
	case "alias":
		call = SegmentAlias
	case "delete":
		call = SegmentDelete
	default:
		return call, false, segErr("/type", `must be one of "identify", "track", "page", "screen", "group", "alias", "delete"`)
	}
	supported := call == SegmentIdentify || call == SegmentTrack || call == SegmentDelete ||
		(sd.d.AliasAsMerge && call == SegmentAlias) ||
		(sd.d.PageAsEvent && (call == SegmentPage || call == SegmentScreen)) ||
		(sd.d.GroupAsAttribute && call == SegmentGroup)
	if !supported {
		if sd.d.Unsupported == SegmentDeadLetter {
			return call, false, segErr("/type", "Segment "+string(typ)+" calls are not sent to Braze (SEGMENT_UNSUPPORTED=dlq)")
		}
		return call, true, nil
	}
	// Room for the objects: about the message's size, more for an order (each product's
	// purchase repeats the order's properties).
	sd.b = make([]byte, 0, 2*len(sd.buf)+256)
	switch call {
	case SegmentIdentify:
		err = sd.identify()
	case SegmentTrack:
		var order bool
		order, err = sd.track()
		if order {
			call = SegmentOrderCompleted
		}
	case SegmentPage:
		err = sd.pageEvent("Viewed Page")
	case SegmentScreen:
		err = sd.pageEvent("Viewed Screen")
	case SegmentGroup:
		err = sd.group()
	case SegmentAlias:
		skip, err = sd.merge()
		if skip {
			return call, true, nil
		}
	case SegmentDelete:
		err = sd.deleteUser()
	}
	if err == nil {
		err = sd.finish()
	}
	return call, false, err
}

// top scans the whole message (checking its JSON syntax) and records the members it needs.
func (sd *segDecode) top() error {
	s := &scanner{buf: sd.buf, errOff: -1}
	syntax := func() error {
		msg := s.errMsg
		if msg == "" {
			msg = "unexpected end of input"
		}
		return &MessageError{Reason: ReasonInvalidJSON, Offset: s.errOff, Msg: msg}
	}
	s.ws()
	if s.pos == len(s.buf) {
		s.fail(s.pos, "empty message")
		return syntax()
	}
	if s.peek() != '{' {
		if s.skip() {
			s.ws()
			if s.pos == len(s.buf) {
				return &MessageError{Reason: ReasonInvalidJSON, Offset: 0, Msg: "message must be a JSON object"}
			}
			s.fail(s.pos, "data after the top-level value")
		}
		return syntax()
	}
	s.pos++
	var dup string
	s.ws()
	if s.peek() == '}' {
		s.pos++
	} else {
		for {
			s.ws()
			ks, ke, kesc, ok := s.key()
			if !ok {
				return syntax()
			}
			s.ws()
			var dst *val
			if ke-ks <= 6*len("originalTimestamp") { // longer cannot unescape to a key we want
				key := s.buf[ks:ke]
				if kesc {
					key = appendUnescaped(sd.tmp[:0], key)
					sd.tmp = key
				}
				dst = sd.m.member(key)
			}
			start := s.pos
			if !s.skip() {
				return syntax()
			}
			if dst != nil {
				if dst.ok() && dup == "" {
					dup = string(appendUnescaped(nil, s.buf[ks:ke]))
				}
				*dst = val{start, s.pos}
			}
			s.ws()
			if c := s.peek(); c == ',' {
				s.pos++
				continue
			} else if c == '}' {
				s.pos++
				break
			}
			s.failHere("',' or '}' expected in object")
			return syntax()
		}
	}
	s.ws()
	if s.pos != len(s.buf) {
		s.fail(s.pos, "data after the top-level value")
		return syntax()
	}
	if dup != "" {
		return segErr(pointer("", dup), "duplicate key")
	}
	return nil
}

func (m *segMsg) member(key []byte) *val {
	switch string(key) {
	case "type":
		return &m.typ
	case "userId":
		return &m.userID
	case "anonymousId":
		return &m.anonID
	case "previousId":
		return &m.previousID
	case "event":
		return &m.event
	case "name":
		return &m.name
	case "category":
		return &m.category
	case "groupId":
		return &m.groupID
	case "messageId":
		return &m.messageID
	case "properties":
		return &m.properties
	case "traits":
		return &m.traits
	case "timestamp":
		return &m.times[0]
	case "originalTimestamp":
		return &m.times[1]
	case "sentAt":
		return &m.times[2]
	case "receivedAt":
		return &m.times[3]
	}
	return nil
}

// raw returns a value's bytes.
func (sd *segDecode) raw(v val) []byte { return sd.buf[v.start:v.end] }

func (sd *segDecode) isNull(v val) bool { return !v.ok() || sd.buf[v.start] == 'n' }

// str returns a string value's unescaped content (possibly in sd.tmp: good until the next
// call) and whether the value is a string.
func (sd *segDecode) str(v val) ([]byte, bool) {
	if !v.ok() || sd.buf[v.start] != '"' {
		return nil, false
	}
	c := sd.buf[v.start+1 : v.end-1]
	for _, ch := range c {
		if ch == '\\' {
			sd.tmp = appendUnescaped(sd.tmp[:0], c)
			return sd.tmp, true
		}
	}
	return c, true
}

// nonEmptyStr reports whether v is a non-empty string.
func (sd *segDecode) nonEmptyStr(v val) bool {
	return v.ok() && sd.buf[v.start] == '"' && v.end-v.start > 2
}

// optObject checks that a member is an object, null or absent.
func (sd *segDecode) optObject(v val, field string) error {
	if v.ok() && sd.buf[v.start] != '{' && sd.buf[v.start] != 'n' {
		return segErr(field, "must be an object")
	}
	return nil
}

// identity writes the identifier that opens every object: external_id from userId, or else
// a user_alias from anonymousId with _update_existing_only: false, so that every object of
// an anonymous user applies even before its alias profile exists (Braze's default for
// alias objects is update-only: docs/braze-rules.md §1 "_update_existing_only").
func (sd *segDecode) identity() error {
	m := &sd.m
	for _, f := range [...]struct {
		v    val
		name string
	}{{m.userID, "/userId"}, {m.anonID, "/anonymousId"}} {
		if !sd.isNull(f.v) && sd.buf[f.v.start] != '"' {
			return segErr(f.name, "must be a string")
		}
	}
	switch {
	case sd.nonEmptyStr(m.userID):
		sd.b = append(sd.b, `{"external_id":`...)
		sd.b = append(sd.b, sd.raw(m.userID)...)
	case sd.nonEmptyStr(m.anonID):
		sd.b = append(sd.b, `{"user_alias":{"alias_name":`...)
		sd.b = append(sd.b, sd.raw(m.anonID)...)
		sd.b = append(sd.b, `,"alias_label":`...)
		label := sd.d.AliasLabel
		if label == "" {
			label = DefaultSegmentAliasLabel
		}
		sd.b = appendJSONString(sd.b, label)
		sd.b = append(sd.b, '}')
		sd.b = append(sd.b, `,"_update_existing_only":false`...)
	default:
		return segErr("/userId", "a Segment call needs a non-empty userId or anonymousId")
	}
	return nil
}

// beginAt records that a Braze object of kind starts at start (before its identifier);
// end closes it.
func (sd *segDecode) beginAt(kind Kind, start int) {
	sd.objs = append(sd.objs, segObj{kind: kind, start: start})
}

func (sd *segDecode) end() {
	sd.b = append(sd.b, '}')
	sd.objs[len(sd.objs)-1].end = len(sd.b)
}

// time writes ,"time":… from timestamp, or else originalTimestamp, sentAt, receivedAt: the
// first one present and not null, which must be a valid time; the others are not read.
func (sd *segDecode) time() error {
	use := -1
	for i, v := range sd.m.times {
		if sd.isNull(v) {
			continue
		}
		t, isStr := sd.str(v)
		if !isStr || !isBrazeTime(t) {
			return segErr("/"+segTimeKeys[i], "must be an ISO 8601 time (yyyy-MM-ddTHH:mm[:ss] with optional fraction and zone)")
		}
		use = i
		break
	}
	if use < 0 {
		return segErr("/timestamp", "is required: an event or purchase needs timestamp, originalTimestamp, sentAt or receivedAt")
	}
	sd.b = append(sd.b, `,"time":`...)
	sd.b = append(sd.b, sd.raw(sd.m.times[use])...)
	return nil
}

// members calls fn for each member of the object at v (already known to be valid JSON).
func (sd *segDecode) members(v val, fn func(ks, ke int, kesc bool, v val)) {
	s := scanner{buf: sd.buf, pos: v.start + 1, errOff: -1}
	s.ws()
	if s.peek() == '}' {
		return
	}
	for {
		s.ws()
		ks, ke, kesc, _ := s.key()
		s.ws()
		start := s.pos
		s.skip()
		fn(ks, ke, kesc, val{start, s.pos})
		s.ws()
		if s.peek() != ',' {
			return
		}
		s.pos++
	}
}

// key returns a member key's unescaped bytes (possibly in sd.tmp).
func (sd *segDecode) key(ks, ke int, kesc bool) []byte {
	if !kesc {
		return sd.buf[ks:ke]
	}
	sd.tmp = appendUnescaped(sd.tmp[:0], sd.buf[ks:ke])
	return sd.tmp
}

// writeKey writes ,"key": with the key as it is escaped in the message.
func (sd *segDecode) writeKey(ks, ke int) {
	sd.b = append(sd.b, ',', '"')
	sd.b = append(sd.b, sd.buf[ks:ke]...)
	sd.b = append(sd.b, '"', ':')
}

// propertyKeyOK applies Braze's property key rules (as propertyKeyProblem does).
func propertyKeyOK(k []byte, kind Kind) bool { return propertyKeyProblem(k, kind) == "" }

// properties writes the members of the object at v that Braze accepts as event (or purchase)
// properties, skipping those for which skip returns true (already written or consumed).
// It returns how many it wrote.
func (sd *segDecode) properties(v val, kind Kind, skip func(k []byte) bool) int {
	n := 0
	if !v.ok() || sd.buf[v.start] != '{' {
		return 0
	}
	sd.members(v, func(ks, ke int, kesc bool, mv val) {
		k := sd.key(ks, ke, kesc)
		if skip != nil && skip(k) {
			return
		}
		if !propertyKeyOK(k, kind) {
			sd.dropped++
			return
		}
		sd.writeKey(ks, ke)
		sd.b = append(sd.b, sd.raw(mv)...)
		n++
	})
	return n
}

// openProps starts ,"properties":{ and returns where to roll back to if nothing follows.
func (sd *segDecode) openProps() (mark int) {
	mark = len(sd.b)
	sd.b = append(sd.b, `,"properties":{`...)
	return mark
}

// closeProps closes the properties object, or removes it when n == 0. Members were written
// with a leading comma each; the first one is dropped here.
func (sd *segDecode) closeProps(mark, n int) {
	if n == 0 {
		sd.b = sd.b[:mark]
		return
	}
	open := mark + len(`,"properties":{`)
	copy(sd.b[open:], sd.b[open+1:]) // drop the first member's comma
	sd.b[len(sd.b)-1] = '}'
}

func (sd *segDecode) track() (order bool, err error) {
	m := &sd.m
	if !sd.nonEmptyStr(m.event) {
		return false, segErr("/event", "must be a non-empty string")
	}
	if err := sd.optObject(m.properties, "/properties"); err != nil {
		return false, err
	}
	name, _ := sd.str(m.event)
	if string(name) == "Order Completed" && !sd.isNull(m.properties) {
		var products val
		sd.members(m.properties, func(ks, ke int, kesc bool, v val) {
			if string(sd.key(ks, ke, kesc)) == "products" {
				products = v
			}
		})
		if sd.d.OrderCompleted == SegmentOrderEcommerce {
			return true, sd.orderPlaced(products)
		}
		if products.ok() && sd.buf[products.start] != 'n' {
			if sd.buf[products.start] != '[' {
				return true, segErr("/properties/products", "must be an array of product objects")
			}
			n, err := sd.purchases(products)
			if err != nil || n > 0 {
				return true, err
			}
		}
		// An Order Completed without products is sent as the event it is.
	}
	start := len(sd.b)
	if err := sd.identity(); err != nil {
		return false, err
	}
	sd.beginAt(KindEvent, start)
	sd.b = append(sd.b, `,"name":`...)
	sd.b = append(sd.b, sd.raw(m.event)...)
	if err := sd.time(); err != nil {
		return false, err
	}
	mark := sd.openProps()
	sd.closeProps(mark, sd.properties(m.properties, KindEvent, nil))
	sd.end()
	return false, nil
}

// purchases writes one purchase per element of the products array at v.
func (sd *segDecode) purchases(v val) (int, error) {
	m := &sd.m
	// The order-level currency, when the product has none.
	var orderCurrency val
	sd.members(m.properties, func(ks, ke int, kesc bool, mv val) {
		if string(sd.key(ks, ke, kesc)) == "currency" {
			orderCurrency = mv
		}
	})
	if !sd.isNull(orderCurrency) && !sd.isCurrency(orderCurrency) {
		return 0, segErr("/properties/currency", "must be a 3-letter ISO 4217 currency code")
	}
	n := 0
	s := scanner{buf: sd.buf, pos: v.start + 1, errOff: -1}
	s.ws()
	if s.peek() == ']' {
		return 0, nil
	}
	for i := 0; ; i++ {
		s.ws()
		start := s.pos
		s.skip()
		p := val{start, s.pos}
		mark, nobj := len(sd.b), len(sd.objs)
		if err := sd.purchase(p, i, orderCurrency); err != nil {
			re, ok := err.(*RecordError)
			if !ok {
				return n, err
			}
			// One bad product is dead-lettered alone; the order's other products go on.
			sd.b, sd.objs = sd.b[:mark], sd.objs[:nobj]
			sd.b = append(sd.b, sd.raw(p)...)
			sd.objs = append(sd.objs, segObj{kind: KindPurchase, start: mark, end: len(sd.b), item: i + 1, err: re})
		}
		n++
		s.ws()
		if s.peek() != ',' {
			break
		}
		s.pos++
	}
	return n, nil
}

// product members the purchase object takes.
type productFields struct {
	productID, sku, id, price, quantity, currency val
}

// productErr is a problem of one order product: that product is dead-lettered alone.
func productErr(field, msg string) *RecordError {
	return &RecordError{Reason: ReasonInvalidRecord, Kind: KindPurchase, Field: field, Msg: msg}
}

// purchase writes the purchase of order product i. A problem of the product alone is a
// *RecordError; a problem of the whole call (identity, time) a *MessageError.
func (sd *segDecode) purchase(p val, i int, orderCurrency val) error {
	// field names a member of this product, for errors only (not built on the happy path).
	field := func(member string) string { return "/properties/products/" + strconv.Itoa(i) + member }
	if sd.buf[p.start] != '{' {
		return productErr(field(""), "must be an object")
	}
	var f productFields
	sd.members(p, func(ks, ke int, kesc bool, v val) {
		switch string(sd.key(ks, ke, kesc)) {
		case "product_id":
			f.productID = v
		case "sku":
			f.sku = v
		case "id":
			f.id = v
		case "price":
			f.price = v
		case "quantity":
			f.quantity = v
		case "currency":
			f.currency = v
		}
	})
	start := len(sd.b)
	if err := sd.identity(); err != nil {
		return err
	}
	sd.beginAt(KindPurchase, start)
	sd.objs[len(sd.objs)-1].item = i + 1

	// product_id: product_id, else sku, else id (a string, or a number written as a string).
	var pid val
	for _, c := range [...]val{f.productID, f.sku, f.id} {
		if c.ok() && (sd.nonEmptyStr(c) || isNumberStart(sd.buf[c.start])) {
			pid = c
			break
		}
	}
	if !pid.ok() {
		return productErr(field("/product_id"), "a product needs a non-empty product_id, sku or id")
	}
	sd.b = append(sd.b, `,"product_id":`...)
	if sd.buf[pid.start] == '"' {
		if b, _ := sd.str(pid); utf8.RuneCount(b) > maxProductIDChars {
			return productErr(field("/product_id"), "must be at most 255 characters")
		}
		sd.b = append(sd.b, sd.raw(pid)...)
	} else {
		sd.b = append(sd.b, '"')
		sd.b = append(sd.b, sd.raw(pid)...)
		sd.b = append(sd.b, '"')
	}

	// currency: the product's, else the order's, else the default; upper-cased.
	cur, curField := f.currency, "/currency"
	if sd.isNull(cur) {
		cur, curField = orderCurrency, "/properties/currency"
	}
	sd.b = append(sd.b, `,"currency":"`...)
	if sd.isNull(cur) {
		def := sd.d.DefaultCurrency
		if def == "" {
			def = "USD"
		}
		sd.b = append(sd.b, def...)
	} else {
		if !sd.isCurrency(cur) {
			return productErr(field(curField), "must be a 3-letter ISO 4217 currency code")
		}
		c, _ := sd.str(cur)
		sd.b = append(sd.b, upper(c[0]), upper(c[1]), upper(c[2]))
	}
	sd.b = append(sd.b, '"')

	if !f.price.ok() || !isNumberStart(sd.buf[f.price.start]) {
		return productErr(field("/price"), "must be a number")
	}
	sd.b = append(sd.b, `,"price":`...)
	sd.b = append(sd.b, sd.raw(f.price)...)

	sd.b = append(sd.b, `,"quantity":`...)
	if sd.isNull(f.quantity) {
		sd.b = append(sd.b, '1')
	} else {
		q := sd.raw(f.quantity)
		if v, isInt := jsonIntegerOK(q); !isInt || v < 1 || v > 100 {
			return productErr(field("/quantity"), "must be an integer from 1 to 100")
		}
		sd.b = append(sd.b, q...)
	}
	if err := sd.time(); err != nil {
		return err
	}

	// properties: the product's other fields, then the order's (products and currency
	// excluded); a product field wins over an order field of the same name.
	mark := sd.openProps()
	n := sd.properties(p, KindPurchase, func(k []byte) bool {
		switch string(k) {
		case "product_id", "price", "quantity", "currency":
			return true
		}
		return false
	})
	n += sd.properties(sd.m.properties, KindPurchase, func(k []byte) bool {
		switch string(k) {
		case "products", "currency":
			return true
		}
		return sd.hasMember(p, k)
	})
	sd.closeProps(mark, n)
	sd.end()
	return nil
}

// hasMember reports whether the object at v has a member named k.
func (sd *segDecode) hasMember(v val, k []byte) bool {
	found := false
	var scratch [64]byte // not sd.tmp: k may live there
	sd.members(v, func(ks, ke int, kesc bool, _ val) {
		if found {
			return
		}
		key := sd.buf[ks:ke]
		if kesc {
			key = appendUnescaped(scratch[:0], key)
		}
		found = string(key) == string(k)
	})
	return found
}

// isCurrency reports whether v is a string of 3 ASCII letters (any case: it is upper-cased).
func (sd *segDecode) isCurrency(v val) bool {
	c, isStr := sd.str(v)
	return isStr && len(c) == 3 && isLetter(c[0]) && isLetter(c[1]) && isLetter(c[2])
}

func isNumberStart(c byte) bool { return c == '-' || isDigit(c) }
func isLetter(c byte) bool      { return 'a' <= c|0x20 && c|0x20 <= 'z' }
func upper(c byte) byte         { return c &^ 0x20 }

// jsonIntegerOK wraps jsonInteger for a value that may not be a number.
func jsonIntegerOK(lit []byte) (int64, bool) {
	if len(lit) == 0 || !isNumberStart(lit[0]) {
		return 0, false
	}
	return jsonInteger(lit)
}

// pageEvent maps a page or screen call to an event (PageAsEvent).
func (sd *segDecode) pageEvent(name string) error {
	m := &sd.m
	if err := sd.optObject(m.properties, "/properties"); err != nil {
		return err
	}
	start := len(sd.b)
	if err := sd.identity(); err != nil {
		return err
	}
	sd.beginAt(KindEvent, start)
	sd.b = append(sd.b, `,"name":`...)
	sd.b = appendJSONString(sd.b, name)
	if err := sd.time(); err != nil {
		return err
	}
	mark := sd.openProps()
	n := sd.properties(m.properties, KindEvent, nil)
	for _, f := range [...]struct {
		v   val
		key string
	}{{m.name, "name"}, {m.category, "category"}} {
		if sd.nonEmptyStr(f.v) && !(m.properties.ok() && sd.buf[m.properties.start] == '{' && sd.hasMember(m.properties, []byte(f.key))) {
			sd.b = append(sd.b, ',', '"')
			sd.b = append(sd.b, f.key...)
			sd.b = append(sd.b, '"', ':')
			sd.b = append(sd.b, sd.raw(f.v)...)
			n++
		}
	}
	sd.closeProps(mark, n)
	sd.end()
	return nil
}

// group maps a group call to ab_segment_group_<groupId>: true (GroupAsAttribute).
func (sd *segDecode) group() error {
	m := &sd.m
	if !sd.nonEmptyStr(m.groupID) {
		return segErr("/groupId", "must be a non-empty string")
	}
	start := len(sd.b)
	if err := sd.identity(); err != nil {
		return err
	}
	sd.beginAt(KindAttributes, start)
	g := sd.raw(m.groupID)
	sd.b = append(sd.b, `,"ab_segment_group_`...)
	sd.b = append(sd.b, g[1:len(g)-1]...) // still escaped: valid inside the key's quotes
	sd.b = append(sd.b, `":true`...)
	sd.end()
	return nil
}

// Standard profile fields an identify can set, in the order they are written.
const (
	stdFirstName = iota
	stdLastName
	stdEmail
	stdPhone
	stdDOB
	stdGender
	stdCountry
	stdHomeCity
	stdImageURL
	numStd
)

var stdNames = [numStd]string{"first_name", "last_name", "email", "phone", "dob", "gender", "country", "home_city", "image_url"}

// stdSlot is the value chosen for a standard field: a Braze-named trait (prio 2) wins over
// a Segment-named one (prio 1).
type stdSlot struct {
	v    val
	prio int8
}

func (sd *segDecode) identify() error {
	m := &sd.m
	if err := sd.optObject(m.traits, "/traits"); err != nil {
		return err
	}
	sd.identifyAlias()
	start := len(sd.b)
	if err := sd.identity(); err != nil {
		return err
	}
	sd.beginAt(KindAttributes, start)
	if sd.isNull(m.traits) {
		sd.end()
		return nil
	}
	var std [numStd]stdSlot
	set := func(i int, v val, prio int8) {
		if prio > std[i].prio {
			std[i] = stdSlot{v, prio}
		}
	}
	var address val
	// First pass: the standard fields.
	sd.members(m.traits, func(ks, ke int, kesc bool, v val) {
		switch string(sd.key(ks, ke, kesc)) {
		case "firstName":
			set(stdFirstName, v, 1)
		case "first_name":
			set(stdFirstName, v, 2)
		case "lastName":
			set(stdLastName, v, 1)
		case "last_name":
			set(stdLastName, v, 2)
		case "email":
			set(stdEmail, v, 2)
		case "phone":
			set(stdPhone, v, 2)
		case "birthday":
			set(stdDOB, v, 1)
		case "dob":
			set(stdDOB, v, 2)
		case "gender":
			set(stdGender, v, 2)
		case "country":
			set(stdCountry, v, 2)
		case "home_city":
			set(stdHomeCity, v, 2)
		case "avatar":
			set(stdImageURL, v, 1)
		case "image_url":
			set(stdImageURL, v, 2)
		case "address":
			address = v
		}
	})
	var addressRest bool // address has members other than city and country
	if address.ok() && sd.buf[address.start] == '{' {
		sd.members(address, func(ks, ke int, kesc bool, v val) {
			switch string(sd.key(ks, ke, kesc)) {
			case "city":
				set(stdHomeCity, v, 1)
			case "country":
				set(stdCountry, v, 1)
			default:
				addressRest = true
			}
		})
	}
	for i := range std {
		if std[i].prio > 0 {
			sd.standard(i, std[i].v)
		}
	}
	// Second pass: everything else, as custom attributes.
	sd.members(m.traits, func(ks, ke int, kesc bool, v val) {
		k := sd.key(ks, ke, kesc)
		switch string(k) {
		case "firstName", "first_name", "lastName", "last_name", "email", "phone", "birthday", "dob",
			"gender", "country", "home_city", "avatar", "image_url":
			return // written above
		case "id":
			return // Segment's copy of userId
		case "external_id", "user_alias", "braze_id", "_update_existing_only", "_merge_objects":
			sd.dropped++ // would change whom or how the object updates
			return
		case "address":
			switch {
			case sd.buf[v.start] != '{':
				// not Segment's address object: an ordinary custom attribute
			case !addressRest:
				return
			default:
				sd.writeKey(ks, ke)
				sd.nested(v, func(k []byte) bool { return string(k) == "city" || string(k) == "country" })
				return
			}
		}
		if len(k) == 0 || k[0] == '$' {
			sd.dropped++
			return
		}
		sd.writeKey(ks, ke)
		sd.nested(v, nil)
	})
	sd.end()
	return nil
}

// standard writes one standard profile field, normalising dob, gender and country. A value
// Braze would misread is left out (and counted); null is passed on (it clears the field).
func (sd *segDecode) standard(i int, v val) {
	if sd.isNull(v) {
		sd.b = append(sd.b, ',', '"')
		sd.b = append(sd.b, stdNames[i]...)
		sd.b = append(sd.b, `":null`...)
		return
	}
	var norm []byte
	switch i {
	case stdDOB:
		s, isStr := sd.str(v)
		if !isStr || len(s) < 10 || !isDate(s[:10]) || (len(s) > 10 && !isBrazeTime(s)) {
			sd.dropped++
			return
		}
		norm = s[:10] // the calendar date as written: no time-zone conversion
	case stdGender:
		s, isStr := sd.str(v)
		g := brazeGender(s)
		if !isStr || g == "" {
			sd.dropped++
			return
		}
		norm = []byte(g)
	case stdCountry:
		// Two letters are upper-cased; anything else is passed on for Braze to map or set
		// to NULL (docs/braze-rules.md §8 attr-2).
		if s, isStr := sd.str(v); isStr && len(s) == 2 && isLetter(s[0]) && isLetter(s[1]) {
			norm = []byte{upper(s[0]), upper(s[1])}
		}
	}
	sd.b = append(sd.b, ',', '"')
	sd.b = append(sd.b, stdNames[i]...)
	sd.b = append(sd.b, '"', ':')
	if norm != nil {
		sd.b = appendJSONString(sd.b, string(norm))
		return
	}
	sd.b = append(sd.b, sd.raw(v)...)
}

// brazeGender maps Segment's free-form gender to Braze's M, F, O, N, P (as Braze's Segment
// destination does), or "" when it is none of them.
func brazeGender(s []byte) string {
	var lower [24]byte
	if len(s) > len(lower) {
		return ""
	}
	// trim and lower-case
	for len(s) > 0 && s[0] == ' ' {
		s = s[1:]
	}
	for len(s) > 0 && s[len(s)-1] == ' ' {
		s = s[:len(s)-1]
	}
	for i, c := range s {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	switch string(lower[:len(s)]) {
	case "m", "male", "man":
		return "M"
	case "f", "female", "woman", "w":
		return "F"
	case "o", "other":
		return "O"
	case "n", "not applicable":
		return "N"
	case "p", "prefer not to say":
		return "P"
	}
	return ""
}

// nested writes an attribute value. Objects and arrays become nested custom attributes,
// cleaned of what makes Braze drop every nested update of the request: null values, and keys
// that are empty, longer than 255 characters or hold a space, '.' or '$'. skip names
// top-level members to leave out.
func (sd *segDecode) nested(v val, skip func(k []byte) bool) {
	switch sd.buf[v.start] {
	case '{':
		sd.b = append(sd.b, '{')
		first := true
		sd.members(v, func(ks, ke int, kesc bool, mv val) {
			k := sd.key(ks, ke, kesc)
			if skip != nil && skip(k) {
				return
			}
			if sd.isNull(mv) || !nestedKeyOK(k) {
				sd.dropped++
				return
			}
			if !first {
				sd.b = append(sd.b, ',')
			}
			first = false
			sd.b = append(sd.b, '"')
			sd.b = append(sd.b, sd.buf[ks:ke]...)
			sd.b = append(sd.b, '"', ':')
			sd.nested(mv, nil)
		})
		sd.b = append(sd.b, '}')
	case '[':
		sd.b = append(sd.b, '[')
		first := true
		s := scanner{buf: sd.buf, pos: v.start + 1, errOff: -1}
		s.ws()
		if s.peek() != ']' {
			for {
				s.ws()
				start := s.pos
				s.skip()
				ev := val{start, s.pos}
				if sd.isNull(ev) {
					sd.dropped++
				} else {
					if !first {
						sd.b = append(sd.b, ',')
					}
					first = false
					sd.nested(ev, nil)
				}
				s.ws()
				if s.peek() != ',' {
					break
				}
				s.pos++
			}
		}
		sd.b = append(sd.b, ']')
	default:
		sd.b = append(sd.b, sd.raw(v)...)
	}
}

func nestedKeyOK(k []byte) bool {
	if len(k) == 0 || (len(k) > maxPropertyKeyChar && utf8.RuneCount(k) > maxPropertyKeyChar) {
		return false
	}
	for _, c := range k {
		if c == ' ' || c == '.' || c == '$' {
			return false
		}
	}
	return true
}

// finish validates every built object with the native rules (which also sets IDKind,
// UserID and UserHash exactly as for native records) and appends the records.
func (sd *segDecode) finish() error {
	var id []byte
	if mid, isStr := sd.str(sd.m.messageID); isStr && len(mid) > 0 {
		at := len(sd.b) // after the objects: kept in the same buffer
		sd.b = append(sd.b, mid...)
		id = sd.b[at:len(sd.b):len(sd.b)]
	}
	var ids []byte
	st := decodeState{s: scanner{buf: sd.b, errOff: -1}, maxRecord: sd.d.MaxRecordBytes, out: sd.out}
	for i, o := range sd.objs {
		if !o.kind.Tracked() {
			if err := sd.checkEntry(o); err != nil {
				return err
			}
		}
		if o.err != nil {
			o.err.Index = i
			st.out = append(st.out, Record{Kind: o.kind, Index: i, Raw: sd.b[o.start:o.end:o.end], Err: o.err})
			sd.setID(&st.out[len(st.out)-1], id, &ids, i)
			continue
		}
		st.s.pos = o.start
		st.s.buf = sd.b[:o.end:o.end]
		if !st.record(o.kind, loc{}, i) {
			// Cannot happen: the objects are built from valid JSON.
			return &MessageError{Reason: ReasonInvalidRecord, Offset: -1, Msg: "internal error: built " + o.kind.EnvelopeType() + " object is not valid JSON: " + st.s.errMsg}
		}
		r := &st.out[len(st.out)-1]
		switch {
		case r.Err != nil && o.item > 0:
			// The purchase of one order product: dead-lettered alone, its field named
			// within the Segment call.
			r.Err.Field = "/properties/products/" + strconv.Itoa(o.item-1) + strings.TrimPrefix(r.Err.Field, "/data")
		case r.Err != nil:
			sd.out = st.out
			return &MessageError{Reason: r.Err.Reason, Offset: -1,
				Msg: "the Braze " + o.kind.EnvelopeType() + " object built from this call breaks a rule: " + r.Err.Field + ": " + r.Err.Msg}
		}
		sd.setID(r, id, &ids, i)
	}
	sd.out = st.out
	return nil
}

// setID gives record i its id: messageId for a call that yields one object, else
// messageId/<index>, all in one buffer.
func (sd *segDecode) setID(r *Record, id []byte, ids *[]byte, i int) {
	switch {
	case id == nil:
	case len(sd.objs) == 1:
		r.ID = id
	default:
		if *ids == nil {
			*ids = make([]byte, 0, len(sd.objs)*(len(id)+6))
		}
		at := len(*ids)
		*ids = strconv.AppendInt(append(append(*ids, id...), '/'), int64(i), 10)
		r.ID = (*ids)[at:len(*ids):len(*ids)]
	}
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
