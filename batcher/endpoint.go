package batcher

import (
	"github.com/braze-ingestor/braze-ingestor/schemas"
)

// The request bodies of the endpoints beyond /users/track, as Braze documents them
// (docs/braze-rules.md "Endpoints beyond /users/track"). Each record is one entry of its
// endpoint's request (docs/design.md §2); the pieces a body needs beyond the entry itself
// come from schemas.EntryParts.

// EncodeEndpoint appends the request body of an endpoint other than /users/track for objs,
// which share one Kind and PackKey (schemas.Record.PackKey), in the order of objs:
//
//	alias:        {"user_aliases":[entry,…]}
//	identify:     {"aliases_to_identify":[…],"emails_to_identify":[…],"phone_numbers_to_identify":[…]}
//	              (only the non-empty arrays; each entry in the array its keys say)
//	merge:        {"merge_updates":[entry,…]}
//	delete:       {"external_ids":["…"]}, {"user_aliases":[{…}]}, {"braze_ids":["…"]},
//	              {"email_addresses":[{"email":…,"prioritization":[…]}]} or
//	              {"phone_numbers":[{"phone":…,"prioritization":[…]}]}, by identifier type
//	subscription: {"subscription_group_id":"…","subscription_state":"…","external_id":["…",…]}
//	              (or "email" or "phone"), group and state from the first record, and
//	              "use_double_opt_in_logic":true when the records say so
//
// Strings are copied as they appear in the records (escapes kept). The body is never larger
// than EndpointBodyBound says.
func EncodeEndpoint[T Object](dst []byte, objs []T) []byte {
	if len(objs) == 0 {
		return append(dst, "{}"...)
	}
	switch kind := objs[0].ObjectKind(); kind {
	case schemas.KindIdentify:
		return encodeIdentify(dst, objs)
	case schemas.KindDelete, schemas.KindSubscription:
		return encodeIdentifiers(dst, kind, objs)
	case schemas.KindMerge:
		return appendEntries(append(dst, `{"merge_updates":[`...), objs)
	default: // alias
		return appendEntries(append(dst, `{"user_aliases":[`...), objs)
	}
}

// appendEntries appends the objects' bytes, comma-separated, and closes the array and body.
func appendEntries[T Object](dst []byte, objs []T) []byte {
	for i := range objs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, objs[i].ObjectBytes()...)
	}
	return append(dst, "]}"...)
}

var identifyArrays = [...]struct {
	id   schemas.IDKind
	name string
}{
	{schemas.IDAlias, "aliases_to_identify"},
	{schemas.IDEmail, "emails_to_identify"},
	{schemas.IDPhone, "phone_numbers_to_identify"},
}

func encodeIdentify[T Object](dst []byte, objs []T) []byte {
	var small [64]schemas.IDKind
	ids := small[:0]
	if len(objs) > len(small) {
		ids = make([]schemas.IDKind, 0, len(objs))
	}
	for i := range objs {
		p, _ := schemas.EntryParts(schemas.KindIdentify, objs[i].ObjectBytes())
		ids = append(ids, p.ID)
	}
	dst = append(dst, '{')
	first := true
	for _, a := range identifyArrays {
		open := false
		for i, id := range ids {
			// An entry whose kind cannot be told (only a record the decoder refused) goes in
			// aliases_to_identify, Braze's required array, for Braze to judge.
			if id != a.id && (a.id != schemas.IDAlias || id == schemas.IDEmail || id == schemas.IDPhone) {
				continue
			}
			if !open {
				if !first {
					dst = append(dst, ',')
				}
				first, open = false, true
				dst = append(dst, '"')
				dst = append(dst, a.name...)
				dst = append(dst, `":[`...)
			} else {
				dst = append(dst, ',')
			}
			dst = append(dst, objs[i].ObjectBytes()...)
		}
		if open {
			dst = append(dst, ']')
		}
	}
	return append(dst, '}')
}

