package brazesim

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// opDo posts body to path and checks the status and (exact) answer.
func opDo(t *testing.T, s *Sim, path, body string, code int, want string) {
	t.Helper()
	w := s.do(req{path: path, body: body})
	if w.Code != code || (want != "" && !strings.Contains(w.Body.String(), want)) {
		t.Fatalf("%s %s: %d %s, want %d %s", path, body, w.Code, w.Body, code, want)
	}
}

func list(n int, f func(i int) string) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = f(i)
	}
	return strings.Join(parts, ",")
}

// Answers and per-request limits of every endpoint (docs/braze-rules.md §7).
func TestUserOpsAnswersAndLimits(t *testing.T) {
	s := newSim(t, nil)
	alias := func(i int) string { return fmt.Sprintf(`{"alias_name":"n%d","alias_label":"l"}`, i) }
	cases := []struct {
		name, path, body string
		code             int
		want             string
	}{
		{"alias ok", PathAliasNew, `{"user_aliases":[` + list(50, alias) + `]}`, 201, `{"aliases_processed":50,"message":"success"}`},
		{"alias 51", PathAliasNew, `{"user_aliases":[` + list(51, alias) + `]}`, 400, msgAliasesMax},
		{"alias empty", PathAliasNew, `{"user_aliases":[]}`, 400, msgAliasesEmpty},
		{"alias no label", PathAliasNew, `{"user_aliases":[{"alias_name":"n"}]}`, 400, ErrInvalidAlias},
		{"alias bad json", PathAliasNew, `{"user_aliases":[`, 400, msgParse},
		{"alias trailing bytes", PathAliasNew, `{"user_aliases":[{"alias_name":"n","alias_label":"l"}]}}`, 400, msgParse},
		{"alias trailing value", PathAliasNew, `{"user_aliases":[{"alias_name":"n","alias_label":"l"}]} {}`, 400, msgParse},
		{"identify ok", PathIdentify, `{"aliases_to_identify":[{"external_id":"x","user_alias":{"alias_name":"none","alias_label":"l"}}]}`, 201, `{"aliases_processed":1,"message":"success"}`},
		{"identify 51", PathIdentify, `{"aliases_to_identify":[` + list(26, func(i int) string {
			return `{"external_id":"x","user_alias":` + alias(i) + `}`
		}) + `],"emails_to_identify":[` + list(25, func(i int) string {
			return fmt.Sprintf(`{"external_id":"x","email":"e%d@example.com","prioritization":["unidentified"]}`, i)
		}) + `]}`, 400, msgIdentifyMax},
		{"identify none", PathIdentify, `{}`, 400, msgIdentifyNone},
		{"identify no external_id", PathIdentify, `{"aliases_to_identify":[{"user_alias":{"alias_name":"n","alias_label":"l"}}]}`, 400, msgIdentifyExtID},
		{"identify email without prioritization", PathIdentify, `{"emails_to_identify":[{"external_id":"x","email":"a@example.com"}]}`, 400, msgPrioritization},
		{"identify both identified and unidentified", PathIdentify, `{"phone_numbers_to_identify":[{"external_id":"x","phone":"+15550001","prioritization":["identified","unidentified"]}]}`, 400, msgPrioritization},
		{"merge ok", PathMerge, `{"merge_updates":[{"identifier_to_merge":{"external_id":"a"},"identifier_to_keep":{"external_id":"b"}}]}`, 202, `{"message":"success"}`},
		{"merge 51", PathMerge, `{"merge_updates":[` + list(51, func(int) string {
			return `{"identifier_to_merge":{"external_id":"a"},"identifier_to_keep":{"external_id":"b"}}`
		}) + `]}`, 400, `{"message":"a single request may not contain more than 50 merge updates"}`},
		{"merge not array", PathMerge, `{"merge_updates":{"x":1}}`, 400, `{"message":"'merge_updates' must be an array of objects"}`},
		{"merge not objects", PathMerge, `{"merge_updates":[1]}`, 400, msgMergeArray},
		{"merge extra key", PathMerge, `{"merge_updates":[{"identifier_to_merge":{"external_id":"a"},"identifier_to_keep":{"external_id":"b"},"x":1}]}`, 400, msgMergeKeys},
		{"merge bad identifier", PathMerge, `{"merge_updates":[{"identifier_to_merge":{"external_id":1},"identifier_to_keep":{"external_id":"b"}}]}`, 400, msgMergeIdent},
		{"merge two identifiers", PathMerge, `{"merge_updates":[{"identifier_to_merge":{"external_id":"a","email":"a@x.com"},"identifier_to_keep":{"external_id":"b"}}]}`, 400, msgMergeIdent},
		{"merge email without prioritization", PathMerge, `{"merge_updates":[{"identifier_to_merge":{"email":"a@x.com"},"identifier_to_keep":{"external_id":"b"}}]}`, 400, msgPrioritization},
		{"delete ok", PathDelete, `{"external_ids":["a","b"]}`, 201, `{"deleted":2}`},
		{"delete 51", PathDelete, `{"braze_ids":[` + list(51, func(i int) string { return fmt.Sprintf(`"b%d"`, i) }) + `]}`, 400, msgDeleteMax},
		{"delete two kinds", PathDelete, `{"external_ids":["a"],"braze_ids":["b"]}`, 400, msgDeleteOneKind},
		{"delete none", PathDelete, `{}`, 400, msgDeleteOneKind},
		{"delete email without prioritization", PathDelete, `{"email_addresses":["a@example.com"]}`, 400, msgPrioritization},
		{"delete email least_recently_updated", PathDelete, `{"email_addresses":[{"email":"a@example.com","prioritization":["least_recently_updated"]}]}`, 400, msgPrioritization},
		{"delete phone ok", PathDelete, `{"phone_numbers":[{"phone":"+15550001","prioritization":["unidentified","most_recently_updated"]}]}`, 201, `{"deleted":1}`},
		{"subscription ok", PathSubscription, `{"subscription_group_id":"g","subscription_state":"subscribed","external_id":[` + list(50, func(i int) string { return fmt.Sprintf(`"u%d"`, i) }) + `]}`, 201, `{"message":"success"}`},
		{"subscription email string", PathSubscription, `{"subscription_group_id":"g","subscription_state":"unsubscribed","email":"a@example.com"}`, 201, `{"message":"success"}`},
		{"subscription 51", PathSubscription, `{"subscription_group_id":"g","subscription_state":"subscribed","phone":[` + list(51, func(i int) string { return fmt.Sprintf(`"+1555%07d"`, i) }) + `]}`, 400, msgSubList},
		{"subscription email and phone", PathSubscription, `{"subscription_group_id":"g","subscription_state":"subscribed","email":["a@example.com"],"phone":["+15550001"]}`, 400, `{"message":"Either an email address or a phone number should be provided, but not both."}`},
		{"subscription bad state", PathSubscription, `{"subscription_group_id":"g","subscription_state":"opted_in","external_id":["u"]}`, 400, msgSubState},
		{"subscription no group", PathSubscription, `{"subscription_state":"subscribed","external_id":["u"]}`, 400, msgSubGroup},
		{"subscription no ids", PathSubscription, `{"subscription_group_id":"g","subscription_state":"subscribed"}`, 400, msgSubNone},
		{"subscription empty list", PathSubscription, `{"subscription_group_id":"g","subscription_state":"subscribed","external_id":[]}`, 400, msgSubList},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { opDo(t, s, c.path, c.body, c.code, c.want) })
	}
	st := s.Stats()
	if st.LimitRejected != 5 {
		t.Errorf("LimitRejected %d, want 5", st.LimitRejected)
	}
	if e := st.Endpoints["alias"]; e.Requests != 7 || e.Entries != 50 || e.ByStatus[201] != 1 || e.ByStatus[400] != 6 {
		t.Errorf("alias stats %+v", e)
	}
	if e := st.Endpoints["subscription"]; e.Requests != 8 || e.Entries != 51 || e.ByStatus[201] != 2 {
		t.Errorf("subscription stats %+v", e)
	}
	if e := st.Endpoints["delete"]; e.Entries != 3 || e.ByStatus[201] != 2 {
		t.Errorf("delete stats %+v", e)
	}
}

