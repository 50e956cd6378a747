package synth

import (
	"fmt"
	"strings"
	"time"
)

// The record kinds beyond /users/track, in the shapes of docs/design.md §2 (an envelope's data
// is one entry of the endpoint's request as Braze documents it):
//
//	alias         {"alias_name","alias_label","external_id"?}      /users/alias/new
//	identify      {"external_id","user_alias":{…}}                 /users/identify
//	merge         {"identifier_to_merge":{…},"identifier_to_keep":{…}}  /users/merge
//	subscription  {"subscription_group_id","subscription_state","external_id"}  /subscription/status/set
//	delete        {"external_id"}                                  /users/delete
//
// They model a user's life the way a Segment or RudderStack pipeline shows it:
//   - identify: an anonymous visitor (alias label "anonymous_id") is tracked first (an
//     attributes object creating the alias-only profile, then events), and identified into the
//     known user a few dozen messages later;
//   - merge: a duplicate profile (external_id "dup-…") is written first and merged into the
//     user later;
//   - alias: a CRM alias is added to the known user, or a lead's alias-only profile created;
//   - subscription: the user subscribes to or unsubscribes from one of two groups;
//   - delete (the rarest): the user is deleted, and never written again; a new user takes
//     their place in the population (same number, a new name).
//
// The tracks of anonymous and duplicate profiles carry "anon_seq"/"dup_seq", never "seq", so
// after an identify or a merge moves them into the user's profile they do not disturb the
// user's own sequence; they are ordered by their own identifier (Record.Identity).

// SubscriptionGroups are the subscription group ids the generator uses.
var SubscriptionGroups = []string{"3f1c0b6e-6a0d-4a3e-9d38-5b6f0c1a2e01", "9b2d7c44-1e5f-4c2a-8f0e-7a3d2b1c4e02"}

// Lifecycle kind mix (cumulative shares of lifecycle messages): deletes are the rarest.
const (
	shareSubscription = 0.38
	shareIdentify     = shareSubscription + 0.25
	shareAlias        = shareIdentify + 0.16
	shareMerge        = shareAlias + 0.14
	// the rest (0.07) are deletes
)

// lifecycle is the generator's state for the kinds beyond /users/track.
type lifecycle struct {
	gen     map[int]int // user number -> generation (bumped when the user is deleted)
	pending []pending   // identifies and merges waiting for their turn
	// known holds the users with a deliverable /users/track record so far: only they get
	// subscription changes, merges, aliases and deletes (Braze applies those to existing
	// profiles only, so a test can expect each of them to show in the user's profile).
	known map[string]bool
}

// pending is an identify or merge scheduled after its anonymous or duplicate profile's tracks.
type pending struct {
	at    int // message number at which it is due
	u     int // user number and generation it belongs to
	gen   int
	kind  string // "identify" | "merge"
	alias Alias  // identify: the anonymous alias
	dup   string // merge: the duplicate profile's external_id
}

// userName is user u's external_id: "user-%05d", with a suffix once an earlier user of that
// number was deleted.
func (g *Generator) userName(u int) string {
	if n := g.lc.gen[u]; n > 0 {
		return fmt.Sprintf("user-%05d.%d", u, n)
	}
	return fmt.Sprintf("user-%05d", u)
}

// due returns the first scheduled identify or merge that is due, if any. One whose user was
// deleted in the meantime is dropped.
func (g *Generator) due() (Message, bool) {
	for len(g.lc.pending) > 0 {
		i := -1
		for j, p := range g.lc.pending {
			if p.at <= g.n {
				i = j
				break
			}
		}
		if i < 0 {
			return Message{}, false
		}
		p := g.lc.pending[i]
		g.lc.pending = append(g.lc.pending[:i], g.lc.pending[i+1:]...)
		if g.lc.gen[p.u] != p.gen {
			continue
		}
		user := g.userName(p.u)
		rec := g.userRecord(p.kind, user, Deliver)
		var data string
		if p.kind == "identify" {
			rec.Alias = p.alias
			data = fmt.Sprintf(`{"external_id":"%s","user_alias":{"alias_name":"%s","alias_label":"%s"}}`, user, p.alias.Name, p.alias.Label)
		} else {
			rec.Merged = p.dup
			data = fmt.Sprintf(`{"identifier_to_merge":{"external_id":"%s"},"identifier_to_keep":{"external_id":"%s"}}`, p.dup, user)
		}
		return g.envelope(user, p.kind, data, rec), true
	}
	return Message{}, false
}

// userRecord numbers a record of user's own sequence.
func (g *Generator) userRecord(kind, user string, o Outcome) Record {
	seq := g.seq[user]
	g.seq[user] = seq + 1
	return Record{Kind: kind, User: user, Seq: seq, Outcome: o}
}

func (g *Generator) envelope(key, kind, data string, recs ...Record) Message {
	return Message{Key: []byte(key), Value: []byte(fmt.Sprintf(`{"type":"%s","data":%s,"id":"msg-%d"}`, kind, data, g.n)), Records: recs}
}

