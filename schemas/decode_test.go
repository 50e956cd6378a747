package schemas

import (
	"bytes"
	"errors"
	"hash/fnv"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// within reports whether sub is a sub-slice of whole (same memory, no copy).
func within(sub, whole []byte) bool {
	if len(sub) == 0 || len(whole) == 0 {
		return false
	}
	s, w := uintptr(unsafe.Pointer(&sub[0])), uintptr(unsafe.Pointer(&whole[0]))
	return s >= w && s+uintptr(len(sub)) <= w+uintptr(len(whole))
}

func fnvHash(kind IDKind, id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte{byte(kind)})
	h.Write([]byte(id))
	return h.Sum64()
}

func decode(t *testing.T, d Decoder, msg string) []Record {
	t.Helper()
	recs, err := d.Decode([]byte(msg), nil)
	if err != nil {
		t.Fatalf("Decode(%s): %v", msg, err)
	}
	return recs
}

func TestDecodeEnvelope(t *testing.T) {
	data := `{"external_id":"u-1","name":"signup","time":"2024-05-01T10:00:00Z","properties":{"a":1}}`
	value := []byte(` { "id" : "m-7", "type":"event", "data":` + data + " }\n")
	recs, err := new(Decoder).Decode(value, nil)
	if err != nil || len(recs) != 1 {
		t.Fatalf("got %d records, err %v", len(recs), err)
	}
	r := recs[0]
	if r.Kind != KindEvent || r.Index != 0 || r.Err != nil {
		t.Fatalf("record %+v", r)
	}
	if string(r.Raw) != data || !within(r.Raw, value) {
		t.Errorf("Raw %q is not the data sub-slice", r.Raw)
	}
	if r.IDKind != IDExternal || string(r.UserID) != "u-1" || !within(r.UserID, value) {
		t.Errorf("identifier %v %q", r.IDKind, r.UserID)
	}
	if r.UserHash != fnvHash(IDExternal, "u-1") {
		t.Errorf("UserHash %x, want FNV-1a %x", r.UserHash, fnvHash(IDExternal, "u-1"))
	}
	if string(r.ID) != "m-7" || !within(r.ID, value) {
		t.Errorf("ID %q", r.ID)
	}
}

func TestDecodeIdentifiers(t *testing.T) {
	tests := []struct {
		data   string
		kind   IDKind
		userID string
		copied bool // UserID cannot alias the message
	}{
		{`{"external_id":"u1","email":"a@b.c","phone":"+1"}`, IDExternal, "u1", false},
		{`{"user_alias":{"alias_label":"crm","alias_name":"n1","x":1},"email":"a@b.c"}`, IDAlias, "crm\x00n1", true},
		{`{"braze_id":"b1","phone":"+1"}`, IDBraze, "b1", false},
		{`{"email":"a@b.c","phone":"+1"}`, IDEmail, "a@b.c", false},
		{`{"email":"","phone":"+1"}`, IDPhone, "+1", false},
		{`{"email":null,"phone":"+1"}`, IDPhone, "+1", false},
		{`{"external_id":"caf\u00e9\/\ud83d\ude00"}`, IDExternal, "café/😀", true},
		{`{"user_alias":{"alias_name":"\u006e","alias_label":"l\"q"}}`, IDAlias, "l\"q\x00n", true},
	}
	for _, tt := range tests {
		value := []byte(`{"type":"attributes","data":` + tt.data + `}`)
		recs, err := new(Decoder).Decode(value, nil)
		if err != nil || len(recs) != 1 || recs[0].Err != nil {
			t.Fatalf("%s: %v %v", tt.data, err, recs)
		}
		r := recs[0]
		if r.IDKind != tt.kind || string(r.UserID) != tt.userID || r.UserHash != fnvHash(tt.kind, tt.userID) {
			t.Errorf("%s: got %v %q %x", tt.data, r.IDKind, r.UserID, r.UserHash)
		}
		if within(r.UserID, value) == tt.copied {
			t.Errorf("%s: UserID aliases message = %v", tt.data, !tt.copied)
		}
		if cap(r.UserID) != len(r.UserID) && tt.copied {
			t.Errorf("%s: copied UserID has spare capacity %d", tt.data, cap(r.UserID))
		}
	}
}

