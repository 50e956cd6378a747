// Package endpoint is the one home of the Braze REST endpoints the worker writes to: their
// paths, per-request object limits, rate-limit groups and the API-key permission each needs.
// The facts and their sources are in docs/braze-rules.md ("Endpoints beyond /users/track").
package endpoint

import "time"

// Endpoint is a Braze REST endpoint the worker POSTs to.
type Endpoint uint8

// The endpoints, in the order a bundle lists their arrays (docs/design.md §2).
const (
	Track        Endpoint = iota // POST /users/track
	AliasNew                     // POST /users/alias/new
	Identify                     // POST /users/identify
	Merge                        // POST /users/merge
	Subscription                 // POST /subscription/status/set
	Delete                       // POST /users/delete
	// Count is the number of endpoints: arrays indexed by Endpoint have this length.
	Count
)

var info = [Count]struct {
	name, path, permission string
	max                    int
	group                  Group
}{
	Track:        {"track", "/users/track", "users.track", 75, GroupTrack},
	AliasNew:     {"alias", "/users/alias/new", "users.alias.new", 50, GroupUsers},
	Identify:     {"identify", "/users/identify", "users.identify", 50, GroupUsers},
	Merge:        {"merge", "/users/merge", "users.merge", 50, GroupUsers},
	Subscription: {"subscription", "/subscription/status/set", "subscription.status.set", 50, GroupSubscription},
	Delete:       {"delete", "/users/delete", "users.delete", 50, GroupUsers},
}

// Name is the endpoint's short name, used in configuration, metrics, spans and logs
// ("track", "alias", "identify", "merge", "subscription", "delete"). It equals the envelope
// "type" of its record kinds except for Track.
func (e Endpoint) Name() string {
	if e >= Count {
		return "unknown"
	}
	return info[e].name
}

func (e Endpoint) String() string { return e.Name() }

// Path is the endpoint's path below the REST base URL, e.g. "/users/delete".
func (e Endpoint) Path() string { return info[e].path }

// Permission is the REST API key permission Braze requires for the endpoint.
func (e Endpoint) Permission() string { return info[e].permission }

// MaxObjects is Braze's per-request limit of records (objects, aliases, merge updates or
// identifiers) for the endpoint. For Track it is the default, which a contract may lower
// (batcher.Limits).
func (e Endpoint) MaxObjects() int { return info[e].max }

// Group is the endpoint's rate-limit group: endpoints of one group share one budget.
func (e Endpoint) Group() Group { return info[e].group }

// Parse returns the endpoint named name (see Name).
func Parse(name string) (Endpoint, bool) {
	for e := Endpoint(0); e < Count; e++ {
		if info[e].name == name {
			return e, true
		}
	}
	return 0, false
}

// Group is a set of endpoints that share one rate limit.
type Group uint8

const (
	// GroupTrack is /users/track alone (3,000 requests per 3 s, or the contract's limits).
	GroupTrack Group = iota
	// GroupUsers is /users/alias/new, /users/identify, /users/merge and /users/delete (with
	// /users/alias/update): 20,000 requests per minute shared.
	GroupUsers
	// GroupSubscription is /subscription/status/set (shared with its /v2 form): 5,000 per minute.
	GroupSubscription
	// GroupCount is the number of groups.
	GroupCount
)

// LongestWindow is the longest rate-limit window Braze documents for the group
// (docs/braze-rules.md §3 and §7): the hour for /users/track (hourly limits on MAU contracts),
// the minute for the others. A rate-limit header asking to wait beyond two such windows is
// not taken (sink.RateLimit).
func (g Group) LongestWindow() time.Duration {
	if g == GroupTrack {
		return time.Hour
	}
	return time.Minute
}

// DefaultPerMinute is Braze's documented default limit of the group in requests per minute.
func (g Group) DefaultPerMinute() int {
	switch g {
	case GroupTrack:
		return 60_000 // 3,000 per 3 s
	case GroupUsers:
		return 20_000
	case GroupSubscription:
		return 5_000
	}
	return 0
}

func (g Group) String() string {
	switch g {
	case GroupTrack:
		return "track"
	case GroupUsers:
		return "users"
	case GroupSubscription:
		return "subscription"
	}
	return "unknown"
}
