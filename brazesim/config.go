package brazesim

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
)

// Mode selects how the /users/track object limit is counted (docs/braze-rules.md §1 "Per-request object limits").
type Mode string

const (
	// ModeCombined: at most MaxObjects objects in total across attributes+events+purchases
	// (the current wording of the Braze docs; the default).
	ModeCombined Mode = "combined"
	// ModePerArray: at most MaxObjects objects in each array (legacy rate-limit contracts, up to 225).
	ModePerArray Mode = "per_array"
)

// Permission names of Braze REST API keys (docs/braze-rules.md §4).
const (
	PermUsersTrack    = "users.track"
	PermUsersDelete   = "users.delete"
	PermUsersAliasNew = "users.alias.new"
	PermUsersIdentify = "users.identify"
	PermUsersMerge    = "users.merge"

	PermSubscriptionStatusSet = "subscription.status.set"
)

// Key is one REST API key of the simulated workspace (docs/braze-rules.md §4).
type Key struct {
	Name   string `json:"name"`
	Secret string `json:"secret"`
	// Permissions lists the endpoints the key may call, e.g. "users.track". Empty = all.
	Permissions []string `json:"permissions,omitempty"`
	// AllowedIPs lists IPs or CIDRs the key may be used from. Empty = any.
	AllowedIPs []string `json:"allowed_ips,omitempty"`
}

// Config configures a Sim. Start from DefaultConfig. Zero numeric fields take the
// default; a negative limit disables that rate limiter.
type Config struct {
	Mode         Mode // ModeCombined (default) or ModePerArray
	MaxObjects   int  // per-request object limit for /users/track (default 75)
	MaxBodyBytes int  // payload limit for every endpoint (default 4 MB = 4*1024*1024)

	// Keys of the workspace. Default: one key "dev" with secret "dev-key" and all permissions.
	Keys []Key

	// Rate limits, per workspace (shared by all keys), fixed windows aligned to the
	// Unix epoch (so an hourly window resets on the clock hour, docs/braze-rules.md §3).
	TrackLimit    int           // /users/track requests per TrackWindow (default 3000)
	TrackWindow   time.Duration // default 3s
	OtherLimit    int           // other endpoints (default 250000)
	OtherWindow   time.Duration // default 1h
	UserOpsLimit  int           // /users/delete, /users/alias/new, /users/identify, /users/merge shared (default 20000)
	UserOpsWindow time.Duration // default 1m
	// SubscriptionLimit is /subscription/status/set requests per SubscriptionWindow
	// (default 5000 per 1m, docs/braze-rules.md §3).
	SubscriptionLimit  int
	SubscriptionWindow time.Duration

	// HourlyLimit > 0 models a Monthly Active Users contract (docs/braze-rules.md §3): on top
	// of the burst window (TrackLimit per TrackWindow) /users/track has an hourly limit that
	// resets on the clock hour. The X-RateLimit-* headers then describe the HOUR, with
	// X-RateLimit-Reset as the number of seconds remaining; the burst window is described by
	// no header and shows itself only through 429 + X-Ratelimit-Retry-After.
	HourlyLimit int
	// HourlyUsed is how many requests of the hour in which the simulator starts (or is
	// Reset) other traffic has already used.
	HourlyUsed int

	// Fatal2xxShare is the share (0..1) of valid /users/track requests answered 201 with
	// Braze's fatal body ({"message": "Valid data must be provided ...", "errors": [...]});
	// nothing in them is applied (docs/braze-rules.md §2: the fatal body has no documented
	// status code).
	Fatal2xxShare float64

	// Validate turns per-object validation of /users/track on (DefaultConfig: true).
	// With Validate false, objects are applied without the per-object rules (JSON
	// syntax, limits and identifier resolution still apply).
	Validate bool

	// CountOnly answers /users/track with 201 after the fatal checks (auth, limits,
	// content type, size, JSON syntax, object limits) and only counts objects: no
	// per-object validation, no user state. For benchmarks isolating a client's cost.
	CountOnly bool

	// Latency is a fixed latency added to every API request. For /users/track it is
	// spent inside the per-user concurrency window (see Stats.SameUserConcurrency).
	Latency time.Duration

	// BlacklistedExternalIDs answer BLACKLISTED_EXTERNAL_USER_ID (docs/braze-rules.md §1
	// "Identifiers"). In addition any external_id starting with BlacklistedPrefix is
	// blacklisted (DefaultConfig: "blacklisted-"; empty = no prefix rule).
	BlacklistedExternalIDs []string
	BlacklistedPrefix      string

	// MaxHistoryPerUser bounds the events, the purchases and the operation log (Sim.Ops)
	// kept per user (the oldest are dropped; counters still count everything). 0 =
	// unlimited. DefaultConfig sets 10000 so long dev runs do not grow without bound.
	MaxHistoryPerUser int

	// MaxTombstones bounds the deleted and merged-away profiles kept (identifiers and
	// operation log only) so that Sim.Ops still shows their history; the oldest are
	// forgotten first. 0 = the default 100000.
	MaxTombstones int

	// Now replaces time.Now (tests). Nil = time.Now.
	Now func() time.Time `json:"-"`
}

