package batcher

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/braze-ingestor/braze-ingestor/schemas"
)

type tobj struct {
	k schemas.Kind
	b []byte
	u schemas.User
}

func (o tobj) ObjectKind() schemas.Kind { return o.k }
func (o tobj) ObjectBytes() []byte      { return o.b }
func (o tobj) ObjectUser() schemas.User { return o.u }

// userOf is the identity the decoder resolves for an object of kind k (zero when the decoder
// finds none, e.g. for a fuzzed object that is not JSON).
func userOf(k schemas.Kind, b []byte) schemas.User {
	var d schemas.Decoder
	recs, err := d.Decode([]byte(`{"type":"`+k.EnvelopeType()+`","data":`+string(b)+`}`), nil)
	if err != nil || len(recs) != 1 {
		return schemas.User{}
	}
	return recs[0].User()
}

func newObj(k schemas.Kind, b []byte) tobj { return tobj{k, b, userOf(k, b)} }

func attrs(ss ...string) []tobj {
	out := make([]tobj, len(ss))
	for i, s := range ss {
		out[i] = newObj(schemas.KindAttributes, []byte(s))
		if strings.HasPrefix(s, "E:") {
			out[i] = newObj(schemas.KindEvent, []byte(s[2:]))
		}
	}
	return out
}

// result renders a coalesced request as "sources=>object" strings.
func result(objs []tobj, res []Coalesced) []string {
	var out []string
	for _, r := range res {
		b := r.Bytes
		if b == nil {
			b = objs[r.Sources[0]].b
		}
		out = append(out, fmt.Sprint(r.Sources)+"=>"+string(b))
	}
	return out
}

