package schemas

import (
	"strings"
	"testing"
)

func env(typ, data string) string { return `{"type":"` + typ + `","data":` + data + `}` }

func TestDecodeEntriesValid(t *testing.T) {
	const keepAlias = `{"user_alias":{"alias_name":"n","alias_label":"l"}}`
	tests := []struct {
		msg  string
		kind Kind
		id   IDKind
		uid  string
	}{
		{env("alias", `{"alias_name":"n","alias_label":"l"}`), KindAlias, IDAlias, "l\x00n"},
		{env("alias", `{"alias_name":"n","alias_label":"l","external_id":"x","extra":1}`), KindAlias, IDAlias, "l\x00n"},
		{env("alias", `{"alias_name":"n","alias_label":"l","external_id":null}`), KindAlias, IDAlias, "l\x00n"},
		{env("identify", `{"external_id":"x","user_alias":{"alias_name":"n","alias_label":"l"}}`), KindIdentify, IDExternal, "x"},
		{env("identify", `{"external_id":"x","email":"a@b.c","prioritization":["unidentified","most_recently_updated"]}`), KindIdentify, IDExternal, "x"},
		{env("identify", `{"external_id":"x\u00e9","phone":"+1555","prioritization":["least_recently_updated"]}`), KindIdentify, IDExternal, "xé"},
		// Braze documents no error for an empty prioritization: sent for Braze to judge.
		{env("identify", `{"external_id":"x","phone":"+1","prioritization":[]}`), KindIdentify, IDExternal, "x"},
		{env("delete", `{"email":"e","prioritization":[]}`), KindDelete, IDEmail, "e"},
		// Nor for a merge identifier naming several users: ordered by the first of
		// external_id, user_alias, email, phone.
		{env("merge", `{"identifier_to_merge":{"external_id":"o"},"identifier_to_keep":{"email":"e","prioritization":["identified"],"external_id":"k"}}`), KindMerge, IDExternal, "k"},
		{env("merge", `{"identifier_to_merge":{"external_id":"o"},"identifier_to_keep":{"phone":"+1","prioritization":["identified"],"user_alias":{"alias_name":"n","alias_label":"l"}}}`), KindMerge, IDAlias, "l\x00n"},
		// A null identifier is absent, as in /users/track (a typed producer's nullable fields).
		{env("delete", `{"external_id":null,"braze_id":"b"}`), KindDelete, IDBraze, "b"},
		{env("subscription", `{"subscription_group_id":"g","subscription_state":"subscribed","external_id":null,"email":"a@b"}`), KindSubscription, IDEmail, "a@b"},
		{env("identify", `{"external_id":"x","user_alias":null,"phone":"+1","prioritization":["identified"]}`), KindIdentify, IDExternal, "x"},
		{env("merge", `{"identifier_to_merge":{"external_id":"o"},"identifier_to_keep":{"external_id":null,"phone":"+1","prioritization":["identified"]}}`), KindMerge, IDPhone, "+1"},
		// use_double_opt_in_logic, Braze's optional Boolean; null is absent.
		{env("subscription", `{"subscription_group_id":"g","subscription_state":"subscribed","phone":"+12223334444","use_double_opt_in_logic":true}`), KindSubscription, IDPhone, "+12223334444"},
		{env("subscription", `{"subscription_group_id":"g","subscription_state":"subscribed","external_id":"x","use_double_opt_in_logic":null}`), KindSubscription, IDExternal, "x"},
		{env("merge", `{"identifier_to_merge":{"external_id":"old"},"identifier_to_keep":{"external_id":"new"}}`), KindMerge, IDExternal, "new"},
		{env("merge", `{"identifier_to_merge":{"email":"e","prioritization":["identified"]},"identifier_to_keep":`+keepAlias+`}`), KindMerge, IDAlias, "l\x00n"},
		{env("merge", `{"identifier_to_merge":{"external_id":"o"},"identifier_to_keep":{"phone":"+1","prioritization":["identified"]}}`), KindMerge, IDPhone, "+1"},
		{env("subscription", `{"subscription_group_id":"g","subscription_state":"subscribed","external_id":"x"}`), KindSubscription, IDExternal, "x"},
		{env("subscription", `{"subscription_group_id":"g","subscription_state":"unsubscribed","email":"a@b"}`), KindSubscription, IDEmail, "a@b"},
		{env("subscription", `{"subscription_group_id":"g","subscription_state":"subscribed","phone":"+12223334444"}`), KindSubscription, IDPhone, "+12223334444"},
		{env("delete", `{"external_id":"x"}`), KindDelete, IDExternal, "x"},
		{env("delete", `{"user_alias":{"alias_name":"n","alias_label":"l"}}`), KindDelete, IDAlias, "l\x00n"},
		{env("delete", `{"braze_id":"b"}`), KindDelete, IDBraze, "b"},
		{env("delete", `{"email":"e","prioritization":["unidentified","most_recently_updated"]}`), KindDelete, IDEmail, "e"},
		{env("delete", `{"phone":"+1","prioritization":["identified"]}`), KindDelete, IDPhone, "+1"},
	}
	for _, tc := range tests {
		recs := decode(t, Decoder{}, tc.msg)
		if len(recs) != 1 {
			t.Fatalf("%s: %d records", tc.msg, len(recs))
		}
		r := recs[0]
		if r.Err != nil {
			t.Errorf("%s: %v", tc.msg, r.Err)
			continue
		}
		if r.Kind != tc.kind || r.IDKind != tc.id || string(r.UserID) != tc.uid || r.UserHash != UserHash(tc.id, []byte(tc.uid)) {
			t.Errorf("%s: kind %v id %v %q hash %x, want %v %v %q", tc.msg, r.Kind, r.IDKind, r.UserID, r.UserHash, tc.kind, tc.id, tc.uid)
		}
		if data := tc.msg[strings.Index(tc.msg, `"data":`)+7 : len(tc.msg)-1]; string(r.Raw) != data {
			t.Errorf("%s: Raw %s, want %s", tc.msg, r.Raw, data)
		}
		wantPack := r.PackKey != 0
		if got := tc.kind == KindDelete || tc.kind == KindSubscription; got != wantPack {
			t.Errorf("%s: PackKey %d", tc.msg, r.PackKey)
		}
		if tc.kind == KindDelete && r.PackKey != uint32(tc.id) {
			t.Errorf("%s: delete PackKey %d, want the identifier type %d", tc.msg, r.PackKey, tc.id)
		}
	}
}

