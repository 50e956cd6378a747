package schemas

import (
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
	}
	return kOther
}

const idRuleKeys = 1<<kExternalID | 1<<kUserAlias | 1<<kBrazeID | 1<<kEmail | 1<<kPhone | 1<<kUpdateOnly

// kindRuleKeys says which rule keys mean something for each kind: "name" in an attributes
// object, say, is just a custom attribute.
var kindRuleKeys = [...]uint32{
	KindAttributes: idRuleKeys,
	KindEvent:      idRuleKeys | 1<<kName | 1<<kTime | 1<<kProperties,
	KindPurchase:   idRuleKeys | 1<<kTime | 1<<kProperties | 1<<kProductID | 1<<kCurrency | 1<<kPrice | 1<<kQuantity,
}

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

// record validates the Braze object at s.pos and appends it to st.out. It returns false
// only on a syntax error; a rule failure sets the record's Err. A non-object value (possible
// in a bundle) becomes a record whose Err says so.
func (st *decodeState) record(kind Kind, l loc, index int) bool {
	s := &st.s
	st.out = append(st.out, Record{Kind: kind, Index: index})
	r := &st.out[len(st.out)-1]
	start := s.pos
	if s.peek() != '{' {
		if !s.skip() {
			return false
		}
		r.Raw = s.buf[start:s.pos]
		bad(r, l, "must be an object")
		return true
	}

	var (
		seen                  uint32
		ext, braze            strSpan
		email, phone          strSpan
		aliasName, aliasLabel strSpan
		nPrimary              int
		secondPrimary         ruleKey
		allowed               = kindRuleKeys[kind]
	)
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
			if ke-ks <= maxRuleKeyRaw {
				if k = lookupRuleKey(st.keyBytes(ks, ke, kesc)); allowed&(1<<k) == 0 {
					k = kOther
				}
			}
			if k != kOther {
				if seen&(1<<k) != 0 {
					bad(r, l, "duplicate key", ruleKeyNames[k])
				}
				seen |= 1 << k
				if k == kExternalID || k == kUserAlias || k == kBrazeID {
					if nPrimary++; nPrimary == 2 {
						secondPrimary = k
					}
				}
			}
			if !st.member(r, l, k, kind, &ext, &braze, &email, &phone, &aliasName, &aliasLabel) {
				return false
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

	// Identifier resolution (docs/braze-rules.md §1 "Identifiers").
	switch {
	case nPrimary > 1:
		bad(r, l, "only one primary identifier (external_id, user_alias, braze_id) is allowed", ruleKeyNames[secondPrimary])
	case ext.ok:
		st.setID(r, IDExternal, ext)
	case aliasName.ok && aliasLabel.ok:
		b := st.reserve(aliasLabel.end - aliasLabel.start + 1 + aliasName.end - aliasName.start)
		b = appendUnescaped(b, s.buf[aliasLabel.start:aliasLabel.end])
		b = append(b, 0)
		b = appendUnescaped(b, s.buf[aliasName.start:aliasName.end])
		r.IDKind, r.UserID = IDAlias, st.commit(b)
		r.UserHash = userHash(IDAlias, r.UserID)
	case braze.ok:
		st.setID(r, IDBraze, braze)
	case nPrimary == 1:
		// The one primary identifier is malformed; that error is already set.
	case email.ok:
		st.setID(r, IDEmail, email)
	case phone.ok:
		st.setID(r, IDPhone, phone)
	default:
		bad(r, l, "no identifier: needs external_id, user_alias or braze_id, or else a non-empty email or phone")
	}

	required := allowed &^ idRuleKeys &^ (1<<kProperties | 1<<kQuantity)
	if missing := required &^ seen; missing != 0 {
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
	return true
}

// member reads the value of one member of a Braze object and applies its rule.
func (st *decodeState) member(r *Record, l loc, k ruleKey, kind Kind, ext, braze, email, phone, aliasName, aliasLabel *strSpan) bool {
	s := &st.s
	name := ruleKeyNames[k]
	switch k {
	case kExternalID, kBrazeID:
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
		default:
			sp.ok = true
			if k == kExternalID {
				*ext = sp
			} else {
				*braze = sp
			}
		}
	case kEmail, kPhone:
		// Only used when there is no primary identifier; otherwise any value is an attribute.
		sp, isStr, ok := st.strValue()
		if !ok {
			return false
		}
		if isStr && sp.end > sp.start {
			sp.ok = true
			if k == kEmail {
				*email = sp
			} else {
				*phone = sp
			}
		}
	case kUserAlias:
		if s.peek() != '{' {
			bad(r, l, "must be an object with non-empty string alias_name and alias_label", name)
			return s.skip()
		}
		return st.alias(r, l, aliasName, aliasLabel)
	case kUpdateOnly:
		if c := s.peek(); c == 't' || c == 'f' {
			return s.literal()
		}
		bad(r, l, "must be a boolean", name)
		return s.skip()
	case kName:
		sp, isStr, ok := st.strValue()
		if !ok {
			return false
		}
		if !isStr || sp.end == sp.start {
			bad(r, l, "must be a non-empty string", name)
		}
	case kTime:
		sp, isStr, ok := st.strValue()
		if !ok {
			return false
		}
		if !isStr || !isBrazeTime(st.valueBytes(sp.start, sp.end, sp.esc)) {
			bad(r, l, "must be a Braze time string (yyyy-MM-dd, yyyy-MM-dd HH:mm:ss, or yyyy-MM-ddTHH:mm:ss with optional .fraction or :SSS and zone)", name)
		}
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
		sp, isStr, ok := st.strValue()
		if !ok {
			return false
		}
		if !isStr || !isCurrency(st.valueBytes(sp.start, sp.end, sp.esc)) {
			bad(r, l, "must be 3 upper-case letters (ISO 4217)", name)
		}
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

func isCurrency(b []byte) bool {
	return len(b) == 3 && 'A' <= b[0] && b[0] <= 'Z' && 'A' <= b[1] && b[1] <= 'Z' && 'A' <= b[2] && b[2] <= 'Z'
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
	for {
		s.ws()
		ks, ke, kesc, ok := s.key()
		if !ok {
			return false
		}
		if r.Err == nil {
			key := st.valueBytes(ks, ke, kesc)
			if msg := propertyKeyProblem(key, kind); msg != "" {
				bad(r, l, msg, "properties", string(key))
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

// propertyKeyProblem says what is wrong with an (unescaped) property key, or "".
func propertyKeyProblem(k []byte, kind Kind) string {
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
	case "product_id", "quantity", "price", "currency":
		if kind == KindPurchase {
			return "property key is reserved by Braze for purchases"
		}
	}
	return ""
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
