package schemas

import "github.com/braze-ingestor/braze-ingestor/internal/fnv1a"

// The records of the endpoints beyond /users/track (docs/design.md §2; the rules and their
// sources are in docs/braze-rules.md "Endpoints beyond /users/track"). Each is one entry of
// its endpoint's request as Braze documents it; the rules below are the ones Braze documents
// as errors, plus the input contract's own shape where an entry is not sent as given
// (subscription, delete) so that nothing in it would be silently dropped.

// entryKey names the members of an entry that a rule looks at.
type entryKey uint8

const (
	eOther entryKey = iota
	eExternalID
	eUserAlias
	eBrazeID
	eEmail
	ePhone
	ePrioritization
	eAliasName
	eAliasLabel
	eToMerge
	eToKeep
	eGroupID
	eState
	eOptIn
)

var entryKeyNames = [...]string{
	eOther:          "",
	eExternalID:     "external_id",
	eUserAlias:      "user_alias",
	eBrazeID:        "braze_id",
	eEmail:          "email",
	ePhone:          "phone",
	ePrioritization: "prioritization",
	eAliasName:      "alias_name",
	eAliasLabel:     "alias_label",
	eToMerge:        "identifier_to_merge",
	eToKeep:         "identifier_to_keep",
	eGroupID:        "subscription_group_id",
	eState:          "subscription_state",
	eOptIn:          "use_double_opt_in_logic",
}

func lookupEntryKey(b []byte) entryKey {
	if len(b) > len("use_double_opt_in_logic") {
		return eOther
	}
	for k := eExternalID; k <= eOptIn; k++ {
		if string(b) == entryKeyNames[k] {
			return k
		}
	}
	return eOther
}

// entryKeys are the members each kind's rules read. A member outside the set is passed to
// Braze as is (alias, identify), or refused (merge: Braze documents "'merge_updates' must only
// have 'identifier_to_merge' and 'identifier_to_keep'"; subscription and delete: their body
// is built from the known members, so anything else would be dropped unseen).
var entryKeys = [NumKinds]uint32{
	KindAlias:        1<<eExternalID | 1<<eAliasName | 1<<eAliasLabel,
	KindIdentify:     1<<eExternalID | 1<<eUserAlias | 1<<eEmail | 1<<ePhone | 1<<ePrioritization,
	KindMerge:        1<<eToMerge | 1<<eToKeep,
	KindSubscription: 1<<eGroupID | 1<<eState | 1<<eExternalID | 1<<eEmail | 1<<ePhone | 1<<eOptIn,
	KindDelete:       1<<eExternalID | 1<<eUserAlias | 1<<eBrazeID | 1<<eEmail | 1<<ePhone | 1<<ePrioritization,
}

// nullIsAbsent reports the members whose null is their absence: the user identifiers, as in
// /users/track (docs/braze-rules.md §8 id-6), so that a record from a typed producer with
// nullable identifiers ({"external_id":null,"email":"a@b.c"}) names the user it has.
func nullIsAbsent(k entryKey) bool {
	switch k {
	case eExternalID, eBrazeID, eUserAlias, eEmail, ePhone:
		return true
	}
	return false
}

// strictEntry reports the kinds whose unknown members are refused.
func strictEntry(k Kind) bool { return k == KindMerge || k == KindSubscription || k == KindDelete }

// userRef is one user identifier read from an entry: the kind and value spans.
type userRef struct {
	kind        IDKind
	val         strSpan // external_id, braze_id, email or phone
	name, label strSpan // user_alias
}

// entryState is what the members of one entry tell its rules.
type entryState struct {
	named       uint32 // entryKeys named, null or not (a repeated key is refused)
	seen        uint32 // entryKeys present: named with a value other than a null identifier
	ref         [eState + 1]strSpan
	name, label strSpan // user_alias members
	keep        userRef // merge: identifier_to_keep
	optIn       bool    // subscription: use_double_opt_in_logic is true
}

