package brazesim

import "github.com/braze-ingestor/braze-ingestor/endpoint"

// /users/identify (docs/braze-rules.md §7; post_user_identify.md): up to 50 entries of
// aliases_to_identify {external_id, user_alias}, emails_to_identify {external_id, email,
// prioritization}, phone_numbers_to_identify {external_id, phone, prioritization}.

type identifyOp struct{ list []identifyEntry }

type identifyEntry struct {
	ext string
	src opIdent
}

type identifyJSON struct {
	ExternalID *string    `json:"external_id"`
	UserAlias  *aliasJSON `json:"user_alias"`
	prioritized
}

func parseIdentify(body []byte) (userOp, *fatal) {
	var req struct {
		Aliases []identifyJSON `json:"aliases_to_identify"`
		Emails  []identifyJSON `json:"emails_to_identify"`
		Phones  []identifyJSON `json:"phone_numbers_to_identify"`
	}
	if !decodeJSON(body, &req) {
		return nil, &fatal{msg: msgParse}
	}
	n := len(req.Aliases) + len(req.Emails) + len(req.Phones)
	if n == 0 {
		return nil, &fatal{msg: msgIdentifyNone}
	}
	if n > endpoint.Identify.MaxObjects() {
		return nil, &fatal{msg: msgIdentifyMax, limit: true}
	}
	op := &identifyOp{}
	add := func(e identifyJSON, src func(identifyJSON) (opIdent, *fatal)) *fatal {
		if e.ExternalID == nil || *e.ExternalID == "" {
			return &fatal{msg: msgIdentifyExtID}
		}
		id, f := src(e)
		if f != nil {
			return f
		}
		op.list = append(op.list, identifyEntry{ext: *e.ExternalID, src: id})
		return nil
	}
	for _, e := range req.Aliases {
		if f := add(e, func(e identifyJSON) (opIdent, *fatal) {
			a, ok := e.UserAlias.alias()
			if !ok {
				return opIdent{}, &fatal{msg: ErrInvalidAlias}
			}
			return aliasIdent(a), nil
		}); f != nil {
			return nil, f
		}
	}
	for _, e := range req.Emails {
		if f := add(e, emailOf); f != nil {
			return nil, f
		}
	}
	for _, e := range req.Phones {
		if f := add(e, phoneOf); f != nil {
			return nil, f
		}
	}
	return op, nil
}

func emailOf(e identifyJSON) (opIdent, *fatal) { return e.prioritized.email(true) }
func phoneOf(e identifyJSON) (opIdent, *fatal) { return e.prioritized.phone(true) }

func (p prioritized) email(allowLeast bool) (opIdent, *fatal) {
	if p.Email == nil || *p.Email == "" {
		return opIdent{}, &fatal{msg: msgEmailRequired}
	}
	if !validPrioritization(p.Prioritization, allowLeast) {
		return opIdent{}, &fatal{msg: msgPrioritization}
	}
	return emailIdent(*p.Email, p.Prioritization), nil
}

func (p prioritized) phone(allowLeast bool) (opIdent, *fatal) {
	if p.Phone == nil || *p.Phone == "" {
		return opIdent{}, &fatal{msg: msgPhoneRequired}
	}
	if !validPrioritization(p.Prioritization, allowLeast) {
		return opIdent{}, &fatal{msg: msgPrioritization}
	}
	return phoneIdent(*p.Phone, p.Prioritization), nil
}

func (o *identifyOp) entries() int { return len(o.list) }

func (o *identifyOp) idents() []string {
	var out []string
	for _, e := range o.list {
		out = append(out, e.ext)
		out = append(out, e.src.raw...)
	}
	return out
}

func (o *identifyOp) apply(s *Sim, st *store, c opCtx) {
	for _, e := range o.list {
		s.identify(st, s.find(st, e.src), e.ext, c)
	}
}

// identify gives the unidentified profile src (alias-, email- or phone-only) the
// external ID ext (post_user_identify.md "How it works"): without a profile holding ext,
// src gains ext; otherwise the fields found only on src (attributes, email, phone),
// its events and purchases and its aliases move to that profile and src is removed,
// unless that profile already has an alias with a label of src's aliases (then nothing
// is combined). An unmatched or already identified src is a silent no-op (201 all the
// same, docs/braze-rules.md §2 "Silent drops").
func (s *Sim) identify(st *store, src *user, ext string, c opCtx) {
	if src == nil || src.externalID != "" {
		return
	}
	dst := s.resolve(st, ident{kind: idExternal, id: ext}, false, "", "")
	if dst == nil {
		src.externalID = ext
		st.byExt.shard(ext).m[ext] = src
		s.touch(src, s.logOp(src, c.ep, c.req, c.at, "identified"))
		return
	}
	for _, a := range src.aliases {
		if hasLabel(dst, a.Label) {
			s.logOp(dst, c.ep, c.req, c.at, "unchanged: label taken")
			return
		}
	}
	s.combine(st, src, dst, c, "identified")
}

// combine merges src into dst and removes src (identify and merge; caller holds the
// exclusive lock).
func (s *Sim) combine(st *store, src, dst *user, c opCtx, what string) {
	s.mergeData(st, src, dst)
	s.logOp(src, c.ep, c.req, c.at, what+": merged into "+dst.brazeID)
	s.moveOps(src, dst)
	s.absorb(st, src, dst)
	s.touch(dst, s.logOp(dst, c.ep, c.req, c.at, what+": merged from "+src.brazeID))
}
