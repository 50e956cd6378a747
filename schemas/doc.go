// Package schemas holds the input contract: JSON Schema documents for the envelope, the
// bundle and the three Braze object kinds, and the Go decoder that enforces the same rules
// on the hot path without decoding messages into maps.
//
// # Message formats
//
// Every Kafka message value is one JSON object in UTF-8, in one of two shapes told apart by
// its keys:
//
//   - Envelope, one record: {"type": "attributes"|"event"|"purchase", "data": {…}, "id": "…"}.
//     type and data are required, id is an optional string, and no other key is allowed.
//     data is the Braze object exactly as Braze receives it.
//   - Bundle, many records: {"attributes": […], "events": […], "purchases": […]}, the body of
//     a /users/track request. Each key is optional but at least one element must be present
//     in all; no other key is allowed.
//
// A message with "type" or "data" is an envelope; otherwise one with any of the three arrays
// is a bundle; a message that mixes envelope and bundle keys, has neither, or has an unknown
// or duplicate top-level key is rejected as a whole (MessageError, invalid_record). Anything
// that is not exactly one JSON object in valid UTF-8 is rejected as invalid_json with the byte
// offset of the problem.
//
// # Records and Index
//
// Each Braze object is one Record. Record.Raw is the object's exact bytes in the message.
// Index is 0 for an envelope. For a bundle, records are numbered in the order Braze
// processes them: all attributes elements first, then all events, then all purchases, each
// array in its own order, whatever the key order in the message. For
// {"events":[e0,e1],"attributes":[a0]} the records are a0 (Index 0), e0 (1), e1 (2), and
// Decode returns them in that order. Field paths in errors use the message's own positions
// ("/events/1/time").
//
// # Rules per record
//
// A record breaking one of these is still returned, with Err naming its first problem (the
// other records of a bundle are unaffected):
//
//   - identifier: exactly one primary identifier: external_id (non-empty string, at most 987
//     bytes), user_alias (object with non-empty string alias_name and alias_label) or
//     braze_id (non-empty string). Without one, a non-empty string email, or else phone,
//     identifies the user. Record.IDKind, UserID and UserHash come from that identifier.
//   - _update_existing_only, when present, is a boolean.
//   - event: name is a non-empty string; time is a Braze time: yyyy-MM-dd,
//     yyyy-MM-dd HH:mm:ss, or yyyy-MM-ddTHH:mm:ss with an optional fraction (.f up to 9
//     digits, or Braze's :SSS) and zone (Z, ±HH, ±HHmm, ±HH:mm), which covers RFC 3339
//     (details in time.go; the schemas carry the same grammar as a pattern);
//     properties, when present, is an object whose keys are non-empty, at most 255
//     characters, do not start with '$' and are not "time" or "event_name".
//   - purchase: product_id is a string of 1..255 characters; currency is 3 upper-case ASCII
//     letters; price is a number; time as for events; quantity, when present, is an integer
//     (in the JSON Schema sense: 2.0 counts) from 1 to 100; property keys as for events, with
//     product_id, quantity, price and currency reserved too.
//   - attributes: the identifier rules only; attribute values are passed through.
//   - a bundle element that is not an object is a record with an error.
//   - a record longer than Decoder.MaxRecordBytes gets Reason too_large, whatever else is
//     wrong with it.
//
// Characters are Unicode code points, counted after unescaping, as JSON Schema counts them.
//
// # The JSON Schemas and the decoder
//
// SchemaFS holds the same rules as JSON Schema 2020-12 (message.schema.json is the entry
// point) and a test runs a shared corpus (testdata/corpus) through both. A few rules cannot
// be said in JSON Schema and are enforced by the decoder only:
//
//   - external_id's limit is in bytes (the schema says maxLength 987 characters, which is
//     looser for non-ASCII ids);
//   - duplicate keys (top level, and rule members such as a second "time") are rejected,
//     where a schema validator sees only the last value;
//   - MaxRecordBytes, and nesting deeper than 1024 levels (invalid_json).
package schemas
