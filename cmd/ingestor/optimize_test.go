package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/braze-ingestor/braze-ingestor/brazesim"
	"github.com/braze-ingestor/braze-ingestor/dedup/redistest"
	"github.com/braze-ingestor/braze-ingestor/pipeline"
	"github.com/braze-ingestor/braze-ingestor/synth"
)

// profileStream is a realistic attribute stream: users re-sending a few of ~8 profile
// attributes, most of them unchanged since the last time (as app and backend integrations
// do), with a few increments and removals.
type profileStream struct {
	r     *rand.Rand
	users int
	state []map[string]string // per user: attribute -> current JSON value
	n     int
}

var profileAttrs = []struct {
	key    string
	values []string
}{
	{"plan", []string{`"free"`, `"pro"`, `"team"`}},
	{"country", []string{`"US"`, `"DE"`, `"FR"`, `"BR"`, `"JP"`}},
	{"loyalty_tier", []string{`"bronze"`, `"silver"`, `"gold"`, `"platinum"`}},
	{"app_version", []string{`"4.1.0"`, `"4.2.0"`, `"4.3.1"`}},
	{"last_screen", []string{`"home"`, `"search"`, `"cart"`, `"product"`, `"profile"`, `"settings"`}},
	{"push_enabled", []string{`true`, `false`}},
	{"favorite_categories", []string{`["shoes"]`, `["shoes","bags"]`, `["books"]`, `[]`}},
	{"city", []string{`"Austin"`, `"Berlin"`, `"Lyon"`, `"Recife"`, `"Osaka"`}},
}

func newProfileStream(users int, seed uint64) *profileStream {
	s := &profileStream{r: rand.New(rand.NewPCG(seed, seed+1)), users: users, state: make([]map[string]string, users)}
	for i := range s.state {
		s.state[i] = map[string]string{}
		for _, a := range profileAttrs {
			s.state[i][a.key] = a.values[s.r.IntN(len(a.values))]
		}
	}
	return s
}

// next returns one attributes envelope keyed by its user: 3-5 of the attributes, each kept
// at the user's current value with probability 0.8; 3% of records also increment a counter
// and 2% remove an attribute.
func (s *profileStream) next() kafka.Message {
	s.n++
	u := s.r.IntN(s.users)
	user := fmt.Sprintf("pu-%05d", u)
	var b strings.Builder
	fmt.Fprintf(&b, `{"type":"attributes","data":{"external_id":%q`, user)
	idx := s.r.Perm(len(profileAttrs))[:3+s.r.IntN(3)]
	sort.Ints(idx)
	for _, i := range idx {
		a := profileAttrs[i]
		if s.r.Float64() < 0.2 {
			s.state[u][a.key] = a.values[s.r.IntN(len(a.values))]
		}
		fmt.Fprintf(&b, `,%q:%s`, a.key, s.state[u][a.key])
	}
	switch x := s.r.Float64(); {
	case x < 0.03:
		fmt.Fprintf(&b, `,"sessions":{"inc":%d}`, 1+s.r.IntN(3))
	case x < 0.05:
		b.WriteString(`,"promo_code":null`)
	case x < 0.08:
		fmt.Fprintf(&b, `,"promo_code":"P%d"`, s.r.IntN(3))
	}
	b.WriteString(`}}`)
	return kafka.Message{Key: []byte(user), Value: []byte(b.String())}
}

// eventStream produces events with envelope ids, replaying a share of earlier ids (as a
// producer retry or an upstream replay does).
func eventStream(n, users int, replay float64, seed uint64) (msgs []kafka.Message, unique int) {
	r := rand.New(rand.NewPCG(seed, seed+7))
	for i := 0; i < n; i++ {
		if len(msgs) > 0 && r.Float64() < replay {
			msgs = append(msgs, msgs[r.IntN(len(msgs))])
			continue
		}
		user := fmt.Sprintf("eu-%05d", r.IntN(users))
		unique++
		msgs = append(msgs, kafka.Message{Key: []byte(user), Value: []byte(fmt.Sprintf(
			`{"type":"event","id":"evt-%d","data":{"external_id":%q,"name":"viewed_product","time":"2026-11-25T10:00:00Z","properties":{"n":%d}}}`, unique, user, unique))})
	}
	return msgs, unique
}

