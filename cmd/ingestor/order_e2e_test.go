package main

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/braze-ingestor/braze-ingestor/brazesim"
	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/endpoint"
)

// TestEndToEndOrderAcrossEndpoints runs users' records of several endpoints through the
// worker against the simulator while /users/track answers 5xx to a third of its requests:
// each user's operations reach Braze in Kafka order across endpoints (a delete after the
// user's earlier track request was delivered, even when that request was retried; a track
// after the identify before it), spaced as ENDPOINT_SPACING says, and nothing is lost.
func TestEndToEndOrderAcrossEndpoints(t *testing.T) {
	const users = 30
	k := newTestKafka(t, 4)
	sim := newSim(t, nil)
	cfg := testConfig(k, sim, "order")
	cfg.Endpoints = []string{"track", "alias", "identify", "delete"}
	cfg.EndpointSpacing = "*>*=0s,track>delete=200ms,identify>track=150ms"
	cfg.BreakerOpenFor = 200 * time.Millisecond // a third of track requests fail: runs of 5 open it
	p, stop := startWorker(t, cfg)

	// The aliases first: an alias and the identify naming it have different ordering
	// identities (docs/architecture.md "Per-user order"), so the identify must not overtake it.
	var msgs []kafka.Message
	for i := 0; i < users; i++ {
		msgs = append(msgs, msg(i, fmt.Sprintf(`{"type":"alias","data":{"alias_name":"anon-%d","alias_label":"segment"}}`, i)))
	}
	write(t, k, msgs)
	waitFor(t, 30*time.Second, "aliases created", func() bool {
		return p.Stats().Snapshot().Endpoints[endpoint.AliasNew].RecordsDelivered == users
	})
	sim.Sim.SetFaults(brazesim.Faults{Endpoints: map[string]brazesim.EndpointFaults{"track": {Error5xxRate: 0.33}}})
	msgs = msgs[:0]
	for i := 0; i < users; i++ {
		u, known := fmt.Sprintf("ord-%d", i), fmt.Sprintf("known-%d", i)
		msgs = append(msgs,
			msg(i, fmt.Sprintf(`{"type":"event","data":{"external_id":%q,"name":"before","time":"2026-01-01T00:00:00Z"}}`, u)),
			msg(i, fmt.Sprintf(`{"type":"delete","data":{"external_id":%q}}`, u)),
			msg(i, fmt.Sprintf(`{"type":"attributes","data":{"external_id":%q,"seq":3}}`, u)),
			msg(i, fmt.Sprintf(`{"type":"identify","data":{"external_id":%q,"user_alias":{"alias_name":"anon-%d","alias_label":"segment"}}}`, known, i)),
			msg(i, fmt.Sprintf(`{"type":"event","data":{"external_id":%q,"name":"after","time":"2026-01-01T00:00:01Z"}}`, known)))
	}
	write(t, k, msgs)
	waitFor(t, 60*time.Second, "all records delivered", func() bool {
		s := p.Stats().Snapshot()
		return s.RecordsDelivered == users*6 && s.HeldUsers == 0
	})
	stop()
	s := p.Stats().Snapshot()
	if s.DeadLetteredAll != 0 || s.RequestsByClass["retry"] == 0 {
		t.Errorf("dead letters %d, retried requests %d: want none, and some 5xx retried", s.DeadLetteredAll, s.RequestsByClass["retry"])
	}
	for i := 0; i < users; i++ {
		checkOps(t, sim.Sim, fmt.Sprintf("ord-%d", i), []string{"track", "delete", "track"}, 1, 200*time.Millisecond)
		checkOps(t, sim.Sim, fmt.Sprintf("known-%d", i), []string{"alias", "identify", "track"}, 2, 150*time.Millisecond)
	}
	t.Logf("requests by endpoint: %+v", s.Endpoints)
}

// checkOps checks the endpoints of the operations Braze applied to external_id id, in
// order, and that operation at came at least gap after the one before it.
func checkOps(t *testing.T, sim *brazesim.Sim, id string, want []string, at int, gap time.Duration) {
	t.Helper()
	ops := sim.Ops("external_id", id)
	var got []string
	for _, o := range ops {
		got = append(got, o.Endpoint)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s: operations %v, want %v", id, got, want)
		return
	}
	if d := ops[at].Time.Sub(ops[at-1].Time); d < gap {
		t.Errorf("%s: %s came %s after %s, want at least %s", id, want[at], d, want[at-1], gap)
	}
}

