package pipeline

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/braze-ingestor/braze-ingestor/batcher"
	"github.com/braze-ingestor/braze-ingestor/brazesim"
	"github.com/braze-ingestor/braze-ingestor/dedup"
	"github.com/braze-ingestor/braze-ingestor/dedup/redistest"
	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"github.com/braze-ingestor/braze-ingestor/schemas"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// optHarness runs one lane and the DLQ stage against the Braze simulator, without Kafka.
type optHarness struct {
	t   *testing.T
	p   *Pipeline
	sim *brazesim.Sim
	dlq *memDLQ
	ps  *partitionState
	off int64
}

func newOptHarness(t *testing.T, opt Optimize, limits batcher.Limits, mut ...func(*Config)) *optHarness {
	t.Helper()
	srv, err := brazesim.NewServer(brazesim.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	client, err := sink.NewClient(sink.ClientConfig{Endpoint: srv.URL, APIKey: "dev-key", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	mq := &memDLQ{}
	cfg := Config{Brokers: []string{"x"}, Topics: []string{"t"}, GroupID: "g", Lanes: 1, Linger: 20 * time.Millisecond,
		Limits: limits, RetryInitial: time.Millisecond, RetryMax: 5 * time.Millisecond, Optimize: opt,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, m := range mut {
		m(&cfg)
	}
	p, err := New(cfg, client, mq)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.workCtx = ctx
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.runLane(ctx, p.lanes[0]) }()
	go func() { defer wg.Done(); p.runDLQ(ctx) }()
	for _, es := range p.endpoints {
		if es != nil {
			wg.Add(1)
			go func() { defer wg.Done(); p.runEndpoint(ctx, es) }()
		}
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	return &optHarness{t: t, p: p, sim: srv.Sim, dlq: mq, ps: newPartitionState("t", 0)}
}

// send feeds records ("A:" attributes, "E:" events; "id|" prefix sets the envelope id) and
// waits until all are settled.
func (h *optHarness) send(recs ...string) {
	h.t.Helper()
	for _, r := range recs {
		var id []byte
		if i := strings.Index(r, "|"); i >= 0 && !strings.HasPrefix(r, "{") && i < strings.Index(r, "{") {
			id, r = []byte(r[:i]), r[i+1:]
		}
		kind := schemas.KindAttributes
		if strings.HasPrefix(r, "E:") {
			kind = schemas.KindEvent
		}
		r = strings.TrimPrefix(strings.TrimPrefix(r, "A:"), "E:")
		ack := h.ps.track(&kafka.Message{Topic: "t", Offset: h.off}, 1)
		h.off++
		h.ps.outstanding.Add(1)
		h.p.stats.InFlightRecords.Add(1)
		h.p.lanes[0].in <- withUser(item{kind: kind, raw: []byte(r), id: id, ack: ack})
	}
	waitSettled(h.t, h.ps, h.off)
}

func (h *optHarness) attrs(user string) map[string]any {
	h.t.Helper()
	u, ok := h.sim.User("external_id", user)
	if !ok {
		h.t.Fatalf("no user %s", user)
	}
	return u.Attributes
}

func limits75() batcher.Limits {
	return batcher.Limits{Mode: batcher.Combined, MaxObjects: 75, MaxBytes: 3_500_000}
}

func TestOptimizeOffIsNil(t *testing.T) {
	o, err := newOptimizer(Optimize{})
	if o != nil || err != nil {
		t.Fatalf("all off: %v %v", o, err)
	}
	if _, err := newOptimizer(Optimize{SuppressUnchanged: true}); err == nil {
		t.Fatal("suppression without a store accepted")
	}
}

// A merged object Braze rejects dead-letters every record behind it, each as it was read,
// with Braze's error; the other users' records are delivered.
func TestCoalescedRejectionDeadLettersEverySource(t *testing.T) {
	h := newOptHarness(t, Optimize{Coalesce: true}, limits75())
	h.send(
		`A:{"external_id":"u","email":"not-an-email","a":1}`,
		`A:{"external_id":"v","a":1}`,
		`A:{"external_id":"u","email":"not-an-email","b":2}`,
		`A:{"external_id":"u","email":"not-an-email","c":3}`,
		`A:{"external_id":"v","b":2}`,
	)
	letters := h.dlq.snapshot()
	if len(letters) != 3 {
		t.Fatalf("%d dead letters, want 3: %+v", len(letters), letters)
	}
	var got []string
	for _, l := range letters {
		if l.Reason != dlq.ReasonBrazeRejected || !strings.Contains(strings.ToLower(l.Error), "email") {
			t.Errorf("dead letter %s %q", l.Reason, l.Error)
		}
		got = append(got, string(l.Record))
	}
	want := `{"external_id":"u","email":"not-an-email","a":1} {"external_id":"u","email":"not-an-email","b":2} {"external_id":"u","email":"not-an-email","c":3}`
	if strings.Join(got, " ") != want {
		t.Fatalf("dead letters\n%s\nwant\n%s", strings.Join(got, " "), want)
	}
	if a := h.attrs("v"); a["a"] != 1.0 || a["b"] != 2.0 {
		t.Fatalf("v: %v", a)
	}
	st := h.sim.Stats()
	if st.Requests != 1 || st.Attributes != 1 {
		t.Fatalf("requests %d, attribute objects applied %d: want 1 request, 2 objects of which 1 rejected", st.Requests, st.Attributes)
	}
	if s := h.p.stats.Snapshot(); s.RecordsDelivered != 2 || h.p.stats.Optimize.CoalescedObjects.Load() != 3 {
		t.Fatalf("delivered %d, coalesced %d", s.RecordsDelivered, h.p.stats.Optimize.CoalescedObjects.Load())
	}
}

// Coalescing lets a lane take more than 75 records into one request while the request keeps
// 75 objects and the byte limit.
func TestCoalescingKeepsLimitsAndTakesMore(t *testing.T) {
	lim := batcher.Limits{Mode: batcher.Combined, MaxObjects: 75, MaxBytes: 100_000}
	h := newOptHarness(t, Optimize{Coalesce: true}, lim)
	var recs []string
	for i := 0; i < 600; i++ {
		recs = append(recs, fmt.Sprintf(`A:{"external_id":"user-%03d","n":%d,"plan":"p%d"}`, i%60, i, i%3))
	}
	// 60 users: at most 75 objects per request, and records of users already in the
	// request ride along without costing an object.
	h.send(recs...)
	st := h.sim.Stats()
	if st.MaxObjectsInRequest > 75 || st.LimitRejected != 0 {
		t.Fatalf("limits broken: %d objects in a request, %d rejected", st.MaxObjectsInRequest, st.LimitRejected)
	}
	if s := h.p.stats.Snapshot(); s.RecordsDelivered != 600 || s.DeadLetteredAll != 0 {
		t.Fatalf("delivered %d, dead-lettered %d", s.RecordsDelivered, s.DeadLetteredAll)
	}
	// 600 records of 60 users: without coalescing at least 8 requests of ≤75 objects.
	if st.Requests > 4 {
		t.Fatalf("%d requests: coalescing did not let requests take more records", st.Requests)
	}
	for i := 0; i < 60; i++ {
		if a := h.attrs(fmt.Sprintf("user-%03d", i)); a["n"] != float64(540+i) {
			t.Fatalf("user-%03d: n = %v, want %d", i, a["n"], 540+i)
		}
	}
	t.Logf("600 records, 60 users: %d requests, max %d objects", st.Requests, st.MaxObjectsInRequest)
}

// The lane's accounting never lets a request exceed the byte limit, whatever merges.
func TestLaneAcctBytes(t *testing.T) {
	lim := batcher.Limits{Mode: batcher.Combined, MaxObjects: 75, MaxBytes: 2000}
	p := &Pipeline{cfg: Config{Limits: lim}, opt: &optimizer{cfg: Optimize{Coalesce: true}}}
	a := p.newLaneAcct()
	var batch []item
	for i := 0; ; i++ {
		it := withUser(item{kind: schemas.KindAttributes, raw: []byte(fmt.Sprintf(`{"external_id":"u%d","k%d":"%s"}`, i%3, i%7, strings.Repeat("x", i%50)))})
		if !a.fits(&it) {
			break
		}
		a.add(&it)
		batch = append(batch, it)
	}
	res := batcher.Coalesce(batch)
	out := make([]item, len(res))
	for i, r := range res {
		out[i] = batch[r.Sources[0]]
		if r.Bytes != nil {
			out[i].raw = r.Bytes
		}
	}
	if n := len(batcher.Encode(nil, out)); n > lim.MaxBytes {
		t.Fatalf("coalesced body %d bytes > %d", n, lim.MaxBytes)
	}
	if len(batch) <= len(res) {
		t.Fatalf("nothing merged: %d records, %d objects", len(batch), len(res))
	}
}

func optStores(t *testing.T) map[string]func() dedup.Store {
	return map[string]func() dedup.Store{
		"memory": func() dedup.Store { return dedup.NewMemory(dedup.Options{}) },
		"redis": func() dedup.Store {
			s, err := dedup.NewRedis(context.Background(), redistest.Start(t), dedup.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
	}
}

func TestSuppressUnchanged(t *testing.T) {
	for name, store := range optStores(t) {
		t.Run(name, func(t *testing.T) {
			h := newOptHarness(t, Optimize{SuppressUnchanged: true, Store: store()}, limits75())
			dp := func() int64 { return h.sim.Stats().DataPoints }
			h.send(`A:{"external_id":"u","a":1,"b":"x","email_subscribe":"opted_in"}`)
			if dp() != 2 {
				t.Fatalf("data points %d", dp())
			}
			// Unchanged a is left out; b changes; free fields always go.
			h.send(`A:{"external_id":"u","a":1,"b":"y","email_subscribe":"opted_in"}`)
			if dp() != 3 || h.p.stats.Optimize.SuppressedAttributes.Load() != 1 {
				t.Fatalf("data points %d, suppressed %d", dp(), h.p.stats.Optimize.SuppressedAttributes.Load())
			}
			// Nothing left: acknowledged without a request.
			reqs := h.sim.Stats().Requests
			h.send(`A:{"external_id":"u","a":1,"b":"y"}`)
			if h.sim.Stats().Requests != reqs || h.p.stats.Optimize.SuppressedRecords.Load() != 1 {
				t.Fatalf("fully suppressed record was sent")
			}
			// An operator makes the value unknown: the old value is sent again afterwards.
			h.send(`A:{"external_id":"u","a":{"inc":5}}`)
			h.send(`A:{"external_id":"u","a":1}`)
			if a := h.attrs("u"); a["a"] != 1.0 {
				t.Fatalf("a = %v after inc and set, want 1", a["a"])
			}
			// Within one request a key written earlier is never suppressed later: 2 then 1.
			h.send(`A:{"external_id":"u","a":2}`, `A:{"external_id":"u","a":1}`)
			if a := h.attrs("u"); a["a"] != 1.0 {
				t.Fatalf("a = %v, want 1", a["a"])
			}
			// A rejected object records nothing: the same value goes again when valid.
			h.send(`A:{"external_id":"u","email":"bad","c":7}`)
			before := dp()
			h.send(`A:{"external_id":"u","c":7}`)
			if dp() != before+1 || h.attrs("u")["c"] != 7.0 {
				t.Fatalf("value of a rejected object was suppressed")
			}
			// Update-only objects record nothing (the user may not exist).
			h.send(`A:{"external_id":"nobody","_update_existing_only":true,"z":1}`)
			h.send(`A:{"external_id":"nobody","z":1}`)
			if h.attrs("nobody")["z"] != 1.0 {
				t.Fatal("update-only write was recorded as delivered")
			}
			if n := len(h.dlq.snapshot()); n != 1 {
				t.Fatalf("%d dead letters, want 1", n)
			}
		})
	}
}

func TestDedupRecords(t *testing.T) {
	for name, store := range optStores(t) {
		t.Run(name, func(t *testing.T) {
			h := newOptHarness(t, Optimize{Dedup: true, Store: store()}, limits75())
			e := `E:{"external_id":"u","name":"e","time":"2026-01-01T00:00:00Z"}`
			h.send("x1|"+e, "x1|"+e, "x2|"+e, e)
			h.send("x1|"+e, "x2|"+e, "x3|"+e, e)
			st := h.sim.Stats()
			if st.Events != 5 || h.p.stats.Optimize.DuplicatesSkipped.Load() != 3 {
				t.Fatalf("events %d (want 5: x1 x2 x3 and two without id), skipped %d (want 3)", st.Events, h.p.stats.Optimize.DuplicatesSkipped.Load())
			}
			if s := h.p.stats.Snapshot(); s.RecordsDelivered != 8 {
				t.Fatalf("delivered (acknowledged) %d, want 8", s.RecordsDelivered)
			}
		})
	}
}

// A rejected record's id is not marked delivered.
func TestDedupMarksOnlyDelivered(t *testing.T) {
	h := newOptHarness(t, Optimize{Dedup: true, Store: dedup.NewMemory(dedup.Options{})}, limits75())
	h.send(`r1|E:{"external_id":"u","name":"e","time":"yesterday"}`)
	h.send(`r1|E:{"external_id":"u","name":"e","time":"yesterday"}`)
	if n := len(h.dlq.snapshot()); n != 2 || h.p.stats.Optimize.DuplicatesSkipped.Load() != 0 {
		t.Fatalf("%d dead letters (want 2), %d skipped", n, h.p.stats.Optimize.DuplicatesSkipped.Load())
	}
}

// A user Braze deleted comes back as a new profile: a value equal to one accepted before the
// delete must be sent, not suppressed as unchanged.
func TestSuppressForgetsDeletedUsers(t *testing.T) {
	h := newOptHarness(t, Optimize{SuppressUnchanged: true, Store: dedup.NewMemory(dedup.Options{})}, limits75(),
		func(c *Config) { c.Endpoints[endpoint.Delete] = true }, spacing("*>*=0s"))
	h.send(`A:{"external_id":"u","plan":"pro"}`)
	recs, err := (&schemas.Decoder{}).Decode([]byte(`{"type":"delete","data":{"external_id":"u"}}`), nil)
	if err != nil || len(recs) != 1 || recs[0].Kind != schemas.KindDelete {
		t.Fatalf("delete record: %v %+v", err, recs)
	}
	r := recs[0]
	ack := h.ps.track(&kafka.Message{Topic: "t", Offset: h.off}, 1)
	h.off++
	h.ps.outstanding.Add(1)
	h.p.stats.InFlightRecords.Add(1)
	h.p.lanes[0].in <- item{kind: r.Kind, pack: r.PackKey, idKind: r.IDKind, user: r.UserHash, raw: r.Raw, ack: ack}
	waitSettled(t, h.ps, h.off)
	if _, ok := h.sim.User("external_id", "u"); ok {
		t.Fatal("u still exists after its delete")
	}
	h.send(`A:{"external_id":"u","plan":"pro"}`)
	if got := h.attrs("u")["plan"]; got != "pro" {
		t.Fatalf("re-created profile has plan %v, want pro (suppressed as unchanged: %d)", got, h.p.stats.Optimize.SuppressedAttributes.Load())
	}
}

// Attribute writes are never skipped as duplicates: after a crash the worker sends a user's
// older write again and then, to keep the last write the last (docs/offsets.md "Resuming"),
// the later one, although its id was delivered before.
func TestDedupKeepsAttributeOrder(t *testing.T) {
	h := newOptHarness(t, Optimize{Dedup: true, Store: dedup.NewMemory(dedup.Options{})}, limits75())
	h.send(`a2|A:{"external_id":"u","c":2}`) // the later write, delivered before the crash
	h.send(`A:{"external_id":"u","c":1}`)    // the older write, sent again after it
	h.send(`a2|A:{"external_id":"u","c":2}`) // the later write, sent again to restore order
	if got := h.attrs("u")["c"]; got != 2.0 || h.p.stats.Optimize.DuplicatesSkipped.Load() != 0 {
		t.Fatalf("c = %v after the replay, want 2; %d skipped as duplicates", got, h.p.stats.Optimize.DuplicatesSkipped.Load())
	}
}

// BenchmarkDeliverOptimized measures the optimized send step for a batch of 75 attribute
// records of 25 users (4 of 8 attributes each), against a sender that accepts everything.
func BenchmarkDeliverOptimized(b *testing.B) {
	for _, c := range []struct {
		name string
		opt  Optimize
	}{
		{"off", Optimize{}},
		{"coalesce", Optimize{Coalesce: true}},
		{"suppress", Optimize{SuppressUnchanged: true, Store: dedup.NewMemory(dedup.Options{})}},
		{"coalesce+suppress+dedup", Optimize{Coalesce: true, SuppressUnchanged: true, Dedup: true, Store: dedup.NewMemory(dedup.Options{})}},
	} {
		b.Run(c.name, func(b *testing.B) {
			braze := &acceptAll{}
			p, err := New(Config{Brokers: []string{"x"}, Topics: []string{"t"}, GroupID: "g", Lanes: 1, Optimize: c.opt,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, braze, &memDLQ{})
			if err != nil {
				b.Fatal(err)
			}
			ps := newPartitionState("t", 0)
			batch := make([]item, 75)
			raws := make([][]byte, 75)
			users := make([]item, 75) // the identities, resolved once as the decoder does
			for i := range raws {
				raws[i] = []byte(fmt.Sprintf(`{"external_id":"user-%03d","plan":"pro","country":"US","score":%d,"city":"Lyon"}`, i%25, i%3))
				users[i] = withUser(item{kind: schemas.KindAttributes, raw: raws[i]})
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for n := 0; n < b.N; n++ {
				for i := range batch {
					batch[i] = item{kind: schemas.KindAttributes, idKind: users[i].idKind, user: users[i].user, raw: raws[i], id: []byte(fmt.Sprint("id-", n, "-", i)), ack: ps.track(&kafka.Message{}, 1)}
				}
				if p.opt == nil {
					p.deliver(ctx, batch, batcher.Encode(nil, batch))
				} else {
					p.deliverOptimized(ctx, batch)
				}
				ps.queue, ps.head = ps.queue[:0], 0
			}
			b.ReportMetric(float64(braze.objects.Load())/float64(b.N), "objects/op")
		})
	}
}

type acceptAll struct{ objects atomic.Int64 }

func (a *acceptAll) Track(ctx context.Context, body []byte) sink.Response {
	a.objects.Add(int64(strings.Count(string(body), `"external_id"`)))
	return sink.Response{Status: 201, Class: sink.Delivered}
}

// Braze's errors[] and a plain 400 both map through merged objects to every record behind them.
func TestCoalescedErrorMapping(t *testing.T) {
	poisoned := func(o map[string]any) bool { _, ok := o["poison"]; return ok }
	for _, tc := range []struct {
		name   string
		answer func(b map[string][]map[string]any) sink.Response
	}{
		{"2xx errors[]", func(b map[string][]map[string]any) sink.Response {
			r := sink.Response{Status: 201, Class: sink.Delivered}
			for i, o := range b["attributes"] {
				if poisoned(o) {
					r.Class = sink.Partial
					r.Errors = append(r.Errors, sink.ItemError{Type: "POISON", InputArray: "attributes", Index: i})
				}
			}
			return r
		}},
		{"plain 400 bisects", func(b map[string][]map[string]any) sink.Response {
			for _, o := range b["attributes"] {
				if poisoned(o) {
					return sink.Response{Status: 400, Class: sink.Split}
				}
			}
			return sink.Response{Status: 201, Class: sink.Delivered}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			braze := &fakeBraze{answer: tc.answer}
			mq := &memDLQ{}
			p, err := New(Config{Brokers: []string{"x"}, Topics: []string{"t"}, GroupID: "g", Lanes: 1, Linger: 20 * time.Millisecond,
				Optimize: Optimize{Coalesce: true}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, braze, mq)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); p.runLane(ctx, p.lanes[0]) }()
			go func() { defer wg.Done(); p.runDLQ(ctx) }()
			defer func() { cancel(); wg.Wait() }()
			ps := newPartitionState("t", 0)
			recs := []string{
				`{"external_id":"a","x":1}`,
				`{"external_id":"b","x":1}`,
				`{"external_id":"b","poison":1}`,
				`{"external_id":"c","x":1}`,
				`{"external_id":"a","y":2}`,
				`{"external_id":"b","z":3}`,
			}
			for i, r := range recs {
				ack := ps.track(&kafka.Message{Topic: "t", Offset: int64(i)}, 1)
				ps.outstanding.Add(1)
				p.stats.InFlightRecords.Add(1)
				p.lanes[0].in <- withUser(item{kind: schemas.KindAttributes, raw: []byte(r), index: i, ack: ack})
			}
			waitSettled(t, ps, int64(len(recs)))
			var got []string
			for _, l := range mq.snapshot() {
				got = append(got, fmt.Sprint(l.SourceOffset, " ", string(l.Record)))
			}
			want := []string{`1 {"external_id":"b","x":1}`, `2 {"external_id":"b","poison":1}`, `5 {"external_id":"b","z":3}`}
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Fatalf("dead letters\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if s := p.stats.Snapshot(); s.RecordsDelivered != 3 {
				t.Fatalf("delivered %d, want 3", s.RecordsDelivered)
			}
		})
	}
}

// withUser gives a hand-built item the identity the decoder resolves for its object, as the
// fetch loop does for decoded records.
func withUser(it item) item {
	var d schemas.Decoder
	recs, err := d.Decode([]byte(`{"type":"`+it.kind.EnvelopeType()+`","data":`+string(it.raw)+`}`), nil)
	if err == nil && len(recs) == 1 {
		it.idKind, it.user = recs[0].IDKind, recs[0].UserHash
	}
	return it
}
