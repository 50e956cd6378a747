package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

const segTS = `"timestamp":"2024-05-01T10:00:00.000Z"`

// wantObj is one expected record: its kind, the exact Braze object (compared as JSON values),
// and its identifier.
type wantObj struct {
	kind   Kind
	json   string
	idKind IDKind
	userID string
	id     string
}

func ext(u string) (IDKind, string) { return IDExternal, u }

// sameJSON compares two JSON texts as values (key order and spacing do not matter).
func sameJSON(t *testing.T, got []byte, want string) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("built object is not JSON: %v: %s", err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad want JSON: %v: %s", err, want)
	}
	return reflect.DeepEqual(g, w)
}

// noDuplicateKeys fails if any object in b (at any depth) repeats a key: encoding/json would
// silently keep the last one, Braze might not.
func noDuplicateKeys(t *testing.T, b []byte) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	type frame struct {
		obj  bool
		keys map[string]bool
		key  bool // next token is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.obj && top.key {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				if len(stack) > 0 && stack[len(stack)-1].obj {
					stack[len(stack)-1].key = true
				}
				continue
			}
			k := tok.(string)
			if top.keys[k] {
				t.Errorf("duplicate key %q in %s", k, b)
			}
			top.keys[k] = true
			top.key = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{obj: true, keys: map[string]bool{}, key: true})
			continue
		case json.Delim('['):
			stack = append(stack, &frame{})
			continue
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if len(stack) > 0 && stack[len(stack)-1].obj {
			stack[len(stack)-1].key = true
		}
	}
}