// alias/new effects: alias-only profile, alias added to a known profile, existing pair
// unchanged, unknown external_id adds it to no user (post_user_alias.md).
func TestAliasNewEffects(t *testing.T) {
	s := newSim(t, nil)
	mustTrack(t, s, `{"attributes":[{"external_id":"k","a":1}]}`)
	opDo(t, s, PathAliasNew, `{"user_aliases":[{"alias_name":"anon1","alias_label":"web"},{"external_id":"k","alias_name":"k1","alias_label":"crm"},{"external_id":"nobody","alias_name":"z","alias_label":"crm"}]}`, 201, `"aliases_processed":3`)
	if u, ok := s.User("alias", "web\x00anon1"); !ok || u.ExternalID != "" {
		t.Fatalf("alias-only profile: %+v %v", u, ok)
	}
	if u := mustUser(t, s, "external_id", "k"); len(u.Aliases) != 1 || u.Aliases[0] != (Alias{Name: "k1", Label: "crm"}) {
		t.Fatalf("known profile aliases %+v", u.Aliases)
	}
	if _, ok := s.User("alias", "crm\x00z"); ok {
		t.Fatal("alias of an unknown external_id was created")
	}
	opDo(t, s, PathAliasNew, `{"user_aliases":[{"alias_name":"anon1","alias_label":"web"},{"external_id":"k","alias_name":"k2","alias_label":"crm"}]}`, 201, `"aliases_processed":2`)
	if n := len(s.Users()); n != 2 {
		t.Fatalf("%d users after repeating the pair", n)
	}
	if u := mustUser(t, s, "external_id", "k"); len(u.Aliases) != 1 {
		t.Fatalf("second alias with a taken label added: %+v", u.Aliases)
	}
}

