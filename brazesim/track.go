package brazesim

import (
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"
)

// Minor (per-object) error types returned in the "errors" array of a /users/track answer
// (docs/braze-rules.md §2 "Partial success" and "Errors documented per object"). Texts quoted from
// docs/braze-rules.md are Braze's; the others are the simulator's own wording (Braze does not
// publish them) and are marked "sim".
const (
	ErrIdentifierRequired = "'external_id' or 'braze_id' or 'user_alias' is required"               // docs/braze-rules.md §2 (3P wire text)
	ErrMultiplePrimary    = "only one of 'external_id', 'braze_id' or 'user_alias' is allowed"      // sim; rule from §1 "Identifiers"
	ErrExternalIDTooLarge = "EXTERNAL_USER_ID_TOO_LARGE"                                            // §1 "Identifiers", §2
	ErrBlacklisted        = "BLACKLISTED_EXTERNAL_USER_ID"                                          // §1 "Identifiers", §2
	ErrInvalidEmail       = "The value provided for the 'email' field is not a valid email."        // §2 (3P wire text)
	ErrInvalidPhone       = "The value provided for the 'phone' field is not a valid phone number." // sim; §1 "Identifiers"
	ErrInvalidIdentifier  = "Invalid identifier field"                                              // sim: identifier of the wrong JSON type
	ErrInvalidAlias       = "'user_alias' must have string 'alias_name' and 'alias_label'"          // sim
	ErrNotObject          = "Each item must be a JSON object"                                       // sim
	ErrEventName          = "'name' is required and must be a non-empty string"                     // sim; §1 "Event object"
	ErrTimeRequired       = "'time' is required"                                                    // sim; §1 "Event object"/"Purchase object"
	ErrInvalidTime        = "Invalid 'time' field"                                                  // sim
	ErrInvalidProperties  = "Invalid 'properties' field"                                            // §1 "Event object" (reserved keys)
	ErrPropertiesTooLarge = "'properties' exceeds 100 KB"                                           // sim; §1 "Event object"
	ErrProductID          = "'product_id' is required and must be at most 255 characters"           // sim; §1 "Purchase object"
	ErrCurrency           = "Invalid 'currency' field"                                              // sim; §1 "Purchase object"
	ErrPrice              = "Invalid 'price' field"                                                 // sim; §1 "Purchase object"
	ErrQuantity           = "'quantity' must be an integer between 1 and 100"                       // sim; §1 "Purchase object"
	ErrEmailSubscribe     = "BAD_EMAIL_SUBSCRIPTION_STATE"                                          // §2
	ErrPushSubscribe      = "BAD_PUSH_SUBSCRIPTION_STATE"                                           // §2
	ErrSubscriptionGroups = "BAD_SUBSCRIPTION_GROUP_ARRAY"                                          // §2
	ErrUpdateExistingOnly = "'_update_existing_only' must be a boolean"                             // sim
	ErrPushTokenImport    = "BAD_PUSH_TOKEN_IMPORT"                                                 // §1 "Identifiers", §2
)

// Fatal messages (docs/braze-rules.md §2, §1).
const (
	msgMaxInput  = "Max Input Length Exceeded"
	msgValidData = "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."
)

type idKind uint8

const (
	idNone idKind = iota
	idExternal
	idAlias
	idBraze
	idEmail
	idPhone
	idAnon // anonymous push token import: a new profile (docs/braze-rules.md §1 "Identifiers")
)

// ident is the identifier an object resolves its user with.
type ident struct {
	kind  idKind
	id    string // for aliases label+"\x00"+name
	alias Alias
}

// objCommon holds the identifier fields every object carries.
type objCommon struct {
	ext, braze, email, phone   string
	hasExt, hasBraze, hasAlias bool
	hasEmail, hasPhone         bool // present as a string
	emailNull, phoneNull       bool // present as null
	alias                      Alias
	updateOnly, updateOnlySet  bool
	pushImport                 bool // attributes with "push_token_import": true
	err                        string
	id                         ident
	u                          *user // resolved before the latency window
}

type opKind uint8

const (
	opSet opKind = iota
	opNull
	opInc
	opArr     // {"add":[…], "remove":[…]}
	opNested  // nested object: overwrite, or deep-merge with _merge_objects
	opObjArr  // {"$add", "$remove", "$update"}
	opSetRaw  // scalar kept as JSON text (raw)
	opDropped // silently dropped update
)

const maxNestedBytes = 100 * 1024

