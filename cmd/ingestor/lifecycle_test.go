package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/braze-ingestor/braze-ingestor/brazesim"
	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"github.com/braze-ingestor/braze-ingestor/pipeline"
	"github.com/braze-ingestor/braze-ingestor/synth"
)

// End-to-end tests of the record kinds beyond /users/track (alias, identify, merge,
// subscription, delete): in-process (kfake + the Braze simulator), on a real Apache Kafka
// (TestRealKafkaLifecycleMixed) and across kill -9 (TestKill9Lifecycle). What Braze did is
// read from the simulator: its profiles (Sim.User) and its per-profile operation log
// (Sim.Ops), which lists every request of any endpoint applied to a profile in the order
// the simulator applied them.

// lifecycleTokens turns a user's operation log into groups of the tokens expectation.add
// records for the user's own records, in the order the simulator applied them: one group per
// request. A /users/track request gives "e:<seq>"/"p:<seq>" for the events and purchases it
// carried (read from the profile's stored events, which name their request; the log keeps
// consecutive /users/track requests as one run from Request to LastRequest), the others
// "identify", "merge", "sub:<group> <state>" or "delete". Alias operations are ordered by the
// alias, not the user, and are left out; so are the entries an identify or merge brought
// along from the absorbed profile (another braze_id, or its "merged into" entry once the
// user's profile is deleted).
func lifecycleTokens(ops []brazesim.Op, u *brazesim.User) [][]string {
	byReq := map[uint64][]string{}
	if u != nil {
		for _, e := range u.Events {
			if s, ok := e.Properties["seq"].(float64); ok {
				byReq[e.Seq] = append(byReq[e.Seq], fmt.Sprintf("e:%d", int(s)))
			}
		}
		for _, p := range u.Purchases {
			if s, ok := p.Properties["seq"].(float64); ok {
				byReq[p.Seq] = append(byReq[p.Seq], fmt.Sprintf("p:%d", int(s)))
			}
		}
	}
	reqs := make([]uint64, 0, len(byReq))
	for r := range byReq {
		reqs = append(reqs, r)
	}
	sort.Slice(reqs, func(i, j int) bool { return reqs[i] < reqs[j] })
	seen := map[uint64]bool{}
	var out [][]string
	for _, op := range ops {
		if u != nil && op.BrazeID != u.BrazeID {
			// An absorbed profile's entry: its /users/track run may span requests of the
			// user's own, which are in the user's own entries.
			continue
		}
		switch op.Endpoint {
		case "track":
			last := max(op.LastRequest, op.Request)
			for _, r := range reqs {
				if r >= op.Request && r <= last && !seen[r] {
					seen[r] = true
					out = append(out, byReq[r])
				}
			}
		case "identify", "merge":
			if !strings.Contains(op.Detail, "merged into") {
				out = append(out, []string{op.Endpoint})
			}
		case "subscription":
			out = append(out, []string{"sub:" + op.Detail})
		case "delete":
			out = append(out, []string{"delete"})
		}
	}
	return out
}

// lifecycleReport is what checkLifecycle found wrong.
type lifecycleReport struct {
	orderErrs []string // a user's operations out of Kafka order (or applied twice)
	lost      []string // records that should show in a profile and do not
	stateErrs []string // deleted users present, subscription states not the last write
	dupOps    int      // operations beyond /users/track applied more than once (kill -9 allows them)
	lostUsers []string // the users behind lost, for describeLost
}

// describeLost logs the operation log and profile of the first users with lost records.
func describeLost(t *testing.T, sim *brazesim.Sim, rep lifecycleReport) {
	t.Helper()
	if len(rep.lostUsers) > 0 {
		t.Logf("simulator: %d overlapping /users/track requests on one user", sim.Stats().SameUserConcurrency)
	}
	for _, user := range first(rep.lostUsers, 3) {
		var up *brazesim.User
		if u, ok := sim.User("external_id", user); ok {
			up = &u
		}
		t.Logf("%s (lost records): operation log %s; events %s", user, describeOps(sim.Ops("external_id", user)), describeEvents(up))
	}
}

func (r lifecycleReport) ok() bool {
	return len(r.orderErrs) == 0 && len(r.lost) == 0 && len(r.stateErrs) == 0
}

func (r lifecycleReport) String() string {
	return fmt.Sprintf("order %v; lost %v; state %v; duplicate operations %d", first(r.orderErrs, 8), first(r.lost, 8), first(r.stateErrs, 8), r.dupOps)
}

func first(s []string, n int) []string { return s[:min(n, len(s))] }

// strictToken reports whether every record behind token must show in the profile's log
// exactly once. An identify or merge may be a silent no-op in Braze (its anonymous or
// duplicate profile, ordered by its own identifier, may not have arrived yet), and then
// leaves no entry.
func strictToken(tok string) bool { return tok != "identify" && tok != "merge" }