// entry validates one record of a non-track kind at s.pos and appends it to st.out, like
// record does for the /users/track kinds.
func (st *decodeState) entry(kind Kind, l loc, index int) bool {
	s := &st.s
	start := s.pos
	r, done, ok := st.begin(kind, l, index)
	if done {
		return ok
	}
	var es entryState
	allowed, strict := entryKeys[kind], strictEntry(kind)
	st.top.reset()
	ok = st.members(func(ks, ke int, kesc bool) bool {
		key := st.keyBytes(ks, ke, kesc)
		k := lookupEntryKey(key)
		if allowed&(1<<k) == 0 {
			k = eOther
		}
		if k == eOther {
			if strict {
				bad(r, l, "unknown key: not part of a "+kind.EnvelopeType()+" record", string(key))
				return s.skip()
			}
			room := len(s.buf) - ks
			if kesc {
				room = cap(key)
			}
			if h := keyPrint(key, room); !st.top.tryNew(h, ks, ke, kesc) && st.top.add(st, h, ks, ke, kesc) {
				bad(r, l, "duplicate key: Braze fails the whole request on an object that repeats a key", string(key))
			}
			s.bigAt = 0
			if !s.skip() {
				return false
			}
			if s.bigAt != 0 {
				bad(r, l, "holds a number outside the range of a 64-bit float (IEEE 754 double): Braze fails the whole request on it", st.keyString(ks, ke, kesc))
			}
			return true
		}
		if es.named&(1<<k) != 0 {
			bad(r, l, "duplicate key", entryKeyNames[k])
		}
		es.named |= 1 << k
		if s.peek() == 'n' && nullIsAbsent(k) {
			return s.literal()
		}
		es.seen |= 1 << k
		return st.entryMember(r, l, kind, k, &es)
	})
	if !ok {
		return false
	}
	r.Raw = s.buf[start:s.pos]
	st.entryRules(r, l, kind, &es)
	if limit := st.maxRecord - EntryFramingExtra; st.maxRecord > 0 && len(r.Raw) > limit {
		r.Err = &RecordError{Reason: ReasonTooLarge, Index: r.Index, Kind: r.Kind, Field: l.path(),
			Msg: "record is " + itoa(len(r.Raw)) + " bytes, over the limit of " + itoa(limit)}
	}
	return true
}

// EntryFramingExtra is how many more bytes of framing a request of another endpoint may need
// around its records than a /users/track body ({"attributes":[…]}): the decoder lowers
// Decoder.MaxRecordBytes by it for the non-track kinds, so that every record it accepts fits
// a request on its own (batcher.EndpointFits; a test in batcher holds the two together).
const EntryFramingExtra = 66

// members reads the object at s.pos ('{'), calling fn for each member with the key's span and
// s.pos at its value; fn must read the value. It returns false on a syntax error. (fn gets
// no slice of st's buffers: passing one to a func value would move st to the heap.)
func (st *decodeState) members(fn func(ks, ke int, kesc bool) bool) bool {
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
		s.ws()
		if !fn(ks, ke, kesc) {
			return false
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.pos++
		case '}':
			s.pos++
			return true
		default:
			return s.failHere("',' or '}' expected in object")
		}
	}
}

// entryMember reads the value of one known member of an entry and applies its rule.
func (st *decodeState) entryMember(r *Record, l loc, kind Kind, k entryKey, es *entryState) bool {
	s := &st.s
	name := entryKeyNames[k]
	switch k {
	case eExternalID:
		sp, ok := st.idValue(r, l, true, name)
		es.ref[k] = sp
		return ok
	case eBrazeID:
		sp, ok := st.idValue(r, l, false, name)
		es.ref[k] = sp
		return ok
	case eEmail, ePhone, eAliasName, eAliasLabel, eGroupID:
		sp, ok := st.nonEmpty(r, l, name)
		if ok && sp.ok && k == ePhone && kind == KindSubscription && !isE164(st.valueBytes(sp.start, sp.end, sp.esc)) {
			bad(r, l, "must be a phone number in E.164 format (+ and up to 15 digits)", name)
			sp.ok = false
		}
		es.ref[k] = sp
		return ok
	case eState:
		sp, isStr, ok := st.strValue()
		if !ok {
			return false
		}
		if v := st.valueBytes(sp.start, sp.end, sp.esc); !isStr || (string(v) != "subscribed" && string(v) != "unsubscribed") {
			bad(r, l, `must be "subscribed" or "unsubscribed"`, name)
		} else {
			sp.ok = true
			es.ref[k] = sp
		}
		return true
	case eUserAlias:
		if s.peek() != '{' {
			bad(r, l, "must be an object with non-empty string alias_name and alias_label", name)
			return s.skip()
		}
		return st.alias(r, l, &es.name, &es.label)
	case ePrioritization:
		return st.prioritization(r, l, kind == KindDelete)
	case eOptIn:
		return st.optIn(r, l, es)
	case eToMerge, eToKeep:
		var ref userRef
		if !st.mergeIdentifier(r, l, name, &ref) {
			return false
		}
		if k == eToKeep {
			es.keep = ref
		}
		return true
	}
	return s.skip()
}

