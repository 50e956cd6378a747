package brazesim

import (
	"encoding/json"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
)

// /subscription/status/set (docs/braze-rules.md §7;
// subscription_groups/post_update_user_subscription_group_status.md): one
// subscription_group_id and subscription_state ("subscribed" or "unsubscribed") for up
// to 50 external_id, or up to 50 email, or up to 50 phone (each a string or an array of
// strings); email and phone together are rejected with the documented text. Answered 201
// {"message":"success"}.

type subscriptionOp struct {
	group, state         string
	exts, emails, phones []string
}

func parseSubscription(body []byte) (userOp, *fatal) {
	var req struct {
		GroupID    *string         `json:"subscription_group_id"`
		State      *string         `json:"subscription_state"`
		ExternalID json.RawMessage `json:"external_id"`
		Email      json.RawMessage `json:"email"`
		Phone      json.RawMessage `json:"phone"`
	}
	if !decodeJSON(body, &req) {
		return nil, &fatal{msg: msgParse}
	}
	if req.GroupID == nil || *req.GroupID == "" {
		return nil, &fatal{msg: msgSubGroup}
	}
	if req.State == nil || (*req.State != "subscribed" && *req.State != "unsubscribed") {
		return nil, &fatal{msg: msgSubState}
	}
	op := &subscriptionOp{group: *req.GroupID, state: *req.State}
	var ok [3]bool
	op.exts, ok[0] = stringList(req.ExternalID)
	op.emails, ok[1] = stringList(req.Email)
	op.phones, ok[2] = stringList(req.Phone)
	switch {
	case !ok[0] || !ok[1] || !ok[2]:
		return nil, &fatal{msg: msgSubList}
	case op.emails != nil && op.phones != nil:
		return nil, &fatal{msg: msgSubEmailPhone}
	case op.exts == nil && op.emails == nil && op.phones == nil:
		return nil, &fatal{msg: msgSubNone}
	}
	max := endpoint.Subscription.MaxObjects()
	if len(op.exts) > max || len(op.emails) > max || len(op.phones) > max {
		return nil, &fatal{msg: msgSubList, limit: true}
	}
	// external_id next to email or phone is accepted: the page's own examples send both
	// (the simulator applies the state to every profile named).
	return op, nil
}

// stringList reads a string or a non-empty array of strings; absent or null gives nil.
func stringList(raw json.RawMessage) ([]string, bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, true
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []string{s}, true
	}
	var l []string
	if json.Unmarshal(raw, &l) != nil || len(l) == 0 {
		return nil, false
	}
	return l, true
}

func (o *subscriptionOp) entries() int { return len(o.exts) + len(o.emails) + len(o.phones) }

func (o *subscriptionOp) idents() []string {
	out := append([]string{o.group}, o.exts...)
	out = append(out, o.emails...)
	return append(out, o.phones...)
}

// apply sets the group's state on every profile named: an email or phone shared by
// several profiles updates all of them (documented). An external_id, email or phone
// that names no profile creates none (the simulator's guess).
func (o *subscriptionOp) apply(s *Sim, st *store, c opCtx) {
	var targets []*user
	for _, e := range o.exts {
		if u := s.resolve(st, ident{kind: idExternal, id: e}, false, "", ""); u != nil {
			targets = append(targets, u)
		}
	}
	for _, e := range o.emails {
		targets = append(targets, st.byEmail.shard(normEmail(e)).m[normEmail(e)]...)
	}
	for _, p := range o.phones {
		targets = append(targets, st.byPhone.shard(normPhone(p)).m[normPhone(p)]...)
	}
	seen := map[*user]bool{}
	for _, u := range targets {
		if seen[u] {
			continue
		}
		seen[u] = true
		if u.subs == nil {
			u.subs = map[string]string{}
		}
		u.subs[o.group] = o.state
		s.touch(u, s.logOp(u, c.ep, c.req, c.at, o.group+" "+o.state))
	}
}