// checkLifecycle compares every user's operation log with their records in Kafka order: the
// log (as tokens) must be the records' tokens in order (a subsequence, since attribute writes
// and silent no-ops leave none), each strict token as often as produced; deleted users are
// gone with the delete as their last operation; subscription states are the last write.
// With dupsOK (kill -9) operations may repeat and only loss and the final state count.
func checkLifecycle(t *testing.T, sim *brazesim.Sim, exp *expectation, dupsOK bool) lifecycleReport {
	t.Helper()
	var rep lifecycleReport
	users := make([]string, 0, len(exp.tokens))
	for u := range exp.tokens {
		users = append(users, u)
	}
	sort.Strings(users)
	for _, user := range users {
		want := exp.tokens[user]
		ops := sim.Ops("external_id", user)
		u, exists := sim.User("external_id", user)
		if exp.deleted[user] {
			if exists {
				rep.stateErrs = append(rep.stateErrs, user+": deleted, but the profile exists")
			}
			if len(ops) == 0 || ops[len(ops)-1].Endpoint != "delete" {
				rep.stateErrs = append(rep.stateErrs, fmt.Sprintf("%s: deleted, last operation %v", user, lastOp(ops)))
			}
			// The deleted profile's events are gone: compare the other operations.
			want = withoutTracks(want)
		}
		var up *brazesim.User
		if exists {
			up = &u
		}
		got := lifecycleTokens(ops, up)
		if exp.deleted[user] {
			got = withoutTrackGroups(got)
		}
		before := len(rep.orderErrs)
		compareTokens(user, want, got, dupsOK, &rep)
		if len(rep.orderErrs) > before && before < 3 {
			t.Logf("%s: operation log %s; events %s", user, describeOps(ops), describeEvents(up))
		}
		for g, st := range exp.subs[user] {
			if exists && u.Subscriptions[g] != st {
				rep.stateErrs = append(rep.stateErrs, fmt.Sprintf("%s: subscription %s is %q, last write %q", user, g, u.Subscriptions[g], st))
			}
		}
	}
	return rep
}

// describeOps renders an operation log for a failure message.
func describeOps(ops []brazesim.Op) string {
	var b strings.Builder
	for _, o := range ops {
		fmt.Fprintf(&b, "[%s req %d-%d order %d-%d x%d %s %q] ", o.Endpoint, o.Request, o.LastRequest, o.Order, o.LastOrder, o.Count, o.BrazeID, o.Detail)
	}
	return b.String()
}

// describeEvents renders a profile's events (request, properties' seq) for a failure message.
func describeEvents(u *brazesim.User) string {
	if u == nil {
		return "(no profile)"
	}
	var b strings.Builder
	for _, e := range u.Events {
		fmt.Fprintf(&b, "[req %d seq %v anon %v dup %v] ", e.Seq, e.Properties["seq"], e.Properties["anon_seq"], e.Properties["dup_seq"])
	}
	for _, p := range u.Purchases {
		fmt.Fprintf(&b, "[purchase req %d seq %v] ", p.Seq, p.Properties["seq"])
	}
	return b.String()
}

func lastOp(ops []brazesim.Op) string {
	if len(ops) == 0 {
		return "none"
	}
	o := ops[len(ops)-1]
	return o.Endpoint + " " + o.Detail
}

func withoutTrackGroups(groups [][]string) [][]string {
	var out [][]string
	for _, g := range groups {
		if g = withoutTracks(g); len(g) > 0 {
			out = append(out, g)
		}
	}
	return out
}

func withoutTracks(toks []string) []string {
	var out []string
	for _, t := range toks {
		if !strings.HasPrefix(t, "e:") && !strings.HasPrefix(t, "p:") {
			out = append(out, t)
		}
	}
	return out
}

// compareTokens checks got against want (see checkLifecycle). The tokens of one request
// (got's groups) may come in any order among themselves (Braze documents no order between a
// request's arrays), but after every token of the requests before.
func compareTokens(user string, want []string, got [][]string, dupsOK bool, rep *lifecycleReport) {
	wantN, gotN := map[string]int{}, map[string]int{}
	for _, w := range want {
		wantN[w]++
	}
	for _, g := range got {
		for _, tok := range g {
			gotN[tok]++
		}
	}
	for tok, n := range wantN {
		switch g := gotN[tok]; {
		case g < n && strictToken(tok):
			rep.lost = append(rep.lost, fmt.Sprintf("%s: %s applied %d times of %d", user, tok, g, n))
			if l := rep.lostUsers; len(l) == 0 || l[len(l)-1] != user {
				rep.lostUsers = append(rep.lostUsers, user)
			}
		case g > n:
			if !strings.HasPrefix(tok, "e:") && !strings.HasPrefix(tok, "p:") {
				rep.dupOps += g - n
			}
			if !dupsOK {
				rep.orderErrs = append(rep.orderErrs, fmt.Sprintf("%s: %s applied %d times, produced %d", user, tok, g, n))
			}
		}
	}
	for tok, n := range gotN {
		if wantN[tok] == 0 {
			rep.orderErrs = append(rep.orderErrs, fmt.Sprintf("%s: %d operations %s that were never produced", user, n, tok))
		}
	}
	if dupsOK {
		return
	}
	// Each request's tokens come after every token of the requests applied before it: a
	// token matches its next occurrence in want after the previous request's last match.
	after := -1
	for j, g := range got {
		end := after
		for _, tok := range g {
			i := after + 1
			for i < len(want) && want[i] != tok {
				i++
			}
			if i == len(want) {
				rep.orderErrs = append(rep.orderErrs, fmt.Sprintf("%s: request %d (%v) applied out of order: applied %v, produced %v", user, j, g, got, want))
				return
			}
			end = max(end, i)
		}
		after = end
	}
}

// lifecycleConfig is testConfig with every endpoint enabled.
func lifecycleConfig(k *testKafka, sim *brazesim.Server, group string) *Config {
	cfg := testConfig(k, sim, group)
	enableAllEndpoints(cfg)
	cfg.EndpointSpacing = testSpacing
	return cfg
}

// allEndpoints is ENDPOINTS with every endpoint.
func allEndpoints() string {
	var names []string
	for e := endpoint.Endpoint(0); e < endpoint.Count; e++ {
		names = append(names, e.Name())
	}
	return strings.Join(names, ",")
}