// Equal identifiers must route to the same lane however they are escaped.
func TestUserHashEscapes(t *testing.T) {
	a := decode(t, Decoder{}, `{"type":"attributes","data":{"external_id":"user-é"}}`)[0]
	b := decode(t, Decoder{}, `{"type":"attributes","data":{"external\u005fid":"\u0075ser-\u00e9"}}`)[0]
	if a.UserHash != b.UserHash || !bytes.Equal(a.UserID, b.UserID) {
		t.Fatalf("hash %x vs %x, id %q vs %q", a.UserHash, b.UserHash, a.UserID, b.UserID)
	}
	c := decode(t, Decoder{}, `{"type":"attributes","data":{"braze_id":"user-é"}}`)[0]
	if c.UserHash == a.UserHash {
		t.Fatal("braze_id and external_id with the same value must hash apart")
	}
}

func TestRecordErrors(t *testing.T) {
	const ev = `"external_id":"u","name":"e","time":"2024-05-01"`
	const pu = `"external_id":"u","product_id":"p","currency":"USD","price":1,"time":"2024-05-01"`
	tests := []struct {
		msg          string
		index        int
		kind         Kind
		field, inMsg string
	}{
		{`{"type":"attributes","data":{"first_name":"a"}}`, 0, KindAttributes, "/data", "no identifier"},
		{`{"type":"attributes","data":{"external_id":"a","braze_id":"b"}}`, 0, KindAttributes, "/data/braze_id", "only one primary"},
		{`{"type":"attributes","data":{"user_alias":{"alias_name":"n","alias_label":"l"},"external_id":"a"}}`, 0, KindAttributes, "/data/external_id", "only one primary"},
		{`{"type":"attributes","data":{"external_id":""}}`, 0, KindAttributes, "/data/external_id", "non-empty string"},
		{`{"type":"attributes","data":{"external_id":"` + strings.Repeat("x", 988) + `"}}`, 0, KindAttributes, "/data/external_id", "987 bytes"},
		// 500 two-byte characters: 1000 bytes. Only the decoder can count bytes.
		{`{"type":"attributes","data":{"external_id":"` + strings.Repeat("é", 500) + `"}}`, 0, KindAttributes, "/data/external_id", "987 bytes"},
		{`{"type":"attributes","data":{"external_id":"` + strings.Repeat(`\u00e9`, 494) + `"}}`, 0, KindAttributes, "/data/external_id", "987 bytes"},
		{`{"type":"attributes","data":{"user_alias":{"alias_name":"n"}}}`, 0, KindAttributes, "/data/user_alias/alias_label", "is required"},
		{`{"type":"attributes","data":{"user_alias":{"alias_name":"","alias_label":"l"}}}`, 0, KindAttributes, "/data/user_alias/alias_name", "non-empty string"},
		{`{"type":"attributes","data":{"user_alias":[]}}`, 0, KindAttributes, "/data/user_alias", "must be an object"},
		{`{"type":"attributes","data":{"email":""}}`, 0, KindAttributes, "/data", "no identifier"},
		{`{"type":"attributes","data":{"external_id":"u","_update_existing_only":1}}`, 0, KindAttributes, "/data/_update_existing_only", "boolean"},
		{`{"type":"attributes","data":{"external_id":"u","external_id":"v"}}`, 0, KindAttributes, "/data/external_id", "duplicate key"},
		{`{"type":"event","data":{"external_id":"u","time":"2024-05-01"}}`, 0, KindEvent, "/data/name", "is required"},
		{`{"type":"event","data":{"external_id":"u","name":"e"}}`, 0, KindEvent, "/data/time", "is required"},
		{`{"type":"event","data":{` + ev + `,"time":"2024-05-01"}}`, 0, KindEvent, "/data/time", "duplicate key"},
		{`{"type":"event","data":{"external_id":"u","name":"e","time":"2024-13-01"}}`, 0, KindEvent, "/data/time", "Braze time"},
		{`{"type":"event","data":{` + ev + `,"properties":{"ok":1,"$x":2}}}`, 0, KindEvent, "/data/properties/$x", "'$'"},
		{`{"type":"event","data":{` + ev + `,"properties":{"a/b~":1,"event_name":2}}}`, 0, KindEvent, "/data/properties/event_name", "reserved"},
		{`{"type":"event","data":{` + ev + `,"properties":{"":1}}}`, 0, KindEvent, "/data/properties/", "non-empty"},
		{`{"type":"event","data":{` + ev + `,"properties":{"\u0024x":1}}}`, 0, KindEvent, "/data/properties/$x", "'$'"},
		{`{"type":"event","data":{` + ev + `,"properties":{"` + strings.Repeat("k", 256) + `":1}}}`, 0, KindEvent, "/data/properties/" + strings.Repeat("k", 256), "255 characters"},
		{`{"type":"purchase","data":{"external_id":"u","currency":"USD","price":1,"time":"2024-05-01"}}`, 0, KindPurchase, "/data/product_id", "is required"},
		{`{"type":"purchase","data":{` + pu + `,"quantity":0}}`, 0, KindPurchase, "/data/quantity", "1 to 100"},
		{`{"type":"purchase","data":{` + pu + `,"quantity":100.5}}`, 0, KindPurchase, "/data/quantity", "1 to 100"},
		{`{"type":"purchase","data":{` + pu + `,"quantity":"1"}}`, 0, KindPurchase, "/data/quantity", "1 to 100"},
		{`{"type":"purchase","data":{"external_id":"u","product_id":"p","currency":"USD","price":"1","time":"2024-05-01"}}`, 0, KindPurchase, "/data/price", "number"},
		{`{"type":"event","data":{` + ev + `,"properties":7}}`, 0, KindEvent, "/data/properties", "must be an object"},
		{`{"type":"event","data":{` + ev + `,"properties":{"time":1}}}`, 0, KindEvent, "/data/properties/time", "reserved"},
		{`{"type":"purchase","data":{` + pu + `,"properties":{"event_name":"x"}}}`, 0, KindPurchase, "/data/properties/event_name", "reserved"},
		{`{"type":"purchase","data":{"external_id":"u","product_id":"p","currency":"us","price":1,"time":"2024-05-01"}}`, 0, KindPurchase, "/data/currency", "3-letter"},
		{`{"type":"purchase","data":{"external_id":"u","product_id":"p","currency":"U$D","price":1,"time":"2024-05-01"}}`, 0, KindPurchase, "/data/currency", "3-letter"},
		{`{"type":"event","data":{"external_id":"u","name":null,"time":"2024-05-01"}}`, 0, KindEvent, "/data/name", "non-empty string"},
		{`{"type":"event","data":{"external_id":"u","name":"e","time":null}}`, 0, KindEvent, "/data/time", "Braze time"},
		{`{"type":"event","data":{"external_id":"u","name":"e","time":"2024-05-01T10"}}`, 0, KindEvent, "/data/time", "Braze time"},
		{`{"type":"attributes","data":{"external_id":null}}`, 0, KindAttributes, "/data", "no identifier"},
		{`{"type":"attributes","data":{"push_token_import":false,"push_tokens":[]}}`, 0, KindAttributes, "/data", "no identifier"},
		{`{"type":"event","data":{"push_token_import":true,"name":"e","time":"2024-05-01"}}`, 0, KindEvent, "/data", "no identifier"},
		// Inputs that would fail a whole request at Braze (docs/braze-rules.md §8 poison-*).
		{`{"type":"attributes","data":{"external_id":"u\u0000v"}}`, 0, KindAttributes, "/data/external_id", "NUL"},
		{`{"type":"attributes","data":{"external_id":"u","score":1e400}}`, 0, KindAttributes, "/data/score", "64-bit float"},
		{`{"type":"attributes","data":{"external_id":"u","deep":[{"a":{"b":-1E+309}}]}}`, 0, KindAttributes, "/data/deep", "64-bit float"},
		{`{"type":"purchase","data":{"external_id":"u","product_id":"p","currency":"USD","price":` + strings.Repeat("9", 100000) + `,"time":"2024-05-01"}}`, 0, KindPurchase, "/data/price", "64-bit float"},
		{`{"type":"event","data":{` + ev + `,"properties":{"n":2e308}}}`, 0, KindEvent, "/data/properties", "64-bit float"},
		{`{"type":"attributes","data":{"external_id":"u","color":"red","color":"blue"}}`, 0, KindAttributes, "/data/color", "duplicate key"},
		{`{"type":"attributes","data":{"external_id":"u","color":"red","c\u006flor":"blue"}}`, 0, KindAttributes, "/data/color", "duplicate key"},
		// A short key near the end of the message is read byte by byte, one further in as a
		// masked word: both give the same print.
		{`{"type":"attributes","data":{"external_id":"u","a":1,"a":2}}`, 0, KindAttributes, "/data/a", "duplicate key"},
		{`{"type":"attributes","data":{"external_id":"u","\u0061":1,"a":2}}`, 0, KindAttributes, "/data/a", "duplicate key"},
		{`{"type":"event","data":{` + ev + `,"app_id":"a","app_id":"b"}}`, 0, KindEvent, "/data/app_id", "duplicate key"},
		{`{"type":"event","data":{` + ev + `,"properties":{"a":1,"b":2,"a":3}}}`, 0, KindEvent, "/data/properties/a", "duplicate key"},
		{`{"type":"attributes","data":{"external_id":"u"` + manyKeys(40) + `,"k7":0}}`, 0, KindAttributes, "/data/k7", "duplicate key"},
		{`{"type":"attributes","data":{"external_id":"u"` + manyKeys(40) + `,"k39":0}}`, 0, KindAttributes, "/data/k39", "duplicate key"},
		// Nested custom attributes (docs/braze-rules.md §8 nested-1).
		{`{"type":"attributes","data":{"external_id":"u","song":{"name":"x","plays":null}}}`, 0, KindAttributes, "/data/song/plays", "null"},
		{`{"type":"attributes","data":{"external_id":"u","song":{"a":{"b":[1,null]}}}}`, 0, KindAttributes, "/data/song/a/b/1", "null"},
		{`{"type":"attributes","data":{"external_id":"u","dates":{"born":{"$time":"1980-13-01"}}}}`, 0, KindAttributes, "/data/dates/born/$time", "not a valid time"},
		{`{"type":"attributes","data":{"external_id":"u","dates":{"born":{"$time":null}}}}`, 0, KindAttributes, "/data/dates/born/$time", "time string"},
		{`{"type":"attributes","data":{"external_id":"u","song":{"artist name":"x"}}}`, 0, KindAttributes, "/data/song/artist name", "space"},
		{`{"type":"attributes","data":{"external_id":"u","song":{"a.b":"x"}}}`, 0, KindAttributes, "/data/song/a.b", "'.'"},
		{`{"type":"attributes","data":{"external_id":"u","song":{"":"x"}}}`, 0, KindAttributes, "/data/song/", "non-empty"},
		{`{"type":"attributes","data":{"external_id":"u","pets":[{"name":"a"},{"name":null}]}}`, 0, KindAttributes, "/data/pets/1/name", "null"},
		{`{"type":"attributes","data":{"external_id":"u","pets":{"$add":[{"name":null}]}}}`, 0, KindAttributes, "/data/pets/$add/0/name", "null"},
		{`{"type":"attributes","data":{"external_id":"u","pets":{"$add":[null]}}}`, 0, KindAttributes, "/data/pets/$add/0", "null"},
		{`{"type":"attributes","data":{"external_id":"u","_merge_objects":true,"pets":{"$update":[{"$identifier_key":"id","$identifier_value":1,"$new_object":{"age":null}}]}}}`, 0, KindAttributes, "/data/pets/$update/0/$new_object/age", "null"},
		{`{"type":"attributes","data":{"external_id":"u","x":{"inc":1,"other":null}}}`, 0, KindAttributes, "/data/x/other", "null"},
		{`{"events":[{` + ev + `},{` + ev + `},{` + ev + `},{` + ev + `,"properties":{"$x":1}}]}`, 3, KindEvent, "/events/3/properties/$x", "'$'"},
		{`{"attributes":[{"external_id":"u"}],"events":[{` + ev + `},7]}`, 2, KindEvent, "/events/1", "must be an object"},
		{`{"purchases":[{"external_id":"u","product_id":"p","currency":"USD","price":null,"time":"2024-05-01"}],"attributes":[{"external_id":"u"}]}`, 1, KindPurchase, "/purchases/0/price", "number"},
	}
	for _, tt := range tests {
		recs, err := new(Decoder).Decode([]byte(tt.msg), nil)
		if err != nil {
			t.Errorf("%.80s: message error %v", tt.msg, err)
			continue
		}
		var got *RecordError
		for _, r := range recs {
			if r.Err != nil {
				if got != nil {
					t.Errorf("%.80s: more than one bad record", tt.msg)
				}
				got = r.Err
				if r.Index != got.Index || r.Kind != got.Kind {
					t.Errorf("%.80s: record %d/%v carries error for %d/%v", tt.msg, r.Index, r.Kind, got.Index, got.Kind)
				}
			}
		}
		switch {
		case got == nil:
			t.Errorf("%.80s: no record error", tt.msg)
		case got.Reason != ReasonInvalidRecord || got.Index != tt.index || got.Kind != tt.kind ||
			got.Field != tt.field || !strings.Contains(got.Msg, tt.inMsg):
			t.Errorf("%.80s:\n got %+v\nwant index %d kind %v field %q msg ~%q", tt.msg, *got, tt.index, tt.kind, tt.field, tt.inMsg)
		}
	}
}

