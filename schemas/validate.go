package schemas

import (
	"bytes"
	"strconv"
	"unicode/utf8"
)

// ruleKey names the members of a Braze object that a rule looks at. Everything else is
// passed through to Braze untouched (only its syntax is checked).
type ruleKey uint8

const (
	kOther ruleKey = iota
	kExternalID
	kUserAlias
	kBrazeID
	kEmail
	kPhone
	kUpdateOnly
	kName
	kTime
	kProperties
	kProductID
	kCurrency
	kPrice
	kQuantity
	kPushTokenImport
)

var ruleKeyNames = [...]string{
	kOther:      "",
	kExternalID: "external_id",
	kUserAlias:  "user_alias",
	kBrazeID:    "braze_id",
	kEmail:      "email",
	kPhone:      "phone",
	kUpdateOnly: "_update_existing_only",
	kName:       "name",
	kTime:       "time",
	kProperties: "properties",
	kProductID:  "product_id",
	kCurrency:   "currency",
	kPrice:      "price",
	kQuantity:   "quantity",

	kPushTokenImport: "push_token_import",
}

// maxRuleKeyRaw bounds the escaped length of a key that can still be a rule key (the longest
// is 21 bytes; an escape is at most 6 bytes per byte it yields). It fits kbuf.
const maxRuleKeyRaw = 6 * 21

func lookupRuleKey(b []byte) ruleKey {
	switch string(b) {
	case "external_id":
		return kExternalID
	case "user_alias":
		return kUserAlias
	case "braze_id":
		return kBrazeID
	case "email":
		return kEmail
	case "phone":
		return kPhone
	case "_update_existing_only":
		return kUpdateOnly
	case "name":
		return kName
	case "time":
		return kTime
	case "properties":
		return kProperties
	case "product_id":
		return kProductID
	case "currency":
		return kCurrency
	case "price":
		return kPrice
	case "quantity":
		return kQuantity
	case "push_token_import":
		return kPushTokenImport
	}
	return kOther
}

const idRuleKeys = 1<<kExternalID | 1<<kUserAlias | 1<<kBrazeID | 1<<kEmail | 1<<kPhone | 1<<kUpdateOnly

// kindRuleKeys says which rule keys mean something for each kind: "name" in an attributes
// object, say, is just a custom attribute.
var kindRuleKeys = [...]uint32{
	KindAttributes: idRuleKeys | 1<<kPushTokenImport,
	KindEvent:      idRuleKeys | 1<<kName | 1<<kTime | 1<<kProperties,
	KindPurchase:   idRuleKeys | 1<<kTime | 1<<kProperties | 1<<kProductID | 1<<kCurrency | 1<<kPrice | 1<<kQuantity,
}

// optionalRuleKeys are the rule keys a record may leave out (the identifier rules say which
// identifier it needs).
const optionalRuleKeys = idRuleKeys | 1<<kProperties | 1<<kQuantity | 1<<kPushTokenImport

// Limits from docs/braze-rules.md §1.
const (
	maxExternalIDBytes = 987
	maxProductIDChars  = 255
	maxPropertyKeyChar = 255
)

// strSpan is a string value's content span in the message.
type strSpan struct {
	start, end int
	esc        bool
	ok         bool // present and passed its rule
}

// rewrite replaces the content of one string value of a record when it is sent
// (docs/braze-rules.md §8 NORMALISE: time-2, pu-2).
type rewrite struct {
	start, end int // content span in the message
	n          int
	text       [maxTimeLen + 3]byte
}

// recState is what one record's members tell the record-level rules.
type recState struct {
	ext, braze            strSpan
	email, phone          strSpan
	aliasName, aliasLabel strSpan
	pushImport            bool
	nrw                   int
	rw                    [2]rewrite
}

// bad sets r.Err unless it is already set: a record reports its first problem only.
func bad(r *Record, l loc, msg string, parts ...string) {
	if r.Err == nil {
		r.Err = &RecordError{Reason: ReasonInvalidRecord, Index: r.Index, Kind: r.Kind, Field: l.path(parts...), Msg: msg}
	}
}