func TestSegmentDecode(t *testing.T) {
	alias := func(name string) (IDKind, string) { return IDAlias, "anonymous_id\x00" + name }
	obj := func(kind Kind, js string, idk IDKind, uid string) wantObj {
		return wantObj{kind: kind, json: js, idKind: idk, userID: uid}
	}
	withID := func(w wantObj, id string) wantObj { w.id = id; return w }
	e, u1 := ext("u1")
	ak, a1 := alias("anon-1")

	tests := []struct {
		name    string
		dec     *SegmentDecoder
		msg     string
		want    []wantObj
		dropped int64
	}{
		{
			name: "identify: special traits to standard fields, nested address and company",
			msg: `{"type":"identify","userId":"u1","messageId":"m-1",` + segTS + `,"context":{"ip":"1.2.3.4"},"traits":{
				"firstName":"Ada","lastName":"Lovelace","email":"ada@example.com","phone":"+441234567890",
				"birthday":"1815-12-10T00:00:00.000Z","gender":"Female","avatar":"https://img/ada.png",
				"address":{"street":"12 St James's Square","city":"London","country":"gb","postalCode":"SW1Y 4JH","state":null},
				"id":"u1","plan":"pro","logins":42,"vip":true,"tags":["math","poetry"],
				"company":{"name":"Analytical Engines","employees":3,"plan":{"tier":"gold"}}}}`,
			want: []wantObj{withID(obj(KindAttributes, `{"external_id":"u1","first_name":"Ada","last_name":"Lovelace",
				"email":"ada@example.com","phone":"+441234567890","dob":"1815-12-10","gender":"F","country":"GB",
				"home_city":"London","image_url":"https://img/ada.png",
				"address":{"street":"12 St James's Square","postalCode":"SW1Y 4JH"},
				"plan":"pro","logins":42,"vip":true,"tags":["math","poetry"],
				"company":{"name":"Analytical Engines","employees":3,"plan":{"tier":"gold"}}}`, e, u1), "m-1")},
			dropped: 1, // address.state: null
		},
		{
			name: "identify: Braze-named traits win over Segment-named ones; null clears",
			msg: `{"type":"identify","userId":"u1","traits":{"first_name":"A","firstName":"B","lastName":null,
				"dob":"2000-01-02","birthday":"1999-09-09","country":"fr","address":{"country":"DE","city":"Berlin"},
				"home_city":"Paris","image_url":"u","avatar":"v","gender":null}}`,
			want: []wantObj{obj(KindAttributes, `{"external_id":"u1","first_name":"A","last_name":null,"dob":"2000-01-02",
				"gender":null,"country":"FR","home_city":"Paris","image_url":"u"}`, e, u1)},
		},
		{
			name: "identify: values Braze would misread are left out",
			msg: `{"type":"identify","userId":"u1","traits":{"birthday":"12/10/1815","gender":"robot",
				"address":{"country":"United Kingdom"},"$set":{"a":1},"external_id":"other","user_alias":{"alias_name":"x"},
				"_update_existing_only":true,"":1,"ok":1}}`,
			want:    []wantObj{obj(KindAttributes, `{"external_id":"u1","country":"United Kingdom","ok":1}`, e, u1)},
			dropped: 7, // the country is passed on: Braze maps names or sets NULL
		},
		{
			name: "identify: gender spellings",
			msg:  `{"type":"identify","userId":"u1","traits":{"gender":" Prefer Not To Say "}}`,
			want: []wantObj{obj(KindAttributes, `{"external_id":"u1","gender":"P"}`, e, u1)},
		},
		{
			name: "identify: birthday as a date with offset keeps the date as written",
			msg:  `{"type":"identify","userId":"u1","traits":{"birthday":"1990-05-12T00:00:00+02:00"}}`,
			want: []wantObj{obj(KindAttributes, `{"external_id":"u1","dob":"1990-05-12"}`, e, u1)},
		},
		{
			name: "identify: nested custom attributes are cleaned of what Braze refuses",
			msg: `{"type":"identify","userId":"u1","traits":{"prefs":{"a b":1,"c":null,"d":[1,null,{"e":null,"f":2}],
				"g.h":1,"$i":1,"ok":{"deep":true}},"list":[null,"x"]}}`,
			want:    []wantObj{obj(KindAttributes, `{"external_id":"u1","prefs":{"d":[1,{"f":2}],"ok":{"deep":true}},"list":["x"]}`, e, u1)},
			dropped: 7,
		},
		{
			name: "identify: anonymous user gets an alias and creates the profile",
			msg:  `{"type":"identify","userId":null,"anonymousId":"anon-1","traits":{"plan":"free","email":"a@example.com"}}`,
			want: []wantObj{obj(KindAttributes, `{"user_alias":{"alias_name":"anon-1","alias_label":"anonymous_id"},
				"_update_existing_only":false,"email":"a@example.com","plan":"free"}`, ak, a1)},
		},
		{
			name: "identify: userId wins over anonymousId; no traits",
			msg:  `{"type":"identify","userId":"u1","anonymousId":"anon-1"}`,
			want: []wantObj{obj(KindAttributes, `{"external_id":"u1"}`, e, u1)},
		},
		{
			name: "identify: configured alias label, escaped ids",
			dec:  &SegmentDecoder{AliasLabel: "segment \"anon\""},
			msg:  `{"type":"identify","anonymousId":"an\u00f6n"}`,
			want: []wantObj{obj(KindAttributes, `{"user_alias":{"alias_name":"anön","alias_label":"segment \"anon\""},
				"_update_existing_only":false}`, IDAlias, "segment \"anon\"\x00anön")},
		},
		{
			name: "track: event with properties; reserved keys dropped",
			msg: `{"type":"track","userId":"u1","messageId":"m-2","event":"Product Viewed",` + segTS + `,
				"sentAt":"2024-05-01T10:00:01Z","properties":{"product_id":"p1","price":9.5,"currency":"EUR",
				"time":"x","event_name":"y","$ref":1,"nested":{"a":[1,2]}}}`,
			want: []wantObj{withID(obj(KindEvent, `{"external_id":"u1","name":"Product Viewed","time":"2024-05-01T10:00:00.000Z",
				"properties":{"product_id":"p1","price":9.5,"currency":"EUR","nested":{"a":[1,2]}}}`, e, u1), "m-2")},
			dropped: 3,
		},
		{
			name: "track: time falls back to originalTimestamp, sentAt, receivedAt",
			msg:  `{"type":"track","userId":"u1","event":"X","timestamp":null,"receivedAt":"2024-05-01T10:00:03Z","sentAt":"2024-05-01T10:00:02Z"}`,
			want: []wantObj{obj(KindEvent, `{"external_id":"u1","name":"X","time":"2024-05-01T10:00:02Z"}`, e, u1)},
		},
		{
			name: "track: anonymous event (update-only in Braze)",
			msg:  `{"type":"track","anonymousId":"anon-1","event":"Signed Up",` + segTS + `,"properties":{}}`,
			want: []wantObj{obj(KindEvent, `{"user_alias":{"alias_name":"anon-1","alias_label":"anonymous_id"},"_update_existing_only":false,
				"name":"Signed Up","time":"2024-05-01T10:00:00.000Z"}`, ak, a1)},
		},
		{
			name: "Order Completed: one purchase per product, no event",
			msg: `{"type":"track","userId":"u1","messageId":"m-3","event":"Order Completed",` + segTS + `,"properties":{
				"order_id":"o-1","total":27.5,"revenue":25,"currency":"eur","coupon":"SPRING","time":"dropped",
				"products":[
					{"product_id":"p1","sku":"SKU-1","name":"Monopoly","price":10,"quantity":2,"category":"Games"},
					{"sku":"SKU-2","name":"Uno","price":5.5,"currency":"GBP","coupon":"UNO10"},
					{"id":42,"price":2,"quantity":1,"$x":1}]}}`,
			want: []wantObj{
				withID(obj(KindPurchase, `{"external_id":"u1","product_id":"p1","currency":"EUR","price":10,"quantity":2,
					"time":"2024-05-01T10:00:00.000Z","properties":{"sku":"SKU-1","name":"Monopoly","category":"Games",
					"order_id":"o-1","total":27.5,"revenue":25,"coupon":"SPRING"}}`, e, u1), "m-3/0"),
				withID(obj(KindPurchase, `{"external_id":"u1","product_id":"SKU-2","currency":"GBP","price":5.5,"quantity":1,
					"time":"2024-05-01T10:00:00.000Z","properties":{"sku":"SKU-2","name":"Uno","coupon":"UNO10",
					"order_id":"o-1","total":27.5,"revenue":25}}`, e, u1), "m-3/1"),
				withID(obj(KindPurchase, `{"external_id":"u1","product_id":"42","currency":"EUR","price":2,"quantity":1,
					"time":"2024-05-01T10:00:00.000Z","properties":{"id":42,"order_id":"o-1","total":27.5,"revenue":25,
					"coupon":"SPRING"}}`, e, u1), "m-3/2"),
			},
			dropped: 4, // the order's time, counted once per product, and $x
		},
		{
			name: "Order Completed: default currency; anonymous purchases",
			dec:  &SegmentDecoder{DefaultCurrency: "CAD"},
			msg:  `{"type":"track","anonymousId":"anon-1","event":"Order Completed",` + segTS + `,"properties":{"products":[{"product_id":"p1","price":1}]}}`,
			want: []wantObj{obj(KindPurchase, `{"user_alias":{"alias_name":"anon-1","alias_label":"anonymous_id"},"_update_existing_only":false,
				"product_id":"p1","currency":"CAD","price":1,"quantity":1,"time":"2024-05-01T10:00:00.000Z"}`, ak, a1)},
		},
		{
			name: "Order Completed without products is an event",
			msg:  `{"type":"track","userId":"u1","event":"Order Completed",` + segTS + `,"properties":{"order_id":"o-2","products":[]}}`,
			want: []wantObj{obj(KindEvent, `{"external_id":"u1","name":"Order Completed","time":"2024-05-01T10:00:00.000Z",
				"properties":{"order_id":"o-2","products":[]}}`, e, u1)},
		},
		{
			name: "page as event",
			dec:  &SegmentDecoder{PageAsEvent: true},
			msg: `{"type":"page","userId":"u1","name":"Pricing","category":"Docs",` + segTS + `,
				"properties":{"url":"https://x/pricing","title":"Pricing","name":"Pricing"}}`,
			want: []wantObj{obj(KindEvent, `{"external_id":"u1","name":"Viewed Page","time":"2024-05-01T10:00:00.000Z",
				"properties":{"url":"https://x/pricing","title":"Pricing","name":"Pricing","category":"Docs"}}`, e, u1)},
		},
		{
			name: "screen as event",
			dec:  &SegmentDecoder{PageAsEvent: true},
			msg:  `{"type":"screen","anonymousId":"anon-1","name":"Cart",` + segTS + `}`,
			want: []wantObj{obj(KindEvent, `{"user_alias":{"alias_name":"anon-1","alias_label":"anonymous_id"},"_update_existing_only":false,
				"name":"Viewed Screen","time":"2024-05-01T10:00:00.000Z","properties":{"name":"Cart"}}`, ak, a1)},
		},
		{
			name: "group as attribute",
			dec:  &SegmentDecoder{GroupAsAttribute: true},
			msg:  `{"type":"group","userId":"u1","groupId":"acme-1","traits":{"name":"Acme"}}`,
			want: []wantObj{obj(KindAttributes, `{"external_id":"u1","ab_segment_group_acme-1":true}`, e, u1)},
		},
		{name: "page skipped", msg: `{"type":"page","userId":"u1","name":"Home",` + segTS + `}`},
		{name: "screen skipped", msg: `{"type":"screen","userId":"u1","name":"Home"}`},
		{name: "group skipped", msg: `{"type":"group","userId":"u1","groupId":"g"}`},
		{name: "alias skipped", msg: `{"type":"alias","userId":"u1","previousId":"anon-1"}`},
		{name: "alias skipped even with the mappings on", dec: &SegmentDecoder{PageAsEvent: true, GroupAsAttribute: true},
			msg: `{"type":"alias","userId":"u1","previousId":"anon-1"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.dec
			if d == nil {
				d = &SegmentDecoder{}
			}
			sentinel := Record{Index: -7}
			recs, err := d.Decode([]byte(tc.msg), []Record{sentinel})
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if recs[0].Index != -7 {
				t.Fatalf("Decode overwrote out's existing records")
			}
			recs = recs[1:]
			if len(recs) != len(tc.want) {
				for _, r := range recs {
					t.Logf("got %s %s", r.Kind.Array(), r.Raw)
				}
				t.Fatalf("got %d records, want %d", len(recs), len(tc.want))
			}
			native := &Decoder{}
			for i, r := range recs {
				w := tc.want[i]
				if r.Kind != w.kind || r.Index != i || r.Err != nil {
					t.Errorf("record %d: kind %s index %d err %v; want kind %s index %d", i, r.Kind.Array(), r.Index, r.Err, w.kind.Array(), i)
				}
				if !sameJSON(t, r.Raw, w.json) {
					t.Errorf("record %d:\n got %s\nwant %s", i, r.Raw, w.json)
				}
				noDuplicateKeys(t, r.Raw)
				if r.IDKind != w.idKind || string(r.UserID) != w.userID || string(r.ID) != w.id {
					t.Errorf("record %d: id %s %q msg id %q; want %s %q %q", i, r.IDKind, r.UserID, r.ID, w.idKind, w.userID, w.id)
				}
				// The same object as a native envelope decodes to the same identity and lane.
				env := []byte(`{"type":"` + r.Kind.EnvelopeType() + `","data":` + string(r.Raw) + `}`)
				nr, err := native.Decode(env, nil)
				if err != nil || len(nr) != 1 || nr[0].Err != nil {
					t.Fatalf("record %d does not pass the native rules: %v %v", i, err, nr)
				}
				if nr[0].UserHash != r.UserHash || nr[0].IDKind != r.IDKind || !bytes.Equal(nr[0].UserID, r.UserID) {
					t.Errorf("record %d: identity differs from the native decoder's", i)
				}
			}
			call := segmentCallOf(t, tc.msg)
			outcome := SegmentMapped
			if len(tc.want) == 0 {
				outcome = SegmentSkipped
			}
			if n := d.Count(call, outcome); n != 1 {
				t.Errorf("Count(%s, %s) = %d, want 1", call, outcome, n)
			}
			if d.DroppedFields() != tc.dropped {
				t.Errorf("DroppedFields = %d, want %d", d.DroppedFields(), tc.dropped)
			}
		})
	}
}

// segmentCallOf says which counter a test message should move.
func segmentCallOf(t *testing.T, msg string) SegmentCall {
	var m struct {
		Type       string
		Event      string
		Properties struct{ Products []any }
	}
	if err := json.Unmarshal([]byte(msg), &m); err != nil {
		t.Fatal(err)
	}
	for c := range numSegmentCalls {
		if c.String() == m.Type {
			if c == SegmentTrack && m.Event == "Order Completed" && len(m.Properties.Products) > 0 {
				return SegmentOrderCompleted
			}
			return c
		}
	}
	return SegmentInvalid
}

func TestSegmentDecodeErrors(t *testing.T) {
	tests := []struct {
		name   string
		dec    *SegmentDecoder
		msg    string
		reason Reason
		field  string
		call   SegmentCall
	}{
		{name: "not JSON", msg: `{"type":"identify",`, reason: ReasonInvalidJSON, call: SegmentInvalid},
		{name: "not an object", msg: `"identify"`, reason: ReasonInvalidJSON, call: SegmentInvalid},
		{name: "empty", msg: ` `, reason: ReasonInvalidJSON, call: SegmentInvalid},
		{name: "bad UTF-8", msg: "{\"type\":\"identify\",\"userId\":\"\xff\"}", reason: ReasonInvalidJSON, call: SegmentInvalid},
		{name: "duplicate key", msg: `{"type":"identify","userId":"u1","userId":"u2"}`, reason: ReasonInvalidRecord, field: "/userId", call: SegmentInvalid},
		{name: "no type", msg: `{"userId":"u1"}`, reason: ReasonInvalidRecord, field: "/type", call: SegmentInvalid},
		{name: "unknown type", msg: `{"type":"Identify","userId":"u1"}`, reason: ReasonInvalidRecord, field: "/type", call: SegmentInvalid},
		{name: "no user", msg: `{"type":"identify","traits":{}}`, reason: ReasonInvalidRecord, field: "/userId", call: SegmentIdentify},
		{name: "userId not a string", msg: `{"type":"identify","userId":1}`, reason: ReasonInvalidRecord, field: "/userId", call: SegmentIdentify},
		{name: "userId too long", msg: `{"type":"identify","userId":"` + strings.Repeat("é", 494) + `"}`, reason: ReasonInvalidRecord, call: SegmentIdentify},
		{name: "traits not an object", msg: `{"type":"identify","userId":"u","traits":[]}`, reason: ReasonInvalidRecord, field: "/traits", call: SegmentIdentify},
		{name: "track without event", msg: `{"type":"track","userId":"u",` + segTS + `}`, reason: ReasonInvalidRecord, field: "/event", call: SegmentTrack},
		{name: "track without time", msg: `{"type":"track","userId":"u","event":"E"}`, reason: ReasonInvalidRecord, field: "/timestamp", call: SegmentTrack},
		{name: "track bad timestamp (the time used)", msg: `{"type":"track","userId":"u","event":"E","timestamp":"yesterday","receivedAt":"2024-05-01T10:00:00Z"}`, reason: ReasonInvalidRecord, field: "/timestamp", call: SegmentTrack},
		{name: "track bad sentAt used", msg: `{"type":"track","userId":"u","event":"E","timestamp":null,"sentAt":1,"receivedAt":"2024-05-01T10:00:00Z"}`, reason: ReasonInvalidRecord, field: "/sentAt", call: SegmentTrack},
		{name: "order bad currency", msg: `{"type":"track","userId":"u","event":"Order Completed",` + segTS + `,"properties":{"currency":"dollars","products":[{"product_id":"a","price":1}]}}`,
			reason: ReasonInvalidRecord, field: "/properties/currency", call: SegmentOrderCompleted},
		{name: "unsupported dead-lettered", dec: &SegmentDecoder{Unsupported: SegmentDeadLetter}, msg: `{"type":"alias","userId":"u","previousId":"a"}`,
			reason: ReasonInvalidRecord, field: "/type", call: SegmentAlias},
		{name: "page dead-lettered", dec: &SegmentDecoder{Unsupported: SegmentDeadLetter}, msg: `{"type":"page","userId":"u"}`,
			reason: ReasonInvalidRecord, field: "/type", call: SegmentPage},
		{name: "page as event needs a time", dec: &SegmentDecoder{PageAsEvent: true}, msg: `{"type":"page","userId":"u"}`,
			reason: ReasonInvalidRecord, field: "/timestamp", call: SegmentPage},
		{name: "group needs groupId", dec: &SegmentDecoder{GroupAsAttribute: true}, msg: `{"type":"group","userId":"u"}`,
			reason: ReasonInvalidRecord, field: "/groupId", call: SegmentGroup},
		{name: "too large", dec: &SegmentDecoder{MaxRecordBytes: 100}, msg: `{"type":"identify","userId":"u","traits":{"bio":"` + strings.Repeat("x", 100) + `"}}`,
			reason: ReasonTooLarge, call: SegmentIdentify},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.dec
			if d == nil {
				d = &SegmentDecoder{}
			}
			out := []Record{{Index: -7}}
			recs, err := d.Decode([]byte(tc.msg), out)
			var me *MessageError
			if !errors.As(err, &me) {
				t.Fatalf("Decode error %v, want a *MessageError", err)
			}
			if me.Reason != tc.reason || (tc.field != "" && me.Field != tc.field) {
				t.Errorf("error %q: reason %s field %q; want %s %q", me, me.Reason, me.Field, tc.reason, tc.field)
			}
			if len(recs) != 1 || recs[0].Index != -7 {
				t.Errorf("Decode changed out on error: %v", recs)
			}
			if n := d.Count(tc.call, SegmentDeadLettered); n != 1 {
				t.Errorf("Count(%s, dead_lettered) = %d, want 1", tc.call, n)
			}
		})
	}
}

// TestSegmentDecoderShared runs one decoder from many goroutines (as the pipeline's fetch
// loops share it) and checks the counters add up; run with -race.
func TestSegmentDecoderShared(t *testing.T) {
	d := &SegmentDecoder{}
	msgs := [][]byte{
		[]byte(`{"type":"identify","userId":"u1","traits":{"firstName":"A"}}`),
		[]byte(`{"type":"track","userId":"u1","event":"E",` + segTS + `}`),
		[]byte(`{"type":"page","userId":"u1"}`),
		[]byte(`{"type":"track","userId":"u1"}`),
	}
	const workers, rounds = 8, 200
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			var out []Record
			for range rounds {
				for _, m := range msgs {
					out, _ = d.Decode(m, out[:0])
				}
			}
		})
	}
	wg.Wait()
	// DecodeUncounted (the pipeline's resume scan) decodes the same and counts nothing.
	for _, m := range msgs {
		a, errA := d.DecodeUncounted(m, nil)
		b, errB := (&SegmentDecoder{}).Decode(m, nil)
		if len(a) != len(b) || (errA == nil) != (errB == nil) {
			t.Errorf("%s: uncounted %d records (%v), counted %d (%v)", m, len(a), errA, len(b), errB)
		}
		for i := range a {
			if !bytes.Equal(a[i].Raw, b[i].Raw) || a[i].UserHash != b[i].UserHash {
				t.Errorf("%s: record %d differs: %s vs %s", m, i, a[i].Raw, b[i].Raw)
			}
		}
	}
	want := map[[2]uint8]int64{
		{uint8(SegmentIdentify), uint8(SegmentMapped)}:    workers * rounds,
		{uint8(SegmentTrack), uint8(SegmentMapped)}:       workers * rounds,
		{uint8(SegmentPage), uint8(SegmentSkipped)}:       workers * rounds,
		{uint8(SegmentTrack), uint8(SegmentDeadLettered)}: workers * rounds,
	}
	pairs := 0
	d.EachCount(func(c SegmentCall, o SegmentOutcome, n int64) {
		pairs++
		if n != want[[2]uint8{uint8(c), uint8(o)}] {
			t.Errorf("%s/%s = %d, want %d", c, o, n, want[[2]uint8{uint8(c), uint8(o)}])
		}
	})
	if pairs != int(numSegmentCalls)*int(numSegmentOutcomes) {
		t.Errorf("EachCount visited %d pairs", pairs)
	}
}

// TestSegmentRecordsOwnTheirBytes: the records do not alias the message, so a caller may
// reuse the message buffer at once.
func TestSegmentRecordsOwnTheirBytes(t *testing.T) {
	msg := []byte(`{"type":"track","userId":"u1","messageId":"m","event":"E",` + segTS + `,"properties":{"a":1}}`)
	d := &SegmentDecoder{}
	recs, err := d.Decode(msg, nil)
	if err != nil || len(recs) != 1 {
		t.Fatal(err, recs)
	}
	raw, uid, id := string(recs[0].Raw), string(recs[0].UserID), string(recs[0].ID)
	for i := range msg {
		msg[i] = 'x'
	}
	if string(recs[0].Raw) != raw || string(recs[0].UserID) != uid || string(recs[0].ID) != id {
		t.Fatalf("records alias the message")
	}
}

var (
	segSchemaOnce sync.Once
	segSchema     *jsonschema.Schema
	segSchemaErr  error
)

// segmentSchema compiles segment.schema.json (with common.schema.json, which it refers to).
func segmentSchema(t testing.TB) *jsonschema.Schema {
	t.Helper()
	segSchemaOnce.Do(func() {
		c := jsonschema.NewCompiler()
		c.DefaultDraft(jsonschema.Draft2020)
		for _, name := range []string{"segment.schema.json", "common.schema.json"} {
			b, err := fs.ReadFile(SchemaFS(), name)
			if err != nil {
				segSchemaErr = err
				return
			}
			doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
			if err != nil {
				segSchemaErr = fmt.Errorf("%s: %w", name, err)
				return
			}
			if id := doc.(map[string]any)["$id"]; id != BaseURL+name {
				segSchemaErr = fmt.Errorf("%s: $id is %v", name, id)
				return
			}
			if err := c.AddResource(BaseURL+name, doc); err != nil {
				segSchemaErr = err
				return
			}
		}
		segSchema, segSchemaErr = c.Compile(SegmentSchemaID)
	})
	if segSchemaErr != nil {
		t.Fatal(segSchemaErr)
	}
	return segSchema
}

// TestSegmentCorpusAgreement holds segment.schema.json and SegmentDecoder (default options)
// to the same verdict on every message of testdata/segment.
func TestSegmentCorpusAgreement(t *testing.T) {
	sch := segmentSchema(t)
	n := 0
	for _, dir := range []string{"valid", "invalid"} {
		paths, err := filepath.Glob(filepath.Join("testdata", "segment", dir, "*.json"))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			n++
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			t.Run(dir+"/"+filepath.Base(p), func(t *testing.T) {
				want := dir == "valid"
				sOK := utf8.Valid(data)
				var sErr error
				if inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data)); err != nil {
					sOK, sErr = false, err
				} else if err := sch.Validate(inst); err != nil {
					sOK, sErr = false, err
				}
				d := &SegmentDecoder{}
				recs, dErr := d.Decode(data, nil)
				dOK := dErr == nil
				for _, r := range recs {
					if r.Err != nil {
						// Only an order's product is dead-lettered alone; every other
						// problem is message-level.
						if !strings.HasPrefix(r.Err.Field, "/properties/products/") {
							t.Errorf("record error %v outside an order's products", r.Err)
						}
						dOK = false
						continue
					}
					noDuplicateKeys(t, r.Raw)
				}
				if sOK != want {
					t.Errorf("schema valid=%v, want %v (%v)", sOK, want, sErr)
				}
				if dOK != want {
					t.Errorf("decoder valid=%v, want %v (%v)", dOK, want, dErr)
				}
				if strings.HasPrefix(filepath.Base(p), "invalid-json") {
					var me *MessageError
					if !errors.As(dErr, &me) || me.Reason != ReasonInvalidJSON {
						t.Errorf("decoder error %v, want invalid_json", dErr)
					}
				}
			})
		}
	}
	if n < 50 {
		t.Fatalf("segment corpus has %d files, want at least 50", n)
	}
}

// FuzzSegmentDecode: whatever the input, Decode does not panic, and every record it returns
// is a valid Braze object by the native rules.
func FuzzSegmentDecode(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join("testdata", "segment", "*", "*.json"))
	for _, p := range paths {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	f.Add([]byte(`{"type":"identify","userId":"u\u00e9","anonymousId":"a1","traits":{"x":1}}`))
	f.Add([]byte(`{"type":"alias","userId":"u1","previousId":"a1","anonymousId":"a1"}`))
	f.Add([]byte(`{"type":"alias","userId":"u1","previousId":"old"}`))
	d := &SegmentDecoder{PageAsEvent: true, GroupAsAttribute: true, IdentifyAlias: true, AliasAsMerge: true, MaxRecordBytes: 1 << 16}
	native := &Decoder{}
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, err := d.Decode(data, nil)
		if err != nil {
			if len(recs) != 0 {
				t.Fatalf("records with an error")
			}
			return
		}
		for _, r := range recs {
			if r.Err != nil {
				// A bad order product, dead-lettered alone as its own bytes.
				if r.Kind != KindPurchase || !strings.HasPrefix(r.Err.Field, "/properties/products/") {
					t.Fatalf("record error %v outside an order's products", r.Err)
				}
				continue
			}
			env := []byte(`{"type":"` + r.Kind.EnvelopeType() + `","data":` + string(r.Raw) + `}`)
			nr, err := native.Decode(env, nil)
			if err != nil || len(nr) != 1 || nr[0].Err != nil || nr[0].UserHash != r.UserHash || nr[0].PackKey != r.PackKey {
				t.Fatalf("record %s fails the native rules: %v %+v", r.Raw, err, nr)
			}
		}
	})
}

func segmentBenchMessages() map[string][]byte {
	return map[string][]byte{
		"identify": []byte(`{"type":"identify","userId":"user-00012345","messageId":"ajs-8f7e6d5c4b3a2918","anonymousId":"507f191e810c19729de860ea",` +
			`"context":{"ip":"8.8.8.8","library":{"name":"analytics.js","version":"2.11.1"},"userAgent":"Mozilla/5.0"},` +
			`"traits":{"firstName":"Ada","lastName":"Lovelace","email":"ada@example.com","birthday":"1815-12-10","gender":"female",` +
			`"address":{"city":"London","country":"GB","postalCode":"N1"},"plan":"premium","logins":42,"company":{"name":"AE","employees":3}},` +
			`"timestamp":"2024-05-01T10:00:00.000Z","sentAt":"2024-05-01T10:00:00.100Z","receivedAt":"2024-05-01T10:00:00.200Z"}`),
		"track": []byte(`{"type":"track","userId":"user-00012345","messageId":"ajs-8f7e6d5c4b3a2918","event":"Checkout Started",` +
			`"context":{"ip":"8.8.8.8","library":{"name":"analytics.js","version":"2.11.1"},"userAgent":"Mozilla/5.0"},` +
			`"properties":{"cart_id":"c-8f7e6d5c4b3a","items":3,"total":129.95,"currency":"EUR","coupon":null,"tags":["spring","returning"],` +
			`"source":{"channel":"web","campaign":"spring_sale_2024"}},` +
			`"timestamp":"2024-05-01T10:00:00.000Z","sentAt":"2024-05-01T10:00:00.100Z","receivedAt":"2024-05-01T10:00:00.200Z"}`),
		"order_completed_3": []byte(`{"type":"track","userId":"user-00012345","messageId":"ajs-8f7e6d5c4b3a2918","event":"Order Completed",` +
			`"properties":{"order_id":"o-5c4b3a2f1e","total":27.5,"currency":"USD","products":[` +
			`{"product_id":"p1","sku":"SKU-1","name":"Monopoly","price":10,"quantity":2,"category":"Games"},` +
			`{"product_id":"p2","sku":"SKU-2","name":"Uno","price":5.5},{"product_id":"p3","name":"Go","price":2}]},` +
			`"timestamp":"2024-05-01T10:00:00.000Z"}`),
		"page_skipped": []byte(`{"type":"page","userId":"user-00012345","name":"Home","properties":{"url":"https://example.com/"},"timestamp":"2024-05-01T10:00:00.000Z"}`),
	}
}

// BenchmarkSegmentDecode measures one call per operation; compare with BenchmarkDecode*.
func BenchmarkSegmentDecode(b *testing.B) {
	msgs := segmentBenchMessages()
	msgs["identify_alias"] = msgs["identify"] // with IdentifyAlias: a /users/identify record too
	msgs["alias_merge"] = []byte(`{"type":"alias","userId":"user-00012345","previousId":"507f191e810c19729de860ea",` +
		`"anonymousId":"507f191e810c19729de860ea","messageId":"ajs-8f7e6d5c4b3a2918","timestamp":"2024-05-01T10:00:00.000Z"}`)
	msgs["delete"] = []byte(`{"type":"delete","userId":"user-00012345","messageId":"del-8f7e6d5c4b3a2918"}`)
	for name, msg := range msgs {
		b.Run(name, func(b *testing.B) {
			d := &SegmentDecoder{MaxRecordBytes: 1 << 20, IdentifyAlias: name == "identify_alias", AliasAsMerge: true}
			var out []Record
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				out, err = d.Decode(msg, out[:0])
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
