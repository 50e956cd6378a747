package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

var (
	schemaOnce sync.Once
	schemaMsg  *jsonschema.Schema
	schemaErr  error
)

// messageSchema compiles the embedded schemas once, with every $id checked against its file
// name.
func messageSchema(t testing.TB) *jsonschema.Schema {
	t.Helper()
	schemaOnce.Do(func() {
		c := jsonschema.NewCompiler()
		c.DefaultDraft(jsonschema.Draft2020)
		names, err := fs.Glob(SchemaFS(), "*.schema.json")
		// The twelve native documents plus segment.schema.json (the Segment input format).
		if err != nil || len(names) != 13 {
			schemaErr = errors.New("want 13 embedded schemas, have " + strings.Join(names, ","))
			return
		}
		for _, name := range names {
			b, err := fs.ReadFile(SchemaFS(), name)
			if err != nil {
				schemaErr = err
				return
			}
			doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
			if err != nil {
				schemaErr = errors.New(name + ": " + err.Error())
				return
			}
			if id := doc.(map[string]any)["$id"]; id != BaseURL+name {
				schemaErr = errors.New(name + ": $id is " + id.(string))
				return
			}
			if err := c.AddResource(BaseURL+name, doc); err != nil {
				schemaErr = err
				return
			}
		}
		schemaMsg, schemaErr = c.Compile(MessageSchemaID)
	})
	if schemaErr != nil {
		t.Fatal(schemaErr)
	}
	return schemaMsg
}

// schemaValid runs a message through the JSON Schemas. JSON text must be UTF-8 (RFC 8259
// §8.1); encoding/json, which the validator parses with, silently repairs it, so that check
// is made here.
func schemaValid(t testing.TB, data []byte) (bool, error) {
	if !utf8.Valid(data) {
		return false, errors.New("not UTF-8")
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return false, err
	}
	if err := messageSchema(t).Validate(inst); err != nil {
		return false, err
	}
	return true, nil
}

// decoderValid runs a message through the Decoder: valid means no error at all.
func decoderValid(data []byte) (bool, error) {
	var d Decoder
	recs, err := d.Decode(data, nil)
	if err != nil {
		return false, err
	}
	for _, r := range recs {
		if r.Err != nil {
			return false, r.Err
		}
	}
	return true, nil
}

func corpusFiles(t testing.TB) (files map[string][]byte) {
	t.Helper()
	files = map[string][]byte{}
	for _, dir := range []string{"valid", "invalid"} {
		paths, err := filepath.Glob(filepath.Join("testdata", "corpus", dir, "*.json"))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			files[dir+"/"+filepath.Base(p)] = b
		}
	}
	if len(files) < 40 {
		t.Fatalf("corpus has %d files, want at least 40", len(files))
	}
	return files
}

// TestCorpusAgreement holds the JSON Schemas and the decoder to the same verdict on every
// corpus message.
func TestCorpusAgreement(t *testing.T) {
	for name, data := range corpusFiles(t) {
		t.Run(name, func(t *testing.T) {
			want := strings.HasPrefix(name, "valid/")
			sOK, sErr := schemaValid(t, data)
			dOK, dErr := decoderValid(data)
			if sOK != want {
				t.Errorf("schema valid=%v, want %v (%v)", sOK, want, sErr)
			}
			if dOK != want {
				t.Errorf("decoder valid=%v, want %v (%v)", dOK, want, dErr)
			}
			if strings.HasPrefix(filepath.Base(name), "invalid-json") {
				var me *MessageError
				if !errors.As(dErr, &me) || me.Reason != ReasonInvalidJSON {
					t.Errorf("decoder error %v, want invalid_json", dErr)
				}
			}
		})
	}
}

// TestSchemaTimePattern checks that common.schema.json carries the decoder's time grammar.
func TestSchemaTimePattern(t *testing.T) {
	b, err := fs.ReadFile(SchemaFS(), "common.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Defs struct {
			BrazeTime struct {
				Pattern string `json:"pattern"`
			} `json:"brazeTime"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Defs.BrazeTime.Pattern != timePattern {
		t.Fatalf("schema pattern %q\ndiffers from timePattern %q", doc.Defs.BrazeTime.Pattern, timePattern)
	}
}

// TestTimeGrammar compares isBrazeTime with timePattern on samples and on every one-byte
// substitution and truncation of the valid samples.
func TestTimeGrammar(t *testing.T) {
	re := regexp.MustCompile(timePattern)
	valid := []string{
		"2024-05-01", "2024-05-01 10:00:00", "2024-05-01T10:00:00", "2024-05-01T10:00:00Z",
		"2024-05-01T10:00:00.1Z", "2024-05-01T10:00:00.123456789+02:00", "2024-05-01T10:00:00:123Z",
		"2024-05-01T10:00:00:123", "2024-05-01T23:59:59-0530", "2024-05-01T00:00:00+14",
		"2024-02-29", "2024-12-31T23:59:59.999", "0001-01-01", "9999-11-30", "2024-05-01t10:00:00z",
		"2024-05-01T10:00Z", "2024-05-01 10:00:00Z", "2024-05-01 10:00:00z", "2024-05-01T10:00",
		"2024-05-01 10:00:00.123456+00:00", "2024-05-01 10:00", "2024-05-01T10:00-0530",
	}
	invalid := []string{
		"", "2024-5-01", "2024-05-1", "2024-13-01", "2024-00-10", "2024-04-31", "2024-02-30",
		"2024-05-01T24:00:00Z", "2024-05-01T10:60:00Z", "2024-05-01T10:00:60Z", "2024-05-01T10Z",
		"2024-05-01T10:00:00.Z", "2024-05-01T10:00:00.1234567890", "2024-05-01T10:00:00:12Z",
		"2024-05-01 10:00:0", "2024-05-01T10:0", "2024-05-01T10:00:00+5", "2024-05-01T10:00.5Z",
		"2024-05-01T10:00:00+05:", "2024-05-01T10:00:00+05:3", "2024-05-01T10:00:00+24:00",
		"05/01/2024", "2024-05-01T10:00:00Z ", " 2024-05-01", "2024-05-01T10:00:00.5:123Z",
	}
	for _, s := range valid {
		if !isBrazeTime([]byte(s)) || !re.MatchString(s) {
			t.Errorf("%q: isBrazeTime=%v pattern=%v, want both true", s, isBrazeTime([]byte(s)), re.MatchString(s))
		}
	}
	for _, s := range invalid {
		if isBrazeTime([]byte(s)) || re.MatchString(s) {
			t.Errorf("%q: isBrazeTime=%v pattern=%v, want both false", s, isBrazeTime([]byte(s)), re.MatchString(s))
		}
	}
	const alphabet = "0123456789-:T Z+.zt/\n"
	for _, s := range valid {
		for i := 0; i <= len(s); i++ {
			variants := []string{s[:i], s[:i] + "0", s[:i] + ":"}
			if i < len(s) {
				for _, c := range []byte(alphabet) {
					variants = append(variants, s[:i]+string(c)+s[i+1:], s[:i]+string(c)+s[i:])
				}
			}
			for _, v := range variants {
				if got, want := isBrazeTime([]byte(v)), re.MatchString(v); got != want {
					t.Errorf("%q: isBrazeTime=%v, pattern=%v", v, got, want)
				}
			}
		}
	}
}
