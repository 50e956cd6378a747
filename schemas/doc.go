// Package schemas holds the input contract: JSON Schema documents for the envelope, the
// bundle, the three /users/track object kinds and the records of the other endpoints (alias,
// identify, merge, subscription, delete), and the Go decoder that enforces the same rules on
// the hot path without decoding messages into maps.
//
// # Message formats
//
// Every Kafka message value is one JSON object in UTF-8, in one of two shapes told apart by
// its keys:
//
//   - Envelope, one record: {"type": "attributes"|"event"|"purchase"|"alias"|"identify"|
//     "merge"|"subscription"|"delete", "data": {…}, "id": "…"}. type and data are required,
//     id is an optional string, and no other key is allowed. data is the Braze object exactly
//     as Braze receives it, or for the other types one entry of that endpoint's request
//     (docs/design.md §2; rules in entries.go and docs/braze-rules.md §7).
//   - Bundle, many records: {"attributes": […], "events": […], "purchases": […], "aliases":
//     […], "identifies": […], "merges": […], "subscriptions": […], "deletes": […]}: the body
//     of a /users/track request plus one array per other record type. Each key is optional but
//     at least one element must be present in all; no other key is allowed.
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
// processes them: all attributes elements first, then all events, then all purchases (then
// aliases, identifies, merges, subscriptions, deletes), each array in its own order, whatever
// the key order in the message. For
// {"events":[e0,e1],"attributes":[a0]} the records are a0 (Index 0), e0 (1), e1 (2), and
// Decode returns them in that order. Field paths in errors use the message's own positions
// ("/events/1/time").
//
// # Rules per record
//
// docs/braze-rules.md §8 lists every rule with its Braze source and says whether the decoder
// rejects, normalises, or leaves it to Braze. A record breaking one of these is still
// returned, with Err naming its first problem (the other records of a bundle are unaffected):
//
//   - identifier: exactly one primary identifier: external_id (non-empty string, at most 987
//     bytes, no NUL), user_alias (object with non-empty string alias_name and alias_label) or
//     braze_id (non-empty string). Without one, a non-empty string email, or else phone,
//     identifies the user. Record.IDKind, UserID and UserHash come from that identifier. An
//     attributes object with "push_token_import": true needs no identifier (an anonymous push
//     token import): its IDKind is 0 and UserHash is the hash of its bytes. A member whose
//     value is null (external_id, braze_id, user_alias, _update_existing_only, properties,
//     quantity) counts as absent.
//   - _update_existing_only, when present and not null, is a boolean.
//   - event: name is a non-empty string; time is a Braze time: yyyy-MM-dd, or yyyy-MM-dd,
//     T or a space, HH:mm with optional :ss, fraction (.f up to 9 digits, or Braze's :SSS)
//     and zone (Z, ±HH, ±HHmm, ±HH:mm), which covers RFC 3339 (details in time.go; the
//     schemas carry the same grammar as a pattern); properties, when present and not null,
//     is an object whose keys are non-empty, at most 255 characters, do not start with '$',
//     are not "time" or "event_name", and are not repeated.
//   - purchase: product_id is a string of 1..255 characters; currency is 3 ASCII letters;
//     price is a number; time as for events; quantity, when present and not null, is an
//     integer (in the JSON Schema sense: 2.0 counts) from 1 to 100; property keys as for
//     events.
//   - attributes: the identifier rules; values are passed through, except nested custom
//     attributes (object values, the objects of an array value, of "$add" and of an
//     "$update"'s "$new_object"): no null inside, "$time" a time (or MM/dd/yyyy), keys
//     non-empty, at most 255 characters, without space, '.' or '$'. An invalid value there
//     makes Braze drop every nested update of the whole request, so it is checked per record.
//   - any object: no repeated key at its top level, no number outside float64 range anywhere
//     (Braze fails a whole request on either).
//   - a bundle element that is not an object is a record with an error.
//   - a record longer than Decoder.MaxRecordBytes gets Reason too_large, whatever else is
//     wrong with it.
//
// Characters are Unicode code points, counted after unescaping, as JSON Schema counts them.
//
// # Normalisation
//
// Where the producer's meaning is certain, a record is sent normalised and its Raw is a
// rewritten copy (in the message's buffer of unescaped identifiers) instead of a sub-slice of
// the message: an event or purchase time outside Braze's documented layouts becomes RFC 3339
// (2026-11-25T10:00Z → 2026-11-25T10:00:00Z; 2026-11-25 10:00:00.1+00:00 →
// 2026-11-25T10:00:00.1+00:00), and a purchase currency is upper-cased (usd → USD). A
// rejected record keeps its original bytes.
//
// # The JSON Schemas and the decoder
//
// SchemaFS holds the same rules as JSON Schema 2020-12 (message.schema.json is the entry
// point) and a test runs a shared corpus (testdata/corpus) through both. A few rules cannot
// be said in JSON Schema and are enforced by the decoder only:
//
//   - external_id's limit is in bytes (the schema says maxLength 987 characters, which is
//     looser for non-ASCII ids);
//   - duplicate keys (top level, properties, user_alias) are rejected, where a schema
//     validator sees only the last value;
//   - numbers outside float64 range, and the rules inside nested custom attributes;
//   - MaxRecordBytes, and nesting deeper than 1024 levels (invalid_json).
package schemas