// attrOp is one attribute update, small and without pointers (ops of pooled
// requests are rewritten, not cleared, and cost the GC nothing): the key is in the
// body (or trackReq.strs), raw JSON text in the body too (the store copies it),
// anything else in an opExt.
type attrOp struct {
	keyOff, keyLen int32 // body[keyOff:+keyLen]; keyLen < 0: trackReq.strs[keyOff]
	rawOff, rawLen int32 // opSetRaw: JSON text in the body
	x              int32 // index+1 of the op's opExt in trackReq.ext (0: none)
	dp             int32 // data points this op bills (docs/braze-rules.md §6)
	kind           opKind
}

// opExt holds what ops other than raw scalar sets and null need.
type opExt struct {
	v              any     // opSet, opNested; opObjArr: $update ([]any)
	n              float64 // opInc
	addOff, addLen int32   // opArr add, opObjArr $add: in trackReq.vals
	remOff, remLen int32   // opArr remove, opObjArr $remove: in trackReq.vals
}

func (op *attrOp) raw(body []byte) []byte {
	return body[op.rawOff : op.rawOff+op.rawLen : op.rawOff+op.rawLen]
}

func (x *opExt) add(vals []any) []any { return vals[x.addOff : x.addOff+x.addLen] }
func (x *opExt) rem(vals []any) []any { return vals[x.remOff : x.remOff+x.remLen] }

func (x *opExt) upd() []any {
	u, _ := x.v.([]any)
	return u
}

// key returns the op's key; it may point into the body (valid during the request).
func (r *trackReq) key(op *attrOp) string {
	if op.keyLen < 0 {
		return r.strs[op.keyOff]
	}
	return bodyStr(r.body[op.keyOff : op.keyOff+op.keyLen])
}

// setKey records k as op's key: by position when k lies in the body.
func (r *trackReq) setKey(op *attrOp, k string) {
	if len(k) == 0 {
		op.keyOff, op.keyLen = 0, 0
		return
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(r.body)))
	if p := uintptr(unsafe.Pointer(unsafe.StringData(k))); p >= base && p+uintptr(len(k)) <= base+uintptr(len(r.body)) {
		op.keyOff, op.keyLen = int32(p-base), int32(len(k))
		return
	}
	r.strs = append(r.strs, k)
	op.keyOff, op.keyLen = int32(len(r.strs)-1), -1
}

// ext returns op's opExt, adding one if it has none.
func (r *trackReq) ext(op *attrOp) *opExt {
	if op.x == 0 {
		r.exts = append(r.exts, opExt{})
		op.x = int32(len(r.exts))
	}
	return &r.exts[op.x-1]
}

var noExt opExt

// extOf returns op's opExt, or an empty one (read only).
func (r *trackReq) extOf(op *attrOp) *opExt {
	if op.x == 0 {
		return &noExt
	}
	return &r.exts[op.x-1]
}

// putVals appends list values to the request's pool and returns their place.
func (r *trackReq) putVals(v []any) (off, n int32) {
	off = int32(len(r.vals))
	r.vals = append(r.vals, v...)
	return off, int32(len(v))
}

type attrObj struct {
	objCommon
	merge  bool
	ops    []attrOp
	nested bool // has nested-object / array-of-object ops
	bad    bool // a nested value is invalid (null or bad $time) -> drop nested updates of the request
}

type eventObj struct {
	objCommon
	name  string
	t     time.Time
	appID string
	props []byte   // raw JSON object when cut to 256 properties (else in the body at span)
	span  [2]int32 // props in the body
}

type purchaseObj struct {
	objCommon
	productID string
	currency  string
	price     float64
	quantity  int
	t         time.Time
	appID     string
	props     []byte
	span      [2]int32
}

// trackReq is a parsed /users/track body.
type trackReq struct {
	at               int64 // request time, unix ns (operation log)
	hasA, hasE, hasP bool  // array present (and not null)
	attrs            []attrObj
	events           []eventObj
	purchases        []purchaseObj
	nA, nE, nP       int
	vals             []any    // list values of attribute ops (opExt.add/rem)
	exts             []opExt  // see attrOp.x
	strs             []string // keys not found verbatim in the body
	body             []byte   // the request body (valid until the request ends)
	keys             []uint64 // scratch of poisonBody
}

// keepProps copies an event's or purchase's properties (cut, or at span in the
// body) into prev, the buffer of the item the history slot held (a new one if it
// is too small): once users have full histories, this allocates nothing.
func (r *trackReq) keepProps(prev, cut []byte, span [2]int32) []byte {
	src := cut
	if src == nil && span[1] != 0 {
		src = r.body[span[0]:span[1]]
	}
	return append(prev[:0], src...)
}