// strValue reads the value at s.pos if it is a string, and skips it otherwise.
func (st *decodeState) strValue() (sp strSpan, isStr, ok bool) {
	s := &st.s
	if s.peek() != '"' {
		return strSpan{}, false, s.skip()
	}
	start, end, esc, ok := s.str()
	return strSpan{start: start, end: end, esc: esc}, true, ok
}

// runeLen counts the characters of a string value, as JSON Schema's maxLength does.
func (st *decodeState) runeLen(sp strSpan) int {
	return utf8.RuneCount(st.valueBytes(sp.start, sp.end, sp.esc))
}

// keyString returns a key's unescaped text, for error paths only.
func (st *decodeState) keyString(ks, ke int, kesc bool) string {
	if !kesc {
		return string(st.s.buf[ks:ke])
	}
	return string(appendUnescaped(nil, st.s.buf[ks:ke]))
}

// begin appends a record of kind at s.pos to st.out. A value that is not an object is a
// record whose Err says so: then done is true, and ok is false only on a syntax error.
func (st *decodeState) begin(kind Kind, l loc, index int) (r *Record, done, ok bool) {
	s := &st.s
	st.out = append(st.out, Record{Kind: kind, Index: index})
	r = &st.out[len(st.out)-1]
	if s.peek() == '{' {
		return r, false, true
	}
	start := s.pos
	if !s.skip() {
		return r, true, false
	}
	r.Raw = s.buf[start:s.pos]
	bad(r, l, "must be an object")
	return r, true, true
}

// record validates the Braze object at s.pos and appends it to st.out. It returns false
// only on a syntax error; a rule failure sets the record's Err. A non-object value (possible
// in a bundle) becomes a record whose Err says so.
func (st *decodeState) record(kind Kind, l loc, index int) bool {
	if !kind.Tracked() {
		return st.entry(kind, l, index)
	}
	s := &st.s
	start := s.pos
	r, done, ok := st.begin(kind, l, index)
	if done {
		return ok
	}

	var (
		seen          uint32
		rs            recState
		nPrimary      int
		secondPrimary ruleKey
		allowed       = kindRuleKeys[kind]
	)
	st.top.reset()
	s.pos++
	s.ws()
	if s.peek() == '}' {
		s.pos++
	} else {
		for {
			s.ws()
			ks, ke, kesc, ok := s.key()
			if !ok {
				return false
			}
			s.ws()
			k := kOther
			key, room := s.buf[ks:ke], len(s.buf)-ks
			if kesc {
				key = st.keyBytes(ks, ke, kesc)
				room = cap(key)
			}
			if ke-ks <= maxRuleKeyRaw {
				if k = lookupRuleKey(key); allowed&(1<<k) == 0 {
					k = kOther
				}
			}
			// A rule key is its own bit in seen; only the other keys need the key set.
			dup := seen&(1<<k) != 0
			if k == kOther {
				h := keyPrint(key, room)
				dup = !st.top.tryNew(h, ks, ke, kesc) && st.top.add(st, h, ks, ke, kesc)
			}
			if dup {
				bad(r, l, "duplicate key: Braze fails the whole request on an object that repeats a key", string(key))
			}
			if k != kOther {
				seen |= 1 << k
				if (k == kExternalID || k == kUserAlias || k == kBrazeID) && s.peek() != 'n' {
					if nPrimary++; nPrimary == 2 {
						secondPrimary = k
					}
				}
			}
			s.bigAt = 0
			if k != kOther {
				if !st.member(r, l, k, kind, &rs) {
					return false
				}
			} else if kind == KindAttributes && (s.peek() == '{' || s.peek() == '[') {
				if !st.attrValue(r, l, ks, ke, kesc) {
					return false
				}
			} else if !s.skip() {
				return false
			}
			if s.bigAt != 0 {
				bad(r, l, "holds a number outside the range of a 64-bit float (IEEE 754 double): Braze fails the whole request on it", st.keyString(ks, ke, kesc))
			}
			s.ws()
			if c := s.peek(); c == ',' {
				s.pos++
				continue
			} else if c == '}' {
				s.pos++
				break
			}
			return s.failHere("',' or '}' expected in object")
		}
	}
	r.Raw = s.buf[start:s.pos]
	st.identify(r, l, &rs, nPrimary, secondPrimary)

	if missing := allowed &^ optionalRuleKeys &^ seen; missing != 0 {
		for k := kName; k <= kQuantity; k++ {
			if missing&(1<<k) != 0 {
				bad(r, l, "is required", ruleKeyNames[k])
				break
			}
		}
	}

	if st.maxRecord > 0 && len(r.Raw) > st.maxRecord {
		r.Err = &RecordError{Reason: ReasonTooLarge, Index: r.Index, Kind: r.Kind, Field: l.path(),
			Msg: "record is " + strconv.Itoa(len(r.Raw)) + " bytes, over the limit of " + strconv.Itoa(st.maxRecord)}
	}
	if r.Err == nil && rs.nrw > 0 {
		st.applyRewrites(r, start, &rs)
	}
	return true
}