// manyKeys returns n members ,"k0":0 … ,"k<n-1>":0.
func manyKeys(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(`,"k` + strconv.Itoa(i) + `":0`)
	}
	return b.String()
}

func TestMessageErrors(t *testing.T) {
	const ev = `{"external_id":"u","name":"e","time":"2024-05-01"}`
	tests := []struct {
		msg    string
		reason Reason
		field  string
		offset int
	}{
		{``, ReasonInvalidJSON, "", 0},
		{`   `, ReasonInvalidJSON, "", 3},
		{`[]`, ReasonInvalidJSON, "", 0},
		{`"x"`, ReasonInvalidJSON, "", 0},
		{`{"events":[` + ev + `]} x`, ReasonInvalidJSON, "", len(ev) + 14},
		{`{"events":[` + ev + `]}{}`, ReasonInvalidJSON, "", len(ev) + 13},
		{`{"events":[` + ev + `,]}`, ReasonInvalidJSON, "", len(ev) + 12},
		{`{"type":"attributes","data":{"external_id":"a` + "\xff" + `"}}`, ReasonInvalidJSON, "", 45},
		{`{"type":"attributes","data":{"external_id":"a\q"}}`, ReasonInvalidJSON, "", 45},
		{`{"type":"attributes","data":{"external_id":"a\u12G4"}}`, ReasonInvalidJSON, "", 45},
		{`{"type":"attributes","data":{"n":01}}`, ReasonInvalidJSON, "", 34},
		{`{"type":"attributes","data":{"n":-}}`, ReasonInvalidJSON, "", 34},
		{`{"type":"attributes","data":{"n":1.}}`, ReasonInvalidJSON, "", 35},
		{`{"type":"attributes","data":{"n":tru}}`, ReasonInvalidJSON, "", 36},
		{`{"type":"attributes","data":{"n":1}`, ReasonInvalidJSON, "", 35},
		{`{"type":"attributes" "data":{}}`, ReasonInvalidJSON, "", 21},
		{`{"data":{"x":[1,2}}}`, ReasonInvalidJSON, "", 17},
		{strings.Repeat("[", 2000), ReasonInvalidJSON, "", maxDepth},
		{`{"type":"attributes","data":` + strings.Repeat("[", 2000) + strings.Repeat("]", 2000) + `}`, ReasonInvalidJSON, "", 28 + maxDepth},
		// A syntax error wins over an earlier rule error.
		{`{"nope":1,"type":"event","data":` + ev + `,}`, ReasonInvalidJSON, "", len(ev) + 33},
		{`{}`, ReasonInvalidRecord, "", -1},
		{`{"id":"x"}`, ReasonInvalidRecord, "", -1},
		{`{"type":"event","data":` + ev + `,"x/y":1}`, ReasonInvalidRecord, "/x~1y", -1},
		{`{"type":"event","type":"event","data":` + ev + `}`, ReasonInvalidRecord, "/type", -1},
		{`{"type":"event","data":` + ev + `,"events":[]}`, ReasonInvalidRecord, "", -1},
		{`{"id":"x","events":[` + ev + `]}`, ReasonInvalidRecord, "", -1},
		{`{"data":` + ev + `}`, ReasonInvalidRecord, "/type", -1},
		{`{"type":"event"}`, ReasonInvalidRecord, "/data", -1},
		{`{"type":"Event","data":` + ev + `}`, ReasonInvalidRecord, "/type", -1},
		{`{"type":1,"data":` + ev + `}`, ReasonInvalidRecord, "/type", -1},
		{`{"type":"event","data":"x"}`, ReasonInvalidRecord, "/data", -1},
		{`{"type":"event","data":` + ev + `,"id":7}`, ReasonInvalidRecord, "/id", -1},
		{`{"events":{}}`, ReasonInvalidRecord, "/events", -1},
		{`{"events":[],"purchases":[]}`, ReasonInvalidRecord, "", -1},
		{`{"events":[` + ev + `],"events":[]}`, ReasonInvalidRecord, "/events", -1},
	}
	for _, tt := range tests {
		out := make([]Record, 2, 8)
		got, err := new(Decoder).Decode([]byte(tt.msg), out)
		var me *MessageError
		if !errors.As(err, &me) {
			t.Errorf("%.60q: err %v, want a MessageError", tt.msg, err)
			continue
		}
		if me.Reason != tt.reason || me.Field != tt.field || me.Offset != tt.offset || me.Msg == "" {
			t.Errorf("%.60q: got %+v, want reason %s field %q offset %d", tt.msg, *me, tt.reason, tt.field, tt.offset)
		}
		if len(got) != 2 {
			t.Errorf("%.60q: returned %d records, want the 2 passed in", tt.msg, len(got))
		}
	}
}