// testSpacing is the spacing between a user's calls of different endpoints in these tests:
// short, so that a test's users alternating between endpoints finish in seconds.
const testSpacing = "*>*=10ms"

// sendRaw writes key/value messages to k's source topic, in order.
func sendRaw(t *testing.T, k *testKafka, kv ...string) {
	t.Helper()
	w := k.writer(k.Topic)
	defer w.Close()
	var msgs []kafka.Message
	for i := 0; i+1 < len(kv); i += 2 {
		msgs = append(msgs, kafka.Message{Key: []byte(kv[i]), Value: []byte(kv[i+1])})
	}
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
}

// TestLifecycleEachKind delivers one record of each kind beyond /users/track and checks its
// documented effect on the simulator's profiles: alias created (on a known user, and an
// alias-only profile), identify moves the anonymous profile's history into the known one,
// merge moves the duplicate's data and removes it, subscription state set (and changed),
// delete removes the profile. Each endpoint's counters show its record.
func TestLifecycleEachKind(t *testing.T) {
	k := newTestKafka(t, 4)
	sim := newSim(t, nil)
	p, stop := startWorker(t, lifecycleConfig(k, sim, "lc-each"))
	settled := func(n int64, what string) {
		t.Helper()
		waitFor(t, 30*time.Second, what, func() bool {
			s := p.Stats().Snapshot()
			return s.RecordsDelivered+s.DeadLetteredAll >= n
		})
	}
	group := synth.SubscriptionGroups[0]
	ts := `"time":"2026-11-25T10:00:00Z"`
	// Stage 1: the profiles the records act on.
	sendRaw(t, k,
		"lc-known", `{"type":"event","data":{"external_id":"lc-known","name":"signed_up",`+ts+`}}`,
		"lc-keep", `{"type":"attributes","data":{"external_id":"lc-keep","plan":"gold"}}`,
		"lc-sub", `{"type":"attributes","data":{"external_id":"lc-sub","plan":"free"}}`,
		"lc-del", `{"type":"event","data":{"external_id":"lc-del","name":"signed_up",`+ts+`}}`,
		"lc-crm", `{"type":"attributes","data":{"external_id":"lc-crm","plan":"free"}}`,
		"lc-known", `{"attributes":[{"user_alias":{"alias_name":"lc-anon-1","alias_label":"anonymous_id"},"_update_existing_only":false,"first_seen":"2026-11-25"}],`+
			`"events":[{"user_alias":{"alias_name":"lc-anon-1","alias_label":"anonymous_id"},"name":"anon_view",`+ts+`}]}`,
		"lc-keep", `{"attributes":[{"external_id":"lc-dup","legacy_crm":"X-1"}],"events":[{"external_id":"lc-dup","name":"dup_view",`+ts+`}]}`,
	)
	settled(9, "profiles created")
	// Stage 2: one record of each kind.
	sendRaw(t, k,
		"lc-crm", `{"type":"alias","data":{"alias_name":"crm-1","alias_label":"crm_id","external_id":"lc-crm"}}`,
		"lc-lead", `{"type":"alias","data":{"alias_name":"lead-1","alias_label":"lead_id"}}`,
		"lc-known", `{"type":"identify","data":{"external_id":"lc-known","user_alias":{"alias_name":"lc-anon-1","alias_label":"anonymous_id"}}}`,
		"lc-keep", `{"type":"merge","data":{"identifier_to_merge":{"external_id":"lc-dup"},"identifier_to_keep":{"external_id":"lc-keep"}}}`,
		"lc-sub", `{"type":"subscription","data":{"subscription_group_id":"`+group+`","subscription_state":"subscribed","external_id":"lc-sub"}}`,
		"lc-del", `{"type":"delete","data":{"external_id":"lc-del"}}`,
	)
	settled(15, "one record of each kind")
	mustUser := func(kind, id string) brazesim.User {
		t.Helper()
		u, ok := sim.Sim.User(kind, id)
		if !ok {
			t.Fatalf("no profile with %s %q", kind, strings.ReplaceAll(id, "\x00", "/"))
		}
		return u
	}
	if u := mustUser("user_alias", "crm_id\x00crm-1"); u.ExternalID != "lc-crm" {
		t.Errorf("alias crm_id/crm-1 names profile %q, want lc-crm's", u.ExternalID)
	}
	if u := mustUser("user_alias", "lead_id\x00lead-1"); u.ExternalID != "" {
		t.Errorf("lead alias: want an alias-only profile, got external_id %q", u.ExternalID)
	}
	known := mustUser("external_id", "lc-known")
	if !hasEvent(known, "anon_view") || !hasEvent(known, "signed_up") || known.Attributes["first_seen"] != "2026-11-25" {
		t.Errorf("identify: lc-known should hold the anonymous history: events %v attributes %v", eventNames(known), known.Attributes)
	}
	if u := mustUser("user_alias", "anonymous_id\x00lc-anon-1"); u.ExternalID != "lc-known" {
		t.Errorf("identify: the anonymous alias names %q, want lc-known", u.ExternalID)
	}
	keep := mustUser("external_id", "lc-keep")
	if !hasEvent(keep, "dup_view") || keep.Attributes["legacy_crm"] != "X-1" || keep.Attributes["plan"] != "gold" {
		t.Errorf("merge: lc-keep should hold lc-dup's data: events %v attributes %v", eventNames(keep), keep.Attributes)
	}
	if _, ok := sim.Sim.User("external_id", "lc-dup"); ok {
		t.Error("merge: lc-dup still exists")
	}
	if u := mustUser("external_id", "lc-sub"); u.Subscriptions[group] != "subscribed" {
		t.Errorf("subscription: lc-sub's state %v", u.Subscriptions)
	}
	if _, ok := sim.Sim.User("external_id", "lc-del"); ok {
		t.Error("delete: lc-del still exists")
	}
	if ops := sim.Sim.Ops("external_id", "lc-del"); lastOp(ops) != "delete deleted" {
		t.Errorf("delete: lc-del's last operation %s", lastOp(ops))
	}
	// Stage 3: the subscription changes back.
	sendRaw(t, k, "lc-sub", `{"type":"subscription","data":{"subscription_group_id":"`+group+`","subscription_state":"unsubscribed","external_id":"lc-sub"}}`)
	settled(16, "unsubscribe")
	if u := mustUser("external_id", "lc-sub"); u.Subscriptions[group] != "unsubscribed" {
		t.Errorf("subscription: lc-sub's state after unsubscribing %v", u.Subscriptions)
	}
	stop()
	s := p.Stats().Snapshot()
	if s.DeadLetteredAll != 0 || s.RecordsDelivered != 16 {
		t.Errorf("delivered %d, dead-lettered %d (%v); want 16 and 0", s.RecordsDelivered, s.DeadLetteredAll, s.DeadLettered)
	}
	st := sim.Sim.Stats()
	for name, want := range map[string]int64{"alias": 2, "identify": 1, "merge": 1, "subscription": 2, "delete": 1} {
		if got := st.Endpoints[name].Entries; got != want {
			t.Errorf("simulator: %s applied %d entries, want %d", name, got, want)
		}
	}
	checkEndpointCounters(t, s, map[endpoint.Endpoint]int64{endpoint.AliasNew: 2, endpoint.Identify: 1, endpoint.Merge: 1, endpoint.Subscription: 2, endpoint.Delete: 1})
}

