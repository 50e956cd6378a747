package brazesim

import (
	"bytes"
	"encoding/json"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
)

// /users/merge (docs/braze-rules.md §7; post_users_merge.md): up to 50 merge_updates
// {identifier_to_merge, identifier_to_keep}, each identifier an external_id, user_alias,
// email or phone (email and phone with a prioritization). Answered 202 or 400 with the
// documented texts.

type mergeOp struct{ list [][2]opIdent } // [merge, keep]

func parseMerge(body []byte) (userOp, *fatal) {
	var req struct {
		Updates json.RawMessage `json:"merge_updates"`
	}
	if !decodeJSON(body, &req) {
		return nil, &fatal{msg: msgParse}
	}
	var ups []map[string]json.RawMessage
	if len(req.Updates) == 0 || json.Unmarshal(req.Updates, &ups) != nil {
		return nil, &fatal{msg: msgMergeArray}
	}
	if len(ups) == 0 {
		return nil, &fatal{msg: msgMergeEmpty}
	}
	if len(ups) > endpoint.Merge.MaxObjects() {
		return nil, &fatal{msg: msgMergeMax, limit: true}
	}
	op := &mergeOp{}
	for _, u := range ups {
		if u == nil {
			return nil, &fatal{msg: msgMergeArray}
		}
		for k := range u {
			if k != "identifier_to_merge" && k != "identifier_to_keep" {
				return nil, &fatal{msg: msgMergeKeys}
			}
		}
		m, f := mergeIdent(u["identifier_to_merge"])
		if f != nil {
			return nil, f
		}
		k, f := mergeIdent(u["identifier_to_keep"])
		if f != nil {
			return nil, f
		}
		op.list = append(op.list, [2]opIdent{m, k})
	}
	return op, nil
}

// mergeIdent parses one identifier object: exactly one of external_id (string),
// user_alias (object), email or phone (string, with a prioritization). Several at once
// are rejected with the documented identifiers text (the simulator's guess).
func mergeIdent(raw json.RawMessage) (opIdent, *fatal) {
	bad := &fatal{msg: msgMergeIdent}
	var v struct {
		ExternalID *string    `json:"external_id"`
		UserAlias  *aliasJSON `json:"user_alias"`
		prioritized
	}
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &v) != nil {
		return opIdent{}, bad
	}
	n := btoi(v.ExternalID != nil) + btoi(v.UserAlias != nil) + btoi(v.Email != nil) + btoi(v.Phone != nil)
	switch {
	case n != 1:
		return opIdent{}, bad
	case v.ExternalID != nil:
		return opIdent{kind: idExternal, id: *v.ExternalID, raw: []string{*v.ExternalID}}, nil
	case v.UserAlias != nil:
		a, ok := v.UserAlias.alias()
		if !ok {
			return opIdent{}, bad
		}
		return aliasIdent(a), nil
	case v.Email != nil:
		return v.prioritized.email(true)
	}
	return v.prioritized.phone(true)
}

func (o *mergeOp) entries() int { return len(o.list) }

func (o *mergeOp) idents() []string {
	var out []string
	for _, p := range o.list {
		out = append(out, p[0].raw...)
		out = append(out, p[1].raw...)
	}
	return out
}

// apply merges each identifier_to_merge's profile into identifier_to_keep's and removes
// it. Unmatched identifiers, or both naming one profile, change nothing (the endpoint is
// asynchronous and answers 202 all the same).
func (o *mergeOp) apply(s *Sim, st *store, c opCtx) {
	for _, p := range o.list {
		src, dst := s.find(st, p[0]), s.find(st, p[1])
		if src == nil || dst == nil || src == dst {
			continue
		}
		s.combine(st, src, dst, c, "merge")
	}
}

// mergeData copies src's profile data into dst: the attributes dst lacks (existing ones
// are retained), events and purchases, email and phone when dst has none
// (post_users_merge.md and post_user_identify.md "Merge behavior"). Subscription states
// are not merged (not in Braze's lists; the simulator's guess). Caller holds the
// exclusive lock.
func (s *Sim) mergeData(st *store, src, dst *user) {
	for _, kv := range src.attrs.kv {
		if _, ok := dst.attrs.get(kv.k); !ok {
			v := kv.v
			v.raw = bytes.Clone(v.raw) // raw is owned by one attribute
			dst.attrs.set(kv.k, v)
		}
	}
	// A properties buffer belongs to one history slot (it is reused in place): copy it.
	src.events.each(func(e *event) {
		c := *e
		c.props = bytes.Clone(e.props)
		dst.events.push(c, s.cfg.MaxHistoryPerUser)
	})
	src.purchases.each(func(p *purchase) {
		c := *p
		c.props = bytes.Clone(p.props)
		dst.purchases.push(c, s.cfg.MaxHistoryPerUser)
	})
	dst.dp += src.dp
	if dst.email == "" && src.email != "" {
		st.setEmail(dst, src.email)
	}
	if dst.phone == "" && src.phone != "" {
		st.setPhone(dst, src.phone)
	}
}

// absorb removes src and moves to dst its aliases whose label dst does not have yet (a
// user has one alias per label, post_user_identify.md; the others go with src).
func (s *Sim) absorb(st *store, src, dst *user) {
	aliases := src.aliases
	s.removeUser(st, src)
	for _, a := range aliases {
		if hasLabel(dst, a.Label) {
			continue
		}
		dst.aliases = append(dst.aliases, a)
		st.byAlias.shard(aliasKey(a)).m[aliasKey(a)] = dst
	}
}
