package schemas_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/braze-ingestor/braze-ingestor/batcher"
	"github.com/braze-ingestor/braze-ingestor/schemas"
)

type segObj struct{ r schemas.Record }

func (o segObj) ObjectKind() schemas.Kind { return o.r.Kind }
func (o segObj) ObjectBytes() []byte      { return o.r.Raw }

// TestSegmentIdentityBodies: the records Segment identify, alias and delete calls become are
// packed (same Kind and PackKey) and encoded into the request bodies Braze documents for
// /users/identify, /users/merge and /users/delete (docs/segment.md, docs/braze-rules.md).
func TestSegmentIdentityBodies(t *testing.T) {
	d := &schemas.SegmentDecoder{IdentifyAlias: true, AliasAsMerge: true}
	var recs []schemas.Record
	for _, m := range []string{
		`{"type":"identify","userId":"u1","anonymousId":"anon-1","traits":{"plan":"pro"}}`,
		`{"type":"identify","userId":"u2","anonymousId":"anon-2"}`,
		`{"type":"alias","userId":"u1","previousId":"old-1"}`,
		`{"type":"alias","userId":"u2","previousId":"anon-2","anonymousId":"anon-2"}`,
		`{"type":"delete","userId":"u1"}`,
		`{"type":"delete","anonymousId":"anon-3"}`,
		`{"type":"delete","userId":"u\u00e9"}`,
	} {
		var err error
		if recs, err = d.Decode([]byte(m), recs); err != nil {
			t.Fatalf("%s: %v", m, err)
		}
	}
	type key struct {
		kind schemas.Kind
		pack uint32
	}
	groups := map[key][]segObj{}
	var order []key
	for _, r := range recs {
		k := key{r.Kind, r.PackKey}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], segObj{r})
	}
	alias := func(name string) string {
		return `{"alias_name":"` + name + `","alias_label":"anonymous_id"}`
	}
	want := []string{
		`{"aliases_to_identify":[{"external_id":"u1","user_alias":` + alias("anon-1") + `},{"external_id":"u2","user_alias":` + alias("anon-2") + `}]}`,
		`{"attributes":[{"external_id":"u1","plan":"pro"},{"external_id":"u2"}]}`,
		`{"merge_updates":[{"identifier_to_merge":{"external_id":"old-1"},"identifier_to_keep":{"external_id":"u1"}},` +
			`{"identifier_to_merge":{"user_alias":` + alias("anon-2") + `},"identifier_to_keep":{"external_id":"u2"}}]}`,
		`{"external_ids":["u1","u\u00e9"]}`,
		`{"user_aliases":[` + alias("anon-3") + `]}`,
	}
	if len(order) != len(want) {
		t.Fatalf("%d request groups, want %d", len(order), len(want))
	}
	for i, k := range order {
		body := batcher.Encode(nil, groups[k])
		var g, w any
		if err := json.Unmarshal(body, &g); err != nil {
			t.Fatalf("body %s is not JSON: %v", body, err)
		}
		if err := json.Unmarshal([]byte(want[i]), &w); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s request (PackKey %d):\n got %s\nwant %s", k.kind.EnvelopeType(), k.pack, body, want[i])
		}
		if ep := k.kind.Endpoint(); len(groups[k]) > ep.MaxObjects() {
			t.Errorf("%d records for %s, over its %d", len(groups[k]), ep.Path(), ep.MaxObjects())
		}
	}
}