func produceMsgs(t testing.TB, k *testKafka, msgs []kafka.Message) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers...), Topic: k.Topic, Balancer: &kafka.Hash{}, BatchSize: 500,
		BatchTimeout: 5 * time.Millisecond, RequiredAcks: kafka.RequireAll}
	defer w.Close()
	for i := 0; i < len(msgs); i += 500 {
		j := min(i+500, len(msgs))
		if err := w.WriteMessages(context.Background(), msgs[i:j]...); err != nil {
			t.Fatal(err)
		}
	}
}

// streamRun is the outcome of one worker run over a stream.
type streamRun struct {
	records    int
	requests   int64
	objects    int64
	dataPoints int64
	events     int64
	profiles   map[string]map[string]any
	history    map[string]string // per user: events and purchases (name/product and properties), in order
	stats      pipeline.Snapshot
	opt        [5]int64 // suppressed attributes, suppressed records, coalesced objects, coalesced writes, duplicates
}

// runStream runs a worker configured by mut over msgs (on their own topic and simulator) until
// every record is settled.
func runStream(t *testing.T, msgs []kafka.Message, mut func(*Config)) streamRun {
	t.Helper()
	k := newTestKafka(t, 6)
	sim := newSim(t, func(c *brazesim.Config) { c.Latency = 0 })
	produceMsgs(t, k, msgs)
	cfg := testConfig(k, sim, "opt")
	if mut != nil {
		mut(cfg)
	}
	p, stop := startWorker(t, cfg)
	waitFor(t, 120*time.Second, "stream settled", func() bool {
		s := p.Stats().Snapshot()
		return s.RecordsDelivered+s.DeadLetteredAll >= int64(len(msgs))
	})
	stop()
	st := sim.Sim.Stats()
	run := streamRun{records: len(msgs), requests: st.ByEndpoint["/users/track"], objects: st.Objects, dataPoints: st.DataPoints,
		events: st.Events, profiles: map[string]map[string]any{}, stats: p.Stats().Snapshot()}
	run.history = map[string]string{}
	for _, u := range sim.Sim.Users() {
		run.profiles[u.ExternalID] = u.Attributes
		var h strings.Builder
		for _, e := range u.Events {
			fmt.Fprint(&h, e.Name, e.Properties, ";")
		}
		for _, p := range u.Purchases {
			fmt.Fprint(&h, p.ProductID, p.Properties, ";")
		}
		run.history[u.ExternalID] = h.String()
	}
	o := &p.Stats().Optimize
	run.opt = [5]int64{o.SuppressedAttributes.Load(), o.SuppressedRecords.Load(), o.CoalescedObjects.Load(), o.CoalescedWrites.Load(), o.DuplicatesSkipped.Load()}
	if run.stats.DeadLetteredAll != 0 {
		t.Fatalf("%d records dead-lettered", run.stats.DeadLetteredAll)
	}
	return run
}

func (r streamRun) per1000(v int64) float64 { return float64(v) * 1000 / float64(r.records) }

func profileMsgs(users, n int, seed uint64) []kafka.Message {
	s := newProfileStream(users, seed)
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = s.next()
	}
	return msgs
}

func diffProfiles(a, b map[string]map[string]any) []string {
	var out []string
	for user, pa := range a {
		if pb, ok := b[user]; !ok {
			out = append(out, user+": missing")
		} else if !reflect.DeepEqual(pa, pb) {
			out = append(out, fmt.Sprintf("%s: %v != %v", user, pa, pb))
		}
		if len(out) > 5 {
			break
		}
	}
	if len(a) != len(b) {
		out = append(out, fmt.Sprintf("%d users != %d users", len(a), len(b)))
	}
	return out
}

func coalesceOn(c *Config) { c.CoalesceAttributes = true }
func suppressOn(c *Config) { c.SuppressUnchanged = true }
func bothOn(c *Config)     { coalesceOn(c); suppressOn(c) }