// identify moves an alias-only or email-only profile's data into the known profile
// (created when absent); a non-matching alias changes nothing (post_user_identify.md).
func TestIdentifyEffects(t *testing.T) {
	s := newSim(t, nil)
	opDo(t, s, PathAliasNew, `{"user_aliases":[{"alias_name":"a1","alias_label":"anon"}]}`, 201, "")
	mustTrack(t, s, `{"attributes":[{"user_alias":{"alias_name":"a1","alias_label":"anon"},"plan":"free","only_anon":1}],`+
		`"events":[{"user_alias":{"alias_name":"a1","alias_label":"anon"},"name":"browse","time":"2026-01-01T00:00:00Z"}],`+
		`"purchases":[{"user_alias":{"alias_name":"a1","alias_label":"anon"},"product_id":"p","currency":"USD","price":1,"time":"2026-01-01T00:00:00Z"}]}`)
	mustTrack(t, s, `{"attributes":[{"external_id":"known","plan":"gold"}],"events":[{"external_id":"known","name":"login","time":"2026-01-02T00:00:00Z"}]}`)
	opDo(t, s, PathIdentify, `{"aliases_to_identify":[{"external_id":"known","user_alias":{"alias_name":"a1","alias_label":"anon"}}]}`, 201, `"aliases_processed":1`)
	u := mustUser(t, s, "external_id", "known")
	if u.Attributes["plan"] != "gold" || u.Attributes["only_anon"] != 1.0 || len(u.Events) != 2 || len(u.Purchases) != 1 || len(u.Aliases) != 1 {
		t.Fatalf("identified profile %+v", u)
	}
	if n := len(s.Users()); n != 1 {
		t.Fatalf("%d users: the alias-only profile was not removed", n)
	}
	// Email-only profile onto a new external_id: the profile gains it.
	mustTrack(t, s, `{"attributes":[{"email":"e@example.com","src":"email"}]}`)
	opDo(t, s, PathIdentify, `{"emails_to_identify":[{"external_id":"fresh","email":"E@example.com","prioritization":["unidentified","most_recently_updated"]}]}`, 201, "")
	if u := mustUser(t, s, "external_id", "fresh"); u.Attributes["src"] != "email" || u.Email != "e@example.com" {
		t.Fatalf("email identified %+v", u)
	}
	// No match: nothing changes, still success.
	before := len(s.Users())
	opDo(t, s, PathIdentify, `{"aliases_to_identify":[{"external_id":"ghost","user_alias":{"alias_name":"none","alias_label":"anon"}}]}`, 201, `"aliases_processed":1`)
	if _, ok := s.User("external_id", "ghost"); ok || len(s.Users()) != before {
		t.Fatal("an unmatched identify created a profile")
	}
}

