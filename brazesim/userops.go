package brazesim

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
)

// The endpoints beyond /users/track (docs/braze-rules.md §7 "Other user-data endpoints"):
// /users/alias/new, /users/identify, /users/merge, /users/delete and
// /subscription/status/set. Each request is parsed and validated whole first; an invalid
// request is answered 400 {"message": ...} and nothing in it is applied (fatal, like
// Braze's documented 400s). Texts marked "sim" are the simulator's own wording where
// Braze documents none (docs/braze-rules.md §7: the simulator's guess).

// Fatal texts. Those Braze documents are marked with their page.
const (
	msgParse          = "Request body could not be parsed"                                                                                                                                                              // sim
	msgAliasesEmpty   = "'user_aliases' must be a non-empty array"                                                                                                                                                      // sim
	msgAliasesMax     = "a single request may not contain more than 50 aliases"                                                                                                                                         // sim
	msgIdentifyNone   = "one of 'aliases_to_identify', 'emails_to_identify' or 'phone_numbers_to_identify' is required"                                                                                                 // sim, after post_user_identify.md
	msgIdentifyMax    = "a single request may not contain more than 50 aliases to identify"                                                                                                                             // sim
	msgIdentifyExtID  = "each identify object requires a string 'external_id'"                                                                                                                                          // sim
	msgEmailRequired  = "'email' must be a non-empty string"                                                                                                                                                            // sim
	msgPhoneRequired  = "'phone' must be a non-empty string"                                                                                                                                                            // sim
	msgPrioritization = "'prioritization' must be a non-empty array of 'identified' or 'unidentified', 'most_recently_updated', 'least_recently_updated'"                                                               // sim
	msgMergeArray     = "'merge_updates' must be an array of objects"                                                                                                                                                   // post_users_merge.md
	msgMergeMax       = "a single request may not contain more than 50 merge updates"                                                                                                                                   // post_users_merge.md
	msgMergeIdent     = "identifiers must be objects with an 'external_id' property that is a string, 'user_alias' property that is an object, 'email' property that is a string, or 'phone' property that is a string" // post_users_merge.md
	msgMergeKeys      = "'merge_updates' must only have 'identifier_to_merge' and 'identifier_to_keep'"                                                                                                                 // post_users_merge.md
	msgMergeEmpty     = "'merge_updates' must not be empty"                                                                                                                                                             // sim
	msgDeleteOneKind  = "exactly one of 'external_ids', 'user_aliases', 'braze_ids', 'email_addresses' or 'phone_numbers' must be provided"                                                                             // sim, after post_user_delete.md
	msgDeleteMax      = "a single request may not contain more than 50 identifiers"                                                                                                                                     // sim
	msgSubGroup       = "'subscription_group_id' must be a non-empty string"                                                                                                                                            // sim
	msgSubState       = "'subscription_state' must be 'subscribed' or 'unsubscribed'"                                                                                                                                   // sim
	msgSubEmailPhone  = "Either an email address or a phone number should be provided, but not both."                                                                                                                   // post_update_user_subscription_group_status.md
	msgSubNone        = "one of 'external_id', 'email' or 'phone' is required"                                                                                                                                          // sim
	msgSubList        = "'external_id', 'email' and 'phone' must be a string or an array of 1 to 50 strings"                                                                                                            // sim
	msgRejectMarker   = "Invalid identifier (brazesim reject_marker fault)"                                                                                                                                             // sim fault
)

// opCtx is the request an operation belongs to.
type opCtx struct {
	ep  endpoint.Endpoint
	req uint64
	at  time.Time
}

// userOp is a parsed, valid request of one of the endpoints beyond /users/track.
type userOp interface {
	entries() int
	// idents lists every identifier the entries name (Faults reject marker).
	idents() []string
	// apply changes the store (caller holds the exclusive structural lock).
	apply(s *Sim, st *store, c opCtx)
}

// fatal is a 400 answer; limit marks a per-request limit (Stats.LimitRejected).
type fatal struct {
	msg   string
	limit bool
}

