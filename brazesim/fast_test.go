package brazesim

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// refSkip is the recursive skipper the iterative scanner.skipDepth replaced: it
// defines the accepted grammar and the depth limit.
func refSkip(s *scanner, depth int) {
	if depth > maxDepth {
		s.fail()
		return
	}
	switch s.peek() {
	case '{':
		s.i++
		first := true
		for s.more('}', &first) {
			s.key()
			refSkip(s, depth+1)
		}
	case '[':
		s.i++
		first := true
		for s.more(']', &first) {
			refSkip(s, depth+1)
		}
	case '"':
		s.str()
	case 't':
		s.lit("true")
	case 'f':
		s.lit("false")
	case 'n':
		s.lit("null")
	default:
		s.number()
	}
}

// The iterative skipper accepts and rejects exactly what the recursive one did
// (and what encoding/json does), and stops at the same byte.
func TestSkipMatchesReference(t *testing.T) {
	seeds := []string{`{"a":[1,2,{"b":null}],"c":"x\"y","d":-0.5e+3,"e":true,"f":false}`, `[[],{},[{}],""]`,
		` { "a" : [ 1 , "\u00e9" ] } `, `"\ud83d\ude00"`, `123`, `{"a":{"b":{"c":[true,false,null]}}}`}
	r := rand.New(rand.NewPCG(7, 9))
	alphabet := []byte(`{}[]":,\ 0123456789.eE+-truefalsnl` + "\t\n\x01")
	check := func(c string, vsJSON bool) {
		a := scanner{b: []byte(c)}
		a.skipDepth(0)
		b := scanner{b: []byte(c)}
		refSkip(&b, 0)
		if (a.err == nil) != (b.err == nil) || a.i != b.i {
			t.Fatalf("%q: iterative (err %v, at %d), recursive (err %v, at %d)", c, a.err, a.i, b.err, b.i)
		}
		a.end()
		if vsJSON && (a.err == nil) != json.Valid([]byte(c)) {
			t.Fatalf("%q: valid=%v, encoding/json disagrees", c, a.err == nil)
		}
	}
	for _, sd := range seeds {
		check(sd, true)
		for n := 0; n < 3000; n++ {
			b := []byte(sd)
			for k := r.IntN(3); k >= 0; k-- {
				switch i := r.IntN(len(b)); r.IntN(3) {
				case 0:
					b[i] = alphabet[r.IntN(len(alphabet))]
				case 1:
					b = append(b[:i], b[i+1:]...)
				default:
					b = append(b[:i], append([]byte{alphabet[r.IntN(len(alphabet))]}, b[i:]...)...)
				}
				if len(b) == 0 {
					b = []byte{'x'}
				}
			}
			check(string(b), true)
		}
	}
	// Nesting: a value at depth maxDepth is fine, one deeper is not (encoding/json
	// allows more).
	for _, n := range []int{maxDepth, maxDepth + 1, maxDepth + 2} {
		for _, open := range []string{"[", `{"k":`} {
			closeB := "]"
			if open != "[" {
				closeB = "}"
			}
			check(strings.Repeat(open, n)+"1"+strings.Repeat(closeB, n), false)
			check(strings.Repeat(open, n)+"[]"+strings.Repeat(closeB, n), false)
		}
	}
}