// merge moves identifier_to_merge's data into identifier_to_keep and removes it;
// prioritization picks among profiles sharing an email (post_users_merge.md).
func TestMergeEffects(t *testing.T) {
	s := newSim(t, nil)
	mustTrack(t, s, `{"attributes":[{"external_id":"old","a":1,"b":1,"email":"o@example.com"},{"external_id":"keep","b":2}],`+
		`"events":[{"external_id":"old","name":"e","time":"2026-01-01T00:00:00Z"}]}`)
	opDo(t, s, PathMerge, `{"merge_updates":[{"identifier_to_merge":{"external_id":"old"},"identifier_to_keep":{"external_id":"keep"}}]}`, 202, "")
	u := mustUser(t, s, "external_id", "keep")
	if u.Attributes["a"] != 1.0 || u.Attributes["b"] != 2.0 || len(u.Events) != 1 || u.Email != "o@example.com" {
		t.Fatalf("kept %+v", u)
	}
	if _, ok := s.User("external_id", "old"); ok {
		t.Fatal("merged user still there")
	}
	// Two unidentified profiles share an email: ["unidentified"] alone matches two, so
	// nothing merges; adding most_recently_updated picks the newer one.
	mustTrack(t, s, `{"attributes":[{"email":"dup@example.com","n":1}]}`)
	mustTrack(t, s, `{"attributes":[{"user_alias":{"alias_name":"x","alias_label":"l"},"_update_existing_only":false,"email":"dup@example.com","n":2}]}`)
	before := len(s.Users())
	opDo(t, s, PathMerge, `{"merge_updates":[{"identifier_to_merge":{"email":"dup@example.com","prioritization":["unidentified"]},"identifier_to_keep":{"external_id":"keep"}}]}`, 202, "")
	if len(s.Users()) != before {
		t.Fatal("an ambiguous prioritization merged")
	}
	opDo(t, s, PathMerge, `{"merge_updates":[{"identifier_to_merge":{"email":"dup@example.com","prioritization":["unidentified","most_recently_updated"]},"identifier_to_keep":{"external_id":"keep"}}]}`, 202, "")
	if u := mustUser(t, s, "external_id", "keep"); u.Attributes["n"] != 2.0 || len(s.Users()) != before-1 {
		t.Fatalf("merged the wrong profile: %+v", u)
	}
}

// delete removes the profile; a later /users/track creates a new one; the operation log
// keeps the history across (post_user_delete.md).
func TestDeleteEffectsAndOpLog(t *testing.T) {
	clk := newClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := newSim(t, func(c *Config) { c.Now = clk.Now })
	mustTrack(t, s, `{"attributes":[{"external_id":"u","a":1}]}`)
	clk.Add(time.Second)
	opDo(t, s, PathSubscription, `{"subscription_group_id":"g1","subscription_state":"subscribed","external_id":["u"]}`, 201, "")
	if u := mustUser(t, s, "external_id", "u"); u.Subscriptions["g1"] != "subscribed" {
		t.Fatalf("subscriptions %+v", u.Subscriptions)
	}
	first := mustUser(t, s, "external_id", "u").BrazeID
	clk.Add(time.Second)
	opDo(t, s, PathDelete, `{"external_ids":["u"]}`, 201, `{"deleted":1}`)
	if _, ok := s.User("external_id", "u"); ok {
		t.Fatal("deleted profile still resolves")
	}
	clk.Add(time.Second)
	mustTrack(t, s, `{"events":[{"external_id":"u","name":"again","time":"2026-01-01T00:00:00Z"}]}`)
	u := mustUser(t, s, "external_id", "u")
	if u.BrazeID == first || len(u.Attributes) != 0 || len(u.Events) != 1 || u.Subscriptions != nil {
		t.Fatalf("re-created profile carries old data: %+v", u)
	}
	ops := s.Ops("external_id", "u")
	var got []string
	for i, o := range ops {
		got = append(got, o.Endpoint)
		if i > 0 && (o.Order <= ops[i-1].Order || o.Time.Before(ops[i-1].Time)) {
			t.Fatalf("ops out of order: %+v", ops)
		}
	}
	if strings.Join(got, ",") != "track,subscription,delete,track" || ops[2].Detail != "deleted" || ops[3].BrazeID != u.BrazeID ||
		!ops[1].Time.Equal(time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC)) {
		t.Fatalf("ops %+v", ops)
	}
	// The admin API serves the same log.
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/_sim/ops?kind=external_id&id=u", nil))
	if w.Code != 200 || strings.Count(w.Body.String(), `"endpoint"`) != 4 {
		t.Fatalf("admin ops: %d %s", w.Code, w.Body)
	}
}

