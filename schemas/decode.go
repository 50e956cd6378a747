package schemas

import (
	"math/bits"
	"strconv"
	"strings"
)

// Decoder turns Kafka message values into Records. The zero value is ready to use; a Decoder
// holds no state between calls, so one may be shared by many goroutines.
type Decoder struct {
	// MaxRecordBytes is the largest Raw a record may have (0 = no limit). A larger record is
	// returned with a RecordError of Reason too_large. For the records of the endpoints
	// beyond /users/track the limit is EntryFramingExtra bytes lower.
	MaxRecordBytes int
}

// Decode appends the records of one Kafka message value to out and returns it.
//
// A message-level problem returns out unchanged and a *MessageError: invalid_json (with the
// byte Offset) when the value is not exactly one JSON object in valid UTF-8, invalid_record
// when it is neither an envelope nor a bundle, mixes the two, has unknown or duplicate
// top-level keys, or an envelope with a bad type or data. Records that break a rule are still
// returned, with Err set; the other records of a bundle are unaffected.
//
// Records alias value (Raw, and UserID and ID unless they had to be unescaped or joined):
// value must not be modified while they are in use. Decode allocates nothing per record in
// the common case; unescaped and alias identifiers share one buffer per message.
func (d *Decoder) Decode(value []byte, out []Record) ([]Record, error) {
	limit := 0
	if d != nil {
		limit = d.MaxRecordBytes
	}
	st := decodeState{s: scanner{buf: value, errOff: -1}, maxRecord: limit, out: out}
	if err := st.message(); err != nil {
		// Drop partial results; clear them so out's backing array does not pin value.
		clear(st.out[len(out):])
		return out, err
	}
	return st.out, nil
}

// decodeState is the per-call state of Decode. It lives on Decode's stack.
type decodeState struct {
	s         scanner
	maxRecord int
	out       []Record
	arena     []byte     // holds unescaped and joined identifiers for this message
	kbuf      [128]byte  // scratch for unescaping keys
	vbuf      [1024]byte // scratch for unescaping short values under test
	top       keySet     // keys of the record being read, for duplicates
	props     keySet     // keys of its properties object
}

// top-level keys, as bits of a mask.
const (
	tkType = 1 << iota
	tkData
	tkID
	// The bundle arrays, one bit per Kind in Kind order: tkAttributes << k is kind k's array.
	tkAttributes
	tkEvents
	tkPurchases
	tkAliases
	tkIdentifies
	tkMerges
	tkSubscriptions
	tkDeletes

	tkEnvelope = tkType | tkData | tkID
	tkBundle   = tkAttributes | tkEvents | tkPurchases | tkAliases | tkIdentifies | tkMerges | tkSubscriptions | tkDeletes
)

func topKey(b []byte) int {
	switch string(b) {
	case "type":
		return tkType
	case "data":
		return tkData
	case "id":
		return tkID
	case "attributes":
		return tkAttributes
	case "events":
		return tkEvents
	case "purchases":
		return tkPurchases
	case "aliases":
		return tkAliases
	case "identifies":
		return tkIdentifies
	case "merges":
		return tkMerges
	case "subscriptions":
		return tkSubscriptions
	case "deletes":
		return tkDeletes
	}
	return 0
}

func msgErr(field, msg string) *MessageError {
	return &MessageError{Reason: ReasonInvalidRecord, Field: field, Offset: -1, Msg: msg}
}

