package brazesim

import (
	"encoding/json"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
)

// /users/delete (docs/braze-rules.md §7; post_user_delete.md): up to 50 identifiers of
// ONE type per request: external_ids, user_aliases, braze_ids, email_addresses
// {email, prioritization}, phone_numbers {phone, prioritization}. Answered 201
// {"deleted": n}.

type deleteOp struct{ list []opIdent }

func parseDelete(body []byte) (userOp, *fatal) {
	var req struct {
		ExternalIDs    []string          `json:"external_ids"`
		UserAliases    []aliasJSON       `json:"user_aliases"`
		BrazeIDs       []string          `json:"braze_ids"`
		EmailAddresses []json.RawMessage `json:"email_addresses"`
		PhoneNumbers   []json.RawMessage `json:"phone_numbers"`
	}
	if !decodeJSON(body, &req) {
		return nil, &fatal{msg: msgParse}
	}
	kinds, n := 0, 0
	for _, l := range []int{len(req.ExternalIDs), len(req.UserAliases), len(req.BrazeIDs), len(req.EmailAddresses), len(req.PhoneNumbers)} {
		if l > 0 {
			kinds++
			n += l
		}
	}
	if kinds != 1 {
		return nil, &fatal{msg: msgDeleteOneKind}
	}
	if n > endpoint.Delete.MaxObjects() {
		return nil, &fatal{msg: msgDeleteMax, limit: true}
	}
	op := &deleteOp{}
	for _, e := range req.ExternalIDs {
		op.list = append(op.list, opIdent{kind: idExternal, id: e, raw: []string{e}})
	}
	for _, b := range req.BrazeIDs {
		op.list = append(op.list, opIdent{kind: idBraze, id: b, raw: []string{b}})
	}
	for _, a := range req.UserAliases {
		al, ok := a.alias()
		if !ok {
			return nil, &fatal{msg: ErrInvalidAlias}
		}
		op.list = append(op.list, aliasIdent(al))
	}
	// Email and phone need a prioritization (post_user_delete.md), so they are objects;
	// a bare string is rejected (the simulator's guess: the page's table says "array of
	// strings" while requiring the prioritization).
	for _, list := range [][]json.RawMessage{req.EmailAddresses, req.PhoneNumbers} {
		for _, raw := range list {
			var p prioritized
			if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &p) != nil {
				return nil, &fatal{msg: msgPrioritization}
			}
			get := p.email
			if len(req.PhoneNumbers) > 0 {
				get = p.phone
			}
			id, f := get(false)
			if f != nil {
				return nil, f
			}
			op.list = append(op.list, id)
		}
	}
	return op, nil
}

func (o *deleteOp) entries() int     { return len(o.list) }
func (o *deleteOp) idents() []string { return identsOf(o.list) }

// apply removes each profile an identifier names (an unmatched one changes nothing).
// The profile is gone: a later /users/track for the same identifier creates a new one.
func (o *deleteOp) apply(s *Sim, st *store, c opCtx) {
	for _, id := range o.list {
		if u := s.find(st, id); u != nil {
			s.logOp(u, c.ep, c.req, c.at, "deleted")
			s.removeUser(st, u)
		}
	}
}
