package schemas

// Parts are the pieces of a non-track record's Raw that its endpoint's request body is built
// from (batcher.EncodeEndpoint). Each byte slice is JSON text as it appears in Raw: a string
// with its quotes and escapes, or an object.
type Parts struct {
	// ID is the identifier that decides where the entry goes: for identify the array it
	// belongs in (IDAlias: aliases_to_identify, IDEmail: emails_to_identify, IDPhone:
	// phone_numbers_to_identify); for subscription and delete the identifier type (the one
	// its PackKey holds). 0 for alias and merge.
	ID IDKind
	// Value is the identifier's JSON text (subscription and delete): the string, or for
	// IDAlias the user_alias object.
	Value []byte
	// Group and State are a subscription's subscription_group_id and subscription_state
	// strings.
	Group, State []byte
	// OptIn is a subscription's use_double_opt_in_logic: true (absent, false and null are
	// Braze's default, false).
	OptIn bool
}

// EntryParts scans raw, the Raw of a valid record of kind k (Decoder gave it no Err), for the
// Parts its endpoint's body needs. It decodes nothing into maps and allocates nothing. ok is
// false when raw is not a JSON object; for a record Decode refused the Parts may be partial.
func EntryParts(k Kind, raw []byte) (p Parts, ok bool) {
	s := scanner{buf: raw, errOff: -1}
	s.ws()
	if s.peek() != '{' {
		return p, false
	}
	s.pos++
	s.ws()
	if s.peek() == '}' {
		return p, true
	}
	var kbuf [32]byte
	for {
		s.ws()
		ks, ke, kesc, ok := s.key()
		if !ok {
			return p, false
		}
		key := raw[ks:ke]
		if kesc {
			if ke-ks > 6*len(kbuf) {
				key = nil
			} else {
				key = appendUnescaped(kbuf[:0], raw[ks:ke])
			}
		}
		s.ws()
		start := s.pos
		isNull, isTrue := s.peek() == 'n', s.peek() == 't'
		if !s.skip() {
			return p, false
		}
		v := raw[start:s.pos]
		if ek := lookupEntryKey(key); !isNull && entryKeys[k]&(1<<ek) != 0 {
			p.set(k, ek, v)
			if ek == eOptIn {
				p.OptIn = isTrue
			}
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.pos++
		case '}':
			return p, true
		default:
			return p, false
		}
	}
}

func (p *Parts) set(k Kind, ek entryKey, v []byte) {
	switch ek {
	case eGroupID:
		p.Group = v
	case eState:
		p.State = v
	case eExternalID, eBrazeID, eUserAlias, eEmail, ePhone:
		if k == KindIdentify && ek == eExternalID {
			return
		}
		if k == KindAlias || k == KindMerge {
			return
		}
		p.ID, p.Value = idKindOf(ek), v
	}
}

// SamePack reports whether two valid records of kind k, a and b their Raw, may share one
// request beyond having the same PackKey: for a subscription, the same group, state,
// identifier type and use_double_opt_in_logic as written (PackKey is a 32-bit hash of them,
// so two groups can share one); for a delete, the same identifier type; always for the other kinds. Strings are compared
// as written, so the same group escaped differently reports false: the records then only
// go in separate requests.
func SamePack(k Kind, a, b []byte) bool {
	if k != KindSubscription && k != KindDelete {
		return true
	}
	pa, okA := EntryParts(k, a)
	pb, okB := EntryParts(k, b)
	return okA && okB && pa.ID == pb.ID && pa.OptIn == pb.OptIn &&
		string(pa.Group) == string(pb.Group) && string(pa.State) == string(pb.State)
}