// identify applies the identifier rules (docs/braze-rules.md §1 "Identifiers", §8 id-1..id-8).
func (st *decodeState) identify(r *Record, l loc, rs *recState, nPrimary int, secondPrimary ruleKey) {
	switch {
	case nPrimary > 1:
		bad(r, l, "only one primary identifier (external_id, user_alias, braze_id) is allowed", ruleKeyNames[secondPrimary])
	case rs.ext.ok:
		st.setID(r, IDExternal, rs.ext)
	case rs.aliasName.ok && rs.aliasLabel.ok:
		st.setAlias(r, rs.aliasName, rs.aliasLabel)
	case rs.braze.ok:
		st.setID(r, IDBraze, rs.braze)
	case nPrimary == 1:
		// The one primary identifier is malformed; that error is already set.
	case rs.email.ok:
		st.setID(r, IDEmail, rs.email)
	case rs.phone.ok:
		st.setID(r, IDPhone, rs.phone)
	case rs.pushImport:
		// An anonymous push token import names no user: Braze creates one. It is routed by
		// the hash of its bytes (IDKind stays 0, UserID empty).
		r.UserHash = userHash(0, r.Raw)
	default:
		bad(r, l, "no identifier: needs external_id, user_alias or braze_id, or else a non-empty email or phone")
	}
}

// applyRewrites gives r a Raw with the normalised values, built in the message's arena.
func (st *decodeState) applyRewrites(r *Record, start int, rs *recState) {
	rw := rs.rw[:rs.nrw]
	if len(rw) == 2 && rw[1].start < rw[0].start {
		rw[0], rw[1] = rw[1], rw[0]
	}
	n := len(r.Raw)
	for i := range rw {
		n += rw[i].n - (rw[i].end - rw[i].start)
	}
	b := st.reserve(n)
	at := start
	for i := range rw {
		b = append(b, st.s.buf[at:rw[i].start]...)
		b = append(b, rw[i].text[:rw[i].n]...)
		at = rw[i].end
	}
	b = append(b, st.s.buf[at:start+len(r.Raw)]...)
	r.Raw = st.commit(b)
}

// addRewrite notes that the string value at sp is sent as text.
func (rs *recState) addRewrite(sp strSpan, text []byte) {
	if rs.nrw == len(rs.rw) || len(text) > len(rs.rw[0].text) {
		return // cannot happen: one time and one currency per record
	}
	w := &rs.rw[rs.nrw]
	w.start, w.end, w.n = sp.start, sp.end, copy(w.text[:], text)
	rs.nrw++
}