// The identity of a user is the same whatever the record kind: a delete of a user alias
// routes like a track record of that alias.
func TestEntryIdentityMatchesTrack(t *testing.T) {
	track := decode(t, Decoder{}, env("attributes", `{"user_alias":{"alias_name":"n\u0041","alias_label":"l"},"a":1}`))[0]
	del := decode(t, Decoder{}, env("delete", `{"user_alias":{"alias_label":"l","alias_name":"nA"}}`))[0]
	ali := decode(t, Decoder{}, env("alias", `{"alias_label":"l","alias_name":"nA"}`))[0]
	if track.User() != del.User() || track.User() != ali.User() {
		t.Fatalf("identities differ: track %v delete %v alias %v", track.User(), del.User(), ali.User())
	}
}

func TestSubscriptionPackKey(t *testing.T) {
	pk := func(data string) uint32 {
		r := decode(t, Decoder{}, env("subscription", data))[0]
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		return r.PackKey
	}
	a := pk(`{"subscription_group_id":"g1","subscription_state":"subscribed","external_id":"x"}`)
	if b := pk(`{"external_id":"y","subscription_state":"subscribed","subscription_group_id":"g\u0031"}`); a != b {
		t.Errorf("same group, state and identifier type: PackKey %d != %d", a, b)
	}
	// use_double_opt_in_logic false or null is Braze's default, as when it is absent.
	for _, same := range []string{"false", "null"} {
		if b := pk(`{"subscription_group_id":"g1","subscription_state":"subscribed","external_id":"y","use_double_opt_in_logic":` + same + `}`); a != b {
			t.Errorf("use_double_opt_in_logic %s: PackKey %d != %d", same, b, a)
		}
	}
	for _, other := range []string{
		`{"subscription_group_id":"g2","subscription_state":"subscribed","external_id":"x"}`,
		`{"subscription_group_id":"g1","subscription_state":"unsubscribed","external_id":"x"}`,
		`{"subscription_group_id":"g1","subscription_state":"subscribed","email":"x"}`,
		`{"subscription_group_id":"g1","subscription_state":"subscribed","external_id":"x","use_double_opt_in_logic":true}`,
	} {
		if pk(other) == a {
			t.Errorf("%s: same PackKey as another group, state or identifier type", other)
		}
	}
}

