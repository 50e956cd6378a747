package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/braze-ingestor/braze-ingestor/schemas"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// orderBraze counts requests and objects and checks that no user is in two requests in
// flight at once, and that each user's records arrive in order.
type orderBraze struct {
	mu       sync.Mutex
	requests int
	objects  int
	inFlight map[string]bool
	lastSeq  map[string]float64
	overlap  int
	disorder int
	delay    func() time.Duration
}

func newOrderBraze() *orderBraze {
	return &orderBraze{inFlight: map[string]bool{}, lastSeq: map[string]float64{}}
}

func (c *orderBraze) Track(ctx context.Context, body []byte) sink.Response {
	var b struct {
		Events []struct {
			ID    string `json:"external_id"`
			Props struct {
				Seq float64 `json:"seq"`
			} `json:"properties"`
		} `json:"events"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		panic(err)
	}
	users := map[string]bool{}
	c.mu.Lock()
	c.requests++
	c.objects += len(b.Events)
	for _, e := range b.Events {
		if !users[e.ID] && c.inFlight[e.ID] {
			c.overlap++
		}
		users[e.ID] = true
		if s, ok := c.lastSeq[e.ID]; ok && e.Props.Seq <= s {
			c.disorder++
		}
		c.lastSeq[e.ID] = e.Props.Seq
	}
	for u := range users {
		c.inFlight[u] = true
	}
	c.mu.Unlock()
	if c.delay != nil {
		time.Sleep(c.delay())
	}
	c.mu.Lock()
	for u := range users {
		delete(c.inFlight, u)
	}
	c.mu.Unlock()
	return sink.Response{Status: 201, Class: sink.Delivered}
}

func (c *orderBraze) stats() (req, obj, overlap, disorder int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.requests, c.objects, c.overlap, c.disorder
}

// fakeBudget is a Granter: grants come from the test (or at once) and Usage is set by it.
type fakeBudget struct {
	sink.Tracker
	grants chan struct{} // nil: grant at once
	usage  atomic.Value  // float64
}

func (f *fakeBudget) Grant(ctx context.Context) error {
	if f.grants == nil {
		return nil
	}
	select {
	case <-f.grants:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *fakeBudget) Usage() float64 {
	u, _ := f.usage.Load().(float64)
	return u
}

func startLanes(t *testing.T, sender Sender, cfg Config) (*Pipeline, *partitionState, func()) {
	t.Helper()
	cfg.Brokers, cfg.Topics, cfg.GroupID = []string{"x"}, []string{"t"}, "g"
	cfg.Limits, cfg.RetryInitial, cfg.RetryMax = testLimits(), time.Millisecond, 5*time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := New(cfg, sender, &memDLQ{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, l := range p.lanes {
		wg.Add(1)
		go func() { defer wg.Done(); p.runLane(ctx, l) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); p.runDLQ(ctx) }()
	return p, newPartitionState("t", 0), func() { cancel(); wg.Wait() }
}

// feedUser routes one event of user with seq to its lane, as the fetch loop does.
func feedUser(p *Pipeline, ps *partitionState, off int64, user string, seq int) {
	h := schemas.UserHash(schemas.IDExternal, []byte(user))
	ps.outstanding.Add(1)
	p.lanes[h%uint64(len(p.lanes))].in <- item{kind: schemas.KindEvent, user: h, raw: ev(user, seq),
		idKind: schemas.IDExternal, ack: ps.track(&kafka.Message{Topic: "t", Offset: off}, 1)}
}

// When the rate limiter, not the data, is the bottleneck, a lane waiting for its grant keeps
// accepting records into the request it will send: requests leave full. Records trickle in
// (the linger passes long before a request fills); the limiter grants 5 requests per second.
func TestLaneFillsRequestWhileWaitingForTheLimiter(t *testing.T) {
	braze := newOrderBraze()
	guard := sink.NewGuard(braze, sink.NewLimiter(5, 1), sink.BreakerConfig{}, nil)
	p, ps, stop := startLanes(t, guard, Config{Lanes: 1, Linger: 5 * time.Millisecond, MaxLatency: 5 * time.Millisecond})
	defer stop()
	const n = 300
	for i := range n {
		feedUser(p, ps, int64(i), "u1", i)
		time.Sleep(time.Millisecond)
	}
	waitSettledWithin(t, ps, n, 10*time.Second)
	req, obj, _, disorder := braze.stats()
	mean := float64(obj) / float64(req)
	t.Logf("%d records in %d requests: %.1f objects per request", obj, req, mean)
	if mean < 45 {
		t.Errorf("%.1f objects per request while the limiter is the bottleneck, want >= 45 (requests filled while waiting; a fixed linger sends about 5)", mean)
	}
	if disorder > 0 {
		t.Errorf("%d records out of order", disorder)
	}
}

// With the request budget free a lone record goes out after BATCH_LINGER; with the budget
// nearly used it waits to fill its request, but not beyond MAX_LATENCY; when recent requests
// left full anyway, waiting would save nothing and it goes promptly.
func TestLingerFollowsTheRequestBudget(t *testing.T) {
	for _, tc := range []struct {
		usage    float64
		fullBusy bool // recent requests were full
		min, max time.Duration
	}{
		{usage: 0, min: 0, max: 300 * time.Millisecond},
		{usage: 0.95, min: 500 * time.Millisecond, max: 3 * time.Second},
		{usage: 0.95, fullBusy: true, min: 0, max: 300 * time.Millisecond},
	} {
		t.Run(fmt.Sprint("usage ", tc.usage, " full ", tc.fullBusy), func(t *testing.T) {
			braze := newOrderBraze()
			b := &fakeBudget{Tracker: braze}
			b.usage.Store(tc.usage)
			p, ps, stop := startLanes(t, b, Config{Lanes: 4, Linger: 10 * time.Millisecond, MaxLatency: 700 * time.Millisecond})
			defer stop()
			if tc.fullBusy {
				for range 500 {
					p.noteFill(1)
				}
			}
			start := time.Now()
			feedUser(p, ps, 0, "lone", 0)
			waitSettledWithin(t, ps, 1, 5*time.Second)
			took := time.Since(start)
			t.Logf("usage %.2f: the lone record was acknowledged after %s", tc.usage, took.Round(time.Millisecond))
			if took < tc.min || took > tc.max {
				t.Errorf("acknowledged after %s, want %s..%s", took, tc.min, tc.max)
			}
		})
	}
}

// Many lanes each holding a few users' records: a request carries other lanes' batches
// (fullest first), so a backlog spread over lanes packs close to full requests; no user is
// ever in two requests in flight, and every user's records arrive in order.
func TestRequestsCarrySeveralLanes(t *testing.T) {
	braze := newOrderBraze()
	rng := rand.New(rand.NewPCG(1, 2))
	var rmu sync.Mutex
	braze.delay = func() time.Duration {
		rmu.Lock()
		defer rmu.Unlock()
		return time.Duration(rng.IntN(3000)) * time.Microsecond
	}
	b := &fakeBudget{Tracker: braze, grants: make(chan struct{})}
	p, ps, stop := startLanes(t, b, Config{Lanes: 32, LaneQueue: 4096, Linger: 20 * time.Millisecond, MaxLatency: 20 * time.Millisecond})
	defer stop()
	const n, users = 3000, 200
	seq := map[string]int{}
	for i := range n {
		u := fmt.Sprintf("user-%d", rng.IntN(users))
		feedUser(p, ps, int64(i), u, seq[u])
		seq[u]++
	}
	go func() {
		for {
			select {
			case b.grants <- struct{}{}:
				time.Sleep(2 * time.Millisecond)
			case <-time.After(10 * time.Second):
				return
			}
		}
	}()
	waitSettledWithin(t, ps, n, 20*time.Second)
	req, obj, overlap, disorder := braze.stats()
	t.Logf("%d records in %d requests (%.1f per request), %d requests saved", obj, req, float64(obj)/float64(req), p.stats.RequestsSaved.Load())
	if overlap > 0 || disorder > 0 {
		t.Errorf("a user in two requests in flight %d times; %d records out of order", overlap, disorder)
	}
	if minReq := (n + 74) / 75; req > minReq+3 {
		t.Errorf("%d requests for %d records, want at most %d (full requests across lanes)", req, n, minReq+3)
	}
	if p.stats.RequestsSaved.Load() == 0 {
		t.Error("no request saved")
	}
}

func waitSettledWithin(t *testing.T, ps *partitionState, n int64, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ps.mu.Lock()
		wm := ps.watermark
		ps.mu.Unlock()
		if wm == n && ps.outstanding.Load() == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not settled: watermark %d (want %d), outstanding %d", wm, n, ps.outstanding.Load())
		}
		time.Sleep(time.Millisecond)
	}
}

// A request carrying several lanes' records that Braze keeps refusing for one record is
// retried per lane: the other lanes' records are delivered and their lanes go on; only the
// refused record's lane waits.
func TestMergedRequestRetriedPerLane(t *testing.T) {
	var delivered atomic.Int64
	braze := senderFunc(func(_ context.Context, body []byte) sink.Response {
		if bytes.Contains(body, []byte(`"poison"`)) {
			return sink.Response{Status: 503, Class: sink.Retry}
		}
		delivered.Add(int64(bytes.Count(body, []byte(`"external_id"`))))
		return sink.Response{Status: 201, Class: sink.Delivered}
	})
	b := &fakeBudget{Tracker: braze, grants: make(chan struct{})}
	p, ps, stop := startLanes(t, b, Config{Lanes: 8, Linger: 5 * time.Millisecond, MaxLatency: 5 * time.Millisecond})
	defer stop()
	feedUser(p, ps, 0, "poison", 0)
	users := 0
	for i := 1; i <= 40; i++ {
		u := fmt.Sprintf("user-%d", i)
		if p.lanes[schemas.UserHash(schemas.IDExternal, []byte(u))%8] == p.lanes[schemas.UserHash(schemas.IDExternal, []byte("poison"))%8] {
			continue // not the poison's lane
		}
		feedUser(p, ps, int64(1+users), u, 0)
		users++
	}
	time.Sleep(50 * time.Millisecond) // every lane's batch is ready
	go func() {
		for range 100 {
			select {
			case b.grants <- struct{}{}:
			case <-time.After(5 * time.Second):
				return
			}
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for delivered.Load() < int64(users) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := delivered.Load(); got != int64(users) {
		t.Fatalf("%d of the %d records of other lanes delivered while one record is refused", got, users)
	}
	if p.stats.RequestsSaved.Load() == 0 {
		t.Error("no request carried several lanes: the test did not merge")
	}
	// Another record for a lane that rode with the refused record still goes.
	for i := 41; ; i++ {
		u := fmt.Sprintf("user-%d", i)
		if p.lanes[schemas.UserHash(schemas.IDExternal, []byte(u))%8] != p.lanes[schemas.UserHash(schemas.IDExternal, []byte("poison"))%8] {
			feedUser(p, ps, int64(1+users), u, 0)
			break
		}
	}
	for delivered.Load() < int64(users+1) && time.Now().Before(deadline.Add(5*time.Second)) {
		time.Sleep(time.Millisecond)
	}
	if got := delivered.Load(); got != int64(users+1) {
		t.Fatalf("a later record of another lane was not delivered (%d of %d)", got, users+1)
	}
}
