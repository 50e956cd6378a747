package brazesim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/braze-ingestor/braze-ingestor/schemas"
)

// TestDifferentialDecoderRejectsOnlyWhatBrazeRejects generates Braze objects and holds the
// worker's decoder to docs/braze-rules.md: whenever the decoder dead-letters an object
// (invalid_record), the simulator, following the documented rules, rejects it too: an
// error for that object in errors[], a failed request, or the request's nested updates
// dropped (checked on a canary user in the same request). The reverse is not required:
// what the decoder leaves to Braze (an email's format, a lower-case currency it
// normalises, …) may well be rejected by Braze.
func TestDifferentialDecoderRejectsOnlyWhatBrazeRejects(t *testing.T) {
	s := newSim(t, nil)
	rng := rand.New(rand.NewPCG(14, 5))
	var dec schemas.Decoder
	var rejected, simOnly, objects int
	n := 4000
	if testing.Short() {
		n = 500
	}
	for i := 0; i < n; i++ {
		kind, obj := genObject(rng)
		objects++
		recs, err := dec.Decode([]byte(`{"type":"`+kind.EnvelopeType()+`","data":`+obj+`}`), nil)
		var me *schemas.MessageError
		if errors.As(err, &me) || len(recs) != 1 {
			t.Fatalf("%s: message error %v", obj, err)
		}
		decRejects := recs[0].Err != nil && recs[0].Err.Reason == schemas.ReasonInvalidRecord
		simRejects, why := simVerdict(t, s, i, kind, obj)
		switch {
		case decRejects && !simRejects:
			t.Errorf("decoder rejects (%v) but the simulator accepts (%s):\n%s", recs[0].Err, why, obj)
		case decRejects:
			rejected++
		case simRejects:
			simOnly++
		}
	}
	t.Logf("%d objects: %d rejected by both, %d left to Braze and rejected by the simulator", objects, rejected, simOnly)
	if rejected < n/10 {
		t.Errorf("only %d of %d generated objects were rejected: the generator is too tame", rejected, n)
	}
}

// simVerdict sends obj after a canary attributes object with a nested attribute and says
// whether the simulator rejected obj.
func simVerdict(t *testing.T, s *Sim, i int, kind schemas.Kind, obj string) (bool, string) {
	canary := fmt.Sprintf("canary-%d", i)
	arr, idx := kind.Array(), 0
	body := `{"attributes":[{"external_id":"` + canary + `","o":{"k":1}}]`
	if kind == schemas.KindAttributes {
		body = `{"attributes":[{"external_id":"` + canary + `","o":{"k":1}},` + obj + `]}`
		idx = 1
	} else {
		body += `,"` + arr + `":[` + obj + `]}`
	}
	w := track(s, body)
	if w.Code/100 != 2 {
		return true, fmt.Sprintf("status %d %s", w.Code, w.Body)
	}
	m := decode(t, w)
	errs, _ := m["errors"].([]any)
	for _, e := range errs {
		em, _ := e.(map[string]any)
		if em["input_array"] == arr && em["index"] == float64(idx) {
			return true, fmt.Sprint(em["type"])
		}
	}
	if u, ok := s.User("external_id", canary); !ok || u.Attributes["o"] == nil {
		return true, "nested updates of the request dropped"
	}
	return false, w.Body.String()
}

// member is one "key": value of a generated object, the value as raw JSON.
type member struct{ k, v string }

