package schemas_test

import (
	"bytes"
	"fmt"
	"io/fs"

	"github.com/braze-ingestor/braze-ingestor/schemas"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

func ExampleDecoder_Decode() {
	msg := []byte(`{"attributes":[{"external_id":"u1","plan":"pro"}],
		"events":[{"external_id":"u1","name":"upgrade","time":"2024-05-01T10:00:00Z"},
		          {"external_id":"u2","name":"upgrade","time":"yesterday"}]}`)
	d := schemas.Decoder{MaxRecordBytes: 1 << 20}
	var out []schemas.Record // reuse across messages: out = out[:0]
	out, err := d.Decode(msg, out)
	if err != nil {
		fmt.Println("dead-letter the whole message:", err)
		return
	}
	for _, r := range out {
		if r.Err != nil {
			fmt.Printf("%d %s: dead-letter (%s) %s\n", r.Index, r.Kind.Array(), r.Err.Reason, r.Err.Field)
			continue
		}
		fmt.Printf("%d %s: %s %s -> %s\n", r.Index, r.Kind.Array(), r.IDKind, r.UserID, r.Raw)
	}
	// Output:
	// 0 attributes: external_id u1 -> {"external_id":"u1","plan":"pro"}
	// 1 events: external_id u1 -> {"external_id":"u1","name":"upgrade","time":"2024-05-01T10:00:00Z"}
	// 2 events: dead-letter (invalid_record) /events/1/time
}

// Producers can validate with the same rules through the JSON Schemas.
func ExampleSchemaFS() {
	c := jsonschema.NewCompiler()
	names, _ := fs.Glob(schemas.SchemaFS(), "*.schema.json")
	for _, name := range names {
		b, _ := fs.ReadFile(schemas.SchemaFS(), name)
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			panic(err)
		}
		if err := c.AddResource(schemas.BaseURL+name, doc); err != nil {
			panic(err)
		}
	}
	sch, err := c.Compile(schemas.MessageSchemaID)
	if err != nil {
		panic(err)
	}
	inst, _ := jsonschema.UnmarshalJSON(bytes.NewReader([]byte(
		`{"type":"purchase","data":{"braze_id":"b1","product_id":"p","currency":"EUR","price":5,"time":"2024-05-01"}}`)))
	fmt.Println(sch.Validate(inst) == nil)
	// Output: true
}
