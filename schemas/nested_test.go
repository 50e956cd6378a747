package schemas

import (
	"strings"
	"testing"
)

// attrValueOnePass runs the one-pass check on v the way attrValue does and says whether it
// cleared v, and whether it read exactly the value skip reads.
func attrValueOnePass(v []byte) (clean, sameEnd bool) {
	fast := scanner{buf: v, errOff: -1}
	clean = fast.cleanAttrValue()
	ref := scanner{buf: v, errOff: -1}
	refOK := ref.skip()
	return clean, refOK && fast.pos == ref.pos && fast.errOff < 0
}

func TestCleanAttrValue(t *testing.T) {
	tests := []struct {
		v     string
		clean bool // cleared in one pass; otherwise attrValueProblem judges it
	}{
		{`{"inc":25}`, true},
		{`{"add":["teal"],"remove":["red"]}`, true},
		{`{"name":"x","plays":3,"tags":["a",{"b":[1,2.5e3,true]}],"empty":{},"list":[]}`, true},
		{`{"born":{"$time":"1980-01-02T03:04:05Z"}}`, true},
		{`{"born":{"$time":"01/02/1980"}}`, true},
		{`[{"name":"a"},{"name":"b"},1,"s",null,[null,{"x":null}]]`, true},
		{`[]`, true},
		{`{}`, true},
		{` {"a" : [ 1 , { "b" : "c" } ] } `[1:], true},
		// Problems, and what the one pass leaves to attrValueProblem.
		{`{"name":"x","plays":null}`, false},
		{`{"a":{"b":[1,null]}}`, false},
		{`[{"name":"a"},{"name":null}]`, false},
		{`{"artist name":"x"}`, false},
		{`{"a.b":"x"}`, false},
		{`{"":"x"}`, false},
		{`{"born":{"$time":"1980-13-01"}}`, false},
		{`{"born":{"$time":"1980-01-01","x":1}}`, false},
		{`{"born":{"x":1,"$time":"1980-01-01"}}`, false},
		{`{"born":{"$time":"1980-01-0\u0031"}}`, false},
		{`{"a\u0062":1}`, false},
		{`{"` + strings.Repeat("k", 256) + `":1}`, false},
		{`{"add":[null]}`, false},
		{`{"$add":[{"a":1}]}`, false},
		{`{"a":1,}`, false},
		{`{"a":[1 2]}`, false},
		{`{"a":nul}`, false},
		{`[{"a":1}`, false},
	}
	for _, tt := range tests {
		v := []byte(tt.v)
		clean, sameEnd := attrValueOnePass(v)
		if clean != tt.clean {
			t.Errorf("%s: cleared in one pass = %v, want %v", tt.v, clean, tt.clean)
		}
		if clean && !sameEnd {
			t.Errorf("%s: the one pass ended elsewhere than skip, or left an error", tt.v)
		}
		if clean {
			if msg, path := attrValueProblem(v); msg != "" {
				t.Errorf("%s: cleared in one pass, but attrValueProblem says %q at %v", tt.v, msg, path)
			}
		}
	}
}

// FuzzAttrValueOnePass holds the one-pass check to attrValueProblem: a value it clears is
// valid JSON that skip reads to the same end, and in which attrValueProblem finds nothing.
func FuzzAttrValueOnePass(f *testing.F) {
	for _, s := range []string{
		`{"inc":25}`, `{"add":["teal"]}`, `[{"a":{"b":[1,null]}},[null]]`, `{"d":{"$time":"2024-01-02 03:04"}}`,
		`{"$add":[{"a":1}],"$update":[{"$new_object":{"b":null}}]}`, `{"a b":{"c":"\u0000"}}`, `{"x":1e400}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		if len(v) == 0 || (v[0] != '{' && v[0] != '[') {
			return
		}
		clean, sameEnd := attrValueOnePass(v)
		if !clean {
			return
		}
		if !sameEnd {
			t.Fatalf("%q: cleared in one pass, but skip reads it differently", v)
		}
		end := scanner{buf: v, errOff: -1}
		end.skip()
		if msg, path := attrValueProblem(v[:end.pos]); msg != "" {
			t.Fatalf("%q: cleared in one pass, but attrValueProblem says %q at %v", v, msg, path)
		}
	})
}