func TestBundle(t *testing.T) {
	const a0 = `{"external_id":"a0"}`
	const e0 = `{"external_id":"e0","name":"x","time":"2024-05-01"}`
	const e1 = `{"external_id":"e1","name":"x"}` // no time
	const e2 = `{"braze_id":"e2","name":"x","time":"2024-05-01"}`
	const p0 = `{"email":"p0@x","product_id":"p","currency":"EUR","price":2,"time":"2024-05-01T00:00:00Z"}`
	for _, msg := range []string{
		`{"attributes":[` + a0 + `],"events":[` + e0 + `,` + e1 + `, ` + e2 + `],"purchases":[` + p0 + `]}`,
		`{"purchases":[` + p0 + `],"events":[` + e0 + `,` + e1 + `, ` + e2 + `],"attributes":[` + a0 + `]}`,
		`{"events":[` + e0 + `,` + e1 + `, ` + e2 + `],"purchases":[` + p0 + `],"attributes":[` + a0 + `]}`,
	} {
		value := []byte(msg)
		prefix := []Record{{Index: 99}}
		recs, err := (&Decoder{}).Decode(value, prefix)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 6 || recs[0].Index != 99 {
			t.Fatalf("%s: got %d records", msg, len(recs))
		}
		want := []struct {
			kind Kind
			raw  string
			id   string
		}{{KindAttributes, a0, "a0"}, {KindEvent, e0, "e0"}, {KindEvent, e1, "e1"}, {KindEvent, e2, "e2"}, {KindPurchase, p0, "p0@x"}}
		for i, w := range want {
			r := recs[i+1]
			if r.Index != i || r.Kind != w.kind || string(r.Raw) != w.raw || !within(r.Raw, value) || string(r.UserID) != w.id || r.ID != nil {
				t.Errorf("%s: record %d = %+v", msg, i, r)
			}
			if (i == 2) != (r.Err != nil) {
				t.Errorf("%s: record %d Err %v", msg, i, r.Err)
			}
		}
		if e := recs[3].Err; e == nil || e.Field != "/events/1/time" || e.Index != 2 {
			t.Errorf("%s: bad record error %+v", msg, e)
		}
	}
}

