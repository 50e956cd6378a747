package preflight

import (
	"net/http"
	"strings"

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
// outcome, from its Class first.
//
// NOTE: the sink package of this revision has no typed cause for "Braze's JSON judged the
// request" versus "a non-Braze 400", nor for throttled versus outage, so the status code and,
// for the 400, Braze's documented message prefix decide here. Replace this with the client's
// typed cause when it has one.
func probeOutcome(res sink.Response) probe {
	switch res.Class {
	case sink.Delivered, sink.Partial:
		return probeAcceptedEmpty
	case sink.Halt:
		return probeKey
	case sink.Split:
		if res.Status == http.StatusBadRequest && strings.HasPrefix(res.Message, "Valid data must be provided") {
			return probeJudged
		}
		return probeOther
	}
	switch {
	case res.Status == 0:
		return probeNoAnswer
	case res.Status == http.StatusTooManyRequests:
		return probeThrottled
	case res.Status >= 500:
		return probeOutage
	}
	return probeOther
}