func TestCoalesce(t *testing.T) {
	const ev = `E:{"external_id":"u","name":"e","time":"2026-01-01T00:00:00Z"}`
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"last write per key wins",
			[]string{`{"external_id":"u","a":1,"b":"x"}`, `{"external_id":"u","a":3}`, `{"external_id":"u","c":true}`},
			[]string{`[0 1 2]=>{"external_id":"u","a":3,"b":"x","c":true}`}},
		{"null is a value and wins",
			[]string{`{"external_id":"u","a":1}`, `{"external_id":"u","a":null}`},
			[]string{`[0 1]=>{"external_id":"u","a":null}`}},
		{"a later value wins over null",
			[]string{`{"external_id":"u","a":null}`, `{"external_id":"u","a":""}`},
			[]string{`[0 1]=>{"external_id":"u","a":""}`}},
		{"single objects are left as they are",
			[]string{`{"external_id":"u", "a" : 1}`, `{"external_id":"v","a":1}`},
			[]string{`[0]=>{"external_id":"u", "a" : 1}`, `[1]=>{"external_id":"v","a":1}`}},
		{"inc is not merged and is a barrier for its key",
			[]string{`{"external_id":"u","a":1}`, `{"external_id":"u","a":{"inc":2}}`, `{"external_id":"u","a":5}`, `{"external_id":"u","a":6}`},
			[]string{`[0]=>{"external_id":"u","a":1}`, `[1]=>{"external_id":"u","a":{"inc":2}}`, `[2 3]=>{"external_id":"u","a":6}`}},
		{"an operator is no barrier for other keys",
			[]string{`{"external_id":"u","a":1}`, `{"external_id":"u","n":{"inc":1}}`, `{"external_id":"u","a":5,"b":2}`},
			[]string{`[0 2]=>{"external_id":"u","a":5,"b":2}`, `[1]=>{"external_id":"u","n":{"inc":1}}`}},
		{"a plain key in an operator object is a barrier too",
			[]string{`{"external_id":"u","a":1}`, `{"external_id":"u","n":{"inc":1},"b":1}`, `{"external_id":"u","b":2}`},
			[]string{`[0]=>{"external_id":"u","a":1}`, `[1]=>{"external_id":"u","n":{"inc":1},"b":1}`, `[2]=>{"external_id":"u","b":2}`}},
		{"array add/remove are not merged",
			[]string{`{"external_id":"u","t":{"add":["x"]}}`, `{"external_id":"u","t":{"remove":["y"]}}`},
			[]string{`[0]=>{"external_id":"u","t":{"add":["x"]}}`, `[1]=>{"external_id":"u","t":{"remove":["y"]}}`}},
		{"arrays of objects operators are not merged",
			[]string{`{"external_id":"u","p":{"$add":[{"id":1}]}}`, `{"external_id":"u","p":{"$remove":[{"$identifier_key":"id","$identifier_value":1}]}}`, `{"external_id":"u","p":{"$update":[]},"_merge_objects":true}`},
			[]string{`[0]=>{"external_id":"u","p":{"$add":[{"id":1}]}}`, `[1]=>{"external_id":"u","p":{"$remove":[{"$identifier_key":"id","$identifier_value":1}]}}`, `[2]=>{"external_id":"u","p":{"$update":[]},"_merge_objects":true}`}},
		{"_merge_objects objects are kept apart, other keys merge around them",
			[]string{`{"external_id":"u","a":1}`, `{"external_id":"u","_merge_objects":true,"o":{"x":1}}`, `{"external_id":"u","b":2}`, `{"external_id":"u","o":{"y":1}}`},
			[]string{`[0 2]=>{"external_id":"u","a":1,"b":2}`, `[1]=>{"external_id":"u","_merge_objects":true,"o":{"x":1}}`, `[3]=>{"external_id":"u","o":{"y":1}}`}},
		{"nested objects and arrays of objects stay as written",
			[]string{`{"external_id":"u","o":{"x":1}}`, `{"external_id":"u","o":{"x":2}}`, `{"external_id":"u","l":[{"x":1}]}`, `{"external_id":"u","l":[{"x":2}]}`},
			[]string{`[0]=>{"external_id":"u","o":{"x":1}}`, `[1]=>{"external_id":"u","o":{"x":2}}`, `[2]=>{"external_id":"u","l":[{"x":1}]}`, `[3]=>{"external_id":"u","l":[{"x":2}]}`}},
		{"arrays of scalars are plain",
			[]string{`{"external_id":"u","t":["a","{"]}`, `{"external_id":"u","t":["b"]}`},
			[]string{`[0 1]=>{"external_id":"u","t":["b"]}`}},
		{"different identifier kinds stay apart",
			[]string{`{"external_id":"u","a":1}`, `{"braze_id":"u","a":2}`, `{"email":"u@example.com","a":3}`, `{"phone":"+15550000000","a":4}`, `{"user_alias":{"alias_name":"u","alias_label":"l"},"a":5}`},
			[]string{`[0]=>{"external_id":"u","a":1}`, `[1]=>{"braze_id":"u","a":2}`, `[2]=>{"email":"u@example.com","a":3}`, `[3]=>{"phone":"+15550000000","a":4}`, `[4]=>{"user_alias":{"alias_name":"u","alias_label":"l"},"a":5}`}},
		{"users interleave",
			[]string{`{"external_id":"u","a":1}`, `{"external_id":"v","a":1}`, `{"external_id":"u","a":2}`, `{"external_id":"v","b":1}`},
			[]string{`[0 2]=>{"external_id":"u","a":2}`, `[1 3]=>{"external_id":"v","a":1,"b":1}`}},
		{"_update_existing_only must match and is a barrier",
			[]string{`{"external_id":"u","a":1}`, `{"external_id":"u","_update_existing_only":true,"a":2}`, `{"external_id":"u","a":3}`, `{"external_id":"u","_update_existing_only":true,"b":1}`},
			[]string{`[0]=>{"external_id":"u","a":1}`, `[1 3]=>{"external_id":"u","_update_existing_only":true,"a":2,"b":1}`, `[2]=>{"external_id":"u","a":3}`}},
		{"email as a field: different values do not merge",
			[]string{`{"external_id":"u","email":"a@example.com","a":1}`, `{"external_id":"u","email":"bad","a":2}`, `{"external_id":"u","email":"bad","b":2}`},
			[]string{`[0]=>{"external_id":"u","email":"a@example.com","a":1}`, `[1 2]=>{"external_id":"u","email":"bad","a":2,"b":2}`}},
		{"events are never merged and keep their place",
			[]string{`{"external_id":"u","a":1}`, ev, `{"external_id":"u","a":2}`, ev},
			[]string{`[0 2]=>{"external_id":"u","a":2}`, `[1]=>` + ev[2:], `[3]=>` + ev[2:]}},
		{"keys are compared unescaped and trimmed",
			[]string{`{ "external_id" : "u" , "a" : 1 , "c" : 1 }`, `{"external_id":"u","\u0061":2}`, `{"external_id":"u"," c ":3}`},
			[]string{`[0 1 2]=>{"external_id" : "u","a":2,"c":3}`}},
		{"the user is the decoder's identity: escapes and alias key order do not matter",
			[]string{`{"external_id":"u","a":1}`, `{"external_id":"\u0075","b":2}`,
				`{"user_alias":{"alias_name":"n","alias_label":"l"},"a":1}`, `{"user_alias":{"alias_label":"l","alias_name":"n"},"b":2}`},
			[]string{`[0 1]=>{"external_id":"u","a":1,"b":2}`, `[2 3]=>{"user_alias":{"alias_name":"n","alias_label":"l"},"a":1,"b":2}`}},
		{"the same value under another identifier kind is another user",
			[]string{`{"external_id":"u","a":1}`, `{"braze_id":"u","a":2}`},
			[]string{`[0]=>{"external_id":"u","a":1}`, `[1]=>{"braze_id":"u","a":2}`}},
		{"identifier only objects merge",
			[]string{`{"external_id":"u"}`, `{"external_id":"u","a":1}`},
			[]string{`[0 1]=>{"external_id":"u","a":1}`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := attrs(tc.in...)
			res := Coalesce(objs)
			got := result(objs, res)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
			for _, r := range res {
				if r.Bytes != nil && !json.Valid(r.Bytes) {
					t.Fatalf("invalid JSON %s", r.Bytes)
				}
			}
			if a, b := len(Encode(nil, objs)), len(Encode(nil, coalescedObjs(objs, res))); b > a {
				t.Fatalf("coalesced body %d bytes > %d", b, a)
			}
		})
	}
}

