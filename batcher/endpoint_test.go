package batcher

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"github.com/braze-ingestor/braze-ingestor/schemas"
)

// records decodes envelope data of kind k as the worker would and returns them as objects,
// failing on any record the decoder refuses.
func records(t *testing.T, k schemas.Kind, data ...string) []obj {
	t.Helper()
	var objs []obj
	for _, d := range data {
		msg := `{"type":"` + k.EnvelopeType() + `","data":` + d + `}`
		recs, err := (&schemas.Decoder{}).Decode([]byte(msg), nil)
		if err != nil || len(recs) != 1 || recs[0].Err != nil {
			t.Fatalf("%s: %v %v", msg, err, recs)
		}
		objs = append(objs, obj{recs[0].Kind, recs[0].Raw})
	}
	return objs
}

// TestEncodeEndpointBodies checks each endpoint's body against the shape Braze documents
// (docs/braze-rules.md "Endpoints beyond /users/track"), parsed back as JSON.
func TestEncodeEndpointBodies(t *testing.T) {
	const al1, al2 = `{"alias_name":"n1","alias_label":"l"}`, `{"alias_name":"n2","alias_label":"l"}`
	tests := []struct {
		name string
		objs []obj
		want string
	}{
		{"alias", records(t, schemas.KindAlias, `{"alias_name":"n","alias_label":"l","external_id":"x"}`, al2),
			`{"user_aliases":[{"alias_name":"n","alias_label":"l","external_id":"x"},` + al2 + `]}`},
		{"identify, each entry in its array, empty arrays left out",
			records(t, schemas.KindIdentify,
				`{"external_id":"a","email":"e@x","prioritization":["identified"]}`,
				`{"external_id":"b","user_alias":`+al1+`}`,
				`{"external_id":"c","email":"f@x","prioritization":["unidentified"]}`),
			`{"aliases_to_identify":[{"external_id":"b","user_alias":` + al1 + `}],` +
				`"emails_to_identify":[{"external_id":"a","email":"e@x","prioritization":["identified"]},{"external_id":"c","email":"f@x","prioritization":["unidentified"]}]}`},
		{"identify, phones only", records(t, schemas.KindIdentify, `{"external_id":"a","phone":"+1","prioritization":["identified"]}`),
			`{"phone_numbers_to_identify":[{"external_id":"a","phone":"+1","prioritization":["identified"]}]}`},
		{"merge", records(t, schemas.KindMerge, `{"identifier_to_merge":{"external_id":"o"},"identifier_to_keep":{"external_id":"k"}}`),
			`{"merge_updates":[{"identifier_to_merge":{"external_id":"o"},"identifier_to_keep":{"external_id":"k"}}]}`},
		{"delete external_ids", records(t, schemas.KindDelete, `{"external_id":"a"}`, `{ "external_id" : "b\"c" }`),
			`{"external_ids":["a","b\"c"]}`},
		{"delete user_aliases", records(t, schemas.KindDelete, `{"user_alias":`+al1+`}`, `{"user_alias":`+al2+`}`),
			`{"user_aliases":[` + al1 + `,` + al2 + `]}`},
		{"delete braze_ids", records(t, schemas.KindDelete, `{"braze_id":"b1"}`), `{"braze_ids":["b1"]}`},
		{"delete email_addresses", records(t, schemas.KindDelete, `{"email":"e@x","prioritization":["identified","most_recently_updated"]}`),
			`{"email_addresses":[{"email":"e@x","prioritization":["identified","most_recently_updated"]}]}`},
		{"delete phone_numbers", records(t, schemas.KindDelete, `{"phone":"+1","prioritization":["unidentified"]}`),
			`{"phone_numbers":[{"phone":"+1","prioritization":["unidentified"]}]}`},
		{"subscription external_id", records(t, schemas.KindSubscription,
			`{"subscription_group_id":"g","subscription_state":"subscribed","external_id":"a"}`,
			`{"external_id":"b","subscription_state":"subscribed","subscription_group_id":"g"}`),
			`{"subscription_group_id":"g","subscription_state":"subscribed","external_id":["a","b"]}`},
		{"subscription email", records(t, schemas.KindSubscription, `{"subscription_group_id":"g","subscription_state":"unsubscribed","email":"e@x"}`),
			`{"subscription_group_id":"g","subscription_state":"unsubscribed","email":["e@x"]}`},
		{"subscription phone", records(t, schemas.KindSubscription, `{"subscription_group_id":"g","subscription_state":"subscribed","phone":"+12223334444"}`),
			`{"subscription_group_id":"g","subscription_state":"subscribed","phone":["+12223334444"]}`},
		{"null identifiers are absent", records(t, schemas.KindSubscription,
			`{"subscription_group_id":"g","subscription_state":"subscribed","external_id":null,"email":"e@x"}`),
			`{"subscription_group_id":"g","subscription_state":"subscribed","email":["e@x"]}`},
		{"delete null identifier absent", records(t, schemas.KindDelete, `{"external_id":null,"braze_id":"b1"}`), `{"braze_ids":["b1"]}`},
		{"subscription double opt-in", records(t, schemas.KindSubscription,
			`{"subscription_group_id":"g","subscription_state":"subscribed","phone":"+12","use_double_opt_in_logic":true}`,
			`{"use_double_opt_in_logic":true,"subscription_group_id":"g","subscription_state":"subscribed","phone":"+13"}`),
			`{"subscription_group_id":"g","subscription_state":"subscribed","use_double_opt_in_logic":true,"phone":["+12","+13"]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := Encode(nil, tc.objs)
			var got, want any
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("body is not JSON: %v: %s", err, body)
			}
			if err := json.Unmarshal([]byte(tc.want), &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("body\n got %s\nwant %s", body, tc.want)
			}
			// Keys in the documented order too (the identify arrays, the subscription header).
			if string(body) != strings.ReplaceAll(tc.want, ` "external_id" : `, `"external_id":`) && !strings.Contains(tc.name, "delete external_ids") {
				t.Errorf("body bytes\n got %s\nwant %s", body, tc.want)
			}
			total := 0
			for _, o := range tc.objs {
				total += len(o.raw)
			}
			if b := EndpointBodyBound(tc.objs[0].kind, len(tc.objs), total); len(body) > b {
				t.Errorf("body of %d bytes over its bound %d", len(body), b)
			}
		})
	}
}

// EndpointBodyBound must never be below the real body, or a request could exceed MaxBytes.
func TestEndpointBodyBoundRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	gen := map[schemas.Kind]func(i int) string{
		schemas.KindAlias: func(i int) string { return fmt.Sprintf(`{"alias_name":"n%d","alias_label":"l"}`, i) },
		schemas.KindIdentify: func(i int) string {
			switch i % 3 {
			case 0:
				return fmt.Sprintf(`{"external_id":"x%d","user_alias":{"alias_name":"n","alias_label":"l"}}`, i)
			case 1:
				return fmt.Sprintf(`{"external_id":"x%d","email":"e","prioritization":["identified"]}`, i)
			}
			return fmt.Sprintf(`{"external_id":"x%d","phone":"+1","prioritization":["identified"]}`, i)
		},
		schemas.KindMerge: func(i int) string {
			return fmt.Sprintf(`{"identifier_to_merge":{"external_id":"o%d"},"identifier_to_keep":{"external_id":"k"}}`, i)
		},
		schemas.KindSubscription: func(i int) string {
			return fmt.Sprintf(`{"subscription_group_id":"g","subscription_state":"subscribed","external_id":"%d"}`, i)
		},
		schemas.KindDelete: func(i int) string { return fmt.Sprintf(`{"email":"e%d","prioritization":["identified"]}`, i) },
	}
	for k, g := range gen {
		for trial := 0; trial < 20; trial++ {
			n := 1 + r.IntN(endpoint.Delete.MaxObjects())
			data := make([]string, n)
			total := 0
			for i := range data {
				data[i] = g(r.IntN(1 << 20))
				total += len(data[i])
			}
			objs := records(t, k, data...)
			body := Encode(nil, objs)
			if !json.Valid(body) {
				t.Fatalf("%v: invalid body %s", k, body)
			}
			if b := EndpointBodyBound(k, n, total); len(body) > b {
				t.Fatalf("%v: body %d bytes over bound %d", k, len(body), b)
			}
			if b := EndpointBodyBound(k, n, total); !EndpointFits(k, n, total, b) || EndpointFits(k, n, total, b-1) {
				t.Fatalf("%v: EndpointFits disagrees with EndpointBodyBound", k)
			}
		}
	}
}

func TestEndpointFits(t *testing.T) {
	const big = 1 << 20
	for k := schemas.KindAlias; k < schemas.NumKinds; k++ {
		max := k.Endpoint().MaxObjects()
		if !EndpointFits(k, max, 100, big) || EndpointFits(k, max+1, 100, big) {
			t.Errorf("%v: the record limit is not %d", k, max)
		}
		if EndpointFits(k, 1, big, big) {
			t.Errorf("%v: a record as large as the request fits", k)
		}
		if m := MaxEndpointRecordBytes(k, 1000); !EndpointFits(k, 1, m, 1000) || EndpointFits(k, 1, m+1, 1000) {
			t.Errorf("%v: MaxEndpointRecordBytes %d is not the largest record that fits", k, m)
		}
	}
	if EndpointFits(schemas.KindEvent, 1, 1, big) {
		t.Error("EndpointFits accepts a /users/track kind")
	}
}

func TestLocateOtherEndpoints(t *testing.T) {
	objs := records(t, schemas.KindDelete, `{"external_id":"a"}`, `{"external_id":"b"}`)
	for _, arr := range []string{"external_ids", "attributes", ""} {
		if i := Locate(objs, arr, 0); i != -1 {
			t.Errorf("Locate(delete objs, %q, 0) = %d, want -1", arr, i)
		}
	}
	track := []obj{mk(schemas.KindEvent, 1)}
	if i := Locate(track, "events", 0); i != 0 {
		t.Errorf("Locate of a track request = %d, want 0", i)
	}
}

// Every record the decoder accepts under a request's MaxRecordBytes fits a request of its
// endpoint on its own: no record can wait forever for room.
func TestDecodedRecordFitsAlone(t *testing.T) {
	l := Limits{Mode: Combined, MaxObjects: 75, MaxBytes: 4000}
	for k := schemas.KindAlias; k < schemas.NumKinds; k++ {
		limit := l.MaxRecordBytes() - schemas.EntryFramingExtra
		if !EndpointFits(k, 1, limit, l.MaxBytes) {
			t.Errorf("%v: a record of %d bytes passes the decoder but fits no request of %d bytes", k, limit, l.MaxBytes)
		}
	}
	pad := strings.Repeat("x", l.MaxRecordBytes()-schemas.EntryFramingExtra-len(`{"external_id":""}`)+1)
	d := schemas.Decoder{MaxRecordBytes: l.MaxRecordBytes()}
	recs, err := d.Decode([]byte(`{"type":"delete","data":{"external_id":"`+pad+`"}}`), nil)
	if err != nil || len(recs) != 1 || recs[0].Err == nil || recs[0].Err.Reason != schemas.ReasonTooLarge {
		t.Fatalf("a delete one byte over the entry limit: %v %+v", err, recs)
	}
}