// serveUserOp handles an endpoint beyond /users/track after auth, limits, content type
// and size.
func (s *Sim) serveUserOp(w http.ResponseWriter, ep endpoint.Endpoint, body []byte, ef *EndpointFaults) {
	c := opCtx{ep: ep, req: s.reqSeq.Add(1), at: s.now()}
	var op userOp
	var f *fatal
	switch ep {
	case endpoint.AliasNew:
		op, f = parseAliasNew(body)
	case endpoint.Identify:
		op, f = parseIdentify(body)
	case endpoint.Merge:
		op, f = parseMerge(body)
	case endpoint.Delete:
		op, f = parseDelete(body)
	case endpoint.Subscription:
		op, f = parseSubscription(body)
	}
	if f != nil {
		if f.limit {
			s.ctr.limitRejected.Add(1)
		}
		s.writeMsg(w, ep, http.StatusBadRequest, f.msg)
		return
	}
	if m := ef.RejectMarker; m != "" {
		for _, id := range op.idents() {
			if strings.Contains(id, m) {
				s.writeMsg(w, ep, http.StatusBadRequest, msgRejectMarker)
				return
			}
		}
	}
	s.smu.Lock()
	op.apply(s, s.st, c)
	s.smu.Unlock()
	n := op.entries()
	s.ctr.epEntries[ep].Add(int64(n))
	// Documented answers (docs/braze-rules.md §7).
	switch ep {
	case endpoint.AliasNew, endpoint.Identify:
		s.writeJSON(w, ep, http.StatusCreated, []byte(`{"aliases_processed":`+strconv.Itoa(n)+`,"message":"success"}`))
	case endpoint.Merge:
		s.writeJSON(w, ep, http.StatusAccepted, []byte(`{"message":"success"}`))
	case endpoint.Delete:
		// {"deleted": n}: the identifiers queued for deletion, found or not.
		s.writeJSON(w, ep, http.StatusCreated, []byte(`{"deleted":`+strconv.Itoa(n)+`}`))
	default:
		s.writeJSON(w, ep, http.StatusCreated, []byte(`{"message":"success"}`))
	}
}

// decodeJSON decodes a whole body (one JSON value, nothing after it).
func decodeJSON(body []byte, v any) bool {
	dec := json.NewDecoder(bytes.NewReader(body))
	if dec.Decode(v) != nil {
		return false
	}
	_, err := dec.Token()
	return err == io.EOF // nothing follows
}

// ---- identifiers ----

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

// prioritized is an email or phone identifier with its prioritization
// (post_user_identify.md, post_users_merge.md, post_user_delete.md).
type prioritized struct {
	Email          *string  `json:"email"`
	Phone          *string  `json:"phone"`
	Prioritization []string `json:"prioritization"`
}

// validPrioritization: a non-empty array of the documented values, with at most one of
// identified/unidentified. /users/delete documents no least_recently_updated
// (post_user_delete.md), so the simulator rejects it there (its guess).
func validPrioritization(p []string, allowLeast bool) bool {
	if len(p) == 0 {
		return false
	}
	idf := 0
	for _, v := range p {
		switch v {
		case "identified", "unidentified":
			idf++
		case "most_recently_updated":
		case "least_recently_updated":
			if !allowLeast {
				return false
			}
		default:
			return false
		}
	}
	return idf <= 1
}

// pickPrioritized applies a prioritization to the profiles sharing an email or phone:
// each value in order narrows the candidates; when more than one (or none) is left,
// nothing matches (docs/braze-rules.md §7: "if more than one user matches from a
// prioritization", no merge/delete happens).
func pickPrioritized(list []*user, prio []string) *user {
	c := append([]*user(nil), list...)
	for _, p := range prio {
		var keep []*user
		switch p {
		case "identified", "unidentified":
			for _, u := range c {
				if (u.externalID != "") == (p == "identified") {
					keep = append(keep, u)
				}
			}
		case "most_recently_updated", "least_recently_updated":
			var best *user
			for _, u := range c {
				if best == nil || (p == "most_recently_updated") == (u.updated.Load() > best.updated.Load()) {
					best = u
				}
			}
			if best != nil {
				keep = []*user{best}
			}
		}
		c = keep
	}
	if len(c) != 1 {
		return nil
	}
	return c[0]
}

// opIdent is an identifier of /users/merge, /users/delete or /users/identify.
type opIdent struct {
	kind idKind
	id   string // as ident.id: alias label+"\x00"+name, normalised email/phone
	raw  []string
	prio []string
}

// find resolves the identifier (caller holds the exclusive lock).
func (s *Sim) find(st *store, i opIdent) *user {
	switch i.kind {
	case idEmail, idPhone:
		ix := st.byEmail
		if i.kind == idPhone {
			ix = st.byPhone
		}
		return pickPrioritized(ix.shard(i.id).m[i.id], i.prio)
	}
	return s.resolve(st, ident{kind: i.kind, id: i.id}, false, "", "")
}

func aliasIdent(a Alias) opIdent {
	return opIdent{kind: idAlias, id: aliasKey(a), raw: []string{a.Label, a.Name}}
}

func emailIdent(e string, prio []string) opIdent {
	return opIdent{kind: idEmail, id: normEmail(e), raw: []string{e}, prio: prio}
}

func phoneIdent(p string, prio []string) opIdent {
	return opIdent{kind: idPhone, id: normPhone(p), raw: []string{p}, prio: prio}
}

func identsOf(list []opIdent) []string {
	var out []string
	for _, i := range list {
		out = append(out, i.raw...)
	}
	return out
}