// The identify history: the alias's track requests, the identify, then the known
// profile's requests, in application order, under the external_id and under the alias.
func TestOpLogAcrossIdentify(t *testing.T) {
	s := newSim(t, nil)
	opDo(t, s, PathAliasNew, `{"user_aliases":[{"alias_name":"a","alias_label":"anon"}]}`, 201, "")
	mustTrack(t, s, `{"events":[{"user_alias":{"alias_name":"a","alias_label":"anon"},"name":"e","time":"2026-01-01T00:00:00Z"}]}`)
	mustTrack(t, s, `{"attributes":[{"external_id":"k","x":1}]}`)
	opDo(t, s, PathIdentify, `{"aliases_to_identify":[{"external_id":"k","user_alias":{"alias_name":"a","alias_label":"anon"}}]}`, 201, "")
	mustTrack(t, s, `{"attributes":[{"external_id":"k","x":2}]}`)
	names := func(ops []Op) string {
		var l []string
		for _, o := range ops {
			l = append(l, o.Endpoint)
		}
		return strings.Join(l, ",")
	}
	// Under k: alias creation, alias track, k's track, identify (merged into / from), k's track.
	if got := names(s.Ops("external_id", "k")); got != "alias,track,track,identify,identify,track" {
		t.Fatalf("ops of k: %s", got)
	}
	if got := names(s.Ops("alias", "anon\x00a")); got != "alias,track,track,identify,identify,track" {
		t.Fatalf("ops of the alias: %s", got)
	}
}

// An email linked to several profiles updates all of them; unknown identifiers create
// no profile.
func TestSubscriptionEffects(t *testing.T) {
	s := newSim(t, nil)
	mustTrack(t, s, `{"attributes":[{"external_id":"a","email":"shared@example.com"},{"external_id":"b","email":"shared@example.com"},{"external_id":"c","phone":"+15550001"}]}`)
	opDo(t, s, PathSubscription, `{"subscription_group_id":"news","subscription_state":"subscribed","email":["Shared@example.com"]}`, 201, "")
	opDo(t, s, PathSubscription, `{"subscription_group_id":"sms","subscription_state":"unsubscribed","phone":["+15550001"]}`, 201, "")
	opDo(t, s, PathSubscription, `{"subscription_group_id":"news","subscription_state":"unsubscribed","external_id":["b","nobody"]}`, 201, "")
	if a := mustUser(t, s, "external_id", "a"); a.Subscriptions["news"] != "subscribed" {
		t.Fatalf("a %+v", a.Subscriptions)
	}
	if b := mustUser(t, s, "external_id", "b"); b.Subscriptions["news"] != "unsubscribed" {
		t.Fatalf("b %+v", b.Subscriptions)
	}
	if c := mustUser(t, s, "external_id", "c"); c.Subscriptions["sms"] != "unsubscribed" || c.Subscriptions["news"] != "" {
		t.Fatalf("c %+v", c.Subscriptions)
	}
	if _, ok := s.User("external_id", "nobody"); ok || len(s.Users()) != 3 {
		t.Fatal("an unknown external_id created a profile")
	}
}

// The four user endpoints share one limit, subscription has its own, /users/track is
// apart (docs/braze-rules.md §3); 429 with X-Ratelimit-Retry-After.
func TestUserOpsRateLimitGroups(t *testing.T) {
	clk := newClock(time.Date(2026, 1, 1, 0, 0, 10, 0, time.UTC))
	s := newSim(t, func(c *Config) {
		c.Now = clk.Now
		c.UserOpsLimit, c.UserOpsWindow = 4, time.Minute
		c.SubscriptionLimit, c.SubscriptionWindow = 2, time.Minute
	})
	for _, p := range []string{PathAliasNew, PathIdentify, PathMerge, PathDelete} {
		if w := s.do(req{path: p, body: `{}`}); w.Code != 400 || w.Header().Get("X-Ratelimit-Limit") != "4" {
			t.Fatalf("%s: %d %v", p, w.Code, w.Header())
		}
	}
	w := s.do(req{path: PathMerge, body: `{}`})
	if w.Code != 429 || w.Header().Get("X-Ratelimit-Retry-After") != "50" || w.Header().Get("X-Ratelimit-Limit") != "" {
		t.Fatalf("fifth user op: %d %v", w.Code, w.Header())
	}
	sub := `{"subscription_group_id":"g","subscription_state":"subscribed","external_id":"u"}`
	opDo(t, s, PathSubscription, sub, 201, "")
	opDo(t, s, PathSubscription, sub, 201, "")
	opDo(t, s, PathSubscription, sub, 429, "")
	mustTrack(t, s, `{"attributes":[{"external_id":"u","a":1}]}`)
	clk.Add(time.Minute)
	opDo(t, s, PathDelete, `{"external_ids":["u"]}`, 201, "")
	if st := s.Stats(); st.Endpoints["merge"].ByStatus[429] != 1 || st.Endpoints["subscription"].ByStatus[429] != 1 || st.RateLimited != 2 {
		t.Fatalf("stats %+v", st.Endpoints)
	}
}