var (
	genIdentifiers = map[string][]string{
		"external_id":           {`"u1"`, `"u1"`, `null`, `""`, `5`, `"x\u0000y"`, `"` + strings.Repeat("x", 988) + `"`, `"caf\u00e9"`},
		"braze_id":              {`"b1"`, `null`, `""`, `[]`},
		"user_alias":            {`{"alias_name":"n","alias_label":"l"}`, `null`, `{"alias_name":"n"}`, `{"alias_name":"","alias_label":"l"}`, `"x"`},
		"email":                 {`"a@example.com"`, `""`, `null`, `"not-an-email"`},
		"phone":                 {`"+14155550100"`, `""`, `null`},
		"_update_existing_only": {`true`, `false`, `null`, `1`, `"true"`},
	}
	genTimes = []string{`"2026-01-01T00:00:00Z"`, `"2026-01-01"`, `"2026-01-01 10:00:00"`, `"2026-01-01T10:00Z"`,
		`"2026-01-01 10:00:00.123456+00:00"`, `"2026-01-01T10:00:00:123Z"`, `"2026-13-01"`, `"yesterday"`, `"05/01/2026"`,
		`"2026-01-01T10"`, `null`, `5`, `"2026-02-30"`}
	genProps = []string{`{}`, `null`, `{"a":1,"b":"x"}`, `{"$a":1}`, `{"time":1}`, `{"event_name":1}`, `{"price":1,"currency":"x"}`,
		`{"a":1e400}`, `{"a":1,"a":2}`, `[1]`, `{"":1}`, `{"` + strings.Repeat("k", 256) + `":1}`, `{"n":{"x":null}}`, `"p"`}
	genKind = map[schemas.Kind]map[string][]string{
		schemas.KindEvent: {
			"name": {`"e"`, `"e"`, `""`, `null`, `3`},
			"time": genTimes, "properties": genProps, "app_id": {`"a"`, `null`},
		},
		schemas.KindPurchase: {
			"product_id": {`"p"`, `"p"`, `""`, `null`, `5`, `"` + strings.Repeat("p", 256) + `"`},
			"currency":   {`"USD"`, `"usd"`, `"US"`, `"U$D"`, `null`, `5`},
			"price":      {`1.5`, `1`, `"1"`, `null`, `1e400`, strings.Repeat("9", 400), `-0`},
			"quantity":   {`1`, `100`, `101`, `0`, `1.5`, `null`, `"1"`, `2.0`},
			"time":       genTimes, "properties": genProps,
		},
		schemas.KindAttributes: {
			"first_name":        {`"Ada"`, `null`},
			"push_token_import": {`true`, `false`, `null`},
			"push_tokens":       {`[{"app_id":"a","token":"t"}]`},
			"n":                 {`1`, `{"inc":1}`, `1e400`, `-1.7976931348623157e308`, `null`},
			"o":                 {`{"k":1}`, `{"k":null}`, `{"a b":1}`, `{"a.b":1}`, `{"d":{"$time":"2026-01-01"}}`, `{"d":{"$time":"bad"}}`, `{"k":[1,null]}`, `{"inc":1,"x":null}`},
			"pets":              {`[{"name":"a"}]`, `[{"name":null}]`, `{"$add":[{"name":"a"}]}`, `{"$add":[null]}`, `{"$add":[{"$bad":1}]}`, `["a",null]`},
			"tags":              {`{"add":["a"]}`, `{"remove":["b"],"add":[null]}`},
		},
	}
	genBase = map[schemas.Kind][]member{
		schemas.KindAttributes: {{"external_id", `"u1"`}, {"first_name", `"Ada"`}},
		schemas.KindEvent:      {{"external_id", `"u1"`}, {"name", `"e"`}, {"time", `"2026-01-01T00:00:00Z"`}},
		schemas.KindPurchase:   {{"external_id", `"u1"`}, {"product_id", `"p"`}, {"currency", `"USD"`}, {"price", `1.5`}, {"time", `"2026-01-01T00:00:00Z"`}},
	}
)

// genObject returns a random object: a valid template with one to three mutations (a member
// set to a value from the pools, removed, or repeated).
func genObject(rng *rand.Rand) (schemas.Kind, string) {
	kind := schemas.Kind(rng.IntN(3))
	obj := append([]member(nil), genBase[kind]...)
	pools := map[string][]string{}
	for k, v := range genIdentifiers {
		pools[k] = v
	}
	for k, v := range genKind[kind] {
		pools[k] = v
	}
	keys := make([]string, 0, len(pools))
	for k := range pools {
		keys = append(keys, k)
	}
	// Map order is random; sort for a reproducible sequence.
	sortStrings(keys)
	for range 1 + rng.IntN(3) {
		k := keys[rng.IntN(len(keys))]
		v := pools[k][rng.IntN(len(pools[k]))]
		switch op := rng.IntN(10); {
		case op == 0: // remove
			obj = removeMember(obj, k)
		case op == 1: // repeat
			obj = append(obj, member{k, v})
		default: // set
			obj = setMember(obj, k, v)
		}
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, m := range obj {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"` + m.k + `":` + m.v)
	}
	b.WriteByte('}')
	return kind, b.String()
}

func setMember(obj []member, k, v string) []member {
	for i := range obj {
		if obj[i].k == k {
			obj[i].v = v
			return obj
		}
	}
	return append(obj, member{k, v})
}

func removeMember(obj []member, k string) []member {
	out := obj[:0]
	for _, m := range obj {
		if m.k != k {
			out = append(out, m)
		}
	}
	return out
}

func sortStrings(a []string) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j] < a[j-1]; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}