func TestTooLarge(t *testing.T) {
	small := `{"external_id":"u"}`
	big := `{"external_id":"u","x":"` + strings.Repeat("y", 100) + `"}`
	bad := `{"x":"` + strings.Repeat("y", 100) + `"}`
	recs := decode(t, Decoder{MaxRecordBytes: 64}, `{"attributes":[`+small+`,`+big+`,`+bad+`]}`)
	if recs[0].Err != nil {
		t.Errorf("small record: %v", recs[0].Err)
	}
	for _, r := range recs[1:] {
		if r.Err == nil || r.Err.Reason != ReasonTooLarge || r.Err.Field != "/attributes/"+string(rune('0'+r.Index)) {
			t.Errorf("record %d: %+v", r.Index, r.Err)
		}
	}
	if recs[1].IDKind != IDExternal {
		t.Errorf("a too-large record still has its identifier, got %v", recs[1].IDKind)
	}
	if recs := decode(t, Decoder{}, `{"attributes":[`+big+`]}`); recs[0].Err != nil {
		t.Errorf("MaxRecordBytes 0 means no limit: %v", recs[0].Err)
	}
}

func TestNilDecoder(t *testing.T) {
	var d *Decoder
	if _, err := d.Decode([]byte(`{"type":"attributes","data":{"braze_id":"b"}}`), nil); err != nil {
		t.Fatal(err)
	}
}