// The yyyy-MM-ddTHH:mm:ssZ fast path gives exactly time.Parse's Time and rejects
// what time.Parse rejects.
func TestParseUTCSecondsMatchesTimeParse(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	cases := []string{"2024-02-29T23:59:59Z", "2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2000-02-29T00:00:00Z",
		"0000-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "1969-12-31T23:59:59Z", "2026-04-31T00:00:00Z", "2026-11-25T24:00:00Z"}
	for n := 0; n < 200000; n++ {
		cases = append(cases, fmt.Sprintf("%04d-%02d-%02dT%02d:%02d:%02dZ",
			r.IntN(10000), r.IntN(14), r.IntN(33), r.IntN(25), r.IntN(61), r.IntN(61)))
	}
	for n := 0; n < 20000; n++ { // same dates, other times: the day cache hits
		cases = append(cases, fmt.Sprintf("2024-02-%02dT%02d:%02d:%02dZ", 28+n/5000, r.IntN(25), r.IntN(61), r.IntN(61)))
	}
	var dc dayCache
	for _, s := range cases {
		got, ok := parseUTCSeconds([]byte(s))
		got2, ok2 := parseUTCSecondsCached([]byte(s), &dc)
		want, err := time.Parse(time.RFC3339, s)
		if ok != (err == nil) || ok && got != want || ok2 != ok || got2 != got {
			t.Fatalf("%s: fast %v %v, cached %v %v, time.Parse %v %v", s, got, ok, got2, ok2, want, err)
		}
	}
}

// Identifiers, emails, phones and attribute keys are read from the request body
// without copying; what the store keeps must not change when the pooled body
// buffer is reused by later requests of the same length.
func TestStoredStringsSurviveBodyReuse(t *testing.T) {
	s := newSim(t, nil)
	body := func(c, d string) string {
		r := strings.NewReplacer("X", c, "D", d)
		return r.Replace(`{"attributes":[{"external_id":"user-XXXX","email":"mail-X@example.com","phone":"+1555000000D",` +
			`"key_X":"val-X","n_X":{"inc":2},"tags":{"add":["t-X"]}}],` +
			`"events":[{"external_id":"user-XXXX","name":"ev-X","time":"2026-01-01T00:00:00Z","app_id":"app-X","properties":{"p":"X"}}]}`)
	}
	letters := "ABCDEFGHIJ"
	for i, c := range letters {
		mustTrack(t, s, body(string(c), fmt.Sprint(i)))
	}
	for i, c := range letters {
		l, d := string(c), fmt.Sprint(i)
		u, ok := s.User("external_id", "user-"+strings.Repeat(l, 4))
		if !ok {
			t.Fatalf("user %s missing", l)
		}
		jsonEq(t, u.Attributes, `{"key_`+l+`":"val-`+l+`","n_`+l+`":2,"tags":["t-`+l+`"]}`)
		if u.Email != "mail-"+l+"@example.com" || u.Phone != "+1555000000"+d || u.ExternalID != "user-"+strings.Repeat(l, 4) {
			t.Fatalf("user %s: %+v", l, u)
		}
		if len(u.Events) != 1 || u.Events[0].Name != "ev-"+l || u.Events[0].AppID != "app-"+l || u.Events[0].Properties["p"] != l {
			t.Fatalf("user %s events: %+v", l, u.Events)
		}
		if e, ok := s.User("email", "mail-"+l+"@example.com"); !ok || e.BrazeID != u.BrazeID {
			t.Fatalf("email lookup %s: %v %v", l, ok, e.BrazeID)
		}
		if p, ok := s.User("phone", "+1555000000"+d); !ok || p.BrazeID != u.BrazeID {
			t.Fatalf("phone lookup %s: %v", l, ok)
		}
	}
}

// validEmailRef is the definition validEmail implements in one pass.
func validEmailRef(e string) bool {
	at := strings.IndexByte(e, '@')
	if at <= 0 || at != strings.LastIndexByte(e, '@') || len(e) > 255 {
		return false
	}
	dom := e[at+1:]
	dot := strings.LastIndexByte(dom, '.')
	if dot <= 0 || dot == len(dom)-1 || strings.Contains(dom, "..") || dom[0] == '.' {
		return false
	}
	for i := 0; i < len(e); i++ {
		if c := e[i]; c <= ' ' || c == 0x7f || c == ',' || c == ';' || c == '<' || c == '>' || c == '"' || c == '(' || c == ')' {
			return false
		}
	}
	return true
}

func TestValidEmailMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	alphabet := "ab.@.@ ,;<>\"()\x7f\x01x"
	cases := []string{"", "@", "a@b", "a@b.c", "a@.b.c", "a@b..c", "a@b.c.", "a.@b.c", "a..b@c.d", "a@b@c.d", "@b.c",
		"a@bc.", "a@b.c" + strings.Repeat("x", 251), "a@b.c" + strings.Repeat("x", 250), "a b@c.d", "é@ü.de"}
	for n := 0; n < 100000; n++ {
		b := make([]byte, r.IntN(10))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		cases = append(cases, string(b))
	}
	for _, c := range cases {
		if validEmail(c) != validEmailRef(c) {
			t.Fatalf("%q: validEmail %v, reference %v", c, validEmail(c), validEmailRef(c))
		}
	}
}