func hasEvent(u brazesim.User, name string) bool {
	for _, e := range u.Events {
		if e.Name == name {
			return true
		}
	}
	return false
}

func eventNames(u brazesim.User) []string {
	var out []string
	for _, e := range u.Events {
		out = append(out, e.Name)
	}
	return out
}

// TestLifecycleOrderUnderFaults: a mixed stream of every kind (a quarter of the messages
// beyond /users/track) against a simulator answering 15% 5xx and 5% 429 on every endpoint:
// everything is delivered, and every user's operation log shows their records in Kafka
// order across endpoints; deleted users are gone, subscription states and attributes are
// the last write.
func TestLifecycleOrderUnderFaults(t *testing.T) {
	k := newTestKafka(t, 12)
	sim := newSim(t, nil)
	sim.Sim.SetFaults(brazesim.Faults{Error5xxRate: 0.15, Rate429: 0.05})
	exp := newExpectation()
	produceN(t, k, synth.New(synth.Options{Users: 120, LifecycleShare: 0.25, InvalidShare: 0.01, Seed: 77}), 1000, exp)
	exp.requireLifecycle(t)
	cfg := lifecycleConfig(k, sim, "lc-faults")
	cfg.BatchMaxObjects = 10 // more requests, so faults hit often
	cfg.BreakerFailures = 20
	cfg.BreakerOpenFor = 300 * time.Millisecond
	start := time.Now()
	p, stop := startWorker(t, cfg)
	waitFor(t, 120*time.Second, "all settled", func() bool {
		s := p.Stats().Snapshot()
		return s.RecordsDelivered+s.DeadLetteredAll >= int64(exp.total)
	})
	took := time.Since(start)
	stop()
	s := p.Stats().Snapshot()
	if s.RecordsDelivered != int64(exp.deliver) || s.DeadLetteredAll != int64(exp.invalid+exp.badJSON) {
		t.Errorf("delivered %d, dead-lettered %d (%v); want %d and %d", s.RecordsDelivered, s.DeadLetteredAll, s.DeadLettered, exp.deliver, exp.invalid+exp.badJSON)
	}
	if rep := checkDeliveries(t, sim.Sim, exp); rep.missing != 0 || rep.duplicates != 0 || len(rep.orderErrs) != 0 || len(rep.attrErrs) != 0 {
		t.Errorf("tracks: missing %d, duplicates %d, order %v, attributes %v", rep.missing, rep.duplicates, rep.orderErrs, rep.attrErrs)
	}
	rep := checkLifecycle(t, sim.Sim, exp, false)
	if !rep.ok() || rep.dupOps != 0 {
		describeLost(t, sim.Sim, rep)
		t.Errorf("per-user operations: %s", rep)
	}
	checkEndpointEntries(t, sim.Sim.Stats(), exp, false)
	st := sim.Sim.Stats()
	t.Logf("%d records (%v beyond track) in %s: %d requests (%v by status), %d retries; %d users' logs in Kafka order, %d deleted users gone",
		exp.total, exp.lifecycleCounts(), took.Round(time.Millisecond), st.Requests, st.ByStatus, s.Retries, len(exp.tokens), len(exp.deleted))
}

