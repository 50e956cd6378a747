package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzDecode checks the decoder's contract on arbitrary input: no panics, a MessageError
// means no records, anything encoding/json rejects is invalid_json, valid UTF-8 JSON is never
// invalid_json (short of the nesting limit), and every record's Raw is valid JSON inside the
// message.
func FuzzDecode(f *testing.F) {
	for _, dir := range []string{"valid", "invalid"} {
		paths, _ := filepath.Glob(filepath.Join("testdata", "corpus", dir, "*.json"))
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add(benchEnvelope())
	f.Add(benchBundle(6))
	f.Fuzz(func(t *testing.T, data []byte) {
		orig := bytes.Clone(data)
		for _, d := range []Decoder{{}, {MaxRecordBytes: 64}} {
			prefix := []Record{{Index: -1}}
			recs, err := d.Decode(data, prefix)
			if !bytes.Equal(data, orig) {
				t.Fatal("Decode modified its input")
			}
			if len(recs) == 0 || recs[0].Index != -1 {
				t.Fatal("Decode dropped the records passed in")
			}
			recs = recs[1:]
			if err != nil {
				var me *MessageError
				if !errors.As(err, &me) {
					t.Fatalf("error %T %v is not a MessageError", err, err)
				}
				if len(recs) != 0 {
					t.Fatalf("MessageError %v with %d records", err, len(recs))
				}
				switch me.Reason {
				case ReasonInvalidJSON:
					if me.Offset < 0 || me.Offset > len(data) {
						t.Fatalf("invalid_json offset %d out of range", me.Offset)
					}
					nesting := bytes.Count(data, []byte("[")) + bytes.Count(data, []byte("{"))
					isObject := bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte("{"))
					if json.Valid(data) && utf8.Valid(data) && nesting < maxDepth && isObject {
						t.Fatalf("valid JSON reported as invalid_json: %v", err)
					}
				case ReasonInvalidRecord:
					if me.Offset != -1 {
						t.Fatalf("invalid_record with offset %d", me.Offset)
					}
				default:
					t.Fatalf("MessageError reason %q", me.Reason)
				}
			} else if len(recs) == 0 {
				t.Fatal("no error and no records")
			}
			if !json.Valid(data) {
				var me *MessageError
				if !errors.As(err, &me) || me.Reason != ReasonInvalidJSON {
					t.Fatalf("encoding/json rejects the message, decoder said %v", err)
				}
			}
			for i, r := range recs {
				// Raw lies within the message, except for a record sent normalised
				// (docs/braze-rules.md §8 NORMALISE), whose Raw is a rewritten copy.
				if !json.Valid(r.Raw) || (!within(r.Raw, data) && (r.Err != nil || len(r.Raw) > len(data)+3)) {
					t.Fatalf("record %d Raw %q is not valid JSON within the message", i, r.Raw)
				}
				if r.Index != i {
					t.Fatalf("record %d has Index %d", i, r.Index)
				}
				if e := r.Err; e != nil {
					if e.Index != r.Index || e.Kind != r.Kind || !strings.HasPrefix(e.Field, "/") || e.Msg == "" ||
						(e.Reason != ReasonInvalidRecord && e.Reason != ReasonTooLarge) {
						t.Fatalf("record %d: malformed error %+v", i, *e)
					}
					limit := d.MaxRecordBytes
					if !r.Kind.Tracked() {
						limit -= EntryFramingExtra
					}
					if e.Reason == ReasonTooLarge && len(r.Raw) <= limit {
						t.Fatalf("record %d of %d bytes too large", i, len(r.Raw))
					}
				} else if r.IDKind == 0 && bytes.Contains(r.Raw, []byte("push_token_import")) {
					// an anonymous push token import names no user
				} else if r.IDKind == 0 || len(r.UserID) == 0 || r.UserHash != userHash(r.IDKind, r.UserID) {
					t.Fatalf("valid record %d without a proper identifier: %+v", i, r)
				}
				if r.IDKind != 0 && !utf8.Valid(r.UserID) && !strings.Contains(string(r.UserID), "\x00") {
					t.Fatalf("record %d UserID %q is not UTF-8", i, r.UserID)
				}
			}
		}
	})
}

// FuzzSchemaAgreement holds the decoder and the JSON Schemas to the same verdict on arbitrary
// messages, except where the decoder is stricter by design (see the package doc): duplicate
// keys, external_id over 987 bytes but not characters, and nesting past maxDepth.
func FuzzSchemaAgreement(f *testing.F) {
	for _, b := range corpusFiles(f) {
		f.Add(b)
	}
	f.Add(benchBundle(6))
	f.Fuzz(func(t *testing.T, data []byte) {
		dOK, dErr := decoderValid(data)
		var me *MessageError
		switch {
		case errors.As(dErr, &me) && me.Reason == ReasonInvalidJSON && json.Valid(data) && utf8.Valid(data):
			return // nesting limit or a non-object message; FuzzDecode covers those
		case dErr != nil && strings.Contains(dErr.Error(), "987 bytes"):
			return
		case dErr != nil && decoderOnly(dErr.Error()):
			return
		case hasDuplicateKeys(data):
			return
		}
		sOK, sErr := schemaValid(t, data)
		if sOK != dOK {
			t.Fatalf("schema valid=%v (%v), decoder valid=%v (%v)", sOK, sErr, dOK, dErr)
		}
	})
}

// decoderOnly reports the errors of rules the JSON Schemas cannot state (see the package doc):
// numbers outside float64 range and the checks inside nested custom attributes.
func decoderOnly(msg string) bool {
	for _, s := range []string{"64-bit float", "nested custom attribute", "$time", "duplicate key"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// hasDuplicateKeys reports whether any object in a valid JSON text repeats a key (after
// unescaping). Invalid JSON reports false.
func hasDuplicateKeys(data []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(data))
	type frame struct {
		obj   bool
		keys  map[string]bool
		isKey bool // next string token in this object is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.obj && top.isKey {
			if k, ok := tok.(string); ok {
				if top.keys[k] {
					return true
				}
				top.keys[k] = true
				top.isKey = false
				continue
			}
		}
		if top != nil && top.obj {
			top.isKey = true // a value (or the closing brace) follows; the next string is a key
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{obj: true, keys: map[string]bool{}, isKey: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
	}
}