// TestOptimizedProfilesUnchanged is the optimization bar (docs/optimizations.md): on a realistic attribute stream,
// coalescing and suppression together cut attribute data points by at least half, and the
// final user profiles in the simulator are exactly those of a run without them.
func TestOptimizedProfilesUnchanged(t *testing.T) {
	msgs := profileMsgs(2000, 20000, 9)
	off := runStream(t, msgs, nil)
	on := runStream(t, msgs, bothOn)
	if d := diffProfiles(off.profiles, on.profiles); len(d) > 0 {
		t.Fatalf("final profiles differ with coalescing+suppression:\n%s", strings.Join(d, "\n"))
	}
	if on.dataPoints*2 > off.dataPoints {
		t.Fatalf("data points %d with coalescing+suppression vs %d without: less than half saved", on.dataPoints, off.dataPoints)
	}
	if on.stats.RecordsDelivered != int64(len(msgs)) || off.stats.RecordsDelivered != int64(len(msgs)) {
		t.Fatalf("delivered %d / %d of %d", off.stats.RecordsDelivered, on.stats.RecordsDelivered, len(msgs))
	}
	t.Logf("per 1,000 records: off %.1f requests %.0f data points; coalesce+suppress %.1f requests %.0f data points",
		off.per1000(off.requests), off.per1000(off.dataPoints), on.per1000(on.requests), on.per1000(on.dataPoints))
}

// TestCoalescingSameOutcomeMixed: mixed streams — the profile stream shuffled with events,
// and the end-to-end suite's synthetic traffic (envelopes and bundles of attributes, events and
// purchases; no rejected records) — end in the same profiles and the same events with
// coalescing on.
func TestCoalescingSameOutcomeMixed(t *testing.T) {
	msgs := profileMsgs(300, 3000, 11)
	ev, _ := eventStream(1000, 300, 0, 5)
	msgs = append(msgs, ev...)
	rand.New(rand.NewPCG(1, 1)).Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
	gen := synth.New(synth.Options{Users: 100, Seed: 4})
	for i := 0; i < 3000; i++ {
		m := gen.Next()
		msgs = append(msgs, kafka.Message{Key: m.Key, Value: m.Value})
	}
	off := runStream(t, msgs, nil)
	on := runStream(t, msgs, coalesceOn)
	if d := diffProfiles(off.profiles, on.profiles); len(d) > 0 {
		t.Fatalf("final profiles differ with coalescing:\n%s", strings.Join(d, "\n"))
	}
	if !reflect.DeepEqual(off.history, on.history) || on.opt[2] == 0 {
		t.Fatalf("events/purchases differ (%d vs %d users) or nothing coalesced (%d)", len(off.history), len(on.history), on.opt[2])
	}
}