// TestDeleteWaitsForRetriedTrack: a user's delete arrives while their /users/track request is
// being retried (every /users/track request fails with a 5xx): the delete waits for it, other
// users' records of other endpoints go on meanwhile, and once Braze recovers the track is
// applied and then the delete: the profile does not exist at the end.
func TestDeleteWaitsForRetriedTrack(t *testing.T) {
	k := newTestKafka(t, 4)
	sim := newSim(t, nil)
	cfg := lifecycleConfig(k, sim, "lc-delretry")
	cfg.BreakerFailures = 1000 // the failing /users/track must not stop the other endpoints
	cfg.RetryMax = 200 * time.Millisecond
	p, stop := startWorker(t, cfg)
	group := synth.SubscriptionGroups[1]
	sendRaw(t, k,
		"del-v", `{"type":"attributes","data":{"external_id":"del-v","plan":"free"}}`,
		"del-w", `{"type":"attributes","data":{"external_id":"del-w","plan":"free"}}`)
	waitFor(t, 30*time.Second, "del-v and del-w created", func() bool { return p.Stats().Snapshot().RecordsDelivered >= 2 })

	sim.Sim.SetFaults(brazesim.Faults{Endpoints: map[string]brazesim.EndpointFaults{"track": {Error5xxRate: 1}}})
	sendRaw(t, k,
		"del-u", `{"type":"attributes","data":{"external_id":"del-u","seq":0}}`,
		"del-u", `{"type":"event","data":{"external_id":"del-u","name":"checkout","time":"2026-11-25T10:00:00Z","properties":{"seq":1}}}`,
		"del-u", `{"type":"delete","data":{"external_id":"del-u"}}`,
		"del-v", `{"type":"subscription","data":{"subscription_group_id":"`+group+`","subscription_state":"subscribed","external_id":"del-v"}}`,
		"del-w", `{"type":"delete","data":{"external_id":"del-w"}}`)
	// Other users go on while del-u's track request is retried.
	waitFor(t, 30*time.Second, "other users' subscription and delete applied", func() bool {
		v, _ := sim.Sim.User("external_id", "del-v")
		_, wExists := sim.Sim.User("external_id", "del-w")
		return v.Subscriptions[group] == "subscribed" && !wExists
	})
	waitFor(t, 30*time.Second, "del-u's track retried", func() bool { return p.Stats().Snapshot().Retries >= 3 })
	time.Sleep(500 * time.Millisecond) // more retries: the delete must still wait
	if ops := sim.Sim.Ops("external_id", "del-u"); len(ops) != 0 {
		t.Fatalf("while del-u's track request failed, del-u's operations %v were applied (the delete overtook the track)", ops)
	}
	sim.Sim.SetFaults(brazesim.Faults{})
	waitFor(t, 30*time.Second, "all settled", func() bool { return p.Stats().Snapshot().RecordsDelivered >= 7 })
	stop()
	if _, ok := sim.Sim.User("external_id", "del-u"); ok {
		t.Error("del-u exists after its delete: the retried track was applied after the delete")
	}
	ops := sim.Sim.Ops("external_id", "del-u")
	var eps []string
	for _, o := range ops {
		eps = append(eps, o.Endpoint)
	}
	if len(eps) != 2 || eps[0] != "track" || eps[1] != "delete" {
		t.Errorf("del-u's operations %v, want track then delete", eps)
	}
	if s := p.Stats().Snapshot(); s.DeadLetteredAll != 0 {
		t.Errorf("dead-lettered %d", s.DeadLetteredAll)
	}
	t.Logf("del-u's delete waited for %d retries of its track request; other users were not held", p.Stats().Snapshot().Retries)
}

// rejectCases are, per endpoint kind, records the simulator rejects (their identifier holds
// the reject marker "poison") and records the decoder rejects, beside good ones.
var rejectCases = []struct {
	kind, endpoint  string
	good            []string
	poison, invalid string
}{
	{"alias", "alias",
		[]string{`{"alias_name":"ok-a1","alias_label":"crm_id"}`, `{"alias_name":"ok-a2","alias_label":"crm_id"}`},
		`{"alias_name":"poison-a","alias_label":"crm_id"}`, `{"alias_name":"bad-a"}`},
	{"identify", "identify",
		[]string{`{"external_id":"ok-i1","user_alias":{"alias_name":"x1","alias_label":"anonymous_id"}}`, `{"external_id":"ok-i2","user_alias":{"alias_name":"x2","alias_label":"anonymous_id"}}`},
		`{"external_id":"poison-i","user_alias":{"alias_name":"x3","alias_label":"anonymous_id"}}`, `{"user_alias":{"alias_name":"x4","alias_label":"anonymous_id"}}`},
	{"merge", "merge",
		[]string{`{"identifier_to_merge":{"external_id":"d1"},"identifier_to_keep":{"external_id":"ok-m1"}}`, `{"identifier_to_merge":{"external_id":"d2"},"identifier_to_keep":{"external_id":"ok-m2"}}`},
		`{"identifier_to_merge":{"external_id":"d3"},"identifier_to_keep":{"external_id":"poison-m"}}`, `{"identifier_to_merge":{"external_id":"d4"}}`},
	{"subscription", "subscription",
		[]string{`{"subscription_group_id":"g-1","subscription_state":"subscribed","external_id":"ok-s1"}`, `{"subscription_group_id":"g-1","subscription_state":"subscribed","external_id":"ok-s2"}`},
		`{"subscription_group_id":"g-1","subscription_state":"subscribed","external_id":"poison-s"}`, `{"subscription_group_id":"g-1","subscription_state":"maybe","external_id":"ok-s3"}`},
	{"delete", "delete",
		[]string{`{"external_id":"ok-d1"}`, `{"external_id":"ok-d2"}`},
		`{"external_id":"poison-d"}`, `{"external_id":"ok-d3","braze_id":"b-3"}`},
}

