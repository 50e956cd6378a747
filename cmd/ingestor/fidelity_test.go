package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/braze-ingestor/braze-ingestor/schemas"
)

// TestNestedAttributeIsolation: an invalid value inside one record's nested custom attribute
// would make Braze (and the simulator, docs/braze-rules.md §1 "Nested custom attributes")
// drop every nested update of the whole request while answering 2xx. The decoder checks
// nested attributes per record, so the bad records are dead-lettered alone and every other
// user's nested attribute arrives.
func TestNestedAttributeIsolation(t *testing.T) {
	k := newTestKafka(t, 4)
	sim := newSim(t, nil)
	const users = 500
	var msgs []kafka.Message
	bad := 0
	for i := range users {
		id := fmt.Sprintf("nested-%d", i)
		profile := fmt.Sprintf(`{"v":%d,"tier":"gold"}`, i)
		switch i % 50 {
		case 7:
			profile, bad = `{"v":null,"tier":"gold"}`, bad+1
		case 31:
			profile, bad = `{"since":{"$time":"not a time"}}`, bad+1
		}
		msgs = append(msgs, kafka.Message{Key: []byte(id),
			Value: []byte(`{"type":"attributes","data":{"external_id":"` + id + `","profile":` + profile + `}}`)})
	}
	w := k.writer(k.Topic)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()

	p, stop := startWorker(t, testConfig(k, sim, "nested"))
	waitFor(t, 60*time.Second, "all records settled", func() bool {
		s := p.Stats().Snapshot()
		return s.RecordsDelivered+s.DeadLetteredAll >= users
	})
	stop()
	s := p.Stats().Snapshot()
	if s.RecordsDelivered != users-int64(bad) || s.DeadLettered[schemas.ReasonInvalidRecord] != int64(bad) {
		t.Fatalf("delivered %d, invalid_record %d; want %d and %d", s.RecordsDelivered, s.DeadLettered[schemas.ReasonInvalidRecord], users-bad, bad)
	}
	stale := 0
	for i := range users {
		if i%50 == 7 || i%50 == 31 {
			continue
		}
		u, ok := sim.Sim.User("external_id", fmt.Sprintf("nested-%d", i))
		prof, _ := u.Attributes["profile"].(map[string]any)
		if !ok || prof["v"] != float64(i) {
			stale++
		}
	}
	if stale != 0 {
		t.Errorf("%d of %d users lack their nested attribute (a bad record spoiled its request)", stale, users-bad)
	}
	for _, m := range readDLQ(t, k) {
		if e := header(m, "dlq.error"); !strings.Contains(e, "nested custom attribute") && !strings.Contains(e, "$time") {
			t.Errorf("dead letter error %q does not name the nested attribute", e)
		}
	}
}
