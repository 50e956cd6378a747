package sink

import "strings"

// Redacted replaces a secret wherever it appears in a text.
const Redacted = "[redacted]"

// Redact returns s with every occurrence of secret replaced by Redacted. It is the one
// redaction function: the Braze client applies it to every answer text before the answer
// leaves the client, and `ingestor check` to what it prints.
func Redact(s, secret string) string {
	if secret == "" || !strings.Contains(s, secret) {
		return s
	}
	return strings.ReplaceAll(s, secret, Redacted)
}