// TestLifecycleRejectionsDeadLettered: for each endpoint beyond /users/track, the simulator
// rejects requests holding a marked entry (400, nothing applied) and the decoder rejects a
// malformed entry: the marked record is dead-lettered braze_rejected, the malformed one
// invalid_record, each letter carrying the record as an envelope of its own type; the
// endpoint's good records, sent in the same requests, are delivered.
func TestLifecycleRejectionsDeadLettered(t *testing.T) {
	k := newTestKafka(t, 3)
	sim := newSim(t, nil)
	faults := brazesim.Faults{Endpoints: map[string]brazesim.EndpointFaults{}}
	var kv []string
	good := 0
	for _, c := range rejectCases {
		faults.Endpoints[c.endpoint] = brazesim.EndpointFaults{RejectMarker: "poison"}
		env := func(data string) string { return `{"type":"` + c.kind + `","data":` + data + `}` }
		// One key per kind: the records share a lane, so the poisoned one travels in a
		// request with the good ones and is found by splitting.
		for _, g := range c.good[:1] {
			kv = append(kv, "rej-"+c.kind, env(g))
		}
		kv = append(kv, "rej-"+c.kind, env(c.poison), "rej-"+c.kind, env(c.invalid))
		for _, g := range c.good[1:] {
			kv = append(kv, "rej-"+c.kind, env(g))
		}
		good += len(c.good)
	}
	sim.Sim.SetFaults(faults)
	sendRaw(t, k, kv...)
	p, stop := startWorker(t, lifecycleConfig(k, sim, "lc-reject"))
	n := int64(good + 2*len(rejectCases))
	waitFor(t, 60*time.Second, "all settled", func() bool {
		s := p.Stats().Snapshot()
		return s.RecordsDelivered+s.DeadLetteredAll >= n
	})
	stop()
	s := p.Stats().Snapshot()
	if s.RecordsDelivered != int64(good) || s.DeadLettered[dlq.ReasonBrazeRejected] != int64(len(rejectCases)) ||
		s.DeadLettered[dlq.ReasonInvalidRecord] != int64(len(rejectCases)) {
		t.Errorf("delivered %d (want %d), dead-lettered %v (want %d braze_rejected and %d invalid_record)", s.RecordsDelivered, good, s.DeadLettered, len(rejectCases), len(rejectCases))
	}
	got := map[string]map[string]int{} // type -> reason -> count
	for _, m := range readDLQ(t, k) {
		var v struct {
			Type string          `json:"type"`
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(m.Value, &v); err != nil {
			t.Errorf("dead letter value is not an envelope: %q", m.Value)
			continue
		}
		reason := header(m, dlq.HeaderReason)
		if got[v.Type] == nil {
			got[v.Type] = map[string]int{}
		}
		got[v.Type][reason]++
		if header(m, dlq.HeaderError) == "" || header(m, dlq.HeaderSourceOffset) == "" {
			t.Errorf("%s dead letter without dlq.error or source offset: %v", v.Type, m.Headers)
		}
		switch reason {
		case string(dlq.ReasonBrazeRejected):
			if !strings.Contains(string(v.Data), "poison") {
				t.Errorf("%s: braze_rejected letter for a good record: %s", v.Type, v.Data)
			}
		case string(dlq.ReasonInvalidRecord):
			if strings.Contains(string(v.Data), "poison") {
				t.Errorf("%s: invalid_record letter for the poisoned record: %s", v.Type, v.Data)
			}
		}
	}
	for _, c := range rejectCases {
		if g := got[c.kind]; g[string(dlq.ReasonBrazeRejected)] != 1 || g[string(dlq.ReasonInvalidRecord)] != 1 || len(g) != 2 {
			t.Errorf("%s: dead letters by reason %v, want one braze_rejected and one invalid_record", c.kind, g)
		}
	}
	st := sim.Sim.Stats()
	for _, c := range rejectCases {
		if e := st.Endpoints[c.endpoint]; e.Entries != int64(len(c.good)) || e.ByStatus[400] == 0 {
			t.Errorf("simulator %s: %d entries applied (want %d), answers %v (want a 400)", c.endpoint, e.Entries, len(c.good), e.ByStatus)
		}
	}
	t.Logf("dead letters by type and reason: %v", got)
}

// TestKill9Lifecycle kills the worker with SIGKILL twice (at 30% and 65% of the events and
// purchases delivered) in a mixed stream of every kind and restarts it: nothing is lost (every record shows in its profile at least once), every
// delete is applied (deleted users are gone, the delete their last operation), and the final
// state is the last write per user (attributes, subscription states).
func TestKill9Lifecycle(t *testing.T) {
	k := newTestKafka(t, 12)
	// 20 ms per request and 4 lanes: the stream takes seconds, so the kills land mid-stream
	// after commits.
	sim := newSim(t, func(c *brazesim.Config) { c.Latency = 20 * time.Millisecond })
	exp := newExpectation()
	produceN(t, k, synth.New(synth.Options{Users: 300, LifecycleShare: 0.2, InvalidShare: 0.01, Seed: 19}), 4000, exp)
	exp.requireLifecycle(t)
	cfg := lifecycleConfig(k, sim, "lc-kill9")
	cfg.Lanes = 4
	cfg.KafkaSessionTimeout = 6 * time.Second
	cfg.KafkaDrainTimeout = 3 * time.Second
	// The child workers read these from the environment (childEnv does not render them).
	t.Setenv("ENDPOINTS", allEndpoints())
	t.Setenv("ENDPOINT_SPACING", testSpacing)
	// Paced, so that a kill lands with work left even when a loaded machine polls the
	// simulator slowly (unpaced, the stream after the first restart took a fraction of a
	// second and once ended between two polls).
	t.Setenv("BRAZE_RATE_LIMIT", "20")
	t.Setenv("BRAZE_RATE_BURST", "2")
	t.Setenv("BRAZE_USERS_RATE_LIMIT", "1200")
	t.Setenv("BRAZE_SUBSCRIPTION_RATE_LIMIT", "1200")

	start := time.Now()
	var phases []string
	want := countSeqs(exp)
	var children []*exec.Cmd
	for cycle, at := range []float64{0.3, 0.65} {
		child := startChild(t, cfg, fmt.Sprintf("lc-worker-%d", cycle))
		children = append(children, child)
		waitJoined(t, child)
		// Kill once this share of the events and purchases reached Braze at least once.
		waitFor(t, 60*time.Second, fmt.Sprintf("%.0f%% delivered", 100*at), func() bool {
			return want-checkDeliveries(t, sim.Sim, exp).missing >= int(at*float64(want))
		})
		if err := child.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = child.Wait()
		phases = append(phases, fmt.Sprintf("kill %d at %s", cycle, time.Since(start).Round(time.Millisecond)))
	}
	time.Sleep(100 * time.Millisecond) // requests in flight at the kill land
	if rep := checkDeliveries(t, sim.Sim, exp); rep.missing == 0 {
		t.Fatal("everything was delivered before the last kill; the test proves nothing")
	}
	children = append(children, startChild(t, cfg, "lc-worker-final"))
	var rep lifecycleReport
	var tracks deliveryReport
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		tracks = checkDeliveries(t, sim.Sim, exp)
		rep = checkLifecycle(t, sim.Sim, exp, true)
		if tracks.missing == 0 && rep.ok() {
			break
		}
		if time.Now().After(deadline) {
			describeLost(t, sim.Sim, rep)
			t.Fatalf("not settled after 90 s: %d events/purchases missing; %s", tracks.missing, rep)
		}
	}
	if len(tracks.attrErrs) != 0 {
		t.Errorf("attributes after kill -9: %v", tracks.attrErrs)
	}
	checkEndpointEntries(t, sim.Sim.Stats(), exp, true)
	wantDLQ := exp.invalid + exp.rejected + exp.badJSON
	waitFor(t, 30*time.Second, "dead letters", func() bool { return len(readDLQ(t, k)) >= wantDLQ })
	// Overlaps are possible here and not a fault: a replayed anonymous bundle is ordered by
	// its alias, which after the identify names the user's own profile, so it may travel
	// beside the user's records (synth/lifecycle.go; the simulator's log keeps a request
	// applied out of arrival order as an entry of its own, brazesim.Op).
	t.Logf("2 kill -9 cycles (%v, settled at %s), %d records (%v beyond track) in %d requests: nothing lost, %d deleted users gone; %d duplicate deliveries of %d events/purchases, %d operations of other endpoints applied again; %d overlapping /users/track requests on one profile; %d settled messages sent again on resume to keep a user's order",
		phases, time.Since(start).Round(time.Millisecond), exp.total, exp.lifecycleCounts(), sim.Sim.Stats().Requests, len(exp.deleted), tracks.duplicates, countSeqs(exp), rep.dupOps, sim.Sim.Stats().SameUserConcurrency, orderRedeliveries(t, children))
}