// member reads the value of one member of a Braze object and applies its rule.
func (st *decodeState) member(r *Record, l loc, k ruleKey, kind Kind, rs *recState) bool {
	s := &st.s
	name := ruleKeyNames[k]
	if s.peek() == 'n' && k.nullable() {
		return s.literal() // null: the member is absent (docs/braze-rules.md §8 id-6, ueo-1, ev-4, pu-4)
	}
	switch k {
	case kExternalID, kBrazeID:
		return st.idMember(r, l, k, rs)
	case kEmail, kPhone:
		// Only used when there is no primary identifier; otherwise any value is an attribute.
		sp, isStr, ok := st.strValue()
		if !ok {
			return false
		}
		if isStr && sp.end > sp.start {
			sp.ok = true
			if k == kEmail {
				rs.email = sp
			} else {
				rs.phone = sp
			}
		}
	case kUserAlias:
		if s.peek() != '{' {
			bad(r, l, "must be an object with non-empty string alias_name and alias_label", name)
			return s.skip()
		}
		return st.alias(r, l, &rs.aliasName, &rs.aliasLabel)
	case kUpdateOnly:
		if c := s.peek(); c == 't' || c == 'f' {
			return s.literal()
		}
		bad(r, l, "must be a boolean", name)
		return s.skip()
	case kPushTokenImport:
		rs.pushImport = s.peek() == 't'
		return s.skip() // any value is Braze's to judge
	case kName:
		sp, isStr, ok := st.strValue()
		if !ok {
			return false
		}
		if !isStr || sp.end == sp.start {
			bad(r, l, "must be a non-empty string", name)
		}
	case kTime:
		return st.timeMember(r, l, rs)
	case kProperties:
		if s.peek() != '{' {
			bad(r, l, "must be an object", name)
			return s.skip()
		}
		return st.properties(r, l, kind)
	case kProductID:
		sp, isStr, ok := st.strValue()
		if !ok {
			return false
		}
		if !isStr || sp.end == sp.start || (sp.end-sp.start > maxProductIDChars && st.runeLen(sp) > maxProductIDChars) {
			bad(r, l, "must be a string of 1 to 255 characters", name)
		}
	case kCurrency:
		return st.currencyMember(r, l, rs)
	case kPrice:
		if c := s.peek(); c == '-' || isDigit(c) {
			return s.number()
		}
		bad(r, l, "must be a number", name)
		return s.skip()
	case kQuantity:
		if c := s.peek(); c == '-' || isDigit(c) {
			start := s.pos
			if !s.number() {
				return false
			}
			if v, isInt := jsonInteger(s.buf[start:s.pos]); !isInt || v < 1 || v > 100 {
				bad(r, l, "must be an integer from 1 to 100", name)
			}
			return true
		}
		bad(r, l, "must be an integer from 1 to 100", name)
		return s.skip()
	default:
		return s.skip()
	}
	return true
}

// nullable reports the rule keys whose null value means "absent".
func (k ruleKey) nullable() bool {
	switch k {
	case kExternalID, kBrazeID, kUserAlias, kUpdateOnly, kProperties, kQuantity:
		return true
	}
	return false
}

// idMember reads external_id or braze_id.
func (st *decodeState) idMember(r *Record, l loc, k ruleKey, rs *recState) bool {
	name := ruleKeyNames[k]
	sp, isStr, ok := st.strValue()
	if !ok {
		return false
	}
	switch {
	case !isStr || sp.end == sp.start:
		bad(r, l, "must be a non-empty string", name)
	case k == kExternalID && sp.end-sp.start > maxExternalIDBytes &&
		(!sp.esc || len(st.valueBytes(sp.start, sp.end, true)) > maxExternalIDBytes):
		bad(r, l, "must be at most 987 bytes", name)
	case k == kExternalID && sp.esc && bytes.IndexByte(st.valueBytes(sp.start, sp.end, true), 0) >= 0:
		// A raw NUL is invalid JSON; only the \u0000 escape can carry one.
		bad(r, l, "must not contain NUL (\\u0000): Braze fails the whole request on it", name)
	default:
		sp.ok = true
		if k == kExternalID {
			rs.ext = sp
		} else {
			rs.braze = sp
		}
	}
	return true
}