// message decodes the whole value. Records are validated while the value is scanned when
// their context is already known (type before data; bundle arrays in canonical order) and in
// a second pass over the recorded spans otherwise. Syntax errors anywhere win over every
// other problem, so the scan always runs to the end.
func (st *decodeState) message() error {
	s := &st.s
	n0 := len(st.out)
	s.ws()
	if s.pos == len(s.buf) {
		s.fail(s.pos, "empty message")
		return st.syntaxErr()
	}
	if s.peek() != '{' {
		if s.skip() {
			s.ws()
			if s.pos == len(s.buf) {
				return &MessageError{Reason: ReasonInvalidJSON, Offset: 0, Msg: "message must be a JSON object"}
			}
			s.fail(s.pos, "data after the top-level value")
		}
		return st.syntaxErr()
	}
	s.pos++

	var (
		seen     int
		semErr   *MessageError // first message-level rule error
		kind     Kind
		kindOK   bool
		dataAt   = -1 // start of data when it must be validated after the scan
		id       []byte
		spans    [NumKinds]int // start of each bundle array, by Kind
		lastKind = -1
		deferred bool // bundle arrays out of canonical order: validate after the scan
		index    int
	)
	setErr := func(e *MessageError) {
		if semErr == nil {
			semErr = e
		}
	}

	s.ws()
	if s.peek() == '}' {
		s.pos++
	} else {
		for {
			s.ws()
			ks, ke, kesc, ok := s.key()
			if !ok {
				return st.syntaxErr()
			}
			name := st.keyBytes(ks, ke, kesc)
			k := topKey(name)
			s.ws()
			switch {
			case k == 0:
				setErr(msgErr(pointer("", string(name)), "unknown key: an envelope has type, data and id; a bundle has attributes, events, purchases, aliases, identifies, merges, subscriptions and deletes"))
				k = -1
			case seen&k != 0:
				setErr(msgErr(pointer("", string(name)), "duplicate key"))
				k = -1
			default:
				seen |= k
			}
			switch k {
			case tkType:
				if s.peek() == '"' {
					start, end, esc, ok := s.str()
					if !ok {
						return st.syntaxErr()
					}
					kind, kindOK = envelopeKind(st.valueBytes(start, end, esc))
				} else if !s.skip() {
					return st.syntaxErr()
				}
				if !kindOK {
					setErr(msgErr("/type", `must be one of "attributes", "event", "purchase", "alias", "identify", "merge", "subscription", "delete"`))
				}
			case tkData:
				if s.peek() != '{' {
					setErr(msgErr("/data", "must be an object"))
					if !s.skip() {
						return st.syntaxErr()
					}
					break
				}
				if kindOK && semErr == nil && seen&tkBundle == 0 {
					if !st.record(kind, loc{}, 0) {
						return st.syntaxErr()
					}
					break
				}
				dataAt = s.pos
				if !s.skip() {
					return st.syntaxErr()
				}
			case tkID:
				if s.peek() != '"' {
					setErr(msgErr("/id", "must be a string"))
					if !s.skip() {
						return st.syntaxErr()
					}
					break
				}
				start, end, esc, ok := s.str()
				if !ok {
					return st.syntaxErr()
				}
				id = st.stringBytes(start, end, esc)
			case tkAttributes, tkEvents, tkPurchases, tkAliases, tkIdentifies, tkMerges, tkSubscriptions, tkDeletes:
				ak := arrayKind(k)
				if s.peek() != '[' {
					setErr(msgErr("/"+ak.Array(), "must be an array of objects"))
					if !s.skip() {
						return st.syntaxErr()
					}
					break
				}
				spans[ak] = s.pos
				if int(ak) < lastKind {
					deferred = true
				}
				lastKind = int(ak)
				if deferred || semErr != nil || seen&tkEnvelope != 0 {
					if !s.skip() {
						return st.syntaxErr()
					}
					break
				}
				if !st.array(ak, &index) {
					return st.syntaxErr()
				}
			default:
				if !s.skip() {
					return st.syntaxErr()
				}
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
			return st.syntaxErr()
		}
	}
	s.ws()
	if s.pos != len(s.buf) {
		s.fail(s.pos, "data after the top-level value")
		return st.syntaxErr()
	}

	// The message is valid JSON; now its shape.
	if semErr == nil {
		switch {
		case seen&tkEnvelope != 0 && seen&tkBundle != 0:
			semErr = msgErr("", "mixes envelope keys (type, data, id) with bundle keys (attributes, events, purchases, aliases, identifies, merges, subscriptions, deletes)")
		case seen&(tkType|tkData) != 0:
			switch {
			case seen&tkType == 0:
				semErr = msgErr("/type", "is required")
			case seen&tkData == 0:
				semErr = msgErr("/data", "is required")
			}
		case seen&tkBundle == 0:
			semErr = msgErr("", "neither an envelope (type, data) nor a bundle (attributes, events, purchases, aliases, identifies, merges, subscriptions, deletes)")
		}
	}
	if semErr != nil {
		return semErr
	}

	if seen&tkType != 0 { // envelope
		if dataAt >= 0 {
			s.pos = dataAt
			st.record(kind, loc{}, 0) // already known to be valid JSON
		}
		st.out[n0].ID = id
		return nil
	}
	if deferred {
		clear(st.out[n0:])
		st.out = st.out[:n0]
		index = 0
		for k, at := range spans {
			if seen&(tkAttributes<<k) != 0 {
				s.pos = at
				st.array(Kind(k), &index)
			}
		}
	}
	if index == 0 {
		return msgErr("", "bundle has no records: all its arrays are empty")
	}
	return nil
}

// arrayKind is the Kind of the bundle array whose top-level key bit is k.
func arrayKind(k int) Kind {
	return Kind(bits.TrailingZeros(uint(k)) - bits.TrailingZeros(uint(tkAttributes)))
}

// envelopeKind is the Kind whose envelope "type" is t.
func envelopeKind(t []byte) (Kind, bool) {
	switch string(t) { // the /users/track kinds first: most messages are theirs
	case "event":
		return KindEvent, true
	case "attributes":
		return KindAttributes, true
	case "purchase":
		return KindPurchase, true
	}
	for k := KindAlias; k < NumKinds; k++ {
		if string(t) == kindNames[k].envelope {
			return k, true
		}
	}
	return 0, false
}

func (st *decodeState) syntaxErr() error {
	msg := st.s.errMsg
	if msg == "" {
		msg = "unexpected end of input"
	}
	return &MessageError{Reason: ReasonInvalidJSON, Offset: st.s.errOff, Msg: msg}
}

// array validates one bundle array at s.pos ('['), appending a record per element.
// index counts records across the bundle's arrays.
func (st *decodeState) array(kind Kind, index *int) bool {
	s := &st.s
	s.pos++
	s.ws()
	if s.peek() == ']' {
		s.pos++
		return true
	}
	for pos := 0; ; pos++ {
		s.ws()
		if !st.record(kind, loc{arr: kind.Array(), pos: pos}, *index) {
			return false
		}
		*index++
		s.ws()
		switch s.peek() {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return true
		default:
			return s.failHere("',' or ']' expected in array")
		}
	}
}

// keyBytes returns an object key's unescaped bytes. The result may live in kbuf and is only
// good until the next key.
func (st *decodeState) keyBytes(start, end int, esc bool) []byte {
	if !esc {
		return st.s.buf[start:end]
	}
	return appendUnescaped(st.kbuf[:0], st.s.buf[start:end])
}

// valueBytes returns a string value's unescaped bytes, possibly in vbuf: good until the
// next call.
func (st *decodeState) valueBytes(start, end int, esc bool) []byte {
	if !esc {
		return st.s.buf[start:end]
	}
	return appendUnescaped(st.vbuf[:0], st.s.buf[start:end])
}

// stringBytes returns a string value's unescaped bytes for keeping in a Record: a sub-slice
// of the message, or a copy in the message's arena when it had escapes.
func (st *decodeState) stringBytes(start, end int, esc bool) []byte {
	raw := st.s.buf[start:end]
	if !esc {
		return raw
	}
	b := appendUnescaped(st.reserve(len(raw)), raw)
	return st.commit(b)
}

// reserve returns an empty slice with room for n bytes in the arena. Unescaped text is never
// longer than its escaped form, so n = raw length is enough, and all identifiers of one
// message fit in len(message) bytes: small messages need one allocation at most.
func (st *decodeState) reserve(n int) []byte {
	if cap(st.arena)-len(st.arena) < n {
		size := min(len(st.s.buf), 8192)
		st.arena = make([]byte, 0, max(size, n))
	}
	return st.arena[len(st.arena):]
}

// commit takes b (built on a reserve result) into the arena and returns it capped, so a
// caller appending to it cannot overwrite its neighbours.
func (st *decodeState) commit(b []byte) []byte {
	st.arena = st.arena[:len(st.arena)+len(b)]
	return b[:len(b):len(b)]
}

// loc says where a record sits in its message, to build Field paths when (and only when) a
// rule fails.
type loc struct {
	arr string // bundle array name; "" for an envelope's data
	pos int    // position within that array
	sub string // a member of the record the path starts below ("" for the record itself)
}

// path returns the JSON pointer of the record, or of the member named by parts below it.
func (l loc) path(parts ...string) string {
	var b strings.Builder
	if l.arr == "" {
		b.WriteString("/data")
	} else {
		b.WriteByte('/')
		b.WriteString(l.arr)
		b.WriteByte('/')
		b.WriteString(strconv.Itoa(l.pos))
	}
	if l.sub != "" {
		b.WriteByte('/')
		writeToken(&b, l.sub)
	}
	for _, p := range parts {
		b.WriteByte('/')
		writeToken(&b, p)
	}
	return b.String()
}

// pointer joins a JSON pointer prefix and one (unescaped) token.
func pointer(prefix, token string) string {
	var b strings.Builder
	b.WriteString(prefix)
	b.WriteByte('/')
	writeToken(&b, token)
	return b.String()
}

// writeToken writes a JSON pointer reference token (RFC 6901: ~ as ~0, / as ~1).
func writeToken(b *strings.Builder, t string) {
	for i := 0; i < len(t); i++ {
		switch t[i] {
		case '~':
			b.WriteString("~0")
		case '/':
			b.WriteString("~1")
		default:
			b.WriteByte(t[i])
		}
	}
}
