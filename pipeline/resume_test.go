package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/braze-ingestor/braze-ingestor/sink"
)

// countingBraze accepts every request and counts deliveries per message number (the "n"
// event property); hold, when set, makes requests carrying that number wait until ctx ends.
type countingBraze struct {
	mu    sync.Mutex
	seen  map[int]int
	log   []int // message numbers in the order they were delivered
	delay time.Duration
	hold  atomic.Int64 // message number to hold back, or -1
	// release, when set, ends the hold: the held request then fails as a retry.
	release chan struct{}
	holding atomic.Bool
	// refuse makes the held request answer a retryable outage at once instead of hanging:
	// a request carrying several lanes' records is then retried per lane (lane.go
	// sendMerged), and only the held record's lane waits.
	refuse bool
}

var nProp = regexp.MustCompile(`"n":(\d+)`)

func newCountingBraze() *countingBraze {
	b := &countingBraze{seen: map[int]int{}}
	b.hold.Store(-1)
	return b
}

func (b *countingBraze) Track(ctx context.Context, body []byte) sink.Response {
	hold := b.hold.Load()
	for _, m := range nProp.FindAllSubmatch(body, -1) {
		if n, _ := strconv.Atoi(string(m[1])); int64(n) == hold {
			b.holding.Store(true)
			if b.refuse {
				return sink.Response{Status: 503, Class: sink.Retry}
			}
			select {
			case <-ctx.Done():
			case <-b.release:
				b.hold.Store(-1)
			}
			return sink.Response{Class: sink.Retry, Err: context.Canceled}
		}
	}
	if b.delay > 0 {
		time.Sleep(b.delay)
	}
	b.mu.Lock()
	for _, m := range nProp.FindAllSubmatch(body, -1) {
		n, _ := strconv.Atoi(string(m[1]))
		b.seen[n]++
		b.log = append(b.log, n)
	}
	b.mu.Unlock()
	return sink.Response{Status: 201, Class: sink.Delivered}
}

// counts returns how many distinct messages were delivered and how many deliveries were
// repeats.
func (b *countingBraze) counts() (distinct, dups int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.seen {
		distinct++
		dups += c - 1
	}
	return
}

func (b *countingBraze) delivered(n int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.seen[n]
}

// produceNumbered writes messages numbered from..to-1 to one partition of topic.
func produceNumbered(t *testing.T, addrs []string, topic string, from, to int) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(addrs...), Topic: topic, Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond}
	defer w.Close()
	var msgs []kafka.Message
	for i := from; i < to; i++ {
		msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprint(i % 41)), Value: []byte(fmt.Sprintf(
			`{"type":"event","data":{"external_id":"u%d","name":"e","time":"2026-01-01T00:00:00Z","properties":{"n":%d}}}`, i%41, i))})
	}
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
}