// nextAttr appends a zeroed attrObj, reusing the ops storage of a pooled request.
func (r *trackReq) nextAttr() *attrObj {
	n := len(r.attrs)
	if n < cap(r.attrs) {
		r.attrs = r.attrs[:n+1]
		a := &r.attrs[n]
		*a = attrObj{ops: a.ops[:0]} // ops hold no pointers: nothing to clear
		return a
	}
	r.attrs = append(r.attrs, attrObj{ops: make([]attrOp, 0, 16)})
	return &r.attrs[n]
}

func (r *trackReq) reset() {
	clear(r.vals)
	clear(r.exts)
	clear(r.strs)
	*r = trackReq{attrs: r.attrs[:0], events: r.events[:0], purchases: r.purchases[:0],
		vals: r.vals[:0], exts: r.exts[:0], strs: r.strs[:0], keys: r.keys[:0]}
}

type parseOpts struct {
	countOnly bool
	validate  bool
	now       time.Time
	blackList map[string]bool
	blackPfx  string
	days      dayCache
}

// parseTrack parses the body. It returns a fatal error text ("" if none).
func parseTrack(body []byte, r *trackReq, o *parseOpts) (fatal string) {
	s := scanner{b: body}
	r.body = body
	if !s.consume('{') {
		return "invalid JSON"
	}
	first := true
	for {
		k, _, ok := s.member(&first)
		if !ok {
			break
		}
		var which int
		switch string(k) {
		case "attributes":
			which = 1
		case "events":
			which = 2
		case "purchases":
			which = 3
		default:
			s.skipDepth(0)
			continue
		}
		c := s.peek()
		if c == 'n' {
			s.lit("null")
			continue
		}
		if c != '[' {
			s.skipDepth(0)
			if s.err == nil {
				return "'" + string(k) + "' must be an array"
			}
			break
		}
		s.i++
		af := true
		for s.more(']', &af) {
			switch which {
			case 1:
				r.hasA = true
				r.nA++
				if o.countOnly {
					s.skipDepth(0)
					continue
				}
				parseAttr(&s, r, r.nextAttr(), o)
			case 2:
				r.hasE = true
				r.nE++
				if o.countOnly {
					s.skipDepth(0)
					continue
				}
				r.events = append(r.events, eventObj{})
				parseEvent(&s, &r.events[len(r.events)-1], o)
			case 3:
				r.hasP = true
				r.nP++
				if o.countOnly {
					s.skipDepth(0)
					continue
				}
				r.purchases = append(r.purchases, purchaseObj{})
				parsePurchase(&s, &r.purchases[len(r.purchases)-1], o)
			}
		}
		switch which {
		case 1:
			r.hasA = true
		case 2:
			r.hasE = true
		case 3:
			r.hasP = true
		}
	}
	s.end()
	if s.err != nil {
		return "invalid JSON"
	}
	if o.validate && !o.countOnly {
		var msg string
		if msg, r.keys = poisonBody(body, r.keys); msg != "" {
			return msg
		}
	}
	return ""
}

// strOrBody returns a string value without copying unless it has escapes. The
// store clones external_id, email and phone when it keeps them (resolve, setEmail,
// setPhone), so nothing it holds points into the reused body buffer.
func strOrBody(raw []byte, esc bool) string {
	if esc {
		return unescape(raw)
	}
	return bodyStr(raw)
}