// DefaultConfig returns the configuration of a workspace on the documented defaults.
func DefaultConfig() Config {
	return Config{
		Mode:               ModeCombined,
		MaxObjects:         75,
		MaxBodyBytes:       4 * 1024 * 1024,
		Keys:               []Key{{Name: "dev", Secret: "dev-key"}},
		TrackLimit:         3000,
		TrackWindow:        3 * time.Second,
		OtherLimit:         250000,
		OtherWindow:        time.Hour,
		UserOpsLimit:       endpoint.GroupUsers.DefaultPerMinute(),
		UserOpsWindow:      time.Minute,
		SubscriptionLimit:  endpoint.GroupSubscription.DefaultPerMinute(),
		SubscriptionWindow: time.Minute,
		Validate:           true,
		BlacklistedPrefix:  "blacklisted-",
		MaxHistoryPerUser:  10000,
		MaxTombstones:      100000,
	}
}

type keyInfo struct {
	Key
	all   bool
	perms map[string]bool
	nets  []netip.Prefix
}

func (k *keyInfo) allows(perm string) bool { return k.all || k.perms[perm] }

func (k *keyInfo) ipAllowed(a netip.Addr) bool {
	if len(k.nets) == 0 {
		return true
	}
	a = a.Unmap()
	for _, p := range k.nets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// normalize fills defaults and checks the config.
func (c Config) normalize() (Config, map[string]*keyInfo, error) {
	d := DefaultConfig()
	if c.Mode == "" {
		c.Mode = ModeCombined
	}
	if c.Mode != ModeCombined && c.Mode != ModePerArray {
		return c, nil, fmt.Errorf("brazesim: unknown mode %q (want %q or %q)", c.Mode, ModeCombined, ModePerArray)
	}
	if c.MaxObjects == 0 {
		c.MaxObjects = d.MaxObjects
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
	}
	if len(c.Keys) == 0 {
		c.Keys = d.Keys
	}
	def := func(l *int, w *time.Duration, dl int, dw time.Duration) {
		if *l == 0 {
			*l = dl
		}
		if *w <= 0 {
			*w = dw
		}
	}
	def(&c.TrackLimit, &c.TrackWindow, d.TrackLimit, d.TrackWindow)
	def(&c.OtherLimit, &c.OtherWindow, d.OtherLimit, d.OtherWindow)
	def(&c.UserOpsLimit, &c.UserOpsWindow, d.UserOpsLimit, d.UserOpsWindow)
	def(&c.SubscriptionLimit, &c.SubscriptionWindow, d.SubscriptionLimit, d.SubscriptionWindow)
	if c.MaxTombstones == 0 {
		c.MaxTombstones = d.MaxTombstones
	}
	if c.MaxObjects < 0 || c.MaxBodyBytes < 0 || c.Latency < 0 || c.MaxHistoryPerUser < 0 || c.MaxTombstones < 0 {
		return c, nil, fmt.Errorf("brazesim: negative MaxObjects, MaxBodyBytes, Latency, MaxHistoryPerUser or MaxTombstones")
	}
	if c.HourlyLimit < 0 || c.HourlyUsed < 0 || (c.HourlyLimit > 0 && c.HourlyUsed > c.HourlyLimit) {
		return c, nil, fmt.Errorf("brazesim: HourlyLimit and HourlyUsed must be >= 0 with HourlyUsed <= HourlyLimit")
	}
	if !(c.Fatal2xxShare >= 0 && c.Fatal2xxShare <= 1) {
		return c, nil, fmt.Errorf("brazesim: Fatal2xxShare %v outside [0, 1]", c.Fatal2xxShare)
	}
	keys := map[string]*keyInfo{}
	for _, k := range c.Keys {
		if k.Secret == "" {
			return c, nil, fmt.Errorf("brazesim: key %q has an empty secret", k.Name)
		}
		if _, dup := keys[k.Secret]; dup {
			return c, nil, fmt.Errorf("brazesim: duplicate secret for key %q", k.Name)
		}
		ki := &keyInfo{Key: k, all: len(k.Permissions) == 0, perms: map[string]bool{}}
		for _, p := range k.Permissions {
			p = strings.TrimSpace(p)
			if p == "*" {
				ki.all = true
			}
			ki.perms[p] = true
		}
		for _, a := range k.AllowedIPs {
			a = strings.TrimSpace(a)
			var p netip.Prefix
			var err error
			if strings.Contains(a, "/") {
				p, err = netip.ParsePrefix(a)
				p = p.Masked()
			} else {
				var ip netip.Addr
				ip, err = netip.ParseAddr(a)
				ip = ip.Unmap()
				p = netip.PrefixFrom(ip, ip.BitLen())
			}
			if err != nil {
				return c, nil, fmt.Errorf("brazesim: key %q: bad allowed IP %q: %v", k.Name, a, err)
			}
			ki.nets = append(ki.nets, p)
		}
		keys[k.Secret] = ki
	}
	return c, keys, nil
}
