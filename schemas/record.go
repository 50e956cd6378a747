package schemas

import (
	"fmt"

	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/endpoint"
)

// Kind is what a record is: an object of a /users/track array, or one entry of another
// endpoint's request (docs/design.md §2, docs/braze-rules.md "Endpoints beyond /users/track").
type Kind uint8

const (
	KindAttributes Kind = iota
	KindEvent
	KindPurchase
	// KindAlias is one /users/alias/new user_aliases entry: alias_name, alias_label and an
	// optional external_id.
	KindAlias
	// KindIdentify is one /users/identify entry: of aliases_to_identify, emails_to_identify or
	// phone_numbers_to_identify.
	KindIdentify
	// KindMerge is one /users/merge merge_updates entry.
	KindMerge
	// KindSubscription is one user's /subscription/status/set change: group id, state and one
	// identifier (external_id, email or phone).
	KindSubscription
	// KindDelete is one /users/delete identifier.
	KindDelete
	// NumKinds is the number of kinds: arrays indexed by Kind have this length.
	NumKinds
)

// Endpoint is the Braze endpoint a record of kind k is sent to.
func (k Kind) Endpoint() endpoint.Endpoint {
	switch k {
	case KindAlias:
		return endpoint.AliasNew
	case KindIdentify:
		return endpoint.Identify
	case KindMerge:
		return endpoint.Merge
	case KindSubscription:
		return endpoint.Subscription
	case KindDelete:
		return endpoint.Delete
	}
	return endpoint.Track
}

// Tracked reports whether k is a /users/track kind (attributes, event, purchase).
func (k Kind) Tracked() bool { return k <= KindPurchase }

var kindNames = [NumKinds]struct{ array, envelope string }{
	KindAttributes:   {"attributes", "attributes"},
	KindEvent:        {"events", "event"},
	KindPurchase:     {"purchases", "purchase"},
	KindAlias:        {"aliases", "alias"},
	KindIdentify:     {"identifies", "identify"},
	KindMerge:        {"merges", "merge"},
	KindSubscription: {"subscriptions", "subscription"},
	KindDelete:       {"deletes", "delete"},
}

// Array returns the bundle array name for the kind: the /users/track array ("attributes",
// "events", "purchases"), or the bundle's own array for the other kinds ("aliases",
// "identifies", "merges", "subscriptions", "deletes").
func (k Kind) Array() string {
	if k >= NumKinds {
		return "unknown"
	}
	return kindNames[k].array
}

// EnvelopeType returns the envelope "type" value for the kind ("attributes", "event",
// "purchase", "alias", "identify", "merge", "subscription", "delete").
func (k Kind) EnvelopeType() string {
	if k >= NumKinds {
		return "unknown"
	}
	return kindNames[k].envelope
}

// IDKind says which identifier names the user a record updates.
type IDKind uint8

const (
	IDExternal IDKind = iota + 1
	IDAlias
	IDBraze
	IDEmail
	IDPhone
)

func (k IDKind) String() string {
	switch k {
	case IDExternal:
		return "external_id"
	case IDAlias:
		return "user_alias"
	case IDBraze:
		return "braze_id"
	case IDEmail:
		return "email"
	case IDPhone:
		return "phone"
	}
	return "none"
}

// Reason is a dead-letter reason; package dlq owns the list (docs/dlq.md). The decoder
// produces the three below.
type Reason = dlq.Reason

// The reasons the decoder gives a message or record it refuses.
const (
	ReasonInvalidJSON   = dlq.ReasonInvalidJSON
	ReasonInvalidRecord = dlq.ReasonInvalidRecord
	ReasonTooLarge      = dlq.ReasonTooLarge
)

// Record is one Braze object decoded from a Kafka message.
//
// Raw and UserID usually alias the message value: the decoder copies nothing it does not
// have to, so a Record is only valid while the message value is.
type Record struct {
	Kind Kind
	// Index is the record's position within its message (0 for an envelope; for a bundle
	// the position counting attributes, then events, purchases, aliases, identifies, merges,
	// subscriptions and deletes, in message order). The arrays count in that order whatever
	// their key order in the message, and Decode returns a bundle's records in Index order.
	Index int
	// Raw is the exact Braze object bytes (the envelope's data, or one bundle element).
	Raw []byte
	// IDKind and UserID identify the user: the unescaped identifier value. For a user alias
	// UserID is alias_label + "\x00" + alias_name. For the non-track kinds this is the
	// ordering identity (docs/design.md §2): alias → the alias; identify → its external_id;
	// merge → identifier_to_keep; subscription and delete → their identifier.
	IDKind IDKind
	UserID []byte
	// UserHash is UserHash(IDKind, UserID): it routes the record to its lane and, with
	// IDKind, is the identity coalescing and suppression use (see User).
	UserHash uint64
	// PackKey tells which records of one endpoint may share a request: only records of the
	// same Kind and PackKey do (0 for the /users/track kinds; for a delete the identifier
	// type, for a subscription change its group, state and identifier type).
	PackKey uint32
	// ID is the envelope's optional producer-side id (empty for bundles).
	ID []byte
	// Err is set when this record failed validation: it is dead-lettered alone while the
	// other records of its message go on.
	Err *RecordError
}

// RecordError says which record and field of a message broke which rule.
type RecordError struct {
	Reason Reason // invalid_record or too_large
	Index  int    // the record's Index
	Kind   Kind
	// Field is a JSON-pointer-like path inside the message, e.g. "/events/3/properties/$x"
	// or "/data/time".
	Field string
	Msg   string // why, e.g. "must be a non-empty string"
}

func (e *RecordError) Error() string {
	return fmt.Sprintf("record %d (%s): %s: %s", e.Index, e.Kind.EnvelopeType(), e.Field, e.Msg)
}

// MessageError means the message as a whole is unusable (not JSON, not an object, neither an
// envelope nor a bundle, an envelope with a bad type): it is dead-lettered as its original bytes.
type MessageError struct {
	Reason Reason // invalid_json or invalid_record
	Field  string // where, when known ("" for the whole message)
	Offset int    // byte offset of a syntax error, -1 when not applicable
	Msg    string
}

// DLQReason is the reason the message is dead-lettered for (dlq.MessageError).
func (e *MessageError) DLQReason() dlq.Reason { return e.Reason }

func (e *MessageError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s: %s", e.Reason, e.Field, e.Msg)
	}
	if e.Offset >= 0 {
		return fmt.Sprintf("%s: at byte %d: %s", e.Reason, e.Offset, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Reason, e.Msg)
}