// commonField handles identifier fields; it returns false if key is not one.
func commonField(s *scanner, k []byte, c *objCommon, o *parseOpts) bool {
	switch string(k) {
	case "external_id":
		switch s.peek() {
		case '"':
			raw, esc := s.str()
			c.ext = strOrBody(raw, esc)
			c.hasExt = true
			if c.ext == "" {
				c.setErr(ErrInvalidIdentifier) // an empty id names nobody (docs/braze-rules.md §8 id-3)
			}
		case 'n':
			s.lit("null")
		default:
			s.skipDepth(0)
			c.setErr(ErrInvalidIdentifier)
		}
	case "braze_id":
		switch s.peek() {
		case '"':
			raw, esc := s.str()
			c.braze = strVal(raw, esc)
			c.hasBraze = true
			if c.braze == "" {
				c.setErr(ErrInvalidIdentifier)
			}
		case 'n':
			s.lit("null")
		default:
			s.skipDepth(0)
			c.setErr(ErrInvalidIdentifier)
		}
	case "user_alias":
		if s.peek() == 'n' {
			s.lit("null")
			return true
		}
		if s.peek() != '{' {
			s.skipDepth(0)
			c.setErr(ErrInvalidAlias)
			return true
		}
		s.i++
		c.hasAlias = true
		var okN, okL bool
		f := true
		for s.more('}', &f) {
			ak, _ := s.key()
			switch string(ak) {
			case "alias_name", "alias_label":
				if s.peek() != '"' {
					s.skipDepth(0)
					continue
				}
				raw, esc := s.str()
				v := strVal(raw, esc)
				if string(ak) == "alias_name" {
					c.alias.Name, okN = v, v != ""
				} else {
					c.alias.Label, okL = v, v != ""
				}
			default:
				s.skipDepth(0)
			}
		}
		if !okN || !okL {
			c.setErr(ErrInvalidAlias)
		}
	case "email", "phone":
		isEmail := k[0] == 'e'
		switch s.peek() {
		case '"':
			raw, esc := s.str()
			v := strOrBody(raw, esc)
			if isEmail {
				c.email, c.hasEmail = v, true
			} else {
				c.phone, c.hasPhone = v, true
			}
		case 'n':
			s.lit("null")
			if isEmail {
				c.emailNull = true
			} else {
				c.phoneNull = true
			}
		default:
			s.skipDepth(0)
			if isEmail {
				c.setErr(ErrInvalidEmail)
			} else {
				c.setErr(ErrInvalidPhone)
			}
		}
	case "_update_existing_only":
		switch s.peek() {
		case 't':
			s.lit("true")
			c.updateOnly, c.updateOnlySet = true, true
		case 'f':
			s.lit("false")
			c.updateOnly, c.updateOnlySet = false, true
		case 'n':
			s.lit("null")
		default:
			s.skipDepth(0)
			c.setErr(ErrUpdateExistingOnly)
		}
	default:
		return false
	}
	return true
}

// relax drops rule errors when validation is off; errors that leave the object
// without a usable identifier stay.
func (c *objCommon) relax(o *parseOpts) {
	if o.validate {
		return
	}
	switch c.err {
	case ErrIdentifierRequired, ErrInvalidAlias, ErrNotObject:
	default:
		c.err = ""
	}
}

func (c *objCommon) setErr(e string) {
	if c.err == "" {
		c.err = e
	}
}

// resolveIdent applies the identifier rules of docs/braze-rules.md §1 "Identifiers":
// exactly one primary identifier (external_id, user_alias, braze_id); else email,
// which wins over phone; external_id at most 987 bytes; blacklisted external IDs.
func (c *objCommon) resolveIdent(o *parseOpts) {
	n := 0
	if c.hasExt {
		n++
	}
	if c.hasAlias {
		n++
	}
	if c.hasBraze {
		n++
	}
	if o.validate {
		if c.hasEmail && !validEmail(c.email) {
			c.setErr(ErrInvalidEmail)
		}
		if n > 1 {
			c.setErr(ErrMultiplePrimary)
		}
		if c.pushImport && (c.hasExt || c.hasBraze) {
			c.setErr(ErrPushTokenImport)
		}
		if c.hasExt {
			if len(c.ext) > 987 {
				c.setErr(ErrExternalIDTooLarge)
			} else if o.blackList[c.ext] || (o.blackPfx != "" && strings.HasPrefix(c.ext, o.blackPfx)) {
				c.setErr(ErrBlacklisted)
			}
		}
	}
	switch {
	case c.hasExt:
		c.id = ident{kind: idExternal, id: c.ext}
	case c.hasAlias:
		c.id = ident{kind: idAlias, id: c.alias.Label + "\x00" + c.alias.Name, alias: c.alias}
	case c.hasBraze:
		c.id = ident{kind: idBraze, id: c.braze}
	case c.hasEmail && c.email != "":
		c.id = ident{kind: idEmail, id: normEmail(c.email)}
	case c.hasPhone && c.phone != "":
		if o.validate && !validPhone(c.phone) {
			c.setErr(ErrInvalidPhone)
		}
		c.id = ident{kind: idPhone, id: normPhone(c.phone)}
	case c.pushImport:
		c.id = ident{kind: idAnon}
	default:
		c.setErr(ErrIdentifierRequired)
	}
}

func normEmail(e string) string {
	for i := 0; i < len(e); i++ {
		if c := e[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(e)
		}
	}
	return e
}

func normPhone(p string) string {
	var b []byte
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c >= '0' && c <= '9' || c == '+' && i == 0 {
			b = append(b, c)
		}
	}
	return string(b)
}

