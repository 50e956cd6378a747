package brazesim

import "github.com/braze-ingestor/braze-ingestor/endpoint"

// /users/alias/new (docs/braze-rules.md §7; post_user_alias.md): up to 50 new user alias
// objects {external_id?, alias_name, alias_label}.

type aliasNewOp struct{ list []aliasNewEntry }

type aliasNewEntry struct {
	alias  Alias
	ext    string
	hasExt bool
}

func parseAliasNew(body []byte) (userOp, *fatal) {
	var req struct {
		UserAliases []struct {
			ExternalID *string `json:"external_id"`
			aliasJSON
		} `json:"user_aliases"`
	}
	if !decodeJSON(body, &req) {
		return nil, &fatal{msg: msgParse}
	}
	if len(req.UserAliases) == 0 {
		return nil, &fatal{msg: msgAliasesEmpty}
	}
	if len(req.UserAliases) > endpoint.AliasNew.MaxObjects() {
		return nil, &fatal{msg: msgAliasesMax, limit: true}
	}
	op := &aliasNewOp{}
	for _, a := range req.UserAliases {
		al, ok := a.alias()
		if !ok {
			return nil, &fatal{msg: ErrInvalidAlias}
		}
		e := aliasNewEntry{alias: al}
		if a.ExternalID != nil {
			e.ext, e.hasExt = *a.ExternalID, true
		}
		op.list = append(op.list, e)
	}
	return op, nil
}

func (o *aliasNewOp) entries() int { return len(o.list) }

func (o *aliasNewOp) idents() []string {
	var out []string
	for _, e := range o.list {
		out = append(out, e.alias.Label, e.alias.Name)
		if e.hasExt {
			out = append(out, e.ext)
		}
	}
	return out
}

// apply: an existing label/name pair changes nothing (still success); with an
// external_id the alias is added to that user, and to no user when there is none
// (post_user_alias.md); without one a new alias-only profile is created. A user has one
// alias per label (post_user_identify.md): adding a second alias with a label the user
// already has changes nothing (the simulator's guess, docs/braze-rules.md §7).
func (o *aliasNewOp) apply(s *Sim, st *store, c opCtx) {
	for _, e := range o.list {
		k := ident{kind: idAlias, id: aliasKey(e.alias), alias: e.alias}
		if u := s.resolve(st, k, false, "", ""); u != nil {
			s.logOp(u, c.ep, c.req, c.at, "unchanged: alias exists")
			continue
		}
		if !e.hasExt {
			u := s.resolve(st, k, true, "", "")
			s.touch(u, s.logOp(u, c.ep, c.req, c.at, "created alias-only profile"))
			continue
		}
		u := s.resolve(st, ident{kind: idExternal, id: e.ext}, false, "", "")
		if u == nil {
			continue
		}
		if hasLabel(u, e.alias.Label) {
			s.logOp(u, c.ep, c.req, c.at, "unchanged: label taken")
			continue
		}
		u.aliases = append(u.aliases, e.alias)
		st.byAlias.shard(k.id).m[k.id] = u
		s.touch(u, s.logOp(u, c.ep, c.req, c.at, "alias added"))
	}
}

func hasLabel(u *user, label string) bool {
	for _, a := range u.aliases {
		if a.Label == label {
			return true
		}
	}
	return false
}

// touch marks u updated at order (the "most recently updated" of prioritizations).
func (s *Sim) touch(u *user, order uint64) { u.updated.Store(order) }
