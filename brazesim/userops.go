package brazesim

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
)

const maxUserOps = 50 // per-request limit of /users/delete, /users/alias/new, /users/identify (docs/braze-rules.md §7)

type aliasJSON struct {
	Name  *string `json:"alias_name"`
	Label *string `json:"alias_label"`
}

func (a *aliasJSON) alias() (Alias, bool) {
	if a == nil || a.Name == nil || a.Label == nil || *a.Name == "" || *a.Label == "" {
		return Alias{}, false
	}
	return Alias{Name: *a.Name, Label: *a.Label}, true
}

type emailJSON struct {
	ExternalID     string   `json:"external_id"`
	Email          string   `json:"email"`
	Phone          string   `json:"phone"`
	Prioritization []string `json:"prioritization"`
}

// serveUserOp handles /users/delete, /users/alias/new and /users/identify (docs/braze-rules.md §7).
func (s *Sim) serveUserOp(w http.ResponseWriter, path string, body []byte) {
	dec := json.NewDecoder(bytes.NewReader(body))
	switch path {
	case PathDelete:
		var req struct {
			ExternalIDs    []string    `json:"external_ids"`
			UserAliases    []aliasJSON `json:"user_aliases"`
			BrazeIDs       []string    `json:"braze_ids"`
			EmailAddresses []emailJSON `json:"email_addresses"`
			PhoneNumbers   []emailJSON `json:"phone_numbers"`
		}
		if dec.Decode(&req) != nil {
			s.writeMsg(w, http.StatusBadRequest, "invalid JSON")
			return
		}
		kinds, n := 0, 0
		for _, l := range []int{len(req.ExternalIDs), len(req.UserAliases), len(req.BrazeIDs), len(req.EmailAddresses), len(req.PhoneNumbers)} {
			if l > 0 {
				kinds++
				n += l
			}
		}
		if kinds != 1 {
			// One identifier type per request (docs/braze-rules.md §7); sim wording.
			s.writeMsg(w, http.StatusBadRequest, "exactly one of 'external_ids', 'user_aliases', 'braze_ids', 'email_addresses' or 'phone_numbers' must be provided")
			return
		}
		if n > maxUserOps {
			s.ctr.limitRejected.Add(1)
			s.writeMsg(w, http.StatusBadRequest, "a single request may not contain more than 50 identifiers")
			return
		}
		var ids []ident
		for _, e := range req.ExternalIDs {
			ids = append(ids, ident{kind: idExternal, id: e})
		}
		for _, a := range req.UserAliases {
			al, ok := a.alias()
			if !ok {
				s.writeMsg(w, http.StatusBadRequest, ErrInvalidAlias)
				return
			}
			ids = append(ids, ident{kind: idAlias, id: aliasKey(al), alias: al})
		}
		for _, b := range req.BrazeIDs {
			ids = append(ids, ident{kind: idBraze, id: b})
		}
		for _, e := range req.EmailAddresses {
			ids = append(ids, ident{kind: idEmail, id: normEmail(e.Email)})
		}
		for _, p := range req.PhoneNumbers {
			ids = append(ids, ident{kind: idPhone, id: normPhone(p.Phone)})
		}
		s.smu.Lock()
		st := s.st
		for _, id := range ids {
			// Email/phone: the profile the prioritization would pick (most recently
			// updated identified profile first), a simplification.
			if u := s.resolve(st, id, false, "", ""); u != nil {
				s.removeUser(st, u)
			}
		}
		s.smu.Unlock()
		// {"deleted": n} counts the identifiers queued for deletion (docs/braze-rules.md §7).
		s.writeJSON(w, http.StatusCreated, []byte(`{"deleted":`+strconv.Itoa(n)+`,"message":"success"}`))
	case PathAliasNew:
		var req struct {
			UserAliases []struct {
				ExternalID *string `json:"external_id"`
				aliasJSON
			} `json:"user_aliases"`
		}
		if dec.Decode(&req) != nil {
			s.writeMsg(w, http.StatusBadRequest, "invalid JSON")
			return
		}
		if len(req.UserAliases) == 0 {
			s.writeMsg(w, http.StatusBadRequest, "'user_aliases' must be a non-empty array")
			return
		}
		if len(req.UserAliases) > maxUserOps {
			s.ctr.limitRejected.Add(1)
			s.writeMsg(w, http.StatusBadRequest, "a single request may not contain more than 50 aliases")
			return
		}
		for _, a := range req.UserAliases {
			if _, ok := a.alias(); !ok {
				s.writeMsg(w, http.StatusBadRequest, ErrInvalidAlias)
				return
			}
		}
		s.smu.Lock()
		st := s.st
		for _, a := range req.UserAliases {
			al, _ := a.alias()
			k := ident{kind: idAlias, id: aliasKey(al), alias: al}
			if s.resolve(st, k, false, "", "") != nil {
				continue // an existing label/name pair changes nothing (docs/braze-rules.md §7)
			}
			if a.ExternalID != nil && *a.ExternalID != "" {
				// Add the alias to an existing identified user; an unknown external_id
				// is ignored (sim choice: Braze does not document it).
				u := s.resolve(st, ident{kind: idExternal, id: *a.ExternalID}, false, "", "")
				if u == nil {
					continue
				}
				u.mu.Lock()
				u.aliases = append(u.aliases, al)
				u.mu.Unlock()
				sh := st.byAlias.shard(k.id)
				sh.m[k.id] = u
				continue
			}
			s.resolve(st, k, true, "", "") // a new alias-only profile
		}
		s.smu.Unlock()
		s.writeJSON(w, http.StatusCreated, []byte(`{"aliases_processed":`+strconv.Itoa(len(req.UserAliases))+`,"message":"success"}`))
	case PathMerge:
		var req struct {
			Updates []struct {
				Merge mergeID `json:"identifier_to_merge"`
				Keep  mergeID `json:"identifier_to_keep"`
			} `json:"merge_updates"`
		}
		if dec.Decode(&req) != nil {
			s.writeMsg(w, http.StatusBadRequest, "invalid JSON")
			return
		}
		if len(req.Updates) == 0 {
			s.writeMsg(w, http.StatusBadRequest, "'merge_updates' must be a non-empty array")
			return
		}
		if len(req.Updates) > maxUserOps {
			// Braze's text (docs/braze-rules.md §7).
			s.ctr.limitRejected.Add(1)
			s.writeMsg(w, http.StatusBadRequest, "a single request may not contain more than 50 merge updates")
			return
		}
		s.smu.Lock()
		st := s.st
		for _, u := range req.Updates {
			src, dst := s.resolve(st, u.Merge.ident(), false, "", ""), s.resolve(st, u.Keep.ident(), false, "", "")
			if src == nil || dst == nil || src == dst {
				continue // unmatched identifiers are ignored (asynchronous in Braze)
			}
			s.mergeData(st, src, dst)
			s.absorb(st, src, dst)
		}
		s.smu.Unlock()
		// Asynchronous in Braze: 202 {"message":"success"} (docs/braze-rules.md §7).
		s.writeJSON(w, http.StatusAccepted, []byte(`{"message":"success"}`))
	case PathIdentify:
		var req struct {
			Aliases []struct {
				ExternalID string     `json:"external_id"`
				UserAlias  *aliasJSON `json:"user_alias"`
			} `json:"aliases_to_identify"`
			Emails        []emailJSON `json:"emails_to_identify"`
			Phones        []emailJSON `json:"phone_numbers_to_identify"`
			MergeBehavior string      `json:"merge_behavior"`
		}
		if dec.Decode(&req) != nil {
			s.writeMsg(w, http.StatusBadRequest, "invalid JSON")
			return
		}
		n := len(req.Aliases) + len(req.Emails) + len(req.Phones)
		if n == 0 {
			s.writeMsg(w, http.StatusBadRequest, "'aliases_to_identify', 'emails_to_identify' or 'phone_numbers_to_identify' must be provided")
			return
		}
		if n > maxUserOps {
			s.ctr.limitRejected.Add(1)
			s.writeMsg(w, http.StatusBadRequest, "a single request may not contain more than 50 aliases")
			return
		}
		merge := req.MergeBehavior == "merge"
		s.smu.Lock()
		st := s.st
		for _, a := range req.Aliases {
			al, ok := a.UserAlias.alias()
			if !ok || a.ExternalID == "" {
				continue
			}
			src := s.resolve(st, ident{kind: idAlias, id: aliasKey(al)}, false, "", "")
			s.identify(st, src, a.ExternalID, merge)
		}
		for _, e := range req.Emails {
			s.identify(st, anonymous(st.byEmail, normEmail(e.Email)), e.ExternalID, merge)
		}
		for _, p := range req.Phones {
			s.identify(st, anonymous(st.byPhone, normPhone(p.Phone)), p.ExternalID, merge)
		}
		s.smu.Unlock()
		s.writeJSON(w, http.StatusCreated, []byte(`{"aliases_processed":`+strconv.Itoa(n)+`,"message":"success"}`))
	}
}

