package pipeline

import (
	"fmt"
	"strings"
	"time"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
)

// Spacing is the least time between a user's record settling at one endpoint and the user's
// next record going to another (ENDPOINT_SPACING; docs/architecture.md "Per-user order"),
// indexed [from][to]. Track→Track is not used: consecutive /users/track records of a user
// share the lane's requests (USER_MIN_SPACING spaces those).
type Spacing [endpoint.Count][endpoint.Count]time.Duration

// defaultSpacing is ENDPOINT_SPACING's default (worker/config.go; the README states Braze's
// reasons, docs/braze-rules.md their sources): 100 ms between any two dependent calls
// (Braze's normal eventual consistency is 10–100 ms); 3 s after a user's /users/track
// records settle (processed asynchronously, it may take a few seconds); 5 s after an alias is
// created (Braze recommends up to 5 minutes before /users/track on that alias: alias>track=5m
// where a held user may hold its partition that long).
const defaultSpacing = "*>*=100ms,track>*=3s,alias>*=5s"

// MaxEndpointSpacing bounds each pair's spacing: a held user holds its partition's commit.
const MaxEndpointSpacing = 10 * time.Minute

// ParseSpacing parses "from>to=duration" pairs, comma separated; from and to are endpoint
// names (endpoint.Name) or "*". The most specific pair wins: from>to, then from>*, then
// *>to, then *>*; pairs not given are 0.
func ParseSpacing(s string) (Spacing, error) {
	var sp Spacing
	var rank [endpoint.Count][endpoint.Count]int // specificity of the pair that set sp, +1
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		from, to, d, err := parseSpacingPair(part)
		if err != nil {
			return Spacing{}, err
		}
		r := 1
		if from >= 0 {
			r += 2
		}
		if to >= 0 {
			r++
		}
		for f := endpoint.Endpoint(0); f < endpoint.Count; f++ {
			for t := endpoint.Endpoint(0); t < endpoint.Count; t++ {
				if (from < 0 || f == endpoint.Endpoint(from)) && (to < 0 || t == endpoint.Endpoint(to)) && r >= rank[f][t] {
					sp[f][t], rank[f][t] = d, r
				}
			}
		}
	}
	return sp, nil
}

// parseSpacingPair parses one "from>to=duration"; -1 stands for "*".
func parseSpacingPair(part string) (from, to int, d time.Duration, err error) {
	pair, dur, ok := strings.Cut(part, "=")
	fromName, toName, ok2 := strings.Cut(pair, ">")
	if !ok || !ok2 {
		return 0, 0, 0, fmt.Errorf("endpoint spacing %q: want from>to=duration, e.g. alias>track=5m", part)
	}
	if from, err = spacingEndpoint(strings.TrimSpace(fromName)); err != nil {
		return 0, 0, 0, err
	}
	if to, err = spacingEndpoint(strings.TrimSpace(toName)); err != nil {
		return 0, 0, 0, err
	}
	if d, err = time.ParseDuration(strings.TrimSpace(dur)); err != nil {
		return 0, 0, 0, fmt.Errorf("endpoint spacing %q: %w", part, err)
	}
	if d < 0 || d > MaxEndpointSpacing {
		return 0, 0, 0, fmt.Errorf("endpoint spacing %q: want 0 to %s", part, MaxEndpointSpacing)
	}
	return from, to, d, nil
}

func spacingEndpoint(name string) (int, error) {
	if name == "*" {
		return -1, nil
	}
	e, ok := endpoint.Parse(name)
	if !ok {
		return 0, fmt.Errorf("endpoint spacing: unknown endpoint %q (want track, alias, identify, merge, subscription, delete or *)", name)
	}
	return int(e), nil
}

// String renders the spacing as ParseSpacing reads it (non-zero pairs only).
func (s *Spacing) String() string {
	var parts []string
	for f := endpoint.Endpoint(0); f < endpoint.Count; f++ {
		for t := endpoint.Endpoint(0); t < endpoint.Count; t++ {
			if s[f][t] > 0 {
				parts = append(parts, fmt.Sprintf("%s>%s=%s", f, t, s[f][t]))
			}
		}
	}
	return strings.Join(parts, ",")
}