func msg(user int, v string) kafka.Message {
	return kafka.Message{Key: []byte(fmt.Sprint(user)), Value: []byte(v)}
}

func write(t *testing.T, k *testKafka, msgs []kafka.Message) {
	t.Helper()
	w := k.writer(k.Topic)
	defer w.Close()
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
}

// TestEndToEndEndpointDeadLetters: Braze's rejections of another endpoint's records are
// dead-lettered braze_rejected with Braze's message, and a record for an endpoint not in
// ENDPOINTS is dead-lettered invalid_record naming it; the other records are delivered.
func TestEndToEndEndpointDeadLetters(t *testing.T) {
	k := newTestKafka(t, 2)
	sim := newSim(t, nil)
	sim.Sim.SetFaults(brazesim.Faults{Endpoints: map[string]brazesim.EndpointFaults{
		"delete": {RejectMarker: "refused"}, "merge": {RejectMarker: "refused"}}})
	cfg := testConfig(k, sim, "epdlq")
	cfg.Endpoints = []string{"track", "delete", "merge"}
	cfg.EndpointSpacing = "*>*=0s"
	p, stop := startWorker(t, cfg)
	// A few refused entries among many good ones: a request with one is answered 400 as a
	// whole and bisected. (Most answers being the same rejection would halt the worker: the
	// mass-rejection guard, docs/architecture.md "Answers".)
	var msgs []kafka.Message
	for i := 0; i < 40; i++ {
		del, merge := fmt.Sprintf("gone-%d", i), fmt.Sprintf("m-%d", i)
		if i%10 == 3 {
			del, merge = "refused-"+del, "refused-"+merge
		}
		msgs = append(msgs,
			msg(i, fmt.Sprintf(`{"type":"event","data":{"external_id":"e-%d","name":"e","time":"2026-01-01T00:00:00Z"}}`, i)),
			msg(i, fmt.Sprintf(`{"type":"delete","data":{"external_id":%q}}`, del)),
			msg(i, fmt.Sprintf(`{"type":"merge","data":{"identifier_to_merge":{"external_id":%q},"identifier_to_keep":{"external_id":"keep-%d"}}}`, merge, i)))
		if i < 5 {
			msgs = append(msgs, msg(i, fmt.Sprintf(`{"type":"identify","data":{"external_id":"x-%d","user_alias":{"alias_name":"a","alias_label":"l"}}}`, i)))
		}
	}
	write(t, k, msgs)
	waitFor(t, 30*time.Second, "all records settled", func() bool {
		s := p.Stats().Snapshot()
		return s.RecordsDelivered+s.DeadLetteredAll == int64(len(msgs))
	})
	stop()
	byType := map[string]map[string]int{}
	for _, m := range readDLQ(t, k) {
		var env struct{ Type string }
		if err := json.Unmarshal(m.Value, &env); err != nil {
			t.Fatalf("dead letter value %q: %v", m.Value, err)
		}
		typ, reason, e := env.Type, header(m, dlq.HeaderReason), header(m, dlq.HeaderError)
		if byType[typ] == nil {
			byType[typ] = map[string]int{}
		}
		byType[typ][reason]++
		if reason == "invalid_record" && e != "endpoint identify is not enabled: add it to ENDPOINTS" {
			t.Errorf("invalid_record error %q", e)
		}
		if reason == "braze_rejected" && e == "" {
			t.Errorf("braze_rejected without Braze's message")
		}
	}
	want := map[string]map[string]int{"delete": {"braze_rejected": 4}, "merge": {"braze_rejected": 4}, "identify": {"invalid_record": 5}}
	if fmt.Sprint(byType) != fmt.Sprint(want) {
		t.Errorf("dead letters by type and reason %v, want %v", byType, want)
	}
	if s := p.Stats().Snapshot(); s.Endpoints[endpoint.Delete].RecordsDelivered != 36 || s.Endpoints[endpoint.Delete].DeadLettered != 4 || s.Endpoints[endpoint.Merge].DeadLettered != 4 {
		t.Errorf("per-endpoint counts %+v", s.Endpoints)
	}
}
