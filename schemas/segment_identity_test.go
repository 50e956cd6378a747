package schemas

import (
	"errors"
	"strings"
	"testing"
)

// TestSegmentIdentityRecords: identify with a prior anonymousId, alias and delete calls
// become /users/identify, /users/merge and /users/delete records: the exact entry, its
// position (the identify entry before the attributes), its ordering identity (the profile
// that survives), its PackKey and its id.
func TestSegmentIdentityRecords(t *testing.T) {
	alias := func(label, name string) (IDKind, string) { return IDAlias, label + "\x00" + name }
	type want struct {
		kind    Kind
		json    string
		idKind  IDKind
		userID  string
		packKey uint32
		id      string
	}
	w := func(kind Kind, js string, idk IDKind, uid string, id string) want {
		return want{kind: kind, json: js, idKind: idk, userID: uid, id: id}
	}
	e, u1 := ext("u1")
	ak, anon := alias("anonymous_id", "anon-1")
	on := &SegmentDecoder{IdentifyAlias: true, AliasAsMerge: true}
	tests := []struct {
		name string
		dec  *SegmentDecoder
		msg  string
		call SegmentCall
		want []want
	}{
		{
			name: "identify with userId and anonymousId: identify entry, then attributes",
			dec:  on,
			msg:  `{"type":"identify","userId":"u1","anonymousId":"anon-1","messageId":"m1","traits":{"plan":"pro"}}`,
			call: SegmentIdentify,
			want: []want{
				w(KindIdentify, `{"external_id":"u1","user_alias":{"alias_name":"anon-1","alias_label":"anonymous_id"}}`, e, u1, "m1/0"),
				w(KindAttributes, `{"external_id":"u1","plan":"pro"}`, e, u1, "m1/1"),
			},
		},
		{
			name: "identify entry uses the configured alias label",
			dec:  &SegmentDecoder{IdentifyAlias: true, AliasLabel: "segment_anonymous_id"},
			msg:  `{"type":"identify","userId":"u1","anonymousId":"anon-1"}`,
			call: SegmentIdentify,
			want: []want{
				w(KindIdentify, `{"external_id":"u1","user_alias":{"alias_name":"anon-1","alias_label":"segment_anonymous_id"}}`, e, u1, ""),
				w(KindAttributes, `{"external_id":"u1"}`, e, u1, ""),
			},
		},
		{
			name: "identify without IdentifyAlias: attributes only",
			dec:  &SegmentDecoder{AliasAsMerge: true},
			msg:  `{"type":"identify","userId":"u1","anonymousId":"anon-1","messageId":"m1"}`,
			call: SegmentIdentify,
			want: []want{w(KindAttributes, `{"external_id":"u1"}`, e, u1, "m1")},
		},
		{
			name: "identify with userId only: nothing to identify",
			dec:  on,
			msg:  `{"type":"identify","userId":"u1","anonymousId":"","traits":{}}`,
			call: SegmentIdentify,
			want: []want{w(KindAttributes, `{"external_id":"u1"}`, e, u1, "")},
		},
		{
			name: "identify with anonymousId only: the alias profile's attributes",
			dec:  on,
			msg:  `{"type":"identify","userId":null,"anonymousId":"anon-1"}`,
			call: SegmentIdentify,
			want: []want{w(KindAttributes, `{"user_alias":{"alias_name":"anon-1","alias_label":"anonymous_id"},"_update_existing_only":false}`, ak, anon, "")},
		},
		{
			name: "identify: escaped identifiers stay escaped in the entry, unescaped in the identity",
			dec:  on,
			msg:  `{"type":"identify","userId":"u\u00e9","anonymousId":"a\"1"}`,
			call: SegmentIdentify,
			want: []want{
				w(KindIdentify, `{"external_id":"u\u00e9","user_alias":{"alias_name":"a\"1","alias_label":"anonymous_id"}}`, IDExternal, "ué", ""),
				w(KindAttributes, `{"external_id":"u\u00e9"}`, IDExternal, "ué", ""),
			},
		},
		{
			name: "alias: previousId is a former userId: external_id merged into external_id",
			dec:  on,
			msg:  `{"type":"alias","userId":"u1","previousId":"old-1","messageId":"m2",` + segTS + `}`,
			call: SegmentAlias,
			want: []want{w(KindMerge, `{"identifier_to_merge":{"external_id":"old-1"},"identifier_to_keep":{"external_id":"u1"}}`, e, u1, "m2")},
		},
		{
			name: "alias: previousId is the call's anonymousId: the alias profile merged into external_id",
			dec:  on,
			msg:  `{"type":"alias","userId":"u1","previousId":"anon-1","anonymousId":"anon-1"}`,
			call: SegmentAlias,
			want: []want{w(KindMerge, `{"identifier_to_merge":{"user_alias":{"alias_name":"anon-1","alias_label":"anonymous_id"}},"identifier_to_keep":{"external_id":"u1"}}`, e, u1, "")},
		},
		{
			name: "alias: another anonymousId does not make previousId anonymous",
			dec:  on,
			msg:  `{"type":"alias","userId":"u1","previousId":"old-1","anonymousId":"anon-9"}`,
			call: SegmentAlias,
			want: []want{w(KindMerge, `{"identifier_to_merge":{"external_id":"old-1"},"identifier_to_keep":{"external_id":"u1"}}`, e, u1, "")},
		},
		{
			name: "alias: previousId equal to userId is skipped (nothing to merge)",
			dec:  on,
			msg:  `{"type":"alias","userId":"u1","previousId":"u1"}`,
			call: SegmentAlias,
		},
		{
			name: "alias without AliasAsMerge is skipped",
			dec:  &SegmentDecoder{IdentifyAlias: true},
			msg:  `{"type":"alias","userId":"u1","previousId":"old-1"}`,
			call: SegmentAlias,
		},
		{
			name: "delete: external_id userId",
			msg:  `{"type":"delete","userId":"u1","anonymousId":"anon-1","messageId":"d1","context":{}}`,
			call: SegmentDelete,
			want: []want{{kind: KindDelete, json: `{"external_id":"u1"}`, idKind: e, userID: u1, packKey: uint32(IDExternal), id: "d1"}},
		},
		{
			name: "delete: anonymous user's alias",
			msg:  `{"type":"delete","userId":"","anonymousId":"anon-1"}`,
			call: SegmentDelete,
			want: []want{{kind: KindDelete, json: `{"user_alias":{"alias_name":"anon-1","alias_label":"anonymous_id"}}`, idKind: ak, userID: anon, packKey: uint32(IDAlias)}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &SegmentDecoder{} // fresh counters
			if tc.dec != nil {
				d.AliasLabel, d.IdentifyAlias, d.AliasAsMerge = tc.dec.AliasLabel, tc.dec.IdentifyAlias, tc.dec.AliasAsMerge
			}
			recs, err := d.Decode([]byte(tc.msg), []Record{{Index: -7}})
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			recs = recs[1:]
			if len(recs) != len(tc.want) {
				for _, r := range recs {
					t.Logf("got %s %s", r.Kind.EnvelopeType(), r.Raw)
				}
				t.Fatalf("got %d records, want %d", len(recs), len(tc.want))
			}
			for i, r := range recs {
				w := tc.want[i]
				if r.Kind != w.kind || r.Index != i || r.Err != nil {
					t.Errorf("record %d: kind %s index %d err %v; want %s %d", i, r.Kind.EnvelopeType(), r.Index, r.Err, w.kind.EnvelopeType(), i)
				}
				if !sameJSON(t, r.Raw, w.json) {
					t.Errorf("record %d:\n got %s\nwant %s", i, r.Raw, w.json)
				}
				noDuplicateKeys(t, r.Raw)
				if r.IDKind != w.idKind || string(r.UserID) != w.userID || r.UserHash != UserHash(w.idKind, []byte(w.userID)) {
					t.Errorf("record %d: identity %s %q hash %x; want %s %q", i, r.IDKind, r.UserID, r.UserHash, w.idKind, w.userID)
				}
				if r.PackKey != w.packKey || string(r.ID) != w.id {
					t.Errorf("record %d: PackKey %d id %q; want %d %q", i, r.PackKey, r.ID, w.packKey, w.id)
				}
				// The entry as a native envelope decodes to the same identity and PackKey:
				// Segment and native records of one user share a lane and a request.
				env := []byte(`{"type":"` + r.Kind.EnvelopeType() + `","data":` + string(r.Raw) + `}`)
				nr, err := (&Decoder{}).Decode(env, nil)
				if err != nil || len(nr) != 1 || nr[0].Err != nil {
					t.Fatalf("record %d does not pass the native rules: %v %+v", i, err, nr)
				}
				if nr[0].UserHash != r.UserHash || nr[0].IDKind != r.IDKind || string(nr[0].UserID) != string(r.UserID) || nr[0].PackKey != r.PackKey {
					t.Errorf("record %d: native identity %s %q PackKey %d; Segment's %s %q %d", i, nr[0].IDKind, nr[0].UserID, nr[0].PackKey, r.IDKind, r.UserID, r.PackKey)
				}
			}
			outcome := SegmentMapped
			if len(tc.want) == 0 {
				outcome = SegmentSkipped
			}
			if n := d.Count(tc.call, outcome); n != 1 {
				t.Errorf("Count(%s, %s) = %d, want 1", tc.call, outcome, n)
			}
		})
	}
}