// timeMember reads an event's or purchase's time; forms outside Braze's layouts are
// normalised (time.go).
func (st *decodeState) timeMember(r *Record, l loc, rs *recState) bool {
	sp, isStr, ok := st.strValue()
	if !ok {
		return false
	}
	var t []byte
	valid, norm := false, false
	if isStr {
		t = st.valueBytes(sp.start, sp.end, sp.esc)
		valid, norm = timeForm(t)
	}
	switch {
	case !valid:
		bad(r, l, "must be a Braze time string (yyyy-MM-dd, or yyyy-MM-dd, T or a space, HH:mm[:ss[.fraction or :SSS]] and an optional zone)", "time")
	case norm:
		var buf [maxTimeLen + 3]byte
		rs.addRewrite(sp, appendNormTime(buf[:0], t))
	}
	return true
}

// currencyMember reads a purchase currency: three ASCII letters, sent upper-cased.
func (st *decodeState) currencyMember(r *Record, l loc, rs *recState) bool {
	sp, isStr, ok := st.strValue()
	if !ok {
		return false
	}
	var c []byte
	if isStr {
		c = st.valueBytes(sp.start, sp.end, sp.esc)
	}
	if len(c) != 3 || !isLetter(c[0]) || !isLetter(c[1]) || !isLetter(c[2]) {
		bad(r, l, "must be a 3-letter ISO 4217 code", "currency")
		return true
	}
	if up := [3]byte{upper(c[0]), upper(c[1]), upper(c[2])}; string(up[:]) != string(c) {
		rs.addRewrite(sp, up[:])
	}
	return true
}

