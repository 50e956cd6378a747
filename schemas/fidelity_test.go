package schemas

import (
	"strings"
	"testing"
)

// Records Braze accepts are not dead-lettered (docs/braze-rules.md §8: the decoder is never
// stricter than Braze), and what the producer certainly meant is sent normalised.
func TestNormalised(t *testing.T) {
	const id = `"external_id":"u",`
	tests := []struct {
		typ, data, want string
	}{
		// Java OffsetDateTime.toString() at whole minutes.
		{"event", `{` + id + `"name":"e","time":"2026-11-25T10:00Z"}`, `{` + id + `"name":"e","time":"2026-11-25T10:00:00Z"}`},
		{"event", `{` + id + `"name":"e","time":"2026-11-25T10:00+05:30"}`, `{` + id + `"name":"e","time":"2026-11-25T10:00:00+05:30"}`},
		// Python str(datetime).
		{"event", `{` + id + `"name":"e","time":"2026-11-25 10:00:00.123456+00:00"}`, `{` + id + `"name":"e","time":"2026-11-25T10:00:00.123456+00:00"}`},
		{"event", `{` + id + `"name":"e","time":"2026-11-25 10:00:00Z"}`, `{` + id + `"name":"e","time":"2026-11-25T10:00:00Z"}`},
		{"event", `{` + id + `"name":"e","time":"2026-11-25 10:00"}`, `{` + id + `"name":"e","time":"2026-11-25T10:00:00"}`},
		// An escaped time is written unescaped (a time has no character that needs one).
		{"event", `{` + id + `"name":"e","time":"2026-11-25\u002010:00Z"}`, `{` + id + `"name":"e","time":"2026-11-25T10:00:00Z"}`},
		// Documented Braze layouts are sent as written.
		{"event", `{` + id + `"name":"e","time":"2026-11-25 10:00:00"}`, ""},
		{"event", `{` + id + `"name":"e","time":"2026-11-25T10:00:00:123Z"}`, ""},
		{"event", `{` + id + `"name":"e","time":"2026-11-25"}`, ""},
		// Currency upper-cased; time and currency both rewritten, in either order.
		{"purchase", `{` + id + `"product_id":"p","currency":"eur","price":1,"time":"2026-11-25T10:00:00Z"}`,
			`{` + id + `"product_id":"p","currency":"EUR","price":1,"time":"2026-11-25T10:00:00Z"}`},
		{"purchase", `{` + id + `"time":"2026-11-25 10:00:00+01:00","product_id":"p","currency":"Usd","price":1}`,
			`{` + id + `"time":"2026-11-25T10:00:00+01:00","product_id":"p","currency":"USD","price":1}`},
		{"purchase", `{` + id + `"product_id":"p","currency":"\u0075sd","price":1,"time":"2026-11-25"}`,
			`{` + id + `"product_id":"p","currency":"USD","price":1,"time":"2026-11-25"}`},
		{"purchase", `{` + id + `"product_id":"p","currency":"USD","price":1,"time":"2026-11-25"}`, ""},
	}
	for _, tt := range tests {
		msg := []byte(`{"type":"` + tt.typ + `","data":` + tt.data + `}`)
		for _, d := range []Decoder{{}, {MaxRecordBytes: 4096}} {
			recs, err := d.Decode(msg, nil)
			if err != nil || len(recs) != 1 || recs[0].Err != nil {
				t.Fatalf("%s: %v %+v", tt.data, err, recs)
			}
			r := recs[0]
			want := tt.want
			if want == "" {
				want = tt.data
				if !within(r.Raw, msg) {
					t.Errorf("%s: Raw was copied although nothing changed", tt.data)
				}
			}
			if string(r.Raw) != want {
				t.Errorf("%s:\n got %s\nwant %s", tt.data, r.Raw, want)
			}
			if r.IDKind != IDExternal || string(r.UserID) != "u" {
				t.Errorf("%s: identifier %v %q", tt.data, r.IDKind, r.UserID)
			}
		}
	}
	// A rejected record keeps its original bytes for the DLQ.
	msg := `{"type":"purchase","data":{"product_id":"p","currency":"usd","price":1,"time":"2026-11-25T10:00Z"}}`
	r := decode(t, Decoder{}, msg)[0]
	if r.Err == nil || !strings.Contains(string(r.Raw), `"usd"`) || !strings.Contains(string(r.Raw), "10:00Z") {
		t.Errorf("rejected record: %v %s", r.Err, r.Raw)
	}
	// Normalised records of one bundle do not overwrite each other.
	b := `{"events":[{"external_id":"a","name":"e","time":"2026-11-25T10:00Z"},{"external_id":"b","name":"e","time":"2026-11-25T11:00Z"}]}`
	recs := decode(t, Decoder{}, b)
	if string(recs[0].Raw) != `{"external_id":"a","name":"e","time":"2026-11-25T10:00:00Z"}` ||
		string(recs[1].Raw) != `{"external_id":"b","name":"e","time":"2026-11-25T11:00:00Z"}` {
		t.Errorf("bundle: %s %s", recs[0].Raw, recs[1].Raw)
	}
}