func coalescedObjs(objs []tobj, res []Coalesced) []tobj {
	out := make([]tobj, len(res))
	for i, r := range res {
		out[i] = objs[r.Sources[0]]
		if r.Bytes != nil {
			out[i].b = r.Bytes
		}
	}
	return out
}

// TestCoalesceIncremental: Merges/Add agree with Coalesce, and Merges does not change state.
func TestCoalesceIncremental(t *testing.T) {
	objs := attrs(`{"external_id":"u","a":1}`, `{"external_id":"u","a":{"inc":1}}`, `{"external_id":"u","b":1}`, `{"external_id":"u","a":2}`)
	var c Coalescer
	var merges []bool
	for _, o := range objs {
		m := c.Merges(o.k, o.u, o.b)
		if m2 := c.Merges(o.k, o.u, o.b); m2 != m {
			t.Fatal("Merges changed state")
		}
		if got := c.Add(o.k, o.u, o.b); got != m {
			t.Fatalf("Add %v, Merges %v", got, m)
		}
		merges = append(merges, m)
	}
	if want := []bool{false, false, true, false}; !reflect.DeepEqual(merges, want) {
		t.Fatalf("merges %v, want %v", merges, want)
	}
	if c.Len() != 3 || len(c.Result()) != 3 {
		t.Fatalf("len %d", c.Len())
	}
	c.Reset()
	if c.Len() != 0 || c.Add(objs[0].k, objs[0].u, objs[0].b) {
		t.Fatal("reset")
	}
}

