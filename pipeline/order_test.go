package pipeline

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"github.com/braze-ingestor/braze-ingestor/schemas"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// epCall is one request the fake Braze answered.
type epCall struct {
	ep             endpoint.Endpoint
	users          []string // the test users (u<n>) named in the body, in order
	body           string
	sent, answered time.Time
	class          sink.Class
}

// epBraze is a fake Braze for every endpoint: answer decides each request's answer (nil:
// delivered); it logs every request.
type epBraze struct {
	mu     sync.Mutex
	calls  []epCall
	answer func(ep endpoint.Endpoint, users []string) sink.Response
}

var testUser = regexp.MustCompile(`\bu[0-9]+\b`)

func (f *epBraze) Track(ctx context.Context, body []byte) sink.Response {
	return f.Post(ctx, endpoint.Track, body)
}

func (f *epBraze) Post(ctx context.Context, ep endpoint.Endpoint, body []byte) sink.Response {
	c := epCall{ep: ep, body: string(body), sent: time.Now()}
	for _, u := range testUser.FindAllString(string(body), -1) {
		if !slices.Contains(c.users, u) {
			c.users = append(c.users, u)
		}
	}
	resp := sink.Response{Status: 201, Class: sink.Delivered}
	if f.answer != nil {
		resp = f.answer(ep, c.users)
	}
	c.answered, c.class = time.Now(), resp.Class
	f.mu.Lock()
	f.calls = append(f.calls, c)
	f.mu.Unlock()
	return resp
}

func (f *epBraze) log() []epCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// userCalls are the requests naming u, in the order they were answered.
func (f *epBraze) userCalls(u string) []epCall {
	var out []epCall
	for _, c := range f.log() {
		if slices.Contains(c.users, u) {
			out = append(out, c)
		}
	}
	return out
}

// orderHarness runs lanes, the DLQ stage and the endpoint senders without Kafka.
type orderHarness struct {
	p    *Pipeline
	ps   *partitionState
	mq   *memDLQ
	off  int64
	stop func()
}