// anonymous returns the most recently updated profile without an external_id.
func anonymous(ix *index[[]*user], k string) *user {
	var best *user
	for _, u := range ix.shard(k).m[k] {
		if u.externalID == "" && (best == nil || u.updated.Load() > best.updated.Load()) {
			best = u
		}
	}
	return best
}

// identify gives the anonymous profile src the external ID ext. If a profile with
// ext exists, src's aliases move to it, src's data is merged into it when merge is
// set (merge_behavior "merge"), and src is removed. An unmatched alias is a silent
// no-op (docs/braze-rules.md §2 "Silent drops", §7). Caller holds the exclusive lock.
func (s *Sim) identify(st *store, src *user, ext string, merge bool) {
	if src == nil || ext == "" || src.externalID != "" {
		return
	}
	dst := s.resolve(st, ident{kind: idExternal, id: ext}, false, "", "")
	if dst == nil {
		src.externalID = ext
		st.byExt.shard(ext).m[ext] = src
		return
	}
	if merge {
		s.mergeData(st, src, dst)
	}
	s.absorb(st, src, dst)
}

// mergeData copies src's profile data into dst: attributes dst lacks, events,
// purchases, email/phone when dst has none (caller holds the exclusive lock).
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

// absorb removes src and moves its aliases to dst.
func (s *Sim) absorb(st *store, src, dst *user) {
	aliases := src.aliases
	s.removeUser(st, src)
	for _, a := range aliases {
		dst.aliases = append(dst.aliases, a)
		st.byAlias.shard(aliasKey(a)).m[aliasKey(a)] = dst
	}
}

// mergeID is an identifier of /users/merge: external_id, user_alias, email or phone
// (email/phone pick the most recently updated identified profile, a simplification
// of "prioritization").
type mergeID struct {
	ExternalID string     `json:"external_id"`
	UserAlias  *aliasJSON `json:"user_alias"`
	Email      string     `json:"email"`
	Phone      string     `json:"phone"`
}

func (m mergeID) ident() ident {
	switch {
	case m.ExternalID != "":
		return ident{kind: idExternal, id: m.ExternalID}
	case m.UserAlias != nil:
		if a, ok := m.UserAlias.alias(); ok {
			return ident{kind: idAlias, id: aliasKey(a)}
		}
	case m.Email != "":
		return ident{kind: idEmail, id: normEmail(m.Email)}
	case m.Phone != "":
		return ident{kind: idPhone, id: normPhone(m.Phone)}
	}
	return ident{}
}