// TestSharedStateAcrossWorkers: worker A delivers attributes and events with ids; worker B (a
// new group, so it reads everything again) shares A's suppression and de-duplication state
// through Redis and sends nothing that would change a profile or double an event.
func TestSharedStateAcrossWorkers(t *testing.T) {
	url := redistest.Start(t)
	var msgs []kafka.Message
	for i := 0; i < 50; i++ {
		user := fmt.Sprintf("su-%03d", i)
		msgs = append(msgs, kafka.Message{Key: []byte(user), Value: []byte(fmt.Sprintf(
			`{"type":"attributes","data":{"external_id":%q,"plan":"pro","city":"Lyon","n":%d}}`, user, i))})
	}
	for i := 0; i < 100; i++ {
		user := fmt.Sprintf("su-%03d", i%50)
		msgs = append(msgs, kafka.Message{Key: []byte(user), Value: []byte(fmt.Sprintf(
			`{"type":"event","id":"sx-%d","data":{"external_id":%q,"name":"e","time":"2026-11-25T10:00:00Z"}}`, i, user))})
	}
	k := newTestKafka(t, 4)
	sim := newSim(t, nil)
	produceMsgs(t, k, msgs)
	shared := func(c *Config) {
		c.SuppressUnchanged, c.DedupEvents, c.RedisURL = true, true, url
	}
	run := func(group string) *pipeline.Pipeline {
		cfg := testConfig(k, sim, group)
		shared(cfg)
		p, stop := startWorker(t, cfg)
		waitFor(t, 60*time.Second, group+" settled", func() bool {
			s := p.Stats().Snapshot()
			return s.RecordsDelivered+s.DeadLetteredAll >= int64(len(msgs))
		})
		stop()
		return p
	}
	a := run("worker-a")
	afterA := sim.Sim.Stats()
	if afterA.Events != 100 || afterA.DataPoints != 100+50*3 {
		t.Fatalf("worker A: %d events, %d data points (want 100, 250)", afterA.Events, afterA.DataPoints)
	}
	if a.Stats().Optimize.DuplicatesSkipped.Load() != 0 {
		t.Fatalf("worker A skipped records")
	}
	b := run("worker-b")
	afterB := sim.Sim.Stats()
	if afterB.Events != afterA.Events || afterB.DataPoints != afterA.DataPoints {
		t.Fatalf("worker B changed Braze: events %d -> %d, data points %d -> %d", afterA.Events, afterB.Events, afterA.DataPoints, afterB.DataPoints)
	}
	o := &b.Stats().Optimize
	if o.DuplicatesSkipped.Load() != 100 || o.SuppressedRecords.Load() != 50 || o.SuppressedAttributes.Load() != 150 {
		t.Fatalf("worker B: skipped %d, suppressed records %d, attributes %d (want 100, 50, 150)",
			o.DuplicatesSkipped.Load(), o.SuppressedRecords.Load(), o.SuppressedAttributes.Load())
	}
	if afterB.ByEndpoint["/users/track"] != afterA.ByEndpoint["/users/track"] {
		t.Fatalf("worker B sent %d requests", afterB.ByEndpoint["/users/track"]-afterA.ByEndpoint["/users/track"])
	}
}

// TestDataPointsReport measures requests and data points per 1,000 input records with each
// optimization off and on (the BENCHMARKS.md table). Set OPT_REPORT=1 to run it.
func TestDataPointsReport(t *testing.T) {
	if os.Getenv("OPT_REPORT") == "" {
		t.Skip("set OPT_REPORT=1 to measure (about a minute)")
	}
	msgs := profileMsgs(2000, 30000, 9)
	t.Logf("attribute stream: %d records, 2,000 users, 3-5 of 8 attributes per record, 80%% unchanged, 3%% inc, 5%% promo_code set/null", len(msgs))
	t.Logf("| configuration | requests / 1k records | objects / 1k | data points / 1k | vs off |")
	t.Logf("| --- | ---: | ---: | ---: | ---: |")
	var base streamRun
	for _, c := range []struct {
		name string
		mut  func(*Config)
	}{{"off", nil}, {"coalescing", coalesceOn}, {"suppression", suppressOn}, {"coalescing + suppression", bothOn}} {
		r := runStream(t, msgs, c.mut)
		if c.mut == nil {
			base = r
		} else if d := diffProfiles(base.profiles, r.profiles); len(d) > 0 {
			t.Fatalf("%s: profiles differ: %v", c.name, d)
		}
		t.Logf("| %s | %.1f | %.0f | %.0f | %.0f%% |", c.name, r.per1000(r.requests), r.per1000(r.objects), r.per1000(r.dataPoints),
			100*float64(r.dataPoints)/float64(base.dataPoints))
	}
	ev, unique := eventStream(20000, 2000, 0.2, 3)
	t.Logf("event stream: %d records, %d distinct ids (20%% replays of earlier ids)", len(ev), unique)
	for _, on := range []bool{false, true} {
		r := runStream(t, ev, func(c *Config) { c.DedupEvents = on })
		t.Logf("| dedup %v | %.1f | %.0f | %.0f | events delivered %d |", on, r.per1000(r.requests), r.per1000(r.objects), r.per1000(r.dataPoints), r.events)
		if on && r.events != int64(unique) {
			t.Fatalf("dedup: %d events delivered, want %d", r.events, unique)
		}
	}
}