// alias reads a user_alias object at s.pos ('{').
func (st *decodeState) alias(r *Record, l loc, name, label *strSpan) bool {
	s := &st.s
	var seenName, seenLabel bool
	s.pos++
	s.ws()
	if s.peek() == '}' {
		s.pos++
	} else {
		for {
			s.ws()
			ks, ke, kesc, ok := s.key()
			if !ok {
				return false
			}
			s.ws()
			var dst *strSpan
			var seen *bool
			var field string
			if ke-ks <= maxRuleKeyRaw {
				switch string(st.keyBytes(ks, ke, kesc)) {
				case "alias_name":
					dst, seen, field = name, &seenName, "alias_name"
				case "alias_label":
					dst, seen, field = label, &seenLabel, "alias_label"
				}
			}
			if dst == nil {
				if !s.skip() {
					return false
				}
			} else {
				if *seen {
					bad(r, l, "duplicate key", "user_alias", field)
				}
				*seen = true
				sp, isStr, ok := st.strValue()
				if !ok {
					return false
				}
				if !isStr || sp.end == sp.start {
					bad(r, l, "must be a non-empty string", "user_alias", field)
				} else {
					sp.ok = true
					*dst = sp
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
			return s.failHere("',' or '}' expected in object")
		}
	}
	if !seenName {
		bad(r, l, "is required", "user_alias", "alias_name")
	}
	if !seenLabel {
		bad(r, l, "is required", "user_alias", "alias_label")
	}
	return true
}

// properties reads an event or purchase "properties" object at s.pos ('{'), checking its
// keys; the values are passed through.
func (st *decodeState) properties(r *Record, l loc, kind Kind) bool {
	s := &st.s
	s.pos++
	s.ws()
	if s.peek() == '}' {
		s.pos++
		return true
	}
	st.props.reset()
	for {
		s.ws()
		ks, ke, kesc, ok := s.key()
		if !ok {
			return false
		}
		if r.Err == nil {
			key, room := s.buf[ks:ke], len(s.buf)-ks
			if kesc {
				key = st.valueBytes(ks, ke, kesc)
				room = cap(key)
			}
			msg := ""
			if propertyKeySuspect(key) {
				msg = propertyKeyProblem(key, kind)
			}
			if msg != "" {
				bad(r, l, msg, "properties", string(key))
			} else if h := keyPrint(key, room); !st.props.tryNew(h, ks, ke, kesc) && st.props.add(st, h, ks, ke, kesc) {
				bad(r, l, "duplicate key: Braze fails the whole request on an object that repeats a key", "properties", string(key))
			}
		}
		if !s.skip() {
			return false
		}
		s.ws()
		if c := s.peek(); c == ',' {
			s.pos++
			continue
		} else if c == '}' {
			s.pos++
			return true
		}
		return s.failHere("',' or '}' expected in object")
	}
}

// propertyKeyProblem says what is wrong with an (unescaped) property key, or "". Events and
// purchases reserve the same keys (docs/braze-rules.md §1 "Purchase object", §8 pu-5).
func propertyKeyProblem(k []byte, _ Kind) string {
	switch {
	case len(k) == 0:
		return "property key must be non-empty"
	case k[0] == '$':
		return "property key must not start with '$'"
	case len(k) > maxPropertyKeyChar && utf8.RuneCount(k) > maxPropertyKeyChar:
		return "property key must be at most 255 characters"
	}
	switch string(k) {
	case "time", "event_name":
		return "property key is reserved by Braze"
	}
	return ""
}

// propertyKeySuspect is false for most keys, which propertyKeyProblem cannot find wrong: it
// looks only at the length and the first byte, and is cheap enough to be inlined.
func propertyKeySuspect(k []byte) bool {
	n := len(k)
	return n == 0 || n == len("time") || n == len("event_name") || n > maxPropertyKeyChar || k[0] == '$'
}

func (st *decodeState) setID(r *Record, kind IDKind, sp strSpan) {
	r.IDKind = kind
	r.UserID = st.stringBytes(sp.start, sp.end, sp.esc)
	r.UserHash = userHash(kind, r.UserID)
}

// jsonInteger interprets a valid JSON number literal the way JSON Schema's "integer" type
// does: any number with a zero fractional part (so 2.0 and 1e1 are integers). Values that do
// not fit in 18 digits saturate, which is enough to compare them against small bounds.
func jsonInteger(lit []byte) (v int64, isInt bool) {
	neg := lit[0] == '-'
	if neg {
		lit = lit[1:]
	}
	i := 0
	for i < len(lit) && isDigit(lit[i]) {
		i++
	}
	intPart := lit[:i]
	var frac []byte
	if i < len(lit) && lit[i] == '.' {
		j := i + 1
		for j < len(lit) && isDigit(lit[j]) {
			j++
		}
		frac, i = lit[i+1:j], j
	}
	exp := 0
	if i < len(lit) { // exponent
		i++
		eneg := lit[i] == '-'
		if lit[i] == '-' || lit[i] == '+' {
			i++
		}
		for ; i < len(lit); i++ {
			if exp < 1e6 { // saturate: anything this large is out of every range we check
				exp = exp*10 + int(lit[i]-'0')
			}
		}
		if eneg {
			exp = -exp
		}
	}
	// The value is digits(intPart ++ frac) * 10^e.
	at := func(i int) byte {
		if i < len(intPart) {
			return intPart[i]
		}
		return frac[i-len(intPart)]
	}
	n, e := len(intPart)+len(frac), exp-len(frac)
	for n > 0 && at(n-1) == '0' {
		n--
		e++
	}
	lo := 0
	for lo < n && at(lo) == '0' {
		lo++
	}
	switch {
	case lo == n:
		return 0, true
	case e < 0:
		return 0, false
	case n-lo+e > 18:
		v = 1 << 62
	default:
		for i := lo; i < n; i++ {
			v = v*10 + int64(at(i)-'0')
		}
		for ; e > 0; e-- {
			v *= 10
		}
	}
	if neg {
		v = -v
	}
	return v, true
}