// validEmail is a pragmatic check: local@domain.tld, no spaces, one '@' (one pass
// over the bytes; validEmailRef in the tests is the readable definition).
func validEmail(e string) bool {
	if len(e) > 255 {
		return false
	}
	at, lastDot := -1, -1
	for i := 0; i < len(e); i++ {
		switch emailClass[e[i]] {
		case 0:
		case 1: // '@'
			if at >= 0 {
				return false
			}
			at = i
		case 2: // '.'
			if at >= 0 {
				if e[i-1] == '.' || i == at+1 { // ".." in, or '.' leading, the domain
					return false
				}
				lastDot = i
			}
		default:
			return false
		}
	}
	return at > 0 && lastDot > at+1 && lastDot != len(e)-1
}

// emailClass: 0 plain, 1 '@', 2 '.', 3 not allowed in an address.
var emailClass = func() (t [256]uint8) {
	for c := 0; c <= ' '; c++ {
		t[c] = 3
	}
	for _, c := range []byte{0x7f, ',', ';', '<', '>', '"', '(', ')'} {
		t[c] = 3
	}
	t['@'], t['.'] = 1, 2
	return
}()

// validPhone accepts E.164 and common punctuation: 7..15 digits (docs/braze-rules.md §1 "Identifiers").
func validPhone(p string) bool {
	d := 0
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c >= '0' && c <= '9':
			d++
		case c == '+' && i == 0, c == ' ', c == '-', c == '(', c == ')', c == '.':
		default:
			return false
		}
	}
	return d >= 7 && d <= 15
}

// freeAttr: subscription fields and push tokens are not billed (docs/braze-rules.md §6 "Not billed").
func freeAttr(k string) bool {
	switch k {
	case "email_subscribe", "push_subscribe", "subscription_groups", "push_tokens":
		return true
	}
	return false
}

var subscribeStates = map[string]bool{"opted_in": true, "subscribed": true, "unsubscribed": true}

func parseAttr(s *scanner, r *trackReq, a *attrObj, o *parseOpts) {
	if s.peek() != '{' {
		s.skipDepth(0)
		a.setErr(ErrNotObject)
		return
	}
	s.i++
	f := true
	for {
		k, esc, ok := s.member(&f)
		if !ok {
			break
		}
		if commonField(s, k, &a.objCommon, o) {
			continue
		}
		if string(k) == "push_token_import" {
			a.pushImport = s.peek() == 't'
			s.skipDepth(0)
			continue
		}
		if string(k) == "_merge_objects" {
			switch s.peek() {
			case 't':
				s.lit("true")
				a.merge = true
			default:
				s.skipDepth(0)
			}
			continue
		}
		key := attrKey(k, esc)
		a.ops = append(a.ops, attrOp{dp: 1}) // filled in place
		op := &a.ops[len(a.ops)-1]
		r.setKey(op, key)
		if freeAttr(key) {
			op.dp = 0
		}
		switch c := s.peek(); c {
		case 'n':
			s.lit("null")
			op.kind = opNull
		case '{':
			if !opObject(s, r, op, r.ext(op)) {
				st := s.i
				v, _ := s.value(0).(map[string]any)
				classifyObjectOp(r, op, r.ext(op), v, a)
				if (op.kind == opNested || op.kind == opObjArr) && s.i-st > maxNestedBytes {
					// Over 100 KB: the update is dropped and the attribute stays
					// unchanged; the API still answers success (docs/braze-rules.md §1
					// "Nested custom attributes", "Arrays of objects").
					op.kind, op.dp = opDropped, 0
				}
			}
		case '[':
			arr, _ := s.value(0).([]any)
			op.kind = opSet
			r.ext(op).v = arr
			// A whole array of objects is an array-of-objects attribute: nested rules.
			for _, e := range arr {
				if m, ok := e.(map[string]any); ok {
					a.nested = true
					if invalidNested(m) {
						a.bad = true
					}
				}
			}
		default:
			if key == "email_subscribe" || key == "push_subscribe" {
				op.kind = opSet
				r.ext(op).v = s.value(0)
				break
			}
			// Scalars stay JSON text: no decoding or boxing on the hot path.
			st := s.i
			switch {
			case c == '"':
				if end, _, ok := scanStr(s.b, st+1); ok {
					s.i = end
				} else {
					s.fail()
				}
			case c == '-' || c >= '0' && c <= '9':
				s.number()
			default:
				s.skipDepth(0)
			}
			op.kind = opSetRaw
			op.rawOff, op.rawLen = int32(st), int32(s.i-st)
		}
		if s.err != nil {
			return
		}
		if o.validate {
			switch key {
			case "email_subscribe":
				if str, ok := r.extOf(op).v.(string); op.kind != opNull && (!ok || !subscribeStates[str]) {
					a.setErr(ErrEmailSubscribe)
				}
			case "push_subscribe":
				if str, ok := r.extOf(op).v.(string); op.kind != opNull && (!ok || !subscribeStates[str]) {
					a.setErr(ErrPushSubscribe)
				}
			case "subscription_groups":
				if !validSubGroups(r.extOf(op).v) {
					a.setErr(ErrSubscriptionGroups)
				}
			}
		}
	}
	a.resolveIdent(o)
	// email/phone in an attributes object are profile fields too; with a primary
	// identifier they are written, not used for lookup (docs/braze-rules.md §1 "Identifiers").
	a.relax(o)
}

