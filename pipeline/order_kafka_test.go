package pipeline

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"github.com/braze-ingestor/braze-ingestor/schemas"
)

// lineDecoder reads test messages "<envelope type> <user> <seq>", so that these tests do not
// depend on the input format of the other endpoints' records.
type lineDecoder struct{}

func (lineDecoder) Decode(v []byte, out []schemas.Record) ([]schemas.Record, error) {
	var typ, user string
	var seq int
	if _, err := fmt.Sscan(string(v), &typ, &user, &seq); err != nil {
		return out, err
	}
	for k := schemas.Kind(0); k < schemas.NumKinds; k++ {
		if k.EnvelopeType() == typ {
			it := testRecord(k, user, seq, 0)
			return append(out, schemas.Record{Kind: k, Raw: it.raw, IDKind: schemas.IDExternal, UserID: []byte(user), UserHash: it.user}), nil
		}
	}
	return out, fmt.Errorf("unknown type %q", typ)
}

// Shutdown does not wait for a held user's records whose spacing has not passed: they are
// left to Kafka (not committed) and the next run delivers them, in order; records of other
// users settled meanwhile are not sent again. Nothing of the pipeline is left running.
func TestShutdownLeavesHeldRecordsToKafka(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "src"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := &kafka.Writer{Addr: kafka.TCP(c.ListenAddrs()...), Topic: "src", BatchTimeout: time.Millisecond}
	var msgs []kafka.Message
	for _, v := range []string{"event u1 1", "delete u1 2", "event u1 3", "event u2 1", "alias u2 2", "event u2 3"} {
		msgs = append(msgs, kafka.Message{Value: []byte(v)})
	}
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()
	time.Sleep(100 * time.Millisecond)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(),
		goleak.IgnoreAnyFunction("github.com/twmb/franz-go/pkg/kfake.(*clientConn).read.func1"),
		goleak.IgnoreAnyFunction("github.com/twmb/franz-go/pkg/kfake.(*clientConn).write"))

	first := &epBraze{}
	took := runOrderUntil(t, c, first, "track>delete=10m", func(p *Pipeline) bool {
		return p.stats.Snapshot().RecordsDelivered == 4 && p.stats.HeldUsers.Load() == 1
	})
	if took > 5*time.Second {
		t.Errorf("shutdown took %s: it waited for the held record", took)
	}
	if got := committed(t, c); got != 1 {
		t.Errorf("committed offset %d, want 1 (the held delete)", got)
	}
	if calls := first.userCalls("u1"); len(calls) != 1 {
		t.Errorf("u1: %d requests before the restart, want its first track only", len(calls))
	}
	second := &epBraze{}
	runOrderUntil(t, c, second, "", func(p *Pipeline) bool { return p.stats.Snapshot().RecordsDelivered == 2 })
	var eps []endpoint.Endpoint
	for _, call := range second.userCalls("u1") {
		eps = append(eps, call.ep)
	}
	if !slices.Equal(eps, []endpoint.Endpoint{endpoint.Delete, endpoint.Track}) {
		t.Errorf("u1 after the restart: %v, want the delete then the track", eps)
	}
	if calls := second.userCalls("u2"); len(calls) != 0 {
		t.Errorf("u2's settled records were sent again: %d requests", len(calls))
	}
	if got := committed(t, c); got != 6 {
		t.Errorf("committed offset %d, want 6", got)
	}
}

// runOrderUntil runs a pipeline on c's "src" until done, then shuts it down; it returns how long
// the shutdown took.
func runOrderUntil(t *testing.T, c *kfake.Cluster, braze *epBraze, spacingCfg string, done func(*Pipeline) bool) time.Duration {
	t.Helper()
	cfg := Config{Brokers: c.ListenAddrs(), Topics: []string{"src"}, GroupID: "g", Lanes: 4, Linger: 5 * time.Millisecond,
		CommitInterval: 50 * time.Millisecond, MaxWait: 50 * time.Millisecond, ShutdownTimeout: 20 * time.Second,
		NewDecoder: func(string) Decoder { return lineDecoder{} },
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil))}
	for e := endpoint.Track + 1; e < endpoint.Count; e++ {
		cfg.Endpoints[e] = true
	}
	spacing(spacingCfg)(&cfg)
	p, err := New(cfg, braze, &memDLQ{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- p.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for !done(p) {
		if time.Now().After(deadline) {
			t.Fatalf("not done: %+v", p.Stats().Snapshot())
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	cancel()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

func committed(t *testing.T, c *kfake.Cluster) int64 {
	t.Helper()
	cl := &kafka.Client{Addr: kafka.TCP(c.ListenAddrs()...)}
	resp, err := cl.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: "g", Topics: map[string][]int{"src": {0}}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Topics["src"][0].CommittedOffset
}