func startOrder(t *testing.T, braze *epBraze, opts ...func(*Config)) *orderHarness {
	t.Helper()
	cfg := Config{Brokers: []string{"x"}, Topics: []string{"t"}, GroupID: "g", Lanes: 4, Linger: 5 * time.Millisecond,
		Limits: testLimits(), RetryInitial: time.Millisecond, RetryMax: 5 * time.Millisecond, HaltProbeMax: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for e := endpoint.Track + 1; e < endpoint.Count; e++ {
		cfg.Endpoints[e] = true
	}
	for _, o := range opts {
		o(&cfg)
	}
	h := &orderHarness{mq: &memDLQ{}, ps: newPartitionState("t", 0)}
	p, err := New(cfg, braze, h.mq)
	if err != nil {
		t.Fatal(err)
	}
	h.p = p
	ctx, cancel := context.WithCancel(context.Background())
	p.workCtx = ctx
	var wg sync.WaitGroup
	run := func(f func()) { wg.Add(1); go func() { defer wg.Done(); f() }() }
	for _, l := range p.lanes {
		run(func() { p.runLane(ctx, l) })
	}
	run(func() { p.runDLQ(ctx) })
	for _, es := range p.endpoints {
		if es != nil {
			run(func() { p.runEndpoint(ctx, es) })
		}
	}
	h.stop = func() { cancel(); wg.Wait() }
	t.Cleanup(h.stop)
	return h
}

// testRecord is a record of kind for user u: an event for the track kinds, else an entry
// naming u.
func testRecord(kind schemas.Kind, u string, seq int, pack uint32) item {
	raw := ev(u, seq)
	if !kind.Tracked() {
		raw = []byte(fmt.Sprintf(`{"external_id":%q,"seq":%d}`, u, seq))
	}
	return item{kind: kind, pack: pack, idKind: schemas.IDExternal, user: schemas.UserHash(schemas.IDExternal, []byte(u)), raw: raw}
}

// feed hands records to their lanes, each as its own message (offsets in order).
func (h *orderHarness) feed(its ...item) {
	for _, it := range its {
		it.ack = h.ps.track(&kafka.Message{Topic: "t", Offset: h.off}, 1)
		it.epoch = h.p.revokeEpoch.Load()
		h.off++
		h.ps.outstanding.Add(1)
		h.p.lanes[it.user%uint64(len(h.p.lanes))].in <- it
	}
}

func eventually(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func spacing(s string) func(*Config) {
	return func(c *Config) {
		sp, err := ParseSpacing(s)
		if err != nil {
			panic(err)
		}
		c.Spacing = &sp
	}
}

// A user's records keep their Kafka order across endpoints: a delete goes only after the
// user's earlier track request was answered and the track>delete spacing passed; a track
// record after an identify waits for the identify and identify>track.
func TestOrderAcrossEndpoints(t *testing.T) {
	braze := &epBraze{}
	h := startOrder(t, braze, spacing("track>delete=80ms,identify>track=60ms"))
	h.feed(testRecord(schemas.KindEvent, "u1", 1, 0), testRecord(schemas.KindDelete, "u1", 2, 0),
		testRecord(schemas.KindIdentify, "u2", 1, 0), testRecord(schemas.KindEvent, "u2", 2, 0),
		testRecord(schemas.KindAttributes, "u2", 3, 0))
	waitSettled(t, h.ps, 5)
	check := func(u string, want []endpoint.Endpoint, gap time.Duration) {
		t.Helper()
		calls := braze.userCalls(u)
		var got []endpoint.Endpoint
		for _, c := range calls {
			got = append(got, c.ep)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: endpoints %v, want %v", u, got, want)
		}
		if d := calls[1].sent.Sub(calls[0].answered); d < gap {
			t.Errorf("%s: %s sent %s after %s was answered, want at least %s", u, want[1], d, want[0], gap)
		}
	}
	check("u1", []endpoint.Endpoint{endpoint.Track, endpoint.Delete}, 80*time.Millisecond)
	check("u2", []endpoint.Endpoint{endpoint.Identify, endpoint.Track}, 60*time.Millisecond)
	if n := h.p.stats.HeldUsers.Load(); n != 0 {
		t.Errorf("%d users still held", n)
	}
	s := h.p.stats.Snapshot()
	if s.Endpoints[endpoint.Delete].RecordsDelivered != 1 || s.Endpoints[endpoint.Identify].Requests != 1 || s.Endpoints[endpoint.Track].RecordsDelivered != 3 {
		t.Errorf("per-endpoint snapshot %+v", s.Endpoints)
	}
}

// A delete that arrives while the same user's track request is being retried (5xx several
// times) is sent only after that track request is delivered. The users' track records ride
// in one request (other lanes' batches topped up), so most lanes are free while it is
// retried and take their delete at once.
func TestDeleteWaitsForRetriedTrack(t *testing.T) {
	var mu sync.Mutex
	fails := 0
	braze := &epBraze{answer: func(ep endpoint.Endpoint, users []string) sink.Response {
		mu.Lock()
		defer mu.Unlock()
		if ep == endpoint.Track && fails < 4 {
			fails++
			time.Sleep(10 * time.Millisecond)
			return classify(503, `{"message":"unavailable"}`)
		}
		return classify(201, `{"message":"success"}`)
	}}
	h := startOrder(t, braze, func(c *Config) {
		c.Lanes, c.Linger, c.RetryInitial, c.RetryMax = 8, 20*time.Millisecond, 30*time.Millisecond, 30*time.Millisecond
	})
	users := []string{"u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"}
	for _, u := range users {
		h.feed(testRecord(schemas.KindEvent, u, 1, 0))
	}
	eventually(t, 2*time.Second, "the first 5xx", func() bool { return len(braze.log()) > 0 })
	for _, u := range users {
		h.feed(testRecord(schemas.KindDelete, u, 2, 0))
	}
	waitSettled(t, h.ps, 16)
	for _, u := range users {
		calls := braze.userCalls(u)
		last := calls[len(calls)-1]
		if last.ep != endpoint.Delete || len(calls) < 2 {
			t.Fatalf("%s: %d requests, last to %s; want tracks, then the delete", u, len(calls), last.ep)
		}
		if tr := calls[len(calls)-2]; tr.ep != endpoint.Track || tr.class != sink.Delivered || last.sent.Before(tr.answered) {
			t.Errorf("%s: the delete was sent before the track was delivered: %+v then %+v", u, tr, last)
		}
	}
	if fails != 4 {
		t.Errorf("%d failed track requests, want 4", fails)
	}
}

// Other users are delivered while one user is held for a long spacing.
func TestHeldUserDoesNotBlockOthers(t *testing.T) {
	braze := &epBraze{}
	h := startOrder(t, braze, spacing("track>delete=10m"))
	h.feed(testRecord(schemas.KindEvent, "u1", 1, 0), testRecord(schemas.KindDelete, "u1", 2, 0),
		testRecord(schemas.KindEvent, "u1", 3, 0))
	for i := 2; i < 40; i++ {
		// Other users' records of other endpoints go too (track>alias is 0).
		h.feed(testRecord(schemas.KindEvent, fmt.Sprintf("u%d", i), 1, 0), testRecord(schemas.KindAlias, fmt.Sprintf("u%d", i), 2, 0))
	}
	eventually(t, 5*time.Second, "the other users' records", func() bool {
		for i := 2; i < 40; i++ {
			if len(braze.userCalls(fmt.Sprintf("u%d", i))) != 2 {
				return false
			}
		}
		return true
	})
	if c := braze.userCalls("u1"); len(c) != 1 || c[0].ep != endpoint.Track {
		t.Errorf("u1 sent %d requests, want only its first track", len(c))
	}
	eventually(t, 5*time.Second, "only u1 held", func() bool { return h.p.stats.HeldUsers.Load() == 1 })
	// Waiting for the spacing is deliberate: no lane or endpoint sender looks stuck.
	time.Sleep(50 * time.Millisecond)
	if s := h.p.watch.stuck(20 * time.Millisecond); s != "" {
		t.Errorf("liveness: %s", s)
	}
	// The held user's records are parked: a drain does not wait for them, and nothing
	// past them is acknowledged (offset 1 and 2 are left to Kafka).
	if !h.p.drain([]*partitionState{h.ps}, time.Second) {
		t.Error("drain waited for the parked records")
	}
	h.ps.mu.Lock()
	wm := h.ps.watermark
	h.ps.mu.Unlock()
	if wm != 1 {
		t.Errorf("watermark %d, want 1 (the held delete stays unsettled)", wm)
	}
}

// Records of one endpoint are packed by pack key: each request
// carries records of one pack key, at most the endpoint's limit.
func TestEndpointPacking(t *testing.T) {
	braze := &epBraze{}
	h := startOrder(t, braze, func(c *Config) { c.Linger = 50 * time.Millisecond })
	pack := map[string]uint32{}
	for i := 0; i < 130; i++ {
		u := fmt.Sprintf("u%d", i)
		pack[u] = uint32(i % 2)
		h.feed(testRecord(schemas.KindDelete, u, 1, pack[u]))
	}
	waitSettled(t, h.ps, 130)
	var reqs, recs int
	for _, c := range braze.log() {
		if c.ep != endpoint.Delete {
			t.Fatalf("request to %s", c.ep)
		}
		reqs++
		recs += len(c.users)
		if len(c.users) > endpoint.Delete.MaxObjects() {
			t.Errorf("request of %d records", len(c.users))
		}
		for _, u := range c.users {
			if pack[u] != pack[c.users[0]] {
				t.Errorf("request mixes pack keys: %v", c.users)
				break
			}
		}
	}
	if recs != 130 || reqs != 4 {
		t.Errorf("%d records in %d requests, want 130 in 4 (2 pack keys × 65, at most 50 each)", recs, reqs)
	}
}

// Braze's rejections of another endpoint's records are dead-lettered with their reason, and
// the user's next records go on.
func TestEndpointRejectionsDeadLettered(t *testing.T) {
	braze := &epBraze{answer: func(ep endpoint.Endpoint, users []string) sink.Response {
		switch {
		case ep == endpoint.Merge && slices.Contains(users, "u1"):
			return classify(400, `{"message":"Invalid merge_updates"}`)
		case ep == endpoint.Subscription && slices.Contains(users, "u2"):
			return classify(413, `{"message":"too large"}`)
		}
		return classify(201, `{"message":"success"}`)
	}}
	h := startOrder(t, braze)
	h.feed(testRecord(schemas.KindMerge, "u1", 1, 0), testRecord(schemas.KindEvent, "u1", 2, 0),
		testRecord(schemas.KindSubscription, "u2", 1, 0), testRecord(schemas.KindAlias, "u3", 1, 0))
	waitSettled(t, h.ps, 4)
	letters := h.mq.snapshot()
	reasons := map[string]dlq.Reason{}
	for _, l := range letters {
		reasons[l.Type] = l.Reason
	}
	if len(letters) != 2 || reasons["merge"] != dlq.ReasonBrazeRejected || reasons["subscription"] != dlq.ReasonTooLarge {
		t.Errorf("dead letters %v, want merge braze_rejected and subscription too_large", reasons)
	}
	if c := braze.userCalls("u1"); len(c) != 2 || c[1].ep != endpoint.Track || c[1].class != sink.Delivered {
		t.Errorf("u1's track after its rejected merge: %+v", c)
	}
	s := h.p.stats.Snapshot()
	if s.Endpoints[endpoint.Merge].DeadLettered != 1 || s.Endpoints[endpoint.Subscription].DeadLettered != 1 || s.Endpoints[endpoint.AliasNew].RecordsDelivered != 1 {
		t.Errorf("per-endpoint snapshot %+v", s.Endpoints)
	}
}

// A record for an endpoint that is not enabled is dead-lettered invalid_record, naming the
// endpoint and ENDPOINTS; track records of the same message go on.
func TestDisabledEndpointDeadLetters(t *testing.T) {
	braze := &epBraze{}
	h := startOrder(t, braze, func(c *Config) { c.Endpoints = [endpoint.Count]bool{} })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ps := h.ps
	ps.flow = &h.p.flow
	m := &kafka.Message{Topic: "t", Offset: 0}
	del, tr := testRecord(schemas.KindDelete, "u1", 1, 0), testRecord(schemas.KindEvent, "u1", 2, 0)
	fs := &fetchSession{ps: ps, handoff: ctx, recs: []schemas.Record{
		{Kind: schemas.KindDelete, Raw: del.raw, IDKind: schemas.IDExternal, UserID: []byte("u1"), UserHash: del.user},
		{Kind: schemas.KindEvent, Index: 1, Raw: tr.raw, IDKind: schemas.IDExternal, UserID: []byte("u1"), UserHash: tr.user},
	}}
	if !h.p.handOut(fs, m, ps.track(m, 2)) {
		t.Fatal("hand-out failed")
	}
	waitSettled(t, ps, 1)
	l := h.mq.snapshot()
	if len(l) != 1 || l[0].Reason != dlq.ReasonInvalidRecord || l[0].Error != "endpoint delete is not enabled: add it to ENDPOINTS" || l[0].Type != "delete" {
		t.Errorf("dead letters %+v", l)
	}
	if c := braze.log(); len(c) != 1 || c[0].ep != endpoint.Track {
		t.Errorf("requests %+v, want the track record only", c)
	}
}

func TestNewRequiresPosterForEndpoints(t *testing.T) {
	cfg := Config{Brokers: []string{"x"}, Topics: []string{"t"}, GroupID: "g"}
	cfg.Endpoints[endpoint.Delete] = true
	if _, err := New(cfg, &fakeBraze{}, &memDLQ{}); err == nil {
		t.Error("New accepted a sender that cannot post to /users/delete")
	}
}

func TestParseSpacing(t *testing.T) {
	sp, err := ParseSpacing("*>*=100ms,track>*=3s,alias>*=5s,alias>track=5m, *>delete=1s")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		from, to endpoint.Endpoint
		want     time.Duration
	}{
		{endpoint.Identify, endpoint.Merge, 100 * time.Millisecond},
		{endpoint.Track, endpoint.Delete, 3 * time.Second},   // track>* beats *>delete
		{endpoint.Merge, endpoint.Delete, time.Second},       // *>delete beats *>*
		{endpoint.AliasNew, endpoint.Track, 5 * time.Minute}, // alias>track beats alias>*
		{endpoint.AliasNew, endpoint.Identify, 5 * time.Second},
	} {
		if got := sp[c.from][c.to]; got != c.want {
			t.Errorf("%s>%s = %s, want %s", c.from, c.to, got, c.want)
		}
	}
	for _, bad := range []string{"track>delete", "track=1s", "bogus>track=1s", "track>*=11m", "track>*=-1s", "*>*=x"} {
		if _, err := ParseSpacing(bad); err == nil {
			t.Errorf("ParseSpacing(%q) accepted", bad)
		}
	}
	if again, err := ParseSpacing(sp.String()); err != nil || again != sp {
		t.Errorf("String does not round-trip: %q %v", sp.String(), err)
	}
}

// A lane remembers each user's last track settle exactly, within the longest track spacing:
// entries older than that are pruned as the table grows.
func TestTrackSettlesPerUserAndPruned(t *testing.T) {
	sp, _ := ParseSpacing("track>delete=1s,track>merge=2s")
	ts := newTrackSettles(&sp)
	if ts.window != int64(2*time.Second) {
		t.Fatalf("window %d, want the longest track spacing", ts.window)
	}
	old := time.Now().Add(-3 * time.Second).UnixNano()
	var its []item
	for u := uint64(0); u < trackPruneMin-1; u++ {
		its = append(its, item{user: u})
	}
	ts.note(its, old)
	now := time.Now().UnixNano()
	ts.note([]item{{user: 5000}, {user: 5001}}, now)
	if len(ts.at) != 2 || ts.last(5000) != now || ts.last(7) != 0 {
		t.Errorf("after pruning: %d entries, last(5000)=%d, last(7)=%d", len(ts.at), ts.last(5000), ts.last(7))
	}
	var none *trackSettles
	none.note(its, now)
	if none.last(1) != 0 {
		t.Error("nil table")
	}
}

// When a partition is revoked, the records held users keep in their lanes are dropped (the
// next owner reads them again) within heldCheck, and the users are released.
func TestRevokedHeldRecordsAreDropped(t *testing.T) {
	braze := &epBraze{}
	h := startOrder(t, braze, spacing("track>delete=10m"))
	h.feed(testRecord(schemas.KindEvent, "u1", 1, 0), testRecord(schemas.KindDelete, "u1", 2, 0),
		testRecord(schemas.KindEvent, "u1", 3, 0))
	eventually(t, 5*time.Second, "u1 held behind its delete", func() bool {
		return h.p.stats.HeldUsers.Load() == 1 && h.ps.outstanding.Load() == 2 && h.ps.parked.Load() == 2
	})
	h.ps.revoked.Store(true)
	h.p.revokeEpoch.Add(1)
	eventually(t, 3*heldCheck, "the held records dropped", func() bool {
		return h.p.stats.HeldUsers.Load() == 0 && h.ps.outstanding.Load() == 0 && h.ps.parked.Load() == 0
	})
	if c := braze.userCalls("u1"); len(c) != 1 {
		t.Errorf("u1: %d requests, want its first track only", len(c))
	}
}

// One endpoint's outage is not isolated on the strength of another endpoint's accepted
// requests: while /users/delete answers only 5xx and /users/track accepts everything, the
// deletes are retried, never dead-lettered as persistent_5xx, and delivered once /users/delete
// is back.
func TestEndpointOutageIsNotIsolated(t *testing.T) {
	var mu sync.Mutex
	var start time.Time
	braze := &epBraze{answer: func(ep endpoint.Endpoint, users []string) sink.Response {
		mu.Lock()
		defer mu.Unlock()
		if start.IsZero() {
			start = time.Now()
		}
		if ep == endpoint.Delete && time.Since(start) < 600*time.Millisecond {
			return classify(503, `{"message":"unavailable"}`)
		}
		return classify(201, `{"message":"success"}`)
	}}
	h := startOrder(t, braze, func(c *Config) {
		c.Isolate5xxAfter = 20 * time.Millisecond
		c.RetryInitial, c.RetryMax = 10*time.Millisecond, 20*time.Millisecond
	})
	for i := range 4 {
		h.feed(testRecord(schemas.KindDelete, fmt.Sprintf("d%d", i), 1, 0))
	}
	n := int64(4)
	// Track traffic of other users is accepted throughout the delete outage.
	for deadline := time.Now().Add(700 * time.Millisecond); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		h.feed(testRecord(schemas.KindEvent, fmt.Sprintf("t%d", n), 1, 0))
		n++
	}
	waitSettled(t, h.ps, n)
	if letters := h.mq.snapshot(); len(letters) != 0 {
		t.Fatalf("%d dead letters (first: %s, %s) while only /users/delete was down, want 0", len(letters), letters[0].Reason, letters[0].Error)
	}
	if d := h.p.stats.Snapshot().RecordsDelivered; d != n {
		t.Errorf("delivered %d, want %d", d, n)
	}
}
