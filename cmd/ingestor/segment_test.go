package main

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/braze-ingestor/braze-ingestor/dlq"
)

// TestSegmentEndToEnd produces Segment calls to a topic configured as segment and checks
// the Braze profiles the simulator ends up with: standard fields and custom attributes from
// identify, events from track, one purchase per product from Order Completed, an anonymous
// user as an alias profile, skipped calls acknowledged and an invalid call dead-lettered as
// its original bytes.
func TestSegmentEndToEnd(t *testing.T) {
	k := newTestKafka(t, 3)
	sim := newSim(t, nil)
	const ts = `"timestamp":"2024-05-01T10:00:00.000Z"`
	const bad = `{"type":"track","userId":"seg-user-1","messageId":"m-bad","event":"","timestamp":"2024-05-01T10:00:09Z"}`
	msgs := []kafka.Message{
		{Key: []byte("seg-user-1"), Value: []byte(`{"type":"identify","userId":"seg-user-1","messageId":"m-1",` + ts + `,
			"context":{"library":{"name":"analytics-node"}},"traits":{"firstName":"Ada","lastName":"Lovelace",
			"email":"ada@example.com","birthday":"1815-12-10T00:00:00.000Z","gender":"female",
			"address":{"city":"London","country":"gb","postalCode":"SW1Y"},"plan":"pro","logins":42,
			"company":{"name":"Analytical Engines","employees":3}}}`)},
		{Key: []byte("seg-user-1"), Value: []byte(`{"type":"track","userId":"seg-user-1","messageId":"m-2","event":"Product Viewed",
			"timestamp":"2024-05-01T10:00:01.000Z","properties":{"product_id":"p1","time":"dropped","$x":1,"price":10}}`)},
		{Key: []byte("seg-user-1"), Value: []byte(`{"type":"track","userId":"seg-user-1","messageId":"m-3","event":"Order Completed",
			"timestamp":"2024-05-01T10:00:02.000Z","properties":{"order_id":"o-1","currency":"EUR","products":[
			{"product_id":"p1","name":"Monopoly","price":10,"quantity":2},
			{"sku":"SKU-2","name":"Uno","price":5.5,"currency":"GBP"},
			{"product_id":"p3","price":2}]}}`)},
		{Key: []byte("seg-user-1"), Value: []byte(`{"type":"page","userId":"seg-user-1","name":"Home",` + ts + `}`)},
		{Key: []byte("seg-user-1"), Value: []byte(`{"type":"group","userId":"seg-user-1","groupId":"g1",` + ts + `}`)},
		{Key: []byte("seg-user-1"), Value: []byte(bad)},
		{Key: []byte("anon-1"), Value: []byte(`{"type":"identify","anonymousId":"anon-1","traits":{"plan":"free"},` + ts + `}`)},
		{Key: []byte("anon-1"), Value: []byte(`{"type":"track","anonymousId":"anon-1","event":"Signed Up","timestamp":"2024-05-01T10:00:05Z","properties":{"source":"ad"}}`)},
		{Key: []byte("anon-1"), Value: []byte(`{"type":"alias","userId":"seg-user-2","previousId":"anon-1",` + ts + `}`)},
	}
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers...), Topic: k.Topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll}
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()

	cfg := testConfig(k, sim, "segment-e2e")
	cfg.KafkaTopicFormats = k.Topic + ":segment"
	cfg.SegmentAnonymousAliasLabel = "anonymous_id"
	cfg.SegmentUnsupported = "skip"
	cfg.SegmentDefaultCurrency = "USD"
	if p := cfg.Validate(); len(p) != 0 {
		t.Fatalf("config: %v", p)
	}
	p, stop := startWorker(t, cfg)
	// 1 identify + 1 event + 3 purchases + 1 alias identify + 1 alias event delivered; the
	// bad track dead-lettered; page, group and alias skipped.
	const wantDelivered = 7
	waitFor(t, 60*time.Second, "segment records settled", func() bool {
		s := p.Stats().Snapshot()
		return s.MessagesConsumed >= int64(len(msgs)) && s.RecordsDelivered+s.DeadLetteredAll >= wantDelivered+1
	})
	// Every message, the skipped ones included, is acknowledged and committed.
	waitFor(t, 30*time.Second, "offsets committed to the end", func() bool {
		var high int64
		for _, l := range p.Lag() {
			if l.HighWater < 0 {
				continue // an empty partition
			}
			if l.Committed != l.HighWater || l.Pending != 0 {
				return false
			}
			high += l.HighWater
		}
		return high == int64(len(msgs))
	})
	stop()

	s := p.Stats().Snapshot()
	if s.RecordsDelivered != wantDelivered || s.DeadLettered[dlq.ReasonInvalidRecord] != 1 || s.DeadLetteredAll != 1 {
		t.Errorf("delivered %d, dead-lettered %v; want %d delivered, 1 invalid_record", s.RecordsDelivered, s.DeadLettered, wantDelivered)
	}

	u, ok := sim.Sim.User("external_id", "seg-user-1")
	if !ok {
		t.Fatal("no profile for seg-user-1")
	}
	if u.Email != "ada@example.com" {
		t.Errorf("email %q", u.Email)
	}
	wantAttrs := map[string]any{
		"first_name": "Ada", "last_name": "Lovelace", "dob": "1815-12-10", "gender": "F", "country": "GB",
		"home_city": "London", "address": map[string]any{"postalCode": "SW1Y"}, "plan": "pro", "logins": float64(42),
		"company": map[string]any{"name": "Analytical Engines", "employees": float64(3)},
	}
	for key, want := range wantAttrs {
		if got := u.Attributes[key]; !reflect.DeepEqual(normalise(got), want) {
			t.Errorf("attribute %s = %#v, want %#v", key, got, want)
		}
	}
	for _, key := range []string{"firstName", "birthday", "id", "ab_segment_group_g1"} {
		if _, ok := u.Attributes[key]; ok {
			t.Errorf("attribute %s should not be set", key)
		}
	}
	if len(u.Events) != 1 || u.Events[0].Name != "Product Viewed" ||
		!reflect.DeepEqual(u.Events[0].Properties, map[string]any{"product_id": "p1", "price": float64(10)}) ||
		!u.Events[0].Time.Equal(time.Date(2024, 5, 1, 10, 0, 1, 0, time.UTC)) {
		t.Errorf("events %+v, want one Product Viewed", u.Events)
	}
	type purchase struct {
		ID, Cur string
		Price   float64
		Qty     int
		Name    any
	}
	var got []purchase
	for _, pu := range u.Purchases {
		if pu.Properties["order_id"] != "o-1" {
			t.Errorf("purchase %s lacks the order's properties: %v", pu.ProductID, pu.Properties)
		}
		got = append(got, purchase{pu.ProductID, pu.Currency, pu.Price, pu.Quantity, pu.Properties["name"]})
	}
	slices.SortFunc(got, func(a, b purchase) int { return strings.Compare(a.ID, b.ID) })
	want := []purchase{{"SKU-2", "GBP", 5.5, 1, "Uno"}, {"p1", "EUR", 10, 2, "Monopoly"}, {"p3", "EUR", 2, 1, nil}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("purchases\n got %+v\nwant %+v", got, want)
	}

	a, ok := sim.Sim.User("alias", "anonymous_id\x00anon-1")
	if !ok {
		t.Fatal("no alias profile for anon-1")
	}
	if a.Attributes["plan"] != "free" || len(a.Events) != 1 || a.Events[0].Name != "Signed Up" || a.Events[0].Properties["source"] != "ad" {
		t.Errorf("alias profile %+v", a)
	}
	if _, ok := sim.Sim.User("external_id", "seg-user-2"); ok {
		t.Errorf("the alias call should not create seg-user-2")
	}

	dl := readDLQ(t, k)
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dl))
	}
	if string(dl[0].Value) != bad || header(dl[0], dlq.HeaderReason) != "invalid_record" ||
		!strings.Contains(header(dl[0], dlq.HeaderError), "/event") || header(dl[0], dlq.HeaderSourceTopic) != k.Topic {
		t.Errorf("dead letter %q headers %v", dl[0].Value, dl[0].Headers)
	}
}