// TestSegmentIdentityPackKeys: deletes of the two identifier types never share a PackKey
// (Braze takes one identifier type per /users/delete request), and the other kinds use 0.
func TestSegmentIdentityPackKeys(t *testing.T) {
	d := &SegmentDecoder{IdentifyAlias: true, AliasAsMerge: true}
	var recs []Record
	for _, m := range []string{
		`{"type":"delete","userId":"u1"}`,
		`{"type":"delete","anonymousId":"a1"}`,
		`{"type":"identify","userId":"u1","anonymousId":"a1"}`,
		`{"type":"alias","userId":"u1","previousId":"a1"}`,
	} {
		var err error
		if recs, err = d.Decode([]byte(m), recs); err != nil {
			t.Fatal(err)
		}
	}
	if recs[0].PackKey == recs[1].PackKey {
		t.Errorf("external_id and user_alias deletes share PackKey %d", recs[0].PackKey)
	}
	for _, r := range recs[2:] {
		if r.PackKey != 0 {
			t.Errorf("%s record has PackKey %d, want 0", r.Kind.EnvelopeType(), r.PackKey)
		}
	}
}

func TestSegmentIdentityErrors(t *testing.T) {
	on := func() *SegmentDecoder { return &SegmentDecoder{IdentifyAlias: true, AliasAsMerge: true} }
	long := strings.Repeat("é", 494) // 988 bytes
	tests := []struct {
		name   string
		dec    *SegmentDecoder
		msg    string
		reason Reason
		field  string
		call   SegmentCall
	}{
		{name: "alias without userId", msg: `{"type":"alias","previousId":"p"}`, reason: ReasonInvalidRecord, field: "/userId", call: SegmentAlias},
		{name: "alias with empty userId", msg: `{"type":"alias","userId":"","previousId":"p"}`, reason: ReasonInvalidRecord, field: "/userId", call: SegmentAlias},
		{name: "alias without previousId", msg: `{"type":"alias","userId":"u"}`, reason: ReasonInvalidRecord, field: "/previousId", call: SegmentAlias},
		{name: "alias previousId not a string", msg: `{"type":"alias","userId":"u","previousId":7}`, reason: ReasonInvalidRecord, field: "/previousId", call: SegmentAlias},
		{name: "alias previousId too long", msg: `{"type":"alias","userId":"u","previousId":"` + long + `"}`, reason: ReasonInvalidRecord, field: "/previousId", call: SegmentAlias},
		{name: "alias userId too long", msg: `{"type":"alias","userId":"` + long + `","previousId":"p"}`, reason: ReasonInvalidRecord, field: "/userId", call: SegmentAlias},
		{name: "alias previousId with NUL", msg: `{"type":"alias","userId":"u","previousId":"p\u0000"}`, reason: ReasonInvalidRecord, field: "/previousId", call: SegmentAlias},
		{name: "delete without user", msg: `{"type":"delete","messageId":"d"}`, reason: ReasonInvalidRecord, field: "/userId", call: SegmentDelete},
		{name: "delete userId not a string", msg: `{"type":"delete","userId":12}`, reason: ReasonInvalidRecord, field: "/userId", call: SegmentDelete},
		{name: "delete anonymousId not a string", msg: `{"type":"delete","anonymousId":{}}`, reason: ReasonInvalidRecord, field: "/anonymousId", call: SegmentDelete},
		{name: "delete userId too long", msg: `{"type":"delete","userId":"` + long + `"}`, reason: ReasonInvalidRecord, field: "/userId", call: SegmentDelete},
		{name: "identify entry userId too long", msg: `{"type":"identify","userId":"` + long + `","anonymousId":"a"}`, reason: ReasonInvalidRecord, call: SegmentIdentify},
		{name: "delete too large", dec: &SegmentDecoder{MaxRecordBytes: 20}, msg: `{"type":"delete","userId":"` + strings.Repeat("x", 20) + `"}`, reason: ReasonTooLarge, call: SegmentDelete},
		{name: "delete dead-lettered with the call's bytes", dec: &SegmentDecoder{}, msg: `{"type":"delete"}`, reason: ReasonInvalidRecord, field: "/userId", call: SegmentDelete},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.dec
			if d == nil {
				d = on()
			}
			recs, err := d.Decode([]byte(tc.msg), []Record{{Index: -7}})
			var me *MessageError
			if !errors.As(err, &me) {
				t.Fatalf("Decode error %v (records %d), want a *MessageError", err, len(recs))
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
