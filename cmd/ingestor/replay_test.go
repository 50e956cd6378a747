package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/braze-ingestor/braze-ingestor/brazesim"
	"github.com/braze-ingestor/braze-ingestor/dlq"
)

const testTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// replayEnv sets the environment `ingestor replay` reads.
func replayEnv(t *testing.T, k *testKafka) {
	t.Helper()
	t.Setenv("KAFKA_BROKERS", strings.Join(k.Brokers, ","))
	t.Setenv("KAFKA_DLQ_TOPIC", k.DLQ)
	for _, name := range []string{"KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SASL_PASSWORD_FILE",
		"KAFKA_TLS_ENABLED", "KAFKA_TLS_CA_FILE", "KAFKA_TLS_CERT_FILE", "KAFKA_TLS_KEY_FILE"} {
		t.Setenv(name, "")
		os.Unsetenv(name)
	}
}

func runReplayCmd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := cmdReplay(ctx, args, &out, &errb)
	t.Logf("ingestor replay %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errb.String())
	return code, out.String() + errb.String()
}

func writeTopic(t *testing.T, brokers []string, topic string, msgs ...kafka.Message) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
}

// readTopic reads every record of topic.
func readTopic(t *testing.T, k *testKafka, topic string) []kafka.Message {
	t.Helper()
	return readDLQ(t, &testKafka{Brokers: k.Brokers, DLQ: topic})
}

// TestReplayRoundTrip: Braze rejects some users, the worker dead-letters them; Braze is fixed
// for half of them; replay puts the dead letters back and the worker delivers the fixed ones,
// while the still-bad ones come back to the DLQ marked as a second attempt.
func TestReplayRoundTrip(t *testing.T) {
	k := newTestKafka(t, 3)
	var good, fixed, stillBad []string
	for i := range 8 {
		good = append(good, fmt.Sprintf("good-%d", i))
	}
	for i := range 3 {
		fixed = append(fixed, fmt.Sprintf("fixed-%d", i))
		stillBad = append(stillBad, fmt.Sprintf("stillbad-%d", i))
	}
	var msgs []kafka.Message
	for _, u := range append(append(append([]string(nil), good...), fixed...), stillBad...) {
		hs := []kafka.Header{{Key: "traceparent", Value: []byte(testTraceparent)}}
		msgs = append(msgs,
			kafka.Message{Key: []byte(u), Headers: hs, Value: []byte(`{"type":"attributes","data":{"external_id":"` + u + `","plan":"gold"}}`)},
			kafka.Message{Key: []byte(u), Headers: hs, Value: []byte(`{"type":"event","data":{"external_id":"` + u + `","name":"signup","time":"2026-01-01T00:00:00Z"},"id":"ev-` + u + `"}`)})
	}
	writeTopic(t, k.Brokers, k.Topic, msgs...)
	rejected := 2 * (len(fixed) + len(stillBad))

	// 1. Braze blacklists fixed-* and stillbad-*: they are dead-lettered as braze_rejected.
	sim1 := newSim(t, func(c *brazesim.Config) {
		c.BlacklistedExternalIDs = append(append([]string(nil), fixed...), stillBad...)
	})
	p, stop := startWorker(t, testConfig(k, sim1, "replay-rt"))
	waitFor(t, 30*time.Second, "first pass settled", func() bool {
		s := p.Stats().Snapshot()
		return s.RecordsDelivered+s.DeadLetteredAll >= int64(len(msgs))
	})
	stop()
	if s := p.Stats().Snapshot(); s.DeadLettered[dlq.ReasonBrazeRejected] != int64(rejected) {
		t.Fatalf("first pass dead-lettered %v, want %d braze_rejected", s.DeadLettered, rejected)
	}

	// 2. Braze is fixed for fixed-*; replay everything Braze rejected.
	sim2 := newSim(t, func(c *brazesim.Config) { c.BlacklistedExternalIDs = stillBad })
	replayEnv(t, k)
	code, out := runReplayCmd(t, "--reason", "braze_rejected")
	if code != 0 {
		t.Fatalf("replay exit %d", code)
	}
	if !strings.Contains(out, fmt.Sprintf("replayed              %d", rejected)) || !strings.Contains(out, fmt.Sprintf("matched               %d", rejected)) {
		t.Errorf("replay summary does not report %d replayed records", rejected)
	}

	// 3. The worker (same group) picks up only the replayed records.
	p2, stop2 := startWorker(t, testConfig(k, sim2, "replay-rt"))
	waitFor(t, 30*time.Second, "replayed records settled", func() bool {
		s := p2.Stats().Snapshot()
		return s.RecordsDelivered+s.DeadLetteredAll >= int64(rejected)
	})
	stop2()

	for _, u := range fixed {
		usr, ok := sim2.Sim.User("external_id", u)
		if !ok {
			t.Errorf("%s: no profile after replay", u)
			continue
		}
		if usr.Attributes["plan"] != "gold" || len(usr.Events) != 1 || usr.Events[0].Name != "signup" {
			t.Errorf("%s after replay: attributes %v, %d events", u, usr.Attributes, len(usr.Events))
		}
	}
	for _, u := range append(append([]string(nil), good...), stillBad...) {
		if _, ok := sim2.Sim.User("external_id", u); ok {
			t.Errorf("%s reached Braze on the second pass (good ones were delivered before; still-bad ones are rejected)", u)
		}
	}

	// The still-bad records are back in the DLQ as a visible second attempt.
	var second int
	for _, m := range readDLQ(t, k) {
		if header(m, dlq.HeaderReplayCount) == "" {
			continue
		}
		second++
		if !strings.HasPrefix(string(m.Key), "stillbad-") {
			t.Errorf("replayed dead letter for %q, want only stillbad-*", m.Key)
		}
		if header(m, dlq.HeaderReplayCount) != "1" || header(m, dlq.HeaderReason) != "braze_rejected" ||
			!strings.HasPrefix(header(m, dlq.HeaderReplayFrom), k.DLQ+"/") || header(m, dlq.HeaderReplayAt) == "" ||
			header(m, "traceparent") != testTraceparent || header(m, dlq.HeaderSourceTopic) != k.Topic {
			t.Errorf("second dead letter headers: %v", m.Headers)
		}
		if !strings.Contains(header(m, dlq.HeaderError), "BLACKLISTED") && !strings.Contains(header(m, dlq.HeaderError), "blacklisted") {
			t.Errorf("second dead letter error %q", header(m, dlq.HeaderError))
		}
		n := 0
		for _, h := range m.Headers {
			if h.Key == dlq.HeaderReason || h.Key == dlq.HeaderReplayCount {
				n++
			}
		}
		if n != 2 {
			t.Errorf("duplicate dlq headers: %v", m.Headers)
		}
	}
	if second != 2*len(stillBad) {
		t.Errorf("%d dead letters carry dlq.replay.count, want %d", second, 2*len(stillBad))
	}
}