// lifecycleMessage returns a message of one of the kinds beyond /users/track for user u, or
// false when u has no deliverable /users/track record yet (then u gets one first).
func (g *Generator) lifecycleMessage(u int, user string) (Message, bool) {
	if g.lc.gen == nil {
		g.lc.gen = map[int]int{}
	}
	if !g.lc.known[user] {
		return Message{}, false
	}
	if g.o.InvalidShare > 0 && g.r.Float64() < g.o.InvalidShare {
		// A merge without identifier_to_keep breaks the input contract.
		rec := g.userRecord("merge", user, Invalid)
		return g.envelope(user, "merge", fmt.Sprintf(`{"identifier_to_merge":{"external_id":"dup-%s-%d"}}`, user, g.n), rec), true
	}
	switch x := g.r.Float64(); {
	case x < shareSubscription:
		obj, rec := g.subscription(user)
		return g.envelope(user, "subscription", obj, rec), true
	case x < shareIdentify:
		return g.anonymous(u, user), true
	case x < shareAlias:
		return g.alias(user), true
	case x < shareMerge:
		return g.duplicate(u, user), true
	default:
		rec := g.userRecord("delete", user, Deliver)
		g.lc.gen[u]++
		delete(g.lc.known, user)
		return g.envelope(user, "delete", fmt.Sprintf(`{"external_id":"%s"}`, user), rec), true
	}
}

// subscription returns a subscription change of user.
func (g *Generator) subscription(user string) (string, Record) {
	rec := g.userRecord("subscription", user, Deliver)
	rec.Group = SubscriptionGroups[g.r.IntN(len(SubscriptionGroups))]
	rec.State = "subscribed"
	if g.r.IntN(3) == 0 {
		rec.State = "unsubscribed"
	}
	return fmt.Sprintf(`{"subscription_group_id":"%s","subscription_state":"%s","external_id":"%s"}`, rec.Group, rec.State, user), rec
}

// alias adds a CRM alias to user, or (a third of the time) creates a lead's alias-only profile.
func (g *Generator) alias(user string) Message {
	// Ordered by its alias, not with user's records: it takes no number of user's sequence.
	rec := Record{Kind: "alias", User: user, Outcome: Deliver}
	if g.r.IntN(3) == 0 {
		rec.Alias = Alias{Label: "lead_id", Name: fmt.Sprintf("lead-%d", g.n)}
		rec.Identity = aliasIdentity(rec.Alias)
		return g.envelope(user, "alias", fmt.Sprintf(`{"alias_name":"%s","alias_label":"%s"}`, rec.Alias.Name, rec.Alias.Label), rec)
	}
	rec.Alias = Alias{Label: "crm_id", Name: fmt.Sprintf("crm-%s-%d", user, g.n)}
	rec.Identity = aliasIdentity(rec.Alias)
	return g.envelope(user, "alias", fmt.Sprintf(`{"alias_name":"%s","alias_label":"%s","external_id":"%s"}`, rec.Alias.Name, rec.Alias.Label, user), rec)
}

func aliasIdentity(a Alias) string { return "user_alias:" + a.Label + ":" + a.Name }

// anonymous tracks an anonymous visitor who will be identified as user u a few dozen messages
// later: a bundle creating the alias-only profile and recording one or two events.
func (g *Generator) anonymous(u int, user string) Message {
	// Identify is the one kind an unknown user may get: the anonymous profile becomes them.
	a := Alias{Label: "anonymous_id", Name: fmt.Sprintf("anon-%s-%d", user, g.n)}
	g.lc.pending = append(g.lc.pending, pending{at: g.n + 5 + g.r.IntN(60), u: u, gen: g.lc.gen[u], kind: "identify", alias: a})
	id := fmt.Sprintf(`"user_alias":{"alias_name":"%s","alias_label":"%s"}`, a.Name, a.Label)
	return g.sideProfile(user, id, aliasIdentity(a), "anon_seq")
}

// duplicate writes a duplicate profile that will be merged into user u later.
func (g *Generator) duplicate(u int, user string) Message {
	dup := fmt.Sprintf("dup-%s-%d", user, g.n)
	g.lc.pending = append(g.lc.pending, pending{at: g.n + 5 + g.r.IntN(60), u: u, gen: g.lc.gen[u], kind: "merge", dup: dup})
	return g.sideProfile(user, fmt.Sprintf(`"external_id":"%s"`, dup), "external_id:"+dup, "dup_seq")
}

// sideProfile is a bundle for a profile that is not user's own (identified by id): an
// attributes object creating it and one or two events, numbered by seqKey.
func (g *Generator) sideProfile(user, id, identity, seqKey string) Message {
	ts := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC).Add(time.Duration(g.n) * time.Millisecond).Format(time.RFC3339Nano)
	attrs := fmt.Sprintf(`{%s,"_update_existing_only":false,"%s":0,"first_seen":"%s"}`, id, seqKey, ts)
	recs := []Record{{Kind: "attributes", User: user, Identity: identity}}
	events := 1 + g.r.IntN(2)
	var evs []string
	for i := 1; i <= events; i++ {
		evs = append(evs, fmt.Sprintf(`{%s,"name":"%s","time":"%s","properties":{"%s":%d}}`, id, eventNames[g.r.IntN(len(eventNames))], ts, seqKey, i))
		recs = append(recs, Record{Kind: "event", User: user, Seq: i, Identity: identity})
	}
	v := fmt.Sprintf(`{"attributes":[%s],"events":[%s]}`, attrs, strings.Join(evs, ","))
	return Message{Key: []byte(user), Value: []byte(v), Records: recs}
}

// track notes a deliverable /users/track record of user (with a lifecycle share only).
func (g *Generator) track(user string, o Outcome) {
	if g.o.LifecycleShare == 0 || o != Deliver {
		return
	}
	if g.lc.known == nil {
		g.lc.known = map[string]bool{}
	}
	g.lc.known[user] = true
}