func TestDecodeEntriesInvalid(t *testing.T) {
	const al = `{"alias_name":"n","alias_label":"l"}`
	tests := []struct{ msg, field, msg2 string }{
		{`{"aliases":[1]}`, "/aliases/0", "must be an object"},
		{env("alias", `{"alias_label":"l"}`), "/data/alias_name", "is required"},
		{env("alias", `{"alias_name":"n"}`), "/data/alias_label", "is required"},
		{env("alias", `{"alias_name":"","alias_label":"l"}`), "/data/alias_name", "non-empty"},
		{env("alias", `{"alias_name":"n","alias_label":7}`), "/data/alias_label", "non-empty"},
		{env("alias", `{"alias_name":"n","alias_label":"l","external_id":""}`), "/data/external_id", "non-empty"},
		{env("alias", `{"alias_name":"n","alias_label":"l","external_id":"`+strings.Repeat("x", 988)+`"}`), "/data/external_id", "987"},
		{env("alias", `{"alias_name":"n","alias_label":"l","x":1,"x":2}`), "/data/x", "duplicate"},
		{env("identify", `{"user_alias":`+al+`}`), "/data/external_id", "is required"},
		{env("identify", `{"external_id":"x"}`), "/data", "needs one of user_alias, email or phone"},
		{env("identify", `{"external_id":"x","user_alias":`+al+`,"email":"e","prioritization":["identified"]}`), "/data/email", "only one of"},
		{env("identify", `{"external_id":"x","email":"e"}`), "/data/prioritization", "is required with email or phone"},
		{env("identify", `{"external_id":"x","phone":"+1","prioritization":"identified"}`), "/data/prioritization", "array"},
		{env("identify", `{"external_id":"x","phone":"+1","prioritization":["identified","unidentified"]}`), "/data/prioritization", "only one of identified and unidentified"},
		{env("identify", `{"external_id":"x","phone":"+1","prioritization":["newest"]}`), "/data/prioritization/0", "must be one of"},
		{env("identify", `{"external_id":"x","user_alias":{"alias_name":"n"}}`), "/data/user_alias/alias_label", "is required"},
		{env("identify", `{"external_id":"x","user_alias":"n"}`), "/data/user_alias", "must be an object"},
		{env("merge", `{"identifier_to_merge":{"external_id":"a"}}`), "/data/identifier_to_keep", "is required"},
		{env("merge", `{"identifier_to_keep":{"external_id":"a"}}`), "/data/identifier_to_merge", "is required"},
		{env("merge", `{"identifier_to_merge":{"external_id":"a"},"identifier_to_keep":{"external_id":"b"},"x":1}`), "/data/x", "unknown key"},
		{env("merge", `{"identifier_to_merge":"a","identifier_to_keep":{"external_id":"b"}}`), "/data/identifier_to_merge", "must be an object"},
		{env("merge", `{"identifier_to_merge":{"braze_id":"a"},"identifier_to_keep":{"external_id":"b"}}`), "/data/identifier_to_merge", "needs one of"},
		{env("merge", `{"identifier_to_merge":{"external_id":"a"},"identifier_to_keep":{"external_id":"b","email":"e"}}`), "/data/identifier_to_keep/prioritization", "is required"},
		{env("merge", `{"identifier_to_merge":{"email":"e"},"identifier_to_keep":{"external_id":"b"}}`), "/data/identifier_to_merge/prioritization", "is required"},
		{env("merge", `{"identifier_to_merge":{"external_id":"a"},"identifier_to_keep":{"user_alias":{"alias_name":"","alias_label":"l"}}}`), "/data/identifier_to_keep/user_alias/alias_name", "non-empty"},
		{env("merge", `{"identifier_to_merge":{"external_id":5},"identifier_to_keep":{"external_id":"b"}}`), "/data/identifier_to_merge/external_id", "non-empty"},
		{env("subscription", `{"subscription_state":"subscribed","external_id":"x"}`), "/data/subscription_group_id", "is required"},
		{env("subscription", `{"subscription_group_id":"g","external_id":"x"}`), "/data/subscription_state", "is required"},
		{env("subscription", `{"subscription_group_id":"g","subscription_state":"maybe","external_id":"x"}`), "/data/subscription_state", "subscribed"},
		{env("subscription", `{"subscription_group_id":"","subscription_state":"subscribed","external_id":"x"}`), "/data/subscription_group_id", "non-empty"},
		{env("subscription", `{"subscription_group_id":"g","subscription_state":"subscribed"}`), "/data", "needs one of"},
		{env("subscription", `{"subscription_group_id":"g","subscription_state":"subscribed","email":"e","phone":"+1555"}`), "/data/phone", "only one of"},
		{env("subscription", `{"subscription_group_id":"g","subscription_state":"subscribed","phone":"555-1234"}`), "/data/phone", "E.164"},
		{env("subscription", `{"subscription_group_id":"g","subscription_state":"subscribed","external_id":["x"]}`), "/data/external_id", "non-empty string"},
		{env("subscription", `{"subscription_group_id":"g","subscription_state":"subscribed","external_id":"x","braze_id":"b"}`), "/data/braze_id", "unknown key"},
		{env("subscription", `{"subscription_group_id":"g","subscription_state":"subscribed","phone":"+12223334444","use_double_opt_in_logic":"true"}`), "/data/use_double_opt_in_logic", "boolean"},
		{env("delete", `{}`), "/data", "needs one of"},
		{env("delete", `{"external_id":null}`), "/data", "needs one of"},
		{env("delete", `{"external_id":null,"external_id":"x"}`), "/data/external_id", "duplicate"},
		{env("identify", `{"external_id":null,"user_alias":`+al+`}`), "/data/external_id", "is required"},
		{env("delete", `{"external_id":"x","braze_id":"b"}`), "/data/braze_id", "only one of"},
		{env("delete", `{"email":"e"}`), "/data/prioritization", "is required"},
		{env("delete", `{"external_id":"x","prioritization":["identified"]}`), "/data/prioritization", "only allowed with email or phone"},
		{env("delete", `{"email":"e","prioritization":["least_recently_updated"]}`), "/data/prioritization/0", "most_recently_updated"},
		{env("delete", `{"external_id":"x","name":"n"}`), "/data/name", "unknown key"},
		{env("delete", `{"external_id":"x","external_id":"y"}`), "/data/external_id", "duplicate"},
		{env("delete", `{"external_id":"a\u0000b"}`), "/data/external_id", "NUL"},
		{env("delete", `{"braze_id":""}`), "/data/braze_id", "non-empty"},
		{`{"deletes":[{"external_id":"x"},{"external_id":1}]}`, "/deletes/1/external_id", "non-empty"},
	}
	for _, tc := range tests {
		recs := decode(t, Decoder{}, tc.msg)
		var bad *RecordError
		for _, r := range recs {
			if r.Err != nil {
				bad = r.Err
			}
		}
		want := tc.field
		if want == "" {
			want = "/data"
		}
		if bad == nil || bad.Field != want || !strings.Contains(bad.Msg, tc.msg2) || bad.Reason != ReasonInvalidRecord {
			t.Errorf("%s:\n got %v\nwant %s: …%s…", tc.msg, bad, want, tc.msg2)
		}
	}
}