// normalise turns the simulator's attribute values into plain JSON values for comparison.
func normalise(v any) any {
	if m, ok := v.(map[string]any); ok {
		out := make(map[string]any, len(m))
		for k, x := range m {
			out[k] = normalise(x)
		}
		return out
	}
	return v
}

// TestSegmentIdentityEndToEnd: with identify, merge and delete enabled, an identify with a
// prior anonymousId moves the anonymous profile's history to the known user before that
// user's attributes are written (/users/identify, then /users/track), an alias call merges
// the former profile into the known one (/users/merge), a delete request deletes the user
// after the user's earlier track request (/users/delete), and a delete without a user is
// dead-lettered as its original bytes.
func TestSegmentIdentityEndToEnd(t *testing.T) {
	k := newTestKafka(t, 3)
	sim := newSim(t, nil)
	const ts = `"timestamp":"2024-05-01T10:00:00.000Z"`
	produce := func(msgs ...kafka.Message) {
		t.Helper()
		w := &kafka.Writer{Addr: kafka.TCP(k.Brokers...), Topic: k.Topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll}
		if err := w.WriteMessages(context.Background(), msgs...); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
	msg := func(key, value string) kafka.Message { return kafka.Message{Key: []byte(key), Value: []byte(value)} }

	cfg := testConfig(k, sim, "segment-identity-e2e")
	cfg.KafkaTopicFormats = k.Topic + ":segment"
	cfg.SegmentAnonymousAliasLabel = "anonymous_id"
	cfg.SegmentUnsupported = "skip"
	cfg.SegmentDefaultCurrency = "USD"
	cfg.SegmentIdentifyAlias = "auto"
	cfg.Endpoints = []string{"track", "identify", "merge", "delete"}
	if p := cfg.Validate(); len(p) != 0 {
		t.Fatalf("config: %v", p)
	}
	p, stop := startWorker(t, cfg)
	defer stop()
	delivered := func(n int64) func() bool {
		return func() bool { return p.Stats().Snapshot().RecordsDelivered >= n }
	}

	// Before: an anonymous visitor, a former account, and a user about to be forgotten.
	produce(
		msg("anon-1", `{"type":"identify","anonymousId":"anon-1","traits":{"plan":"free"},`+ts+`}`),
		msg("anon-1", `{"type":"track","anonymousId":"anon-1","event":"Signed Up","timestamp":"2024-05-01T10:00:01Z"}`),
		msg("old-u1", `{"type":"identify","userId":"old-u1","traits":{"legacy":true}}`),
		msg("seg-gone", `{"type":"identify","userId":"seg-gone","traits":{"plan":"x"}}`),
	)
	waitFor(t, 60*time.Second, "anonymous and former profiles written", delivered(4))

	const badDelete = `{"type":"delete","messageId":"del-bad"}`
	produce(
		msg("seg-u1", `{"type":"identify","userId":"seg-u1","anonymousId":"anon-1","messageId":"m-login","traits":{"plan":"pro"},`+ts+`}`),
		msg("seg-u1", `{"type":"track","userId":"seg-u1","anonymousId":"anon-1","event":"Purchased","timestamp":"2024-05-01T10:00:02Z"}`),
		msg("seg-u1", `{"type":"alias","userId":"seg-u1","previousId":"old-u1",`+ts+`}`),
		msg("seg-gone", `{"type":"track","userId":"seg-gone","event":"Visited","timestamp":"2024-05-01T10:00:03Z"}`),
		msg("seg-gone", `{"type":"delete","userId":"seg-gone","messageId":"del-1"}`),
		msg("nobody", badDelete),
	)
	// identify + attributes + track + merge + track + delete.
	waitFor(t, 60*time.Second, "identity records delivered", delivered(4+6))
	waitFor(t, 30*time.Second, "the bad delete dead-lettered", func() bool { return p.Stats().Snapshot().DeadLetteredAll >= 1 })
	stop()

	if s := p.Stats().Snapshot(); s.RecordsDelivered != 10 || s.DeadLetteredAll != 1 || s.DeadLettered[dlq.ReasonInvalidRecord] != 1 {
		t.Errorf("delivered %d, dead-lettered %v; want 10 delivered, 1 invalid_record", s.RecordsDelivered, s.DeadLettered)
	}
	u, ok := sim.Sim.User("external_id", "seg-u1")
	if !ok {
		t.Fatal("no profile for seg-u1")
	}
	var names []string
	for _, e := range u.Events {
		names = append(names, e.Name)
	}
	slices.Sort(names)
	if !reflect.DeepEqual(names, []string{"Purchased", "Signed Up"}) {
		t.Errorf("seg-u1 events %v: want the anonymous Signed Up moved in, and Purchased", names)
	}
	if u.Attributes["plan"] != "pro" || u.Attributes["legacy"] != true {
		t.Errorf("seg-u1 attributes %v: want plan pro (written after the identify) and legacy (merged from old-u1)", u.Attributes)
	}
	if a, ok := sim.Sim.User("alias", "anonymous_id\x00anon-1"); !ok || a.ExternalID != "seg-u1" {
		t.Errorf("alias anon-1 names %+v (found %v), want the identified seg-u1", a.ExternalID, ok)
	}
	if _, ok := sim.Sim.User("external_id", "old-u1"); ok {
		t.Errorf("old-u1 should be merged away")
	}
	if _, ok := sim.Sim.User("external_id", "seg-gone"); ok {
		t.Errorf("seg-gone should be deleted")
	}
	// Order across endpoints: seg-u1's identify came before seg-u1's own attributes (the
	// alias profile was identified, not merged into an existing seg-u1), and a track after
	// it; seg-gone's track before its delete.
	identified, trackAfter := false, false
	for _, o := range sim.Sim.Ops("external_id", "seg-u1") {
		switch {
		case o.Endpoint == "identify":
			identified = o.Detail == "identified"
		case o.Endpoint == "track" && identified:
			trackAfter = true
		}
	}
	if !identified || !trackAfter {
		t.Errorf("seg-u1 operations %+v: want the alias profile identified (seg-u1 not yet written), then seg-u1's tracks", sim.Sim.Ops("external_id", "seg-u1"))
	}
	ops := func(id string) []string {
		var eps []string
		for _, o := range sim.Sim.Ops("external_id", id) {
			eps = append(eps, o.Endpoint)
		}
		return eps
	}
	if eps := ops("seg-gone"); len(eps) < 2 || eps[len(eps)-1] != "delete" || !slices.Contains(eps[:len(eps)-1], "track") {
		t.Errorf("seg-gone operations %v: want its tracks, then delete last", eps)
	}
	dl := readDLQ(t, k)
	if len(dl) != 1 || string(dl[0].Value) != badDelete || header(dl[0], dlq.HeaderReason) != "invalid_record" ||
		!strings.Contains(header(dl[0], dlq.HeaderError), "/userId") {
		t.Errorf("dead letters %d: %v", len(dl), dl)
	}
}