func testPipeline(t *testing.T, addrs []string, topic, group string, b Sender, mut func(*Config)) *Pipeline {
	t.Helper()
	cfg := Config{Brokers: addrs, Topics: []string{topic}, GroupID: group, Lanes: 8, Linger: 2 * time.Millisecond,
		CommitInterval: 50 * time.Millisecond, MaxWait: 50 * time.Millisecond, ShutdownTimeout: 3 * time.Second,
		SessionTimeout: 6 * time.Second, RebalanceTimeout: 6 * time.Second, HeartbeatInterval: 500 * time.Millisecond,
		DrainTimeout: 2 * time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if mut != nil {
		mut(&cfg)
	}
	p, err := New(cfg, b, &memDLQ{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func runUntil(t *testing.T, p *Pipeline, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("timed out; stats %+v", p.Stats().Snapshot())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func commitPlain(t *testing.T, addrs []string, group, topic string, off int64, meta string) {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(addrs...), Timeout: 5 * time.Second}
	resp, err := c.OffsetCommit(context.Background(), &kafka.OffsetCommitRequest{GroupID: group, GenerationID: -1,
		Topics: map[string][]kafka.OffsetCommit{topic: {{Partition: 0, Offset: off, Metadata: meta}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			t.Fatal(p.Error)
		}
	}
}

func fetchCommitted(t *testing.T, addrs []string, group, topic string) (int64, string) {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(addrs...), Timeout: 5 * time.Second}
	resp, err := c.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {0}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range resp.Topics[topic] {
		return p.CommittedOffset, p.Metadata
	}
	return -1, ""
}

// A group committed without an offset map (the previous version), with another client's
// metadata, or with this worker's map: the worker resumes at the committed offset and skips
// exactly what the map says is settled.
func TestResumeCompatibility(t *testing.T) {
	settled := []offsetRun{{110, 150}, {200, 201}}
	mapMeta, _ := encodeOffsetMap(offsetMap{base: 100, end: 201, runs: settled}, maxOffsetMetadata)
	for _, tc := range []struct {
		name                  string
		meta                  string
		wantSkipped, wantIgnr int64
	}{
		{"previous version, no metadata", "", 0, 0},
		{"foreign metadata", "consumer-x;v=3;lag=12", 0, 1},
		{"offset map", mapMeta, 41, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "src"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			produceNumbered(t, c.ListenAddrs(), "src", 0, 300)
			commitPlain(t, c.ListenAddrs(), "g", "src", 100, tc.meta)
			b := newCountingBraze()
			p := testPipeline(t, c.ListenAddrs(), "src", "g", b, nil)
			runUntil(t, p, func() bool { off, _ := fetchCommitted(t, c.ListenAddrs(), "g", "src"); return off == 300 })
			// A settled message is skipped unless an earlier message of its user (n % 41) was
			// delivered again since the resume: then it is delivered again too, in order.
			replayed := map[int]bool{}
			var skipped int64
			for n := 0; n < 300; n++ {
				want := 1
				settled := tc.wantSkipped > 0 && ((n >= 110 && n < 150) || n == 200)
				switch {
				case n < 100:
					want = 0
				case settled && !replayed[n%41]:
					want = 0
					skipped++
				default:
					replayed[n%41] = true
				}
				if got := b.delivered(n); got != want {
					t.Fatalf("message %d delivered %d times, want %d", n, got, want)
				}
			}
			if tc.wantSkipped > 0 && (skipped == 0 || skipped == tc.wantSkipped) {
				t.Fatalf("the case should skip some settled messages and deliver others again (skipped %d of %d)", skipped, tc.wantSkipped)
			}
			if s := p.stats.ResumeSkipped.Load(); s != skipped {
				t.Errorf("skipped %d, want %d", s, skipped)
			}
			if s := p.stats.OffsetMapIgnored.Load(); s != tc.wantIgnr {
				t.Errorf("ignored %d, want %d", s, tc.wantIgnr)
			}
		})
	}
}

// A worker resumes past a map whose settled messages follow unsettled ones of the same users
// (what a bundle leaves when one of its users' requests was in flight), delivers some of the
// unsettled ones again, commits and stops before it has read the settled ones. The next owner
// must not skip those: every delivery of a user's message is followed by a delivery of each
// later message of that user, so the user's last write is the last one applied.
func TestResumeKeepsOrderAcrossCrashes(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "src"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	produceNumbered(t, c.ListenAddrs(), "src", 0, 300)
	settled := []offsetRun{{110, 150}, {200, 201}}
	meta, _ := encodeOffsetMap(offsetMap{base: 100, end: 201, runs: settled}, maxOffsetMetadata)
	commitPlain(t, c.ListenAddrs(), "g", "src", 100, meta)
	b := newCountingBraze()
	b.hold.Store(105) // never settles in the first worker's life
	b.refuse = true
	// The first worker reads at most 3 offsets past 105, so it never reaches 110.
	p1 := testPipeline(t, c.ListenAddrs(), "src", "g", b, func(c *Config) { c.MaxRunAhead = 3; c.ShutdownTimeout = time.Second })
	runUntil(t, p1, func() bool {
		off, meta := fetchCommitted(t, c.ListenAddrs(), "g", "src")
		m, _ := decodeOffsetMap(meta)
		return off == 105 && b.delivered(107) == 1 && len(m.runs) > 0 && m.runs[0].lo == 106
	})
	if f := p1.stats.MessagesConsumed.Load(); f > 10 {
		t.Fatalf("the first worker read %d messages; the test needs it to stop before 110", f)
	}
	b.hold.Store(-1)
	p2 := testPipeline(t, c.ListenAddrs(), "src", "g", b, nil)
	runUntil(t, p2, func() bool { off, _ := fetchCommitted(t, c.ListenAddrs(), "g", "src"); return off == 300 })

	b.mu.Lock()
	defer b.mu.Unlock()
	last := map[int]int{} // message number -> index of its last delivery
	for i, n := range b.log {
		last[n] = i
	}
	for i, a := range b.log {
		for n := a + 41; n < 300; n += 41 {
			if j, ok := last[n]; !ok || j < i {
				t.Fatalf("message %d (user u%d) delivered at %d, but the user's later message %d not after it (last delivery %d, present %v): its older write is the last one",
					a, a%41, i, n, j, ok)
			}
		}
	}
	if b.seen[110] != 0 || p1.stats.ResumeSkipped.Load()+p2.stats.ResumeSkipped.Load() == 0 {
		t.Fatalf("settled messages with no user delivered again should be skipped (110 delivered %d times)", b.seen[110])
	}
}

// The other way round: what this worker commits is a plain, safe resume point for a
// consumer that ignores the metadata (the previous version): everything below it is settled.
func TestCommitReadableWithoutMap(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "src"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	produceNumbered(t, c.ListenAddrs(), "src", 0, 200)
	b := newCountingBraze()
	b.hold.Store(120) // never settles in this run
	b.refuse = true
	p := testPipeline(t, c.ListenAddrs(), "src", "g", b, func(c *Config) { c.ShutdownTimeout = time.Second })
	// The request carrying message 120 (and the lane's records before and after it) waits;
	// the others settle and are mapped.
	runUntil(t, p, func() bool {
		off, meta := fetchCommitted(t, c.ListenAddrs(), "g", "src")
		m, _ := decodeOffsetMap(meta)
		d, _ := b.counts()
		return off >= 0 && off <= 120 && d > 150 && len(m.runs) > 0 && m.end >= 190
	})
	off, meta := fetchCommitted(t, c.ListenAddrs(), "g", "src")
	if b.delivered(int(off)) != 0 {
		t.Fatalf("committed %d, but message %d was delivered: the watermark is past an unsettled message", off, off)
	}
	m, err := decodeOffsetMap(meta)
	if err != nil {
		t.Fatal(err)
	}
	skip := skipSet{runs: m.runs}
	for n := int(off); n < 200; n++ {
		if skip.settled(int64(n)) && b.delivered(n) != 1 {
			t.Fatalf("map says %d is settled; delivered %d times", n, b.delivered(n))
		}
	}
	// A plain kafka-go group consumer (no offset map) resumes at the committed offset.
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: c.ListenAddrs(), GroupID: "g", Topic: "src", MaxWait: 50 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	msg, err := r.FetchMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Offset != off || !bytes.Contains(msg.Value, []byte(fmt.Sprintf(`"n":%d}`, off))) {
		t.Fatalf("plain consumer resumed at %d", msg.Offset)
	}
}

// KAFKA_START_OFFSET=latest: a new group commits where it starts, so a crash before its
// first delivery does not move the start to the (later) end of the partition.
func TestLatestStartCommittedAtOnce(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "src"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	produceNumbered(t, c.ListenAddrs(), "src", 0, 50) // history a new group skips
	b := newCountingBraze()
	latest := func(c *Config) { c.StartOffset = kafka.LastOffset }
	p := testPipeline(t, c.ListenAddrs(), "src", "g", b, latest)
	runUntil(t, p, func() bool { off, _ := fetchCommitted(t, c.ListenAddrs(), "g", "src"); return off == 50 })
	// The worker is gone before anything new arrived; these must not be skipped.
	produceNumbered(t, c.ListenAddrs(), "src", 50, 80)
	p2 := testPipeline(t, c.ListenAddrs(), "src", "g", b, latest)
	runUntil(t, p2, func() bool { d, _ := b.counts(); return d == 30 })
	if d, dups := b.counts(); d != 30 || dups != 0 || b.delivered(10) != 0 {
		t.Fatalf("delivered %d distinct, %d repeats (history delivered: %d)", d, dups, b.delivered(10))
	}
}

// Two workers, the second joining mid-run while one request of the first hangs (so its drain
// times out and its final commit stops below records it already delivered): the partitions
// the second takes over resume past what the first settled (the offset map in that commit),
// so duplicates stay few.
func TestRebalanceSkipsSettled(t *testing.T) {
	if testing.Short() {
		t.Skip("rebalance")
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(6, "src"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 6000
	produceNumbered(t, c.ListenAddrs(), "src", 0, n)
	b := newCountingBraze()
	b.delay = 3 * time.Millisecond
	b.hold.Store(n / 8)
	b.release = make(chan struct{})
	slow := func(c *Config) { c.Lanes = 4; c.Limits.MaxObjects = 10; c.DrainTimeout = time.Second }
	p1 := testPipeline(t, c.ListenAddrs(), "src", "g", b, slow)
	p2 := testPipeline(t, c.ListenAddrs(), "src", "g", b, slow)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 2)
	go func() { done <- p1.Run(ctx) }()
	waitCond(t, func() bool { d, _ := b.counts(); return d > n/4 && b.holding.Load() })
	go func() { done <- p2.Run(ctx) }()
	// The first worker's drain times out on the held request; then it is let go.
	waitCond(t, func() bool { return p2.stats.MessagesConsumed.Load() > 0 })
	close(b.release)
	waitCond(t, func() bool { d, _ := b.counts(); return d == n })
	cancel()
	for i := 0; i < 2; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	d, dups := b.counts()
	skipped := p2.stats.ResumeSkipped.Load() + p1.stats.ResumeSkipped.Load()
	t.Logf("rebalance mid-run: %d of %d delivered, %d delivered twice; %d messages skipped on resume (settled by the previous owner)", d, n, dups, skipped)
	if p2.stats.RecordsDelivered[0].Load()+p2.stats.RecordsDelivered[1].Load()+p2.stats.RecordsDelivered[2].Load() == 0 {
		t.Fatal("the second worker delivered nothing: no rebalance happened")
	}
	if dups > n/100 {
		t.Errorf("%d duplicates on a rebalance, want at most %d", dups, n/100)
	}
}

func waitCond(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