// A bundle's records come in Index order: attributes, events, purchases, then aliases,
// identifies, merges, subscriptions, deletes, whatever the key order in the message.
func TestBundleAllArraysOrder(t *testing.T) {
	msg := `{"deletes":[{"external_id":"d0"},{"braze_id":"d1"}],
		"subscriptions":[{"subscription_group_id":"g","subscription_state":"subscribed","external_id":"s"}],
		"merges":[{"identifier_to_merge":{"external_id":"a"},"identifier_to_keep":{"external_id":"m"}}],
		"identifies":[{"external_id":"i","user_alias":{"alias_name":"n","alias_label":"l"}}],
		"aliases":[{"alias_name":"an","alias_label":"al"}],
		"purchases":[{"external_id":"p","product_id":"x","currency":"USD","price":1,"time":"2024-01-01"}],
		"events":[{"external_id":"e","name":"n","time":"2024-01-01"}],
		"attributes":[{"external_id":"t","a":1}]}`
	recs := decode(t, Decoder{}, msg)
	wantKinds := []Kind{KindAttributes, KindEvent, KindPurchase, KindAlias, KindIdentify, KindMerge, KindSubscription, KindDelete, KindDelete}
	wantIDs := []string{"t", "e", "p", "al\x00an", "i", "m", "s", "d0", "d1"}
	if len(recs) != len(wantKinds) {
		t.Fatalf("%d records, want %d", len(recs), len(wantKinds))
	}
	for i, r := range recs {
		if r.Err != nil || r.Index != i || r.Kind != wantKinds[i] || string(r.UserID) != wantIDs[i] {
			t.Errorf("record %d: index %d kind %v id %q err %v; want kind %v id %q", i, r.Index, r.Kind, r.UserID, r.Err, wantKinds[i], wantIDs[i])
		}
	}
	// Canonical order is validated while scanning; the same records either way.
	inOrder := `{"attributes":[{"external_id":"t","a":1}],"aliases":[{"alias_name":"an","alias_label":"al"}],"deletes":[{"external_id":"d0"}]}`
	recs = decode(t, Decoder{}, inOrder)
	if len(recs) != 3 || recs[1].Kind != KindAlias || recs[2].Kind != KindDelete || recs[2].Index != 2 {
		t.Fatalf("in-order bundle: %+v", recs)
	}
}

