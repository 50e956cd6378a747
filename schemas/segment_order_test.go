package schemas

import (
	"strings"
	"testing"
)

// One bad product of an order is dead-lettered alone; the order's other products are sent
// (docs/segment.md "Errors, dead letters and replay").
func TestSegmentBadProduct(t *testing.T) {
	msg := `{"type":"track","userId":"u1","messageId":"m-9","event":"Order Completed",` + segTS + `,"properties":{"order_id":"o1","products":[
		{"product_id":"a","price":1},{"product_id":"b","price":"free"},{"product_id":"c","price":2,"quantity":3},
		{"product_id":"d","price":1e400},"e"]}}`
	d := &SegmentDecoder{}
	recs, err := d.Decode([]byte(msg), nil)
	if err != nil || len(recs) != 5 {
		t.Fatalf("got %d records, err %v", len(recs), err)
	}
	wantErr := map[int]string{1: "/properties/products/1/price", 3: "/properties/products/3/price", 4: "/properties/products/4"}
	for i, r := range recs {
		if r.Index != i || r.Kind != KindPurchase || string(r.ID) != "m-9/"+itoa(i) {
			t.Errorf("record %d: index %d kind %v id %q", i, r.Index, r.Kind, r.ID)
		}
		field, bad := wantErr[i]
		switch {
		case !bad && r.Err != nil:
			t.Errorf("record %d: unexpected error %v", i, r.Err)
		case !bad && (r.IDKind != IDExternal || !strings.Contains(string(r.Raw), `"external_id":"u1"`)):
			t.Errorf("record %d: %s", i, r.Raw)
		case bad && (r.Err == nil || r.Err.Field != field || r.Err.Index != i || r.Err.Kind != KindPurchase || r.Err.Reason != ReasonInvalidRecord):
			t.Errorf("record %d: error %+v, want field %s", i, r.Err, field)
		}
	}
	if !strings.Contains(string(recs[1].Raw), `"product_id":"b"`) || strings.Contains(string(recs[1].Raw), "external_id") {
		t.Errorf("a bad product is dead-lettered as its own bytes: %s", recs[1].Raw)
	}
	if d.Count(SegmentOrderCompleted, SegmentMapped) != 1 {
		t.Error("the order is counted as mapped")
	}
}

func TestSegmentOrderPlaced(t *testing.T) {
	d := &SegmentDecoder{OrderCompleted: SegmentOrderEcommerce, DefaultCurrency: "EUR"}
	msg := `{"type":"track","anonymousId":"a1","messageId":"m-1","event":"Order Completed","timestamp":"2026-11-25T10:00Z",
		"properties":{"order_id":"o-1","checkout_id":"c-9","total":27.5,"revenue":25,"tax":2.5,"shipping":0,"discount":1,
		"coupon":"SPRING","currency":"gbp","affiliation":null,
		"products":[{"product_id":"p-1","sku":"S1","name":"Pen","price":2.5,"quantity":3,"category":"Office","url":"https://x/p","image_url":"https://x/i.png"},
			{"id":42,"name":"Ink","price":20,"variant":"blue"},7]}}`
	recs, err := d.Decode([]byte(msg), nil)
	if err != nil || len(recs) != 1 || recs[0].Err != nil {
		t.Fatalf("%v %+v", err, recs)
	}
	r := recs[0]
	want := `{"user_alias":{"alias_name":"a1","alias_label":"anonymous_id"},"_update_existing_only":false,
		"name":"ecommerce.order_placed","time":"2026-11-25T10:00:00Z",
		"properties":{"currency":"GBP","order_id":"o-1","total_value":27.5,"tax":2.5,"shipping":0,"total_discounts":1,"source":"segment",
		"products":[{"product_id":"p-1","variant_id":"S1","quantity":3,"product_name":"Pen","image_url":"https://x/i.png","product_url":"https://x/p","price":2.5,
			"metadata":{"sku":"S1","category":"Office"}},
			{"product_id":"42","variant_id":"blue","quantity":1,"product_name":"Ink","price":20}],
		"metadata":{"checkout_id":"c-9","coupon":"SPRING"}}}`
	if r.Kind != KindEvent || !sameJSON(t, r.Raw, want) {
		t.Errorf("got  %s\nwant %s", r.Raw, want)
	}
	noDuplicateKeys(t, r.Raw)
	if string(r.ID) != "m-1" || r.IDKind != IDAlias {
		t.Errorf("id %q kind %v", r.ID, r.IDKind)
	}
	if d.DroppedFields() != 1 {
		t.Errorf("DroppedFields %d, want 1 (the product that is not an object)", d.DroppedFields())
	}
	// revenue stands in for a missing total; the default currency for a missing one.
	recs, err = d.Decode([]byte(`{"type":"track","userId":"u","event":"Order Completed",`+segTS+`,"properties":{"order_id":"o","revenue":9}}`), nil)
	if err != nil || len(recs) != 1 || !sameJSON(t, recs[0].Raw, `{"external_id":"u","name":"ecommerce.order_placed","time":"2024-05-01T10:00:00.000Z",
		"properties":{"currency":"EUR","order_id":"o","total_value":9,"source":"segment","products":[]}}`) {
		t.Errorf("%v %s", err, recs[0].Raw)
	}
	// Other events are unchanged.
	recs, _ = d.Decode([]byte(`{"type":"track","userId":"u","event":"Order Updated",`+segTS+`}`), nil)
	if len(recs) != 1 || !strings.Contains(string(recs[0].Raw), `"name":"Order Updated"`) {
		t.Errorf("%s", recs[0].Raw)
	}
}