// Per-endpoint faults: a reject marker answers 400 and applies nothing, a 403 for one
// endpoint, a share of 5xx for one endpoint.
func TestUserOpsFaults(t *testing.T) {
	s := newSim(t, nil)
	s.SetFaults(Faults{Endpoints: map[string]EndpointFaults{
		"delete":       {RejectMarker: "poison"},
		"merge":        {Forbidden: true},
		"subscription": {Error5xxRate: 1},
	}})
	mustTrack(t, s, `{"attributes":[{"external_id":"ok1"},{"external_id":"ok2"}]}`)
	opDo(t, s, PathDelete, `{"external_ids":["ok1","x-poison-1"]}`, 400, msgRejectMarker)
	if _, ok := s.User("external_id", "ok1"); !ok {
		t.Fatal("a rejected request was applied")
	}
	opDo(t, s, PathDelete, `{"external_ids":["ok1"]}`, 201, `{"deleted":1}`)
	opDo(t, s, PathMerge, `{"merge_updates":[{"identifier_to_merge":{"external_id":"ok2"},"identifier_to_keep":{"external_id":"b"}}]}`, 403, "Access Denied")
	w := s.do(req{path: PathSubscription, body: `{"subscription_group_id":"g","subscription_state":"subscribed","external_id":"ok2"}`})
	if w.Code < 500 {
		t.Fatalf("subscription under a 5xx fault: %d", w.Code)
	}
	mustTrack(t, s, `{"attributes":[{"external_id":"poison-track"}]}`) // the marker is ignored for track
	// Unknown endpoint names are refused by the admin API.
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/_sim/faults", strings.NewReader(`{"endpoints":{"nope":{"forbidden":true}}}`)))
	if rec.Code != 400 {
		t.Fatalf("unknown endpoint fault: %d %s", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/_sim/faults", strings.NewReader(`{"endpoints":{"alias":{"forbidden":true}}}`)))
	if rec.Code != 200 {
		t.Fatalf("alias fault: %d %s", rec.Code, rec.Body)
	}
	opDo(t, s, PathAliasNew, `{"user_aliases":[{"alias_name":"n","alias_label":"l"}]}`, 403, "")
	opDo(t, s, PathMerge, `{"merge_updates":[{"identifier_to_merge":{"external_id":"ok2"},"identifier_to_keep":{"external_id":"b"}}]}`, 202, "")
	st := s.Stats()
	if st.Endpoints["delete"].ByStatus[400] != 1 || st.Endpoints["merge"].ByStatus[403] != 1 || st.Endpoints["alias"].ByStatus[403] != 1 {
		t.Fatalf("stats %+v", st.Endpoints)
	}
}

// A key without subscription.status.set gets 403 on that endpoint only (docs/braze-rules.md §4).
func TestSubscriptionPermission(t *testing.T) {
	s := newSim(t, func(c *Config) {
		c.Keys = []Key{{Name: "k", Secret: "dev-key", Permissions: []string{PermUsersTrack, PermUsersDelete}}}
	})
	opDo(t, s, PathSubscription, `{"subscription_group_id":"g","subscription_state":"subscribed","external_id":"u"}`, 403, "Access Denied")
	opDo(t, s, PathDelete, `{"external_ids":["u"]}`, 201, "")
}

// Config.MaxTombstones bounds the removed profiles kept for Sim.Ops.
func TestTombstoneBound(t *testing.T) {
	s := newSim(t, func(c *Config) { c.MaxTombstones = 2 })
	for i := 0; i < 3; i++ {
		id := fmt.Sprint("u", i)
		mustTrack(t, s, `{"attributes":[{"external_id":"`+id+`","a":1}]}`)
		opDo(t, s, PathDelete, `{"external_ids":["`+id+`"]}`, 201, "")
	}
	if n := len(s.Ops("external_id", "u0")); n != 0 {
		t.Fatalf("oldest tombstone kept: %d ops", n)
	}
	if n := len(s.Ops("external_id", "u2")); n != 2 {
		t.Fatalf("newest tombstone: %d ops, want track+delete", n)
	}
	if len(s.st.gone) != 4 { // braze_id and external_id keys of the two kept
		t.Fatalf("gone index %d keys", len(s.st.gone))
	}
}

// Consecutive /users/track requests on a profile are one Op (a run); another endpoint's
// request ends the run.
func TestOpLogTrackRuns(t *testing.T) {
	s := newSim(t, nil)
	for i := 0; i < 3; i++ {
		mustTrack(t, s, `{"attributes":[{"external_id":"r","n":1}],"events":[{"external_id":"r","name":"e","time":"2026-01-01T00:00:00Z"}]}`)
	}
	opDo(t, s, PathSubscription, `{"subscription_group_id":"g","subscription_state":"subscribed","external_id":"r"}`, 201, "")
	mustTrack(t, s, `{"attributes":[{"external_id":"r","n":2}]}`)
	ops := s.Ops("external_id", "r")
	if len(ops) != 3 || ops[0].Count != 3 || ops[0].Request != 1 || ops[0].LastRequest != 3 || ops[0].LastOrder <= ops[0].Order ||
		ops[1].Endpoint != "subscription" || ops[1].Order <= ops[0].LastOrder || ops[2].Count != 1 || ops[2].Order <= ops[1].Order {
		t.Fatalf("ops %+v", ops)
	}
}

// The subscription limit is configurable from the config file and flags (flags win).
func TestSubscriptionLimitConfig(t *testing.T) {
	path := t.TempDir() + "/sim.json"
	if err := writeFile(path, `{"subscription_limit":7,"subscription_window":"10s","user_ops_limit":9}`); err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	if _, err := loadConfigFile(path, &c); err != nil || c.SubscriptionLimit != 7 || c.SubscriptionWindow != 10*time.Second || c.UserOpsLimit != 9 {
		t.Fatalf("%+v %v", c, err)
	}
	if d := DefaultConfig(); d.SubscriptionLimit != 5000 || d.UserOpsLimit != 20000 {
		t.Fatalf("defaults %d %d", d.SubscriptionLimit, d.UserOpsLimit)
	}
}

// Two /users/track requests on one user applied out of arrival order (the later one's
// client gave up, so it skipped the latency and was applied first): the log shows each
// request, in the order applied, rather than one run whose range misses the earlier one.
func TestOpLogTrackOutOfOrder(t *testing.T) {
	s := newSim(t, func(c *Config) { c.Latency = 400 * time.Millisecond })
	send := func(ctx context.Context, n int) {
		body := fmt.Sprintf(`{"events":[{"external_id":"o","name":"e","time":"2026-01-01T00:00:00Z","properties":{"n":%d}}]}`, n)
		hr := httptest.NewRequest(http.MethodPost, PathTrack, strings.NewReader(body)).WithContext(ctx)
		hr.Header.Set("Content-Type", "application/json")
		hr.Header.Set("Authorization", "Bearer dev-key")
		s.ServeHTTP(httptest.NewRecorder(), hr)
	}
	mustTrack(t, s, `{"attributes":[{"external_id":"o","n":0}]}`)
	done := make(chan struct{})
	go func() { defer close(done); send(context.Background(), 1) }()
	time.Sleep(100 * time.Millisecond) // request 1 arrived and waits out the latency
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	send(ctx, 2) // arrives second, applied first
	<-done
	u, _ := s.User("external_id", "o")
	if len(u.Events) != 2 || u.Events[0].Properties["n"] != 2.0 {
		t.Fatalf("events %+v: want request 2's event applied first", u.Events)
	}
	ops := s.Ops("external_id", "o")
	covered := func(req uint64) bool {
		for _, o := range ops {
			if o.Endpoint == "track" && req >= o.Request && req <= max(o.Request, o.LastRequest) {
				return true
			}
		}
		return false
	}
	for _, e := range u.Events {
		if !covered(e.Seq) {
			t.Errorf("event of request %d is in no track entry of the log %+v", e.Seq, ops)
		}
	}
	if len(ops) != 2 || ops[1].Request != u.Events[1].Seq {
		t.Errorf("log %+v: want a run up to request 2, then the late request 1 on its own", ops)
	}
}