func TestEnvelopeTypes(t *testing.T) {
	for k := KindAttributes; k < NumKinds; k++ {
		got, ok := envelopeKind([]byte(k.EnvelopeType()))
		if !ok || got != k {
			t.Errorf("envelopeKind(%q) = %v, %v", k.EnvelopeType(), got, ok)
		}
		if got := arrayKind(tkAttributes << k); got != k {
			t.Errorf("arrayKind(bit of %s) = %v", k.Array(), got)
		}
		if topKey([]byte(k.Array())) != tkAttributes<<k {
			t.Errorf("topKey(%q) is not its kind's bit", k.Array())
		}
	}
	if _, err := (&Decoder{}).Decode([]byte(env("forget", `{"external_id":"x"}`)), nil); err == nil {
		t.Fatal("unknown type accepted")
	}
}

func TestEntryParts(t *testing.T) {
	tests := []struct {
		kind                Kind
		raw                 string
		id                  IDKind
		value, group, state string
	}{
		{KindIdentify, `{"external_id":"x","user_alias":{"alias_name":"n","alias_label":"l"}}`, IDAlias, `{"alias_name":"n","alias_label":"l"}`, "", ""},
		{KindIdentify, `{ "email" : "e" , "external_id":"x","prioritization":["identified"]}`, IDEmail, `"e"`, "", ""},
		{KindIdentify, `{"external_id":"x","phone":"+1","prioritization":["identified"]}`, IDPhone, `"+1"`, "", ""},
		{KindDelete, `{"external_id":"a\"b"}`, IDExternal, `"a\"b"`, "", ""},
		{KindDelete, `{"user_alias":{"alias_name":"n","alias_label":"l"}}`, IDAlias, `{"alias_name":"n","alias_label":"l"}`, "", ""},
		{KindDelete, `{"prioritization":["identified"],"phone":"+1"}`, IDPhone, `"+1"`, "", ""},
		{KindSubscription, `{"subscription_group_id":"g\u0031","subscription_state":"subscribed","email":"e"}`, IDEmail, `"e"`, `"g\u0031"`, `"subscribed"`},
		{KindSubscription, `{"ext\u0065rnal_id":"x","subscription_group_id":"g","subscription_state":"unsubscribed"}`, IDExternal, `"x"`, `"g"`, `"unsubscribed"`},
		{KindAlias, `{"alias_name":"n","alias_label":"l","external_id":"x"}`, 0, "", "", ""},
	}
	for _, tc := range tests {
		p, ok := EntryParts(tc.kind, []byte(tc.raw))
		if !ok || p.ID != tc.id || string(p.Value) != tc.value || string(p.Group) != tc.group || string(p.State) != tc.state {
			t.Errorf("%s: %v %+v", tc.raw, ok, p)
		}
	}
	if _, ok := EntryParts(KindDelete, []byte(`[1]`)); ok {
		t.Error("EntryParts of an array: ok")
	}
	raw := []byte(tests[6].raw)
	if allocs := testing.AllocsPerRun(100, func() {
		EntryParts(KindSubscription, raw)
	}); allocs != 0 {
		t.Errorf("EntryParts allocates %.0f times", allocs)
	}
}

func TestSamePack(t *testing.T) {
	sub := func(g, st, id string) []byte {
		return []byte(`{"subscription_group_id":"` + g + `","subscription_state":"` + st + `","` + id + `":"v"}`)
	}
	if !SamePack(KindSubscription, sub("g", "subscribed", "email"), sub("g", "subscribed", "email")) {
		t.Error("same group, state and type: not the same pack")
	}
	for _, b := range [][]byte{sub("h", "subscribed", "email"), sub("g", "unsubscribed", "email"), sub("g", "subscribed", "phone")} {
		if SamePack(KindSubscription, sub("g", "subscribed", "email"), b) {
			t.Errorf("%s: the same pack as group g, subscribed, email", b)
		}
	}
	optIn := []byte(`{"subscription_group_id":"g","subscription_state":"subscribed","email":"w","use_double_opt_in_logic":true}`)
	if SamePack(KindSubscription, sub("g", "subscribed", "email"), optIn) {
		t.Error("use_double_opt_in_logic true and absent: the same pack")
	}
	if SamePack(KindDelete, []byte(`{"external_id":"a"}`), []byte(`{"braze_id":"a"}`)) || !SamePack(KindDelete, []byte(`{"external_id":"a"}`), []byte(`{"external_id":"b"}`)) {
		t.Error("delete: identifier types not told apart")
	}
	if !SamePack(KindMerge, []byte(`{}`), []byte(`{"x":1}`)) {
		t.Error("merge: records of one kind always share a pack")
	}
}