// entryRules applies the rules that need the whole entry and sets the record's identity and
// PackKey.
func (st *decodeState) entryRules(r *Record, l loc, kind Kind, es *entryState) {
	switch kind {
	case KindAlias:
		for _, k := range [2]entryKey{eAliasName, eAliasLabel} {
			if es.seen&(1<<k) == 0 {
				bad(r, l, "is required", entryKeyNames[k])
			}
		}
		if es.ref[eAliasName].ok && es.ref[eAliasLabel].ok {
			st.setAlias(r, es.ref[eAliasName], es.ref[eAliasLabel])
		}
	case KindIdentify:
		if es.seen&(1<<eExternalID) == 0 {
			bad(r, l, "is required", "external_id")
		}
		id, _ := st.oneOf(r, l, es, 1<<eUserAlias|1<<eEmail|1<<ePhone, "user_alias, email or phone")
		st.needPrioritization(r, l, es, id)
		if es.ref[eExternalID].ok {
			st.setID(r, IDExternal, es.ref[eExternalID])
		}
	case KindMerge:
		for _, k := range [2]entryKey{eToMerge, eToKeep} {
			if es.seen&(1<<k) == 0 {
				bad(r, l, "is required", entryKeyNames[k])
			}
		}
		st.setRef(r, &es.keep)
	case KindSubscription:
		for _, k := range [2]entryKey{eGroupID, eState} {
			if es.seen&(1<<k) == 0 {
				bad(r, l, "is required", entryKeyNames[k])
			}
		}
		id, sp := st.oneOf(r, l, es, 1<<eExternalID|1<<eEmail|1<<ePhone, "external_id, email or phone")
		if r.Err == nil {
			ref := userRef{kind: idKindOf(id), val: sp}
			st.setRef(r, &ref)
			h := fnv1a.Add(fnv1a.Offset, st.valueBytes(es.ref[eGroupID].start, es.ref[eGroupID].end, es.ref[eGroupID].esc))
			h = fnv1a.Add(fnv1a.AddByte(h, 0), st.valueBytes(es.ref[eState].start, es.ref[eState].end, es.ref[eState].esc))
			h = fnv1a.AddByte(fnv1a.AddByte(h, 0), byte(ref.kind))
			if es.optIn {
				h = fnv1a.AddByte(h, 1)
			}
			r.PackKey = uint32(h ^ h>>32)
		}
	case KindDelete:
		id, sp := st.oneOf(r, l, es, 1<<eExternalID|1<<eUserAlias|1<<eBrazeID|1<<eEmail|1<<ePhone, "external_id, user_alias, braze_id, email or phone")
		st.needPrioritization(r, l, es, id)
		if r.Err == nil {
			ref := userRef{kind: idKindOf(id), val: sp, name: es.name, label: es.label}
			st.setRef(r, &ref)
			r.PackKey = uint32(ref.kind)
		}
	}
}

// oneOf checks that exactly one of the members in set is present and returns it with its
// value span.
func (st *decodeState) oneOf(r *Record, l loc, es *entryState, set uint32, names string) (entryKey, strSpan) {
	var found entryKey
	for k := eExternalID; k <= eState; k++ {
		if set&es.seen&(1<<k) == 0 {
			continue
		}
		if found != eOther {
			bad(r, l, "only one of "+names+" is allowed", entryKeyNames[k])
			return found, es.ref[found]
		}
		found = k
	}
	if found == eOther {
		bad(r, l, "needs one of "+names)
	}
	return found, es.ref[found]
}