func TestJSONInteger(t *testing.T) {
	tests := []struct {
		lit   string
		v     int64
		isInt bool
	}{
		{"0", 0, true}, {"-0", 0, true}, {"7", 7, true}, {"-12", -12, true}, {"100", 100, true},
		{"2.0", 2, true}, {"2.50", 0, false}, {"1e2", 100, true}, {"1E+2", 100, true}, {"10e-1", 1, true},
		{"0.1e1", 1, true}, {"0.01e1", 0, false}, {"1.5e1", 15, true}, {"100e-3", 0, false},
		{"0.000", 0, true}, {"0e5", 0, true}, {"1e400", 1 << 62, true}, {"-1e400", -(1 << 62), true},
		{"123456789012345678901234", 1 << 62, true}, {"1e-400", 0, false}, {"5.000e0", 5, true},
	}
	for _, tt := range tests {
		v, isInt := jsonInteger([]byte(tt.lit))
		if v != tt.v || isInt != tt.isInt {
			t.Errorf("%s: got %d,%v want %d,%v", tt.lit, v, isInt, tt.v, tt.isInt)
		}
	}
}

// The hot path must not allocate per record.
func TestDecodeAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip()
	}
	tests := []struct {
		name string
		msg  []byte
		max  float64
	}{
		{"envelope", benchEnvelope(), 0},
		{"bundle", benchBundle(75), 0},
		{"bundle-escaped-alias", []byte(`{"attributes":[` + strings.Repeat(`{"user_alias":{"alias_name":"n\u00e9","alias_label":"l"}},`, 74) + `{"braze_id":"\u0062"}]}`), 1},
	}
	for _, tt := range tests {
		out := make([]Record, 0, 128)
		var err error
		allocs := testing.AllocsPerRun(100, func() {
			_, err = new(Decoder).Decode(tt.msg, out[:0])
		})
		if err != nil {
			t.Fatal(err)
		}
		if allocs > tt.max {
			t.Errorf("%s: %.1f allocations per message, want at most %.0f", tt.name, allocs, tt.max)
		}
	}
}

