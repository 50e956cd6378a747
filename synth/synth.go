// Package synth generates realistic mixed producer traffic (envelopes and bundles of events,
// attributes and purchases, with a controlled share of invalid and Braze-rejected records,
// and optionally a share of the record kinds beyond /users/track: alias, identify, merge,
// subscription and delete, see lifecycle.go) for `ingestor dev`, the end-to-end tests and the
// benchmarks. Every generated record says what should become of it, so tests can check the
// pipeline's accounting record by record.
package synth

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// Outcome is what should happen to a generated record.
type Outcome int

const (
	Deliver       Outcome = iota
	Invalid               // the decoder rejects it: dead-letter invalid_record / invalid_json
	BrazeRejected         // valid for the decoder, rejected by Braze in errors[]: braze_rejected
)

// Record is one generated record.
type Record struct {
	// Kind is the envelope type: "attributes" | "event" | "purchase" | "alias" | "identify" |
	// "merge" | "subscription" | "delete".
	Kind string
	User string // external_id of the person the record is about
	// Seq is the record's number among User's records (from 0, in production order). The
	// /users/track kinds carry it as "seq" (an attribute, or an event/purchase property).
	Seq     int
	Outcome Outcome
	// Identity is the identifier the record is ordered by when it is not User's external_id
	// (docs/design.md §2): "user_alias:<label>:<name>" for an anonymous user's tracks and
	// for alias records, "external_id:<id>" for a duplicate profile's tracks. Such records
	// carry no "seq" and are not ordered with User's records.
	Identity string
	// Alias is the alias an alias record creates, an identify record identifies, or an
	// anonymous track names.
	Alias Alias
	// Merged is the external_id a merge record merges into User (identifier_to_merge).
	Merged string
	// Group and State are a subscription record's subscription_group_id and state.
	Group, State string
}

// Alias is a Braze user alias.
type Alias struct{ Label, Name string }

// Message is one Kafka message.
type Message struct {
	Key     []byte
	Value   []byte
	Records []Record // empty for an unparsable message (then WholeInvalid)
	// WholeInvalid marks a message that is not usable at all (invalid_json).
	WholeInvalid bool
}

// Options shape the traffic.
type Options struct {
	Users        int     // distinct users (default 2000)
	BundleShare  float64 // share of messages that are bundles (default 0.2)
	InvalidShare float64 // share of records the decoder must reject (default 0)
	RejectShare  float64 // share of records Braze rejects (default 0)
	MinBytes     int     // approximate record size range (default 200..800)
	MaxBytes     int
	Seed         uint64
	// HotShare of messages (0 = none: users uniform) go to the first HotUsers users (hot-user
	// skew); the rest are spread over all users.
	HotUsers int
	HotShare float64
	// LifecycleShare is the share of messages (0 = none) that carry the record kinds beyond
	// /users/track (alias, identify, merge, subscription, delete; see lifecycle.go). Bundles
	// then also carry a subscription change now and then.
	LifecycleShare float64
}

// Generator produces messages. It is not safe for concurrent use.
type Generator struct {
	o   Options
	r   *rand.Rand
	seq map[string]int
	pad string
	n   int
	lc  lifecycle
}

// New returns a generator.
func New(o Options) *Generator {
	if o.Users <= 0 {
		o.Users = 2000
	}
	if o.BundleShare == 0 {
		o.BundleShare = 0.2
	}
	if o.MinBytes <= 0 {
		o.MinBytes = 200
	}
	if o.MaxBytes < o.MinBytes {
		o.MaxBytes = 800
	}
	return &Generator{o: o, r: rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15)), seq: map[string]int{},
		pad: strings.Repeat("abcdefghij", 100)}
}

var eventNames = []string{"viewed_product", "added_to_cart", "searched", "opened_app", "shared_item"}
var products = []string{"sku-1001", "sku-2002", "sku-3003", "sku-4004"}
var countries = []string{"US", "DE", "FR", "BR", "JP"}

