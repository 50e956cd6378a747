package preflight

import "github.com/braze-ingestor/braze-ingestor/sink"

// probe is what an answer to the probe {} proves.
type probe int

const (
	probeNoAnswer      probe = iota // no HTTP answer: DNS, refused, TLS, timeout
	probeJudged                     // Braze judged the body: key, permission, IP and endpoint are fine
	probeKey                        // the key, its permission, its IP allowlist or the endpoint is refused
	probeThrottled                  // rate limited before judging
	probeOutage                     // 5xx: Braze or a proxy failing
	probeAcceptedEmpty              // a 2xx for an empty body: not Braze
	probeNotBraze                   // an answer that is not Braze's JSON (a proxy or firewall page)
	probeOther                      // anything else
)

// probeOutcome maps the client's typed cause (sink.Response.Cause, the one place that reads
// statuses and bodies) to what the probe proves. Nothing here looks at a status code or at
// Braze's message text.
func probeOutcome(res sink.Response) probe {
	switch res.Cause() {
	case sink.CauseRejected, sink.CauseTooMany:
		return probeJudged
	case sink.CauseKey:
		return probeKey
	case sink.CauseThrottled:
		return probeThrottled
	case sink.CauseAccepted:
		return probeAcceptedEmpty
	case sink.CauseNotBraze:
		return probeNotBraze
	case sink.CauseOutage, sink.CauseCanceled:
		if !res.Answered() {
			return probeNoAnswer
		}
		return probeOutage
	}
	return probeOther
}