// dlqFixture writes dead letters of several reasons, source topics and times (plus a
// preflight marker) straight to the DLQ. Each record's error text names it (rec-N).
func dlqFixture(t *testing.T, k *testKafka) {
	t.Helper()
	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	env := func(u string) []byte { return []byte(`{"external_id":"` + u + `","plan":"gold"}`) }
	trace := []kafka.Header{{Key: "traceparent", Value: []byte(testTraceparent)}, {Key: "app", Value: []byte("shop")}}
	letters := []dlq.Letter{
		{Reason: dlq.ReasonBrazeRejected, Error: "rec-1", FailedAt: at("2026-01-01T10:00:00Z"), SourceTopic: k.Topic, SourcePartition: 2, SourceOffset: 7,
			Key: []byte("u1"), Headers: trace, Type: "attributes", Record: env("u1"), Attempts: 1},
		{Reason: dlq.ReasonBrazeRejected, Error: "rec-2", FailedAt: at("2026-01-01T12:00:00Z"), SourceTopic: "other-topic", SourcePartition: 0,
			Key: []byte("u2"), Type: "attributes", Record: env("u2"), Attempts: 1},
		{Reason: dlq.ReasonInvalidRecord, Error: "rec-3", FailedAt: at("2026-01-01T11:00:00Z"), SourceTopic: k.Topic, SourcePartition: 1,
			Key: []byte("u3"), Type: "attributes", Record: env("u3")},
		{Reason: dlq.ReasonRetriesExhausted, Error: "rec-4", FailedAt: at("2026-01-02T00:00:00Z"), SourceTopic: k.Topic, SourcePartition: 0,
			Key: []byte("u4"), Type: "attributes", Record: env("u4"), Attempts: 9,
			// replayed twice before
			Headers: []kafka.Header{{Key: dlq.HeaderReplayCount, Value: []byte("2")}, {Key: dlq.HeaderReplayFrom, Value: []byte("old/0/1")}}},
		{Reason: dlq.ReasonInvalidJSON, Error: "rec-5", FailedAt: at("2026-01-01T09:00:00Z"), SourceTopic: k.Topic, SourcePartition: 0,
			Key: []byte("u5"), Original: []byte(`{"type":"event","data":{"name":"x"`), RecordIndex: -1},
	}
	msgs := make([]kafka.Message, 0, len(letters)+1)
	for i := range letters {
		msgs = append(msgs, letters[i].Message())
	}
	msgs = append(msgs, kafka.Message{Key: []byte("ingestor-preflight-check"), Value: []byte(`{"preflight_check":{}}`), Headers: []kafka.Header{
		{Key: dlq.HeaderReason, Value: []byte(dlq.ReasonPreflightCheck)}, {Key: dlq.HeaderError, Value: []byte("rec-marker")},
		{Key: dlq.HeaderFailedAt, Value: []byte("2026-01-01T11:30:00Z")}}})
	writeTopic(t, k.Brokers, k.DLQ, msgs...)
}

