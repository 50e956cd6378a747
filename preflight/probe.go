package preflight

import (
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// probe is what an answer to the probe {} proves.
type probe int

const (
	probeNoAnswer      probe = iota // no HTTP answer: DNS, refused, TLS, timeout
	probeJudged                     // Braze judged the body: key, permission, IP and endpoint are fine
	probeKey                        // the key, its permission, its IP allowlist or the endpoint is refused
	probeThrottled                  // rate limited before judging
	probeOutage                     // 5xx: Braze or a proxy failing
	probeAcceptedEmpty              // a 2xx for an empty body: not Braze
	probeOther                      // anything else, e.g. a 400 that is not Braze's JSON
)

// probeOutcome is the one place that maps the client's classified answer to the probe's
// outcome, from its typed cause (sink/braze.go is the only reader of status codes).
func probeOutcome(res sink.Response) probe {
	switch res.Cause() {
	case sink.CauseAccepted:
		return probeAcceptedEmpty
	case sink.CauseRejected:
		// Braze's JSON judged the body (400, or a 2xx carrying the fatal message).
		return probeJudged
	case sink.CauseKey:
		return probeKey
	case sink.CauseThrottled:
		return probeThrottled
	case sink.CauseOutage, sink.CauseCanceled:
		if !res.Answered() {
			return probeNoAnswer
		}
		return probeOutage
	}
	return probeOther
}