func validSubGroups(v any) bool {
	arr, ok := v.([]any)
	if !ok {
		return false
	}
	for _, e := range arr {
		m, ok := e.(map[string]any)
		if !ok {
			return false
		}
		if _, ok := m["subscription_group_id"].(string); !ok {
			return false
		}
		if st, _ := m["subscription_state"].(string); st != "subscribed" && st != "unsubscribed" {
			return false
		}
	}
	return true
}

// classifyObjectOp decides what an object-valued attribute means
// (docs/braze-rules.md §1 "Attributes object", "Nested custom attributes", "Arrays of objects").
func classifyObjectOp(r *trackReq, op *attrOp, x *opExt, v map[string]any, a *attrObj) {
	if len(v) == 1 {
		if n, ok := v["inc"].(float64); ok {
			op.kind, x.n = opInc, n
			return
		}
	}
	_, hasAdd := v["add"]
	_, hasRem := v["remove"]
	if (hasAdd || hasRem) && len(v) == btoi(hasAdd)+btoi(hasRem) {
		add, okA := v["add"].([]any)
		rem, okR := v["remove"].([]any)
		if (okA || !hasAdd) && (okR || !hasRem) {
			op.kind = opArr
			x.addOff, x.addLen = r.putVals(add)
			x.remOff, x.remLen = r.putVals(rem)
			op.dp = int32(len(add) + len(rem)) // 1 per value (docs/braze-rules.md §6)
			if op.dp == 0 {
				op.dp = 1
			}
			return
		}
	}
	_, hA := v["$add"]
	_, hR := v["$remove"]
	_, hU := v["$update"]
	if (hA || hR || hU) && len(v) == btoi(hA)+btoi(hR)+btoi(hU) {
		op.kind = opObjArr
		add, _ := v["$add"].([]any)
		rem, _ := v["$remove"].([]any)
		upd, _ := v["$update"].([]any)
		x.addOff, x.addLen = r.putVals(add)
		x.remOff, x.remLen = r.putVals(rem)
		if upd != nil {
			x.v = upd
		}
		// Arrays of objects: 1 data point per key updated (docs/braze-rules.md §6).
		var dp int64
		for _, e := range add {
			if m, ok := e.(map[string]any); ok {
				dp += int64(len(m))
				if invalidNested(m) {
					a.bad = true
				}
			} else if e == nil {
				a.bad = true
			}
		}
		dp += int64(len(rem))
		for _, e := range upd {
			if m, ok := e.(map[string]any); ok {
				if no, ok := m["$new_object"].(map[string]any); ok {
					dp += int64(len(no))
					if invalidNested(no) {
						a.bad = true
					}
				}
			}
		}
		op.dp = int32(max(dp, 1))
		a.nested = true
		return
	}
	op.kind, x.v = opNested, v
	// Nested objects: every key sent = 1 data point (docs/braze-rules.md §6).
	op.dp = int32(max(countKeys(v), 1))
	a.nested = true
	if invalidNested(v) {
		a.bad = true
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func countKeys(m map[string]any) int64 {
	var n int64
	for _, v := range m {
		n++
		if sub, ok := v.(map[string]any); ok && !isTimeObj(sub) {
			n += countKeys(sub)
		}
	}
	return n
}

func isTimeObj(m map[string]any) bool {
	_, ok := m["$time"]
	return ok && len(m) == 1
}

// invalidNested reports a null, a malformed {"$time": …} or a key Braze does not take
// (empty, over 255 characters, with a space, '.' or '$') anywhere in a nested attribute
// (docs/braze-rules.md §1 "Nested custom attributes", §8 nested-1).
func invalidNested(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case map[string]any:
		if t, ok := x["$time"]; ok && len(x) == 1 {
			ts, ok := t.(string)
			if !ok {
				return true
			}
			_, ok = parseBrazeTime([]byte(ts))
			return !ok
		}
		for k, e := range x {
			if badNestedKey(k) || invalidNested(e) {
				return true
			}
		}
	case []any:
		for _, e := range x {
			if invalidNested(e) {
				return true
			}
		}
	}
	return false
}

// badNestedKey: keys a nested custom attribute may not have (docs/braze-rules.md §1
// "Nested custom attributes").
func badNestedKey(k string) bool {
	if k == "" || len(k) > 255 && utf8.RuneCountInString(k) > 255 {
		return true
	}
	return strings.ContainsAny(k, " .$")
}

// reservedProp: reserved property keys, the same for events and purchases
// (docs/braze-rules.md §1 "Event object", "Purchase object", §8 pu-5).
func reservedProp(k []byte, _ bool) bool {
	switch string(k) {
	case "time", "event_name":
		return true
	}
	return false
}

// props reads a properties object, checks its keys (docs/braze-rules.md §1 "Event object"
// Properties) and returns a copy of its bytes limited to the first 256 properties.
// The common case returns no bytes but the span (start, end) in the body, copied
// later into the request's arena.
func props(s *scanner, c *objCommon, purchase bool, o *parseOpts) ([]byte, [2]int32) {
	switch s.peek() {
	case 'n':
		s.lit("null")
		return nil, [2]int32{}
	case '{':
	default:
		s.skipDepth(0)
		c.setErr(ErrInvalidProperties)
		return nil, [2]int32{}
	}
	start := s.i
	tk := topKeys{check: o.validate, purchase: purchase, cut: -1}
	s.walk(0, &tk)
	if s.err != nil {
		return nil, [2]int32{}
	}
	if tk.bad {
		c.setErr(ErrInvalidProperties)
	}
	raw := s.b[start:s.i]
	if o.validate && len(raw) > 100*1024 {
		c.setErr(ErrPropertiesTooLarge)
	}
	if tk.n > 256 && tk.cut > 0 { // only the first 256 properties are kept
		out := make([]byte, 0, tk.cut-start+1)
		out = append(out, s.b[start:tk.cut]...)
		return append(out, '}'), [2]int32{}
	}
	if tk.n == 0 {
		return nil, [2]int32{}
	}
	return nil, [2]int32{int32(start), int32(s.i)}
}

// validPropKey: not empty, no leading '$', at most 255 characters, not reserved
// (docs/braze-rules.md §1 "Event object" Properties).
func validPropKey(k []byte, esc, purchase bool) bool {
	if esc {
		k = []byte(unescape(k))
	}
	return !(len(k) == 0 || k[0] == '$' || len(k) > 255 && utf8.RuneCount(k) > 255 || reservedProp(k, purchase))
}

func timeField(s *scanner, c *objCommon, o *parseOpts) (time.Time, bool) {
	if s.peek() != '"' {
		s.skipDepth(0)
		c.setErr(ErrInvalidTime)
		return time.Time{}, true
	}
	raw, _ := s.str()
	t, ok := parseUTCSecondsCached(raw, &o.days)
	if !ok && len(raw) > 4 && raw[4] == '-' {
		// Event and purchase times are ISO 8601 or yyyy-MM-dd'T'HH:mm:ss:SSSZ; the other
		// attribute date layouts (MM/dd/yyyy, …) are not documented for them
		// (docs/braze-rules.md §1 "Event object", "Purchase object").
		t, ok = parseBrazeTime(raw)
	}
	if !ok {
		c.setErr(ErrInvalidTime)
	}
	// Future timestamps are set to the current time (docs/braze-rules.md §1 "Attributes object" Dates).
	if t.After(o.now) {
		t = o.now
	}
	return t, true
}

func parseEvent(s *scanner, e *eventObj, o *parseOpts) {
	if s.peek() != '{' {
		s.skipDepth(0)
		e.setErr(ErrNotObject)
		return
	}
	s.i++
	f := true
	var hasName, hasTime bool
	for {
		k, _, ok := s.member(&f)
		if !ok {
			break
		}
		if commonField(s, k, &e.objCommon, o) {
			continue
		}
		switch string(k) {
		case "name":
			if s.peek() == '"' {
				raw, esc := s.str()
				if len(raw) > 0 {
					e.name = internKey(raw, esc)
					hasName = true
				}
			} else {
				s.skipDepth(0)
			}
		case "time":
			e.t, hasTime = timeField(s, &e.objCommon, o)
		case "app_id":
			e.appID = stringOrSkip(s)
		case "properties":
			e.props, e.span = props(s, &e.objCommon, false, o)
		default:
			s.skipDepth(0)
		}
	}
	e.resolveIdent(o)
	if !hasName {
		e.setErr(ErrEventName)
	}
	if !hasTime {
		e.setErr(ErrTimeRequired)
	}
	e.relax(o)
}

func stringOrSkip(s *scanner) string {
	if s.peek() == '"' {
		raw, esc := s.str()
		return internKey(raw, esc)
	}
	s.skipDepth(0)
	return ""
}

func parsePurchase(s *scanner, p *purchaseObj, o *parseOpts) {
	if s.peek() != '{' {
		s.skipDepth(0)
		p.setErr(ErrNotObject)
		return
	}
	s.i++
	f := true
	var hasTime, hasPrice, hasCur bool
	p.quantity = 1 // default 1 (docs/braze-rules.md §1 "Purchase object")
	for {
		k, _, ok := s.member(&f)
		if !ok {
			break
		}
		if commonField(s, k, &p.objCommon, o) {
			continue
		}
		switch string(k) {
		case "product_id":
			if s.peek() == '"' {
				raw, esc := s.str()
				p.productID = internKey(raw, esc)
			} else {
				s.skipDepth(0)
				p.setErr(ErrProductID)
			}
		case "currency":
			if s.peek() == '"' {
				raw, esc := s.str()
				p.currency = internKey(raw, esc)
				hasCur = true
			} else {
				s.skipDepth(0)
				p.setErr(ErrCurrency)
			}
		case "price":
			c := s.peek()
			if c == '-' || c >= '0' && c <= '9' {
				p.price = parseFloat(s.number())
				hasPrice = true
			} else {
				s.skipDepth(0)
				p.setErr(ErrPrice)
			}
		case "quantity":
			c := s.peek()
			if c == 'n' {
				s.lit("null") // null: absent, quantity 1 (docs/braze-rules.md §8 pu-4)
				continue
			}
			if c == '-' || c >= '0' && c <= '9' {
				q := parseFloat(s.number())
				if q != float64(int(q)) || q < 1 || q > 100 {
					p.setErr(ErrQuantity)
				}
				p.quantity = int(q)
			} else {
				s.skipDepth(0)
				p.setErr(ErrQuantity)
			}
		case "time":
			p.t, hasTime = timeField(s, &p.objCommon, o)
		case "app_id":
			p.appID = stringOrSkip(s)
		case "properties":
			p.props, p.span = props(s, &p.objCommon, true, o)
		default:
			s.skipDepth(0)
		}
	}
	p.resolveIdent(o)
	if p.productID == "" || utf8.RuneCountInString(p.productID) > 255 {
		p.setErr(ErrProductID)
	}
	if !hasCur || !validCurrency(p.currency) {
		p.setErr(ErrCurrency)
	}
	if !hasPrice {
		p.setErr(ErrPrice)
	}
	if !hasTime {
		p.setErr(ErrTimeRequired)
	}
	p.relax(o)
}

// validCurrency: ISO 4217 alphabetic code, three upper-case letters.
func validCurrency(c string) bool {
	return len(c) == 3 && c[0] >= 'A' && c[0] <= 'Z' && c[1] >= 'A' && c[1] <= 'Z' && c[2] >= 'A' && c[2] <= 'Z'
}

// opObject is the fast path for {"inc": n} and {"add": […], "remove": […]}: it
// decodes them without building a map. On any other shape it rewinds and returns false.
func opObject(s *scanner, r *trackReq, op *attrOp, x *opExt) bool {
	start := s.i
	n0 := len(r.vals)
	rewind := func() bool {
		s.i = start
		x.addOff, x.addLen, x.remOff, x.remLen = 0, 0, 0, 0
		clear(r.vals[n0:])
		r.vals = r.vals[:n0]
		return false
	}
	s.i++ // '{'
	f := true
	var inc, add, rem bool
	for {
		k, _, ok := s.member(&f)
		if !ok {
			break
		}
		switch string(k) {
		case "inc":
			c := s.peek()
			if inc || add || rem || !(c == '-' || c >= '0' && c <= '9') {
				return rewind()
			}
			x.n = parseFloat(s.number())
			inc = true
		case "add", "remove":
			if inc || s.peek() != '[' {
				return rewind()
			}
			isAdd := k[0] == 'a'
			if isAdd && add || !isAdd && rem {
				return rewind()
			}
			off := int32(len(r.vals))
			r.vals = s.arrayInto(r.vals)
			if isAdd {
				x.addOff, x.addLen, add = off, int32(len(r.vals))-off, true
			} else {
				x.remOff, x.remLen, rem = off, int32(len(r.vals))-off, true
			}
		default:
			return rewind()
		}
	}
	if s.err != nil {
		return true
	}
	switch {
	case inc:
		op.kind = opInc
	case add || rem:
		op.kind = opArr
		op.dp = max(x.addLen+x.remLen, 1) // 1 per value (docs/braze-rules.md §6)
	default:
		return rewind()
	}
	return true
}