// recsIn lists the rec-N names on "would replay"/"replay" lines of the output, in order.
func recsIn(out string) []string {
	var recs []string
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "would replay ") && !strings.HasPrefix(line, "replay ") {
			continue
		}
		if i := strings.Index(line, `error="rec-`); i >= 0 {
			r := line[i+len(`error="`):]
			recs = append(recs, r[:strings.IndexByte(r, '"')])
		}
	}
	slices.Sort(recs)
	return recs
}

// TestReplayDryRun prints one line per record and writes nothing.
func TestReplayDryRun(t *testing.T) {
	k := newTestKafka(t, 3)
	dlqFixture(t, k)
	replayEnv(t, k)
	before := len(readTopic(t, k, k.Topic))
	code, out := runReplayCmd(t, "--reason", "braze_rejected,invalid_record", "--dry-run")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	// rec-1 goes back to its source partition; rec-2's source topic does not exist.
	wantLine := fmt.Sprintf(`reason=braze_rejected  -> %s[2]  replay.count=1  error="rec-1"`, k.Topic)
	if !strings.Contains(out, "would replay "+k.DLQ+"/") || !strings.Contains(out, wantLine) {
		t.Errorf("no dry-run line %q", wantLine)
	}
	if !strings.Contains(out, "would fail ") || !strings.Contains(out, "-> other-topic: topic other-topic") {
		t.Errorf("no line for the missing target topic")
	}
	if got := recsIn(out); strings.Join(got, ",") != "rec-1,rec-3" {
		t.Errorf("dry run would replay %v, want rec-1,rec-3", got)
	}
	for _, w := range []string{"dry run (nothing written)", "matched               3", "would replay          2", "skipped by filter     2", "skipped preflight     1", "skipped, no target    1"} {
		if !strings.Contains(out, w) {
			t.Errorf("summary lacks %q", w)
		}
	}
	if after := len(readTopic(t, k, k.Topic)); after != before {
		t.Errorf("dry run wrote %d records to %s", after-before, k.Topic)
	}
}