// needPrioritization applies "email or phone as identifier needs prioritization", and refuses
// a prioritization that nothing would send.
func (st *decodeState) needPrioritization(r *Record, l loc, es *entryState, id entryKey) {
	has := es.seen&(1<<ePrioritization) != 0
	switch {
	case (id == eEmail || id == ePhone) && !has:
		bad(r, l, "is required with email or phone", "prioritization")
	case has && id != eEmail && id != ePhone && id != eOther && r.Kind == KindDelete:
		bad(r, l, "is only allowed with email or phone", "prioritization")
	}
}

func idKindOf(k entryKey) IDKind {
	switch k {
	case eExternalID:
		return IDExternal
	case eUserAlias:
		return IDAlias
	case eBrazeID:
		return IDBraze
	case eEmail:
		return IDEmail
	case ePhone:
		return IDPhone
	}
	return 0
}

// setRef gives r the identity ref names, when it was read without error.
func (st *decodeState) setRef(r *Record, ref *userRef) {
	switch {
	case ref.kind == IDAlias && ref.name.ok && ref.label.ok:
		st.setAlias(r, ref.name, ref.label)
	case ref.kind != 0 && ref.kind != IDAlias && ref.val.ok:
		st.setID(r, ref.kind, ref.val)
	}
}

// setAlias gives r the identity of the user alias name, label: alias_label, a zero byte,
// alias_name (Record.UserID).
func (st *decodeState) setAlias(r *Record, name, label strSpan) {
	s := &st.s
	b := st.reserve(label.end - label.start + 1 + name.end - name.start)
	b = appendUnescaped(b, s.buf[label.start:label.end])
	b = append(b, 0)
	b = appendUnescaped(b, s.buf[name.start:name.end])
	r.IDKind, r.UserID = IDAlias, st.commit(b)
	r.UserHash = userHash(IDAlias, r.UserID)
}

// idValue reads an external_id or braze_id: a non-empty string; an external_id at most 987
// bytes and without NUL (docs/braze-rules.md §1 "Identifiers").
func (st *decodeState) idValue(r *Record, l loc, ext bool, name string) (strSpan, bool) {
	sp, isStr, ok := st.strValue()
	if !ok {
		return sp, false
	}
	switch {
	case !isStr || sp.end == sp.start:
		bad(r, l, "must be a non-empty string", name)
	case ext && sp.end-sp.start > maxExternalIDBytes &&
		(!sp.esc || len(st.valueBytes(sp.start, sp.end, true)) > maxExternalIDBytes):
		bad(r, l, "must be at most 987 bytes", name)
	case ext && sp.esc && containsNUL(st.valueBytes(sp.start, sp.end, true)):
		bad(r, l, "must not contain NUL (\\u0000): Braze fails the whole request on it", name)
	default:
		sp.ok = true
	}
	return sp, true
}

func containsNUL(b []byte) bool {
	for _, c := range b {
		if c == 0 {
			return true
		}
	}
	return false
}

// nonEmpty reads a member that must be a non-empty string.
func (st *decodeState) nonEmpty(r *Record, l loc, name string) (strSpan, bool) {
	sp, isStr, ok := st.strValue()
	if !ok {
		return sp, false
	}
	if !isStr || sp.end == sp.start {
		bad(r, l, "must be a non-empty string", name)
	} else {
		sp.ok = true
	}
	return sp, true
}

// isE164 reports a phone number in E.164 form: '+', a non-zero digit, then 1 to 14 digits.
func isE164(b []byte) bool {
	if len(b) < 3 || len(b) > 16 || b[0] != '+' || b[1] < '1' || b[1] > '9' {
		return false
	}
	for _, c := range b[2:] {
		if !isDigit(c) {
			return false
		}
	}
	return true
}

// Prioritization values (docs/braze-rules.md "Endpoints beyond /users/track").
const (
	prIdentified = 1 << iota
	prUnidentified
	prMostRecent
	prLeastRecent
)