// orderRedeliveries sums what the workers' logs say they sent again on resume, though the
// offset map said it was settled, because an earlier message of the same user was sent again
// (pipeline/resume.go).
func orderRedeliveries(t *testing.T, children []*exec.Cmd) int {
	t.Helper()
	n := 0
	for _, c := range children {
		b, err := os.ReadFile(c.Stdout.(*os.File).Name())
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			var e struct {
				Msg      string `json:"msg"`
				Messages int    `json:"messages"`
			}
			if json.Unmarshal([]byte(line), &e) == nil && strings.HasPrefix(e.Msg, "offset map: settled messages delivered again") {
				n += e.Messages
			}
		}
	}
	return n
}

// TestRealKafkaLifecycleMixed: a mixed stream of every kind through a real Apache Kafka
// (scripts/kafka.sh) with a little 5xx: nothing lost, every user's operations in Kafka order.
func TestRealKafkaLifecycleMixed(t *testing.T) {
	k := realKafka(t, 6)
	sim := newSim(t, nil)
	sim.Sim.SetFaults(brazesim.Faults{Error5xxRate: 0.05})
	exp := newExpectation()
	produceN(t, k, synth.New(synth.Options{Users: 200, LifecycleShare: 0.2, InvalidShare: 0.01, RejectShare: 0.01, Seed: 29}), 2500, exp)
	exp.requireLifecycle(t)
	p, stop := startWorker(t, lifecycleConfig(k, sim, "lc-real"))
	waitFor(t, 120*time.Second, "all settled", func() bool {
		s := p.Stats().Snapshot()
		return s.RecordsDelivered+s.DeadLetteredAll >= int64(exp.total)
	})
	stop()
	s := p.Stats().Snapshot()
	if s.RecordsDelivered != int64(exp.deliver) || s.DeadLetteredAll != int64(exp.invalid+exp.rejected+exp.badJSON) {
		t.Errorf("delivered %d, dead-lettered %d (%v); want %d and %d", s.RecordsDelivered, s.DeadLetteredAll, s.DeadLettered, exp.deliver, exp.invalid+exp.rejected+exp.badJSON)
	}
	if rep := checkDeliveries(t, sim.Sim, exp); rep.missing != 0 || rep.duplicates != 0 || len(rep.orderErrs) != 0 || len(rep.attrErrs) != 0 {
		t.Errorf("tracks: missing %d, duplicates %d, order %v, attributes %v", rep.missing, rep.duplicates, rep.orderErrs, rep.attrErrs)
	}
	if rep := checkLifecycle(t, sim.Sim, exp, false); !rep.ok() || rep.dupOps != 0 {
		describeLost(t, sim.Sim, rep)
		t.Errorf("per-user operations: %s", rep)
	}
	checkEndpointEntries(t, sim.Sim.Stats(), exp, false)
	if dl := readDLQ(t, k); len(dl) != exp.invalid+exp.rejected+exp.badJSON {
		t.Errorf("DLQ has %d records, want %d", len(dl), exp.invalid+exp.rejected+exp.badJSON)
	}
	t.Logf("real Kafka: %d records (%v beyond track) delivered in per-user order; %d deleted users gone", exp.total, exp.lifecycleCounts(), len(exp.deleted))
}