// deleteArrays names /users/delete's array for each identifier type, and says whether its
// elements are whole entries ({email, prioritization}) rather than the identifier value.
var deleteArrays = [...]struct {
	name  string
	whole bool
}{
	schemas.IDExternal: {"external_ids", false},
	schemas.IDAlias:    {"user_aliases", false},
	schemas.IDBraze:    {"braze_ids", false},
	schemas.IDEmail:    {"email_addresses", true},
	schemas.IDPhone:    {"phone_numbers", true},
}

// encodeIdentifiers encodes a delete or subscription request: one array of identifiers of the
// type the records share.
func encodeIdentifiers[T Object](dst []byte, kind schemas.Kind, objs []T) []byte {
	p0, _ := schemas.EntryParts(kind, objs[0].ObjectBytes())
	dst = append(dst, '{')
	name, whole := "", false
	if kind == schemas.KindSubscription {
		dst = append(dst, `"subscription_group_id":`...)
		dst = append(dst, p0.Group...)
		dst = append(dst, `,"subscription_state":`...)
		dst = append(dst, p0.State...)
		if p0.OptIn {
			// Covered by the record's own bytes: its member "use_double_opt_in_logic":true
			// is longer than what is added here beyond it (a comma).
			dst = append(dst, `,"use_double_opt_in_logic":true`...)
		}
		dst = append(dst, ',')
		name = p0.ID.String() // external_id, email or phone
	} else if int(p0.ID) < len(deleteArrays) {
		name, whole = deleteArrays[p0.ID].name, deleteArrays[p0.ID].whole
	}
	dst = append(dst, '"')
	dst = append(dst, name...)
	dst = append(dst, `":[`...)
	for i := range objs {
		if i > 0 {
			dst = append(dst, ',')
		}
		raw := objs[i].ObjectBytes()
		if whole {
			dst = append(dst, raw...)
			continue
		}
		p := p0
		if i > 0 {
			p, _ = schemas.EntryParts(kind, raw)
		}
		dst = append(dst, p.Value...)
	}
	return append(dst, "]}"...)
}

// endpointFraming is, per kind, the most bytes a body adds around its records' own bytes
// (the parts of a record it copies never add up to more than the record).
var endpointFraming = [schemas.NumKinds]int{
	schemas.KindAlias:        len(`{"user_aliases":[]}`),
	schemas.KindIdentify:     len(`{"aliases_to_identify":[],"emails_to_identify":[],"phone_numbers_to_identify":[]}`),
	schemas.KindMerge:        len(`{"merge_updates":[]}`),
	schemas.KindSubscription: len(`{"subscription_group_id":,"subscription_state":,"external_id":[]}`),
	schemas.KindDelete:       len(`{"email_addresses":[]}`),
}

// EndpointBodyBound is an upper bound of the size of the body EncodeEndpoint makes of n
// records of kind k (not a /users/track kind) whose Raw sizes add up to total.
func EndpointBodyBound(k schemas.Kind, n, total int) int {
	if n <= 0 || k >= schemas.NumKinds {
		return 2
	}
	return endpointFraming[k] + total + n - 1
}

// EndpointFits reports whether n records of kind k (not a /users/track kind) whose Raw sizes
// add up to total fit one request: at most the endpoint's MaxObjects records
// (endpoint.Endpoint.MaxObjects, docs/braze-rules.md) and a body of at most maxBytes. The
// pipeline packs a non-track request by adding records while the next one still fits.
func EndpointFits(k schemas.Kind, n, total, maxBytes int) bool {
	if k.Tracked() || k >= schemas.NumKinds {
		return false
	}
	return n <= k.Endpoint().MaxObjects() && EndpointBodyBound(k, n, total) <= maxBytes
}

// MaxEndpointRecordBytes is the largest Raw a record of kind k can have and still fit a
// request of maxBytes on its own.
func MaxEndpointRecordBytes(k schemas.Kind, maxBytes int) int {
	if k.Tracked() || k >= schemas.NumKinds {
		return 0
	}
	return maxBytes - endpointFraming[k]
}
