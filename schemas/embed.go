package schemas

import (
	"embed"
	"io/fs"
)

//go:embed *.schema.json
var schemaFiles embed.FS

// Schema $ids. Every document's $id is BaseURL + its file name, so a loader can map one to
// the other.
const (
	BaseURL = "https://braze-ingestor.dev/schemas/"

	// MessageSchemaID is the entry point: a Kafka message value (envelope or bundle).
	MessageSchemaID    = BaseURL + "message.schema.json"
	EnvelopeSchemaID   = BaseURL + "envelope.schema.json"
	BundleSchemaID     = BaseURL + "bundle.schema.json"
	AttributesSchemaID = BaseURL + "attributes.schema.json"
	EventSchemaID      = BaseURL + "event.schema.json"
	PurchaseSchemaID   = BaseURL + "purchase.schema.json"
	// The records of the endpoints beyond /users/track (docs/design.md §2).
	AliasSchemaID        = BaseURL + "alias.schema.json"
	IdentifySchemaID     = BaseURL + "identify.schema.json"
	MergeSchemaID        = BaseURL + "merge.schema.json"
	SubscriptionSchemaID = BaseURL + "subscription.schema.json"
	DeleteSchemaID       = BaseURL + "delete.schema.json"
	// CommonSchemaID holds the shared $defs: identifiers, Braze time, property keys.
	CommonSchemaID = BaseURL + "common.schema.json"
)

// SchemaFS returns the JSON Schema (2020-12) documents, one file per $id at the root
// (message, envelope, bundle, attributes, event, purchase, alias, identify, merge,
// subscription, delete, common).
func SchemaFS() fs.FS { return schemaFiles }