func TestAcceptedLikeBraze(t *testing.T) {
	tests := []struct {
		typ, data string
		kind      IDKind
		id        string
	}{
		// null is the member being absent.
		{"attributes", `{"external_id":null,"braze_id":"b"}`, IDBraze, "b"},
		{"attributes", `{"external_id":"u","braze_id":null,"user_alias":null}`, IDExternal, "u"},
		{"attributes", `{"user_alias":null,"email":"a@b.c"}`, IDEmail, "a@b.c"},
		{"attributes", `{"external_id":"u","_update_existing_only":null}`, IDExternal, "u"},
		{"event", `{"external_id":"u","name":"e","time":"2026-11-25","properties":null}`, IDExternal, "u"},
		{"purchase", `{"external_id":"u","product_id":"p","currency":"USD","price":1,"quantity":null,"time":"2026-11-25"}`, IDExternal, "u"},
		// Only time and event_name are reserved purchase property keys.
		{"purchase", `{"external_id":"u","product_id":"p","currency":"USD","price":1,"time":"2026-11-25","properties":{"product_id":"x","quantity":2,"price":3,"currency":"EUR"}}`, IDExternal, "u"},
		// Anonymous push token import.
		{"attributes", `{"push_token_import":true,"push_tokens":[{"app_id":"a","token":"t"}]}`, 0, ""},
		// Numbers at the edges of float64, and long ones inside its range.
		{"attributes", `{"external_id":"u","a":1.7976931348623157e308,"b":-1e-400,"c":0.0000001e309,"d":1` + strings.Repeat("0", 308) + `}`, IDExternal, "u"},
		// NUL elsewhere than external_id is Braze's to judge.
		{"attributes", `{"external_id":"u","note":"a\u0000b"}`, IDExternal, "u"},
		// Nested custom attributes that follow the rules, and operators.
		{"attributes", `{"external_id":"u","song":{"name":"x","stats":{"plays":1,"tags":["a","b"]},"at":{"$time":"2026-11-25T10:00:00Z"}},"us":{"d":{"$time":"11/25/2026"}}}`, IDExternal, "u"},
		{"attributes", `{"external_id":"u","n":{"inc":-2},"tags":{"add":["a",null],"remove":["b"]},"list":["a",null],"loc":null}`, IDExternal, "u"},
		{"attributes", `{"external_id":"u","pets":{"$add":[{"name":"a"}],"$remove":[{"$identifier_key":"name","$identifier_value":"b"}]}}`, IDExternal, "u"},
		{"attributes", `{"external_id":"u","current_location":{"latitude":1,"longitude":null},"push_tokens":[{"app_id":"a","token":"t","device_id":null}]}`, IDExternal, "u"},
		{"attributes", `{"external_id":"u","facebook":{"id":"f","likes":null},"twitter":{"screen_name":null}}`, IDExternal, "u"},
		// The same key in different objects is no duplicate.
		{"attributes", `{"external_id":"u","a":{"x":1},"b":{"x":1}` + manyKeys(40) + `}`, IDExternal, "u"},
	}
	for _, tt := range tests {
		msg := `{"type":"` + tt.typ + `","data":` + tt.data + `}`
		recs, err := new(Decoder).Decode([]byte(msg), nil)
		if err != nil || len(recs) != 1 {
			t.Fatalf("%.100s: %v", tt.data, err)
		}
		r := recs[0]
		if r.Err != nil {
			t.Errorf("%.100s: rejected: %v", tt.data, r.Err)
			continue
		}
		if r.IDKind != tt.kind || string(r.UserID) != tt.id {
			t.Errorf("%.100s: identifier %v %q", tt.data, r.IDKind, r.UserID)
		}
		if tt.kind == 0 && r.UserHash != userHash(0, r.Raw) {
			t.Errorf("%.100s: push import hash %x", tt.data, r.UserHash)
		}
	}
}