// Unescaped identifiers share per-message buffers; they must not overwrite each other when
// a message needs more than one buffer.
func TestUnescapedIDsAcrossBuffers(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"attributes":[`)
	const n = 400
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		tmpl := `{"external_id":"\u0075-%04d-` + strings.Repeat("x", 40) + `"}`
		b.WriteString(strings.Replace(tmpl, "%04d", strings.Repeat(string(rune('a'+i%26)), 4)+string(rune('0'+i%10)), 1))
	}
	b.WriteString(`]}`)
	value := []byte(b.String())
	if len(value) < 2*8192 {
		t.Fatalf("message of %d bytes does not span buffers", len(value))
	}
	recs := decode(t, Decoder{}, b.String())
	if len(recs) != n {
		t.Fatalf("%d records", len(recs))
	}
	for i, r := range recs {
		want := "u-" + strings.Repeat(string(rune('a'+i%26)), 4) + string(rune('0'+i%10)) + "-" + strings.Repeat("x", 40)
		if string(r.UserID) != want || r.Err != nil {
			t.Fatalf("record %d: UserID %q err %v", i, r.UserID, r.Err)
		}
	}

	env := decode(t, Decoder{}, `{"id":"m\u002d1","type":"attributes","data":{"braze_id":"b"}}`)[0]
	if string(env.ID) != "m-1" {
		t.Errorf("envelope ID %q, want unescaped m-1", env.ID)
	}
}