// checkEndpointEntries compares the entries the simulator applied per endpoint beyond
// /users/track with the deliverable records produced (at least that many with dupsOK).
func checkEndpointEntries(t *testing.T, st brazesim.Stats, exp *expectation, dupsOK bool) {
	t.Helper()
	for e := endpoint.AliasNew; e < endpoint.Count; e++ {
		got, want := st.Endpoints[e.Name()].Entries, int64(exp.byEndpoint[e])
		if got < want || (!dupsOK && got != want) {
			t.Errorf("simulator applied %d %s entries, want %d", got, e.Name(), want)
		}
	}
}

// checkEndpointCounters compares the pipeline's per-endpoint delivered counters.
func checkEndpointCounters(t *testing.T, s pipeline.Snapshot, want map[endpoint.Endpoint]int64) {
	t.Helper()
	for e, n := range want {
		if got, dead := endpointSettled(s, e); got != n || dead != 0 {
			t.Errorf("pipeline: %s delivered %d records and dead-lettered %d, want %d and 0", e.Name(), got, dead, n)
		}
	}
}

// TestLifecycleEndpointDisabledAndForbidden: a record for an endpoint missing from ENDPOINTS
// is dead-lettered invalid_record, naming ENDPOINTS, while the enabled endpoints deliver; an
// endpoint whose key lacks the permission (403) is an outage, not a rejection: the worker
// halts, nothing is dead-lettered for it, and the records are delivered once the permission
// is granted.
func TestLifecycleEndpointDisabledAndForbidden(t *testing.T) {
	k := newTestKafka(t, 3)
	sim := newSim(t, nil)
	sim.Sim.SetFaults(brazesim.Faults{Endpoints: map[string]brazesim.EndpointFaults{"delete": {Forbidden: true}}})
	cfg := lifecycleConfig(k, sim, "lc-disabled")
	cfg.Endpoints = []string{"track", "subscription", "delete"}
	cfg.HaltProbeMax = time.Second
	group := synth.SubscriptionGroups[0]
	sendRaw(t, k,
		"dis-u", `{"type":"attributes","data":{"external_id":"dis-u","plan":"free"}}`,
		"dis-u", `{"type":"subscription","data":{"subscription_group_id":"`+group+`","subscription_state":"subscribed","external_id":"dis-u"}}`,
		"dis-u", `{"type":"alias","data":{"alias_name":"crm-dis","alias_label":"crm_id","external_id":"dis-u"}}`,
		"dis-v", `{"type":"attributes","data":{"external_id":"dis-v","plan":"free"}}`,
		"dis-v", `{"type":"delete","data":{"external_id":"dis-v"}}`)
	p, stop := startWorker(t, cfg)
	waitFor(t, 30*time.Second, "the forbidden delete refused", func() bool { return sim.Sim.Stats().Endpoints["delete"].ByStatus[403] > 0 })
	time.Sleep(time.Second) // probes go on: still nothing dead-lettered for the 403s
	if s := p.Stats().Snapshot(); s.DeadLettered[dlq.ReasonBrazeRejected] != 0 || s.DeadLetteredAll > 1 {
		t.Fatalf("while /users/delete answered 403: dead-lettered %v, want at most the disabled alias", s.DeadLettered)
	}
	if _, ok := sim.Sim.User("external_id", "dis-v"); !ok {
		t.Fatal("dis-v deleted while /users/delete answered 403")
	}
	sim.Sim.SetFaults(brazesim.Faults{})
	waitFor(t, 30*time.Second, "the delete applied once permitted", func() bool {
		_, ok := sim.Sim.User("external_id", "dis-v")
		return !ok
	})
	waitFor(t, 30*time.Second, "all settled", func() bool {
		s := p.Stats().Snapshot()
		return s.RecordsDelivered+s.DeadLetteredAll >= 5
	})
	stop()
	if u, _ := sim.Sim.User("external_id", "dis-u"); u.Subscriptions[group] != "subscribed" {
		t.Errorf("dis-u's subscription %v", u.Subscriptions)
	}
	if s := p.Stats().Snapshot(); s.RecordsDelivered != 4 || s.DeadLetteredAll != 1 || s.DeadLettered[dlq.ReasonInvalidRecord] != 1 {
		t.Errorf("delivered %d, dead-lettered %v; want 4 and one invalid_record", s.RecordsDelivered, s.DeadLettered)
	}
	dl := readDLQ(t, k)
	if len(dl) != 1 {
		t.Fatalf("DLQ has %d letters, want 1", len(dl))
	}
	if e := header(dl[0], dlq.HeaderError); header(dl[0], dlq.HeaderReason) != string(dlq.ReasonInvalidRecord) || !strings.Contains(e, "ENDPOINTS") ||
		!strings.Contains(string(dl[0].Value), `"type":"alias"`) {
		t.Errorf("disabled endpoint's dead letter: reason %q error %q value %s", header(dl[0], dlq.HeaderReason), e, dl[0].Value)
	}
	if _, ok := sim.Sim.User("user_alias", "crm_id\x00crm-dis"); ok {
		t.Error("the alias of a disabled endpoint reached Braze")
	}
}