// inc and array add/remove update values in place; the results are those of a
// fresh computation (boxing shortcuts, skipped re-stores of unchanged arrays).
func TestAttributeUpdatesInPlace(t *testing.T) {
	tests := []struct {
		steps []string
		want  string
	}{
		{[]string{`{"n":{"inc":1023}}`, `{"n":{"inc":1}}`, `{"n":{"inc":0.5}}`}, `{"n":1024.5}`},
		{[]string{`{"n":{"inc":-0}}`}, `{"n":0}`},
		{[]string{`{"n":{"inc":-2}}`, `{"n":{"inc":2}}`}, `{"n":0}`},
		{[]string{`{"n":"text"}`, `{"n":{"inc":3}}`}, `{"n":3}`},
		{[]string{`{"n":7}`, `{"n":{"inc":3}}`}, `{"n":10}`},
		{[]string{`{"t":{"add":["a","b"]}}`, `{"t":{"add":["a","b"]}}`, `{"t":{"add":["b"]}}`}, `{"t":["a","b"]}`},
		{[]string{`{"t":"x"}`, `{"t":{"add":["x"]}}`}, `{"t":["x"]}`},
		{[]string{`{"t":"x"}`, `{"t":{"remove":["x"]}}`}, `{"t":[]}`},
		{[]string{`{"t":["a"]}`, `{"t":{"remove":["zzz"]}}`, `{"t":{"add":["a"]}}`}, `{"t":["a"]}`},
	}
	for _, tc := range tests {
		s := newSim(t, nil)
		for _, st := range tc.steps {
			mustTrack(t, s, `{"attributes":[{"external_id":"u",`+st[1:]+`]}`)
		}
		u, _ := s.User("external_id", "u")
		jsonEq(t, u.Attributes, tc.want)
	}
}

// History slots reuse the properties buffer of the event they displace: after
// the history wraps, every kept event still has its own properties.
func TestHistoryWrapKeepsOwnProperties(t *testing.T) {
	s := newSim(t, func(c *Config) { c.MaxHistoryPerUser = 3 })
	ev := func(i int) string {
		props := `{"i":` + fmt.Sprint(i) + `,"pad":"` + strings.Repeat("x", (i*7)%23) + `"}`
		if i%4 == 3 {
			props = `null`
		}
		return `{"external_id":"u","name":"e","time":"2026-01-01T00:00:00Z","properties":` + props + `}`
	}
	pu := func(i int) string {
		return `{"external_id":"u","product_id":"p","currency":"USD","price":1,"time":"2026-01-01T00:00:00Z",` +
			`"properties":{"i":` + fmt.Sprint(i) + `,"pad":"` + strings.Repeat("y", (i*5)%17) + `"}}`
	}
	for i := 0; i < 10; i++ {
		mustTrack(t, s, `{"events":[`+ev(i)+`],"purchases":[`+pu(i)+`]}`)
	}
	mustTrack(t, s, `{"events":[`+ev(10)+`,`+ev(11)+`],"purchases":[`+pu(10)+`,`+pu(11)+`]}`)
	u, _ := s.User("external_id", "u")
	if len(u.Events) != 3 || len(u.Purchases) != 3 {
		t.Fatalf("%d events, %d purchases", len(u.Events), len(u.Purchases))
	}
	for k, i := range []int{9, 10, 11} {
		e := u.Events[k]
		if i%4 == 3 {
			if e.Properties != nil {
				t.Errorf("event %d: properties %v, want none", i, e.Properties)
			}
		} else if e.Properties["i"] != float64(i) || e.Properties["pad"] != strings.Repeat("x", (i*7)%23) {
			t.Errorf("event %d: properties %v", i, e.Properties)
		}
		p := u.Purchases[k]
		if p.Properties["i"] != float64(i) || p.Properties["pad"] != strings.Repeat("y", (i*5)%17) {
			t.Errorf("purchase %d: properties %v", i, p.Properties)
		}
	}
}

// Raw attribute values are rewritten in place in their own buffers: shorter,
// longer and differently typed values in turn, on two users with the same values.
func TestAttributeValueBuffersReused(t *testing.T) {
	s := newSim(t, nil)
	steps := []string{`"a fairly long string value"`, `"s"`, `12.5`, `{"inc":1}`, `"x\"y"`, `true`, `"back to a longer string value!"`}
	for _, v := range steps {
		mustTrack(t, s, `{"attributes":[{"external_id":"u1","a":`+v+`,"b":"b1"},{"external_id":"u2","a":`+v+`,"b":"b2"}]}`)
	}
	for _, id := range []string{"u1", "u2"} {
		u, _ := s.User("external_id", id)
		jsonEq(t, u.Attributes, `{"a":"back to a longer string value!","b":"b`+id[1:]+`"}`)
	}
	mustTrack(t, s, `{"attributes":[{"external_id":"u1","a":"z"}]}`)
	u2, _ := s.User("external_id", "u2")
	jsonEq(t, u2.Attributes, `{"a":"back to a longer string value!","b":"b2"}`)
}