// TestCoalescePreservesOutcome applies random update sequences one object at a time and
// coalesced, with a model of Braze's attribute semantics (set, null, inc, add), and compares
// the final profiles.
func TestCoalescePreservesOutcome(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	users := []string{`"external_id":"u"`, `"external_id":"v"`, `"braze_id":"u"`}
	keys := []string{"a", "b", "c", "d"}
	for round := 0; round < 3000; round++ {
		var in []string
		for n := 1 + r.IntN(12); n > 0; n-- {
			var fields []string
			used := map[string]bool{}
			for m := 1 + r.IntN(3); m > 0; m-- {
				k := keys[r.IntN(len(keys))]
				if used[k] {
					continue
				}
				used[k] = true
				switch x := r.IntN(10); {
				case x < 5:
					fields = append(fields, fmt.Sprintf(`"%s":%d`, k, r.IntN(3)))
				case x < 6:
					fields = append(fields, fmt.Sprintf(`"%s":null`, k))
				case x < 8:
					fields = append(fields, fmt.Sprintf(`"%s":{"inc":%d}`, k, 1+r.IntN(3)))
				default:
					fields = append(fields, fmt.Sprintf(`"%s":["x%d"]`, k, r.IntN(2)))
				}
			}
			in = append(in, "{"+users[r.IntN(len(users))]+","+strings.Join(fields, ",")+"}")
		}
		objs := attrs(in...)
		want := applyModel(t, objs)
		got := applyModel(t, coalescedObjs(objs, Coalesce(objs)))
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round %d: profiles differ\ninput %s\ncoalesced %v\ngot  %v\nwant %v", round, in, result(objs, Coalesce(objs)), got, want)
		}
	}
}

func applyModel(t *testing.T, objs []tobj) map[string]any {
	t.Helper()
	prof := map[string]any{}
	for _, o := range objs {
		var a AttrObject
		if !ParseAttributes(o.b, o.u.ID, &a) {
			t.Fatalf("parse %s", o.b)
		}
		user := fmt.Sprint(o.u)
		for _, f := range a.Fields {
			k := user + "/" + f.Key
			var v any
			if err := json.Unmarshal(f.Value, &v); err != nil {
				t.Fatal(err)
			}
			if m, ok := v.(map[string]any); ok {
				n, _ := prof[k].(float64)
				prof[k] = n + m["inc"].(float64)
				continue
			}
			if v == nil {
				delete(prof, k)
				continue
			}
			prof[k] = v
		}
	}
	return prof
}

func TestParseAttributes(t *testing.T) {
	var a AttrObject
	if !ParseAttributes([]byte(` {"user_alias":{"alias_name":"n","alias_label":"l"}, "_update_existing_only":false,"email":"e@x","x":[1,2]} `), schemas.IDAlias, &a) {
		t.Fatal("parse")
	}
	if a.ID != schemas.IDAlias || string(a.Meta[0]) != `"user_alias":{"alias_name":"n","alias_label":"l"}` || string(a.UpdateExistingOnly) != "false" {
		t.Fatalf("%+v", a)
	}
	if !a.CreatesOrUpdates() || len(a.Fields) != 2 || a.Fields[0].Key != "email" || !a.Fields[1].Plain || len(a.Meta) != 2 {
		t.Fatalf("%+v", a)
	}
	if got := string(AppendAttributes(nil, &a, func(i int) bool { return i == 1 })); got != `{"user_alias":{"alias_name":"n","alias_label":"l"},"_update_existing_only":false,"x":[1,2]}` {
		t.Fatal(got)
	}
	for _, bad := range []string{``, `[]`, `{"a":1`, `{"a" 1}`, `{"a":1,}`, `{"a":"x}`, `{"a":{"b":1}`} {
		if ParseAttributes([]byte(bad), 0, &a) {
			t.Errorf("%q parsed", bad)
		}
	}
	ParseAttributes([]byte(`{"user_alias":{"alias_name":"n","alias_label":"l"},"a":1}`), schemas.IDAlias, &a)
	if a.CreatesOrUpdates() {
		t.Fatal("alias defaults to update-only")
	}
	// The identifier is found by its unescaped key, and named twice it is not parsed.
	if !ParseAttributes([]byte(`{"\u0065xternal_id":"u","a":1}`), schemas.IDExternal, &a) || a.ID != schemas.IDExternal || len(a.Fields) != 1 {
		t.Fatalf("escaped identifier key: %+v", a)
	}
	if ParseAttributes([]byte(`{"external_id":"u","external_id":"v"}`), schemas.IDExternal, &a) {
		t.Fatal("identifier named twice parsed")
	}
	// A null identifier is absent (docs/braze-rules.md §8 id-6): the decoder names the user by
	// the braze_id, and the null external_id stays a field.
	objs := attrs(`{"external_id":null,"braze_id":"b","a":1}`)
	if objs[0].u.ID != schemas.IDBraze {
		t.Fatalf("decoder identity %+v, want braze_id", objs[0].u)
	}
	ParseAttributes(objs[0].b, objs[0].u.ID, &a)
	if a.ID != schemas.IDBraze || string(a.Meta[0]) != `"braze_id":"b"` || len(a.Fields) != 2 || a.Fields[0].Key != "external_id" {
		t.Fatalf("null external_id: %+v", a)
	}
}