// Next returns the next message.
func (g *Generator) Next() Message {
	g.n++
	if m, ok := g.due(); ok {
		return m
	}
	if g.o.InvalidShare > 0 && g.r.Float64() < g.o.InvalidShare/10 {
		// A few whole messages are not JSON at all.
		return Message{Key: []byte("garbage"), Value: []byte(`{"type":"event","data":{"name":"x"` + strconv.Itoa(g.n)), WholeInvalid: true}
	}
	u := g.r.IntN(g.o.Users)
	if g.o.HotShare > 0 && g.o.HotUsers > 0 && g.r.Float64() < g.o.HotShare {
		u = g.r.IntN(min(g.o.HotUsers, g.o.Users))
	}
	user := g.userName(u)
	if g.o.LifecycleShare > 0 && g.r.Float64() < g.o.LifecycleShare {
		if m, ok := g.lifecycleMessage(u, user); ok {
			return m
		}
	}
	if g.r.Float64() < g.o.BundleShare {
		n := 2 + g.r.IntN(4)
		var attrs, events, purchases []string
		var recs []Record
		// Bundle arrays are decoded attributes, then events, then purchases; the sequence
		// numbers are assigned in that order so per-user order stays checkable.
		kinds := make([]string, n)
		for i := range kinds {
			kinds[i] = g.kind()
		}
		for _, want := range []string{"attributes", "event", "purchase"} {
			for _, k := range kinds {
				if k != want {
					continue
				}
				obj, rec := g.object(k, user)
				recs = append(recs, rec)
				switch k {
				case "attributes":
					attrs = append(attrs, obj)
				case "event":
					events = append(events, obj)
				default:
					purchases = append(purchases, obj)
				}
			}
		}
		var b strings.Builder
		b.WriteByte('{')
		first := true
		for _, arr := range []struct {
			name string
			objs []string
		}{{"attributes", attrs}, {"events", events}, {"purchases", purchases}} {
			if len(arr.objs) == 0 {
				continue
			}
			if !first {
				b.WriteByte(',')
			}
			first = false
			fmt.Fprintf(&b, `"%s":[%s]`, arr.name, strings.Join(arr.objs, ","))
		}
		if g.o.LifecycleShare > 0 && g.r.Float64() < g.o.LifecycleShare && g.lc.known[user] {
			// Now and then a bundle also changes a subscription: its array comes after the
			// /users/track arrays, as does its sequence number.
			obj, rec := g.subscription(user)
			recs = append(recs, rec)
			fmt.Fprintf(&b, `,"subscriptions":[%s]`, obj)
		}
		b.WriteByte('}')
		return Message{Key: []byte(user), Value: []byte(b.String()), Records: recs}
	}
	k := g.kind()
	obj, rec := g.object(k, user)
	id := ""
	if g.r.IntN(2) == 0 {
		id = fmt.Sprintf(`,"id":"msg-%d"`, g.n)
	}
	return Message{Key: []byte(user), Value: []byte(fmt.Sprintf(`{"type":"%s","data":%s%s}`, k, obj, id)), Records: []Record{rec}}
}

func (g *Generator) kind() string {
	switch x := g.r.Float64(); {
	case x < 0.5:
		return "event"
	case x < 0.85:
		return "attributes"
	default:
		return "purchase"
	}
}

// object returns one Braze object of kind for user.
func (g *Generator) object(kind, user string) (string, Record) {
	outcome := Deliver
	if x := g.r.Float64(); x < g.o.InvalidShare {
		outcome = Invalid
	} else if x < g.o.InvalidShare+g.o.RejectShare {
		outcome = BrazeRejected
	}
	seq := g.seq[user]
	g.seq[user] = seq + 1
	id := user
	ts := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC).Add(time.Duration(g.n) * time.Millisecond).Format(time.RFC3339Nano)
	padLen := g.o.MinBytes + g.r.IntN(g.o.MaxBytes-g.o.MinBytes+1) - 160
	if padLen < 0 {
		padLen = 0
	}
	pad := g.pad[:padLen%len(g.pad)]
	var obj string
	switch kind {
	case "attributes":
		email := fmt.Sprintf("%s@example.com", user)
		if outcome == BrazeRejected {
			email = "not-an-email"
		}
		bad := ""
		if outcome == Invalid {
			bad = `,"braze_id":"also-primary"` // two primary identifiers
		}
		obj = fmt.Sprintf(`{"external_id":"%s"%s,"email":"%s","country":"%s","seq":%d,"loyalty_points":%d,"bio":"%s"}`,
			id, bad, email, countries[g.r.IntN(len(countries))], seq, g.r.IntN(10000), pad)
	case "event":
		if outcome == BrazeRejected {
			id = "blacklisted-" + user
		}
		t := ts
		if outcome == Invalid {
			t = "yesterday" // not a Braze time
		}
		obj = fmt.Sprintf(`{"external_id":"%s","name":"%s","time":"%s","properties":{"seq":%d,"page":"/p/%d","note":"%s"}}`,
			id, eventNames[g.r.IntN(len(eventNames))], t, seq, g.r.IntN(500), pad)
	default:
		if outcome == BrazeRejected {
			id = "blacklisted-" + user
		}
		cur := "USD"
		if outcome == Invalid {
			cur = "US" // not a 3-letter code (a lower-case one would be upper-cased and sent)
		}
		obj = fmt.Sprintf(`{"external_id":"%s","product_id":"%s","currency":"%s","price":%d.%02d,"quantity":%d,"time":"%s","properties":{"seq":%d,"note":"%s"}}`,
			id, products[g.r.IntN(len(products))], cur, 1+g.r.IntN(200), g.r.IntN(100), 1+g.r.IntN(3), ts, seq, pad)
	}
	g.track(user, outcome)
	return obj, Record{Kind: kind, User: user, Seq: seq, Outcome: outcome}
}