// TestReplayFilters selects by reason, source topic, time window and limit, and a real run
// republishes exactly the selected records with the replay marks.
func TestReplayFilters(t *testing.T) {
	k := newTestKafka(t, 3)
	dlqFixture(t, k)
	replayEnv(t, k)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--reason", "braze_rejected"}, "rec-1,rec-2"},
		{[]string{"--reason", "braze_rejected", "--source-topic", k.Topic}, "rec-1"},
		{[]string{"--all"}, "rec-1,rec-2,rec-3,rec-4,rec-5"},
		{[]string{"--all", "--since", "2026-01-01T10:30:00Z", "--until", "2026-01-02T00:00:00Z"}, "rec-2,rec-3"},
		{[]string{"--all", "--since", "2026-01-01T11:00:00Z"}, "rec-2,rec-3,rec-4"},
		{[]string{"--all", "--until", "2026-01-01T10:00:00.000000001Z"}, "rec-1,rec-5"},
		{[]string{"--reason", "invalid_json, retries_exhausted"}, "rec-4,rec-5"},
		{[]string{"--reason", "too_large"}, ""},
		// rec-4 was replayed twice before (dlq.replay.count 2).
		{[]string{"--all", "--max-replays", "2"}, "rec-1,rec-2,rec-3,rec-5"},
		{[]string{"--all", "--max-replays", "3"}, "rec-1,rec-2,rec-3,rec-4,rec-5"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out := runReplayCmd(t, append(tc.args, "--dry-run", "--to", k.Topic)...)
			if code != 0 {
				t.Fatalf("exit %d", code)
			}
			if got := strings.Join(recsIn(out), ","); got != tc.want {
				t.Errorf("selected %q, want %q", got, tc.want)
			}
			if strings.Contains(out, "rec-marker") {
				t.Errorf("the preflight marker was selected")
			}
		})
	}
	t.Run("limit", func(t *testing.T) {
		code, out := runReplayCmd(t, "--all", "--limit", "2", "--dry-run", "--to", k.Topic)
		if code != 0 || len(recsIn(out)) != 2 || !strings.Contains(out, "matched               2") {
			t.Errorf("--limit 2: exit %d, %v", code, recsIn(out))
		}
	})
	t.Run("usage errors", func(t *testing.T) {
		for _, args := range [][]string{{}, {"--reason", "x", "--all"}, {"--all", "--since", "yesterday"},
			{"--all", "--since", "2026-01-02T00:00:00Z", "--until", "2026-01-01T00:00:00Z"}, {"--reason", "preflight_check"}, {"--all", "--to", k.DLQ},
			{"--all", "--max-replays", "-1"}} {
			if code, _ := runReplayCmd(t, args...); code != 2 {
				t.Errorf("%v: exit %d, want 2", args, code)
			}
		}
	})

	// A real run: rec-1 back to its source partition, rec-4 and rec-3 too; rec-2 is filtered
	// out by --source-topic.
	code, out := runReplayCmd(t, "--reason", "braze_rejected,invalid_record,retries_exhausted", "--source-topic", k.Topic, "-v")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(out, "replayed              3") || !strings.Contains(out, "next run: add --since ") {
		t.Errorf("summary: %s", out)
	}
	got := map[string]kafka.Message{}
	for _, m := range readTopic(t, k, k.Topic) {
		got[string(m.Key)] = m
	}
	if len(got) != 3 {
		t.Fatalf("source topic holds %d records, want 3", len(got))
	}
	m1 := got["u1"]
	if m1.Partition != 2 || string(m1.Value) != `{"type":"attributes","data":{"external_id":"u1","plan":"gold"}}` {
		t.Errorf("u1 replayed to partition %d with value %q", m1.Partition, m1.Value)
	}
	if header(m1, "traceparent") != testTraceparent || header(m1, "app") != "shop" || header(m1, dlq.HeaderReplayCount) != "1" ||
		!strings.HasPrefix(header(m1, dlq.HeaderReplayFrom), k.DLQ+"/") || header(m1, dlq.HeaderReplayAt) == "" {
		t.Errorf("u1 headers: %v", m1.Headers)
	}
	for _, m := range got {
		for _, h := range m.Headers {
			if strings.HasPrefix(h.Key, "dlq.") && !strings.HasPrefix(h.Key, "dlq.replay.") {
				t.Errorf("%s carries %s back to the source topic", m.Key, h.Key)
			}
		}
	}
	if m4 := got["u4"]; header(m4, dlq.HeaderReplayCount) != "3" || m4.Partition != 0 || strings.Contains(header(m4, dlq.HeaderReplayFrom), "old/") {
		t.Errorf("u4 (replayed twice before): partition %d headers %v", m4.Partition, m4.Headers)
	}
	if _, ok := got["u3"]; !ok {
		t.Errorf("u3 (invalid_record) not replayed")
	}
}
