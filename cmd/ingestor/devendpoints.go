package main

import (
	"fmt"
	"io"
	"sync/atomic"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"github.com/braze-ingestor/braze-ingestor/pipeline"
	"github.com/braze-ingestor/braze-ingestor/synth"
)

// endpointCounts counts the records the dev producer wrote per Braze endpoint.
type endpointCounts [endpoint.Count]atomic.Int64

// add counts m's records (an unparsable message counts for no endpoint).
func (c *endpointCounts) add(m synth.Message) {
	for _, r := range m.Records {
		c[kindEndpoint(r.Kind)].Add(1)
	}
}

// kindEndpoint is the endpoint of a synth record kind: its envelope type names it, except for
// the /users/track kinds.
func kindEndpoint(kind string) endpoint.Endpoint {
	if e, ok := endpoint.Parse(kind); ok {
		return e
	}
	return endpoint.Track
}

// enableAllEndpoints lets cfg's worker send every record kind (ENDPOINTS).
func enableAllEndpoints(cfg *Config) {
	cfg.Endpoints = cfg.Endpoints[:0]
	for e := endpoint.Endpoint(0); e < endpoint.Count; e++ {
		cfg.Endpoints = append(cfg.Endpoints, e.Name())
	}
}

// printEndpoints writes the per-endpoint part of the dev summary: records produced, requests
// the worker sent (retries included), records delivered and dead-lettered.
func printEndpoints(w io.Writer, s pipeline.Snapshot, produced *endpointCounts) {
	fmt.Fprintf(w, "  per endpoint          %-28s %9s %9s %9s %9s\n", "", "produced", "requests", "delivered", "dead")
	for e := endpoint.Track; e < endpoint.Count; e++ {
		n, reqs := produced[e].Load(), s.Endpoints[e].Requests
		if n == 0 && reqs == 0 {
			continue
		}
		del, dead := endpointSettled(s, e)
		fmt.Fprintf(w, "    %-12s %-35s %9d %9d %9d %9d\n", e.Name(), e.Path(), n, reqs, del, dead)
	}
}

// endpointSettled returns the records delivered and dead-lettered for endpoint e.
func endpointSettled(s pipeline.Snapshot, e endpoint.Endpoint) (delivered, dead int64) {
	return s.Endpoints[e].RecordsDelivered, s.Endpoints[e].DeadLettered
}