// prioritization reads a prioritization array: an array of the values Braze allows
// (least_recently_updated is not among /users/delete's), holding at most one of identified
// and unidentified.
func (st *decodeState) prioritization(r *Record, l loc, forDelete bool) bool {
	s := &st.s
	const name = "prioritization"
	if s.peek() != '[' {
		bad(r, l, "must be an array of strings", name)
		return s.skip()
	}
	s.pos++
	s.ws()
	have := 0
	if s.peek() == ']' {
		s.pos++
	} else {
		for n := 0; ; n++ {
			s.ws()
			sp, isStr, ok := st.strValue()
			if !ok {
				return false
			}
			v := 0
			if isStr {
				switch string(st.valueBytes(sp.start, sp.end, sp.esc)) {
				case "identified":
					v = prIdentified
				case "unidentified":
					v = prUnidentified
				case "most_recently_updated":
					v = prMostRecent
				case "least_recently_updated":
					if !forDelete {
						v = prLeastRecent
					}
				}
			}
			if v == 0 {
				allowed := "identified, unidentified, most_recently_updated or least_recently_updated"
				if forDelete {
					allowed = "identified, unidentified or most_recently_updated"
				}
				bad(r, l, "element must be one of "+allowed, name, itoa(n))
			}
			have |= v
			s.ws()
			if c := s.peek(); c == ',' {
				s.pos++
				continue
			} else if c == ']' {
				s.pos++
				break
			}
			return s.failHere("',' or ']' expected in array")
		}
	}
	// An empty array is sent: Braze documents no error for it (docs/braze-rules.md §7).
	if have&(prIdentified|prUnidentified) == prIdentified|prUnidentified {
		bad(r, l, "may hold only one of identified and unidentified", name)
	}
	return true
}

// mergeIdentifier reads a /users/merge identifier object: at least one of external_id
// (string), user_alias (object), email (string) or phone (string); email and phone need
// prioritization.
// Other members are Braze's to judge.
func (st *decodeState) mergeIdentifier(r *Record, l loc, name string, ref *userRef) bool {
	s := &st.s
	if s.peek() != '{' {
		bad(r, l, "must be an object with one of external_id, user_alias, email or phone", name)
		return s.skip()
	}
	sub := loc{arr: l.arr, pos: l.pos, sub: name}
	var es entryState
	ok := st.members(func(ks, ke int, kesc bool) bool {
		k := lookupEntryKey(st.keyBytes(ks, ke, kesc))
		switch k {
		case eExternalID, eUserAlias, eEmail, ePhone, ePrioritization:
		default:
			return s.skip()
		}
		if es.named&(1<<k) != 0 {
			bad(r, sub, "duplicate key", entryKeyNames[k])
		}
		es.named |= 1 << k
		if s.peek() == 'n' && nullIsAbsent(k) {
			return s.literal()
		}
		es.seen |= 1 << k
		switch k {
		case ePrioritization:
			return st.prioritization(r, sub, false)
		case eUserAlias:
			if s.peek() != '{' {
				bad(r, sub, "must be an object with non-empty string alias_name and alias_label", "user_alias")
				return s.skip()
			}
			return st.alias(r, sub, &es.name, &es.label)
		case eExternalID:
			sp, ok := st.idValue(r, sub, true, "external_id")
			es.ref[k] = sp
			return ok
		}
		sp, ok := st.nonEmpty(r, sub, entryKeyNames[k])
		es.ref[k] = sp
		return ok
	})
	if !ok {
		return false
	}
	// Braze documents the error for an identifier with none of the four, not for one with
	// several: that is sent for Braze to judge, and ordered by the first of external_id,
	// user_alias, email, phone it has (docs/braze-rules.md §7).
	id := eOther
	for _, k := range [...]entryKey{eExternalID, eUserAlias, eEmail, ePhone} {
		if es.seen&(1<<k) != 0 {
			id = k
			break
		}
	}
	if id == eOther {
		bad(r, sub, "needs one of external_id, user_alias, email or phone")
	}
	if es.seen&(1<<eEmail|1<<ePhone) != 0 && es.seen&(1<<ePrioritization) == 0 {
		bad(r, sub, "is required with email or phone", "prioritization")
	}
	*ref = userRef{kind: idKindOf(id), val: es.ref[id], name: es.name, label: es.label}
	return true
}

// optIn reads a subscription's use_double_opt_in_logic: a boolean (Braze documents it as an
// optional Boolean, false when omitted); null is absent. Only true changes the request, so
// only true is sent (batcher.EncodeEndpoint) and set apart in the PackKey.
func (st *decodeState) optIn(r *Record, l loc, es *entryState) bool {
	s := &st.s
	switch s.peek() {
	case 't', 'f', 'n':
		es.optIn = s.peek() == 't'
		return s.literal()
	}
	bad(r, l, "must be a boolean", entryKeyNames[eOptIn])
	return s.skip()
}