// The coalescer allocates nothing when no attributes are involved, and the plain packer path
// is untouched; this guards the cost of merging itself.
func BenchmarkCoalesce(b *testing.B) {
	var objs []tobj
	for i := 0; i < 75; i++ {
		objs = append(objs, newObj(schemas.KindAttributes, []byte(fmt.Sprintf(`{"external_id":"user-%d","country":"US","plan":"pro","score":%d,"seen":"2026-11-25"}`, i%20, i))))
	}
	b.ReportAllocs()
	for b.Loop() {
		Coalesce(objs)
	}
}

// BenchmarkParseAttributes measures the attributes scanner alone on a typical record (an
// identifier, a meta pair, plain values of each type, an operator object) and on one with an
// escaped key.
func BenchmarkParseAttributes(b *testing.B) {
	for _, c := range []struct {
		name   string
		raw    string
		fields int
	}{
		{"typical", `{"external_id":"user-17","_update_existing_only":false,"country":"US","plan":"pro","score":42,"vip":true,"tags":{"add":["a","b"]},"seen":"2026-11-25"}`, 6},
		{"escaped", `{"external_id":"user-17","caf\u00e9":"x","plan":"pro"}`, 2},
	} {
		b.Run(c.name, func(b *testing.B) {
			raw := []byte(c.raw)
			var a AttrObject
			if !ParseAttributes(raw, schemas.IDExternal, &a) || len(a.Fields) != c.fields {
				b.Fatalf("parse: %+v", a)
			}
			b.ReportAllocs()
			for b.Loop() {
				ParseAttributes(raw, schemas.IDExternal, &a)
			}
		})
	}
}

// FuzzCoalesce: the scanner never panics, and for valid JSON objects every merged object is
// valid JSON holding exactly the last value of each key.
func FuzzCoalesce(f *testing.F) {
	f.Add(`{"external_id":"u","a":1}`, `{"external_id":"u","a":null,"b":[1,"x"]}`)
	f.Add(`{"external_id":"u","a":{"inc":1}}`, `{"external_id":"u","\u0061":"\"}"}`)
	f.Add(`{"braze_id":"u", "a" : [ ] }`, `{"braze_id":"u","c":true,"_update_existing_only":false}`)
	f.Fuzz(func(t *testing.T, a, b string) {
		objs := attrs(a, b)
		var x AttrObject
		ParseAttributes([]byte(a), objs[0].u.ID, &x)
		res := Coalesce(objs)
		if !json.Valid([]byte(a)) || !json.Valid([]byte(b)) || a == "" || a[0] != '{' || b[0] != '{' {
			return
		}
		var y AttrObject
		ParseAttributes([]byte(b), objs[1].u.ID, &y)
		seen := map[string]bool{}
		for _, f := range y.Fields {
			if seen[f.Key] {
				return // a key repeated within one object: Braze's choice is not ours to check
			}
			seen[f.Key] = true
		}
		for _, r := range res {
			if r.Bytes == nil {
				continue
			}
			var got map[string]any
			if err := json.Unmarshal(r.Bytes, &got); err != nil {
				t.Fatalf("merged %q and %q into invalid JSON %s", a, b, r.Bytes)
			}
			var ma, mb map[string]any
			_ = json.Unmarshal([]byte(a), &ma)
			_ = json.Unmarshal([]byte(b), &mb)
			for k, v := range mb {
				if !reflect.DeepEqual(got[strings.TrimSpace(k)], v) && !reflect.DeepEqual(got[k], v) {
					t.Fatalf("merged %s lost %s=%v of %s", r.Bytes, k, v, b)
				}
			}
		}
	})
}
