package preflight

import (
	"net/http"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
)

// Config is what the checks need, built by the caller from the worker's configuration (the
// same dialer, transport and Braze settings the worker runs with).
type Config struct {
	Brokers     []string
	Topics      []string
	GroupID     string
	DLQTopic    string
	StartOffset string // earliest or latest, for the message about a new group

	// Dialer and Transport carry the brokers' TLS and SASL settings; TLS says whether TLS is on.
	Dialer    *kafka.Dialer
	Transport *kafka.Transport
	TLS       bool
	// DLQWrite proves the DLQ writable with a marker record (dlq.ReasonPreflightCheck, docs/dlq.md).
	DLQWrite bool

	BrazeEndpoint string
	APIKey        string
	// Endpoints are the Braze endpoints the worker may use (ENDPOINTS): the key's permission
	// is checked for each. /users/track is always checked.
	Endpoints   [endpoint.Count]bool
	HTTPTimeout time.Duration
	// BrazeTransport overrides the HTTP transport to Braze (tests).
	BrazeTransport http.RoundTripper
	// Version goes into the User-Agent and the DLQ marker.
	Version string
}
