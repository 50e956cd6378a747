package brazesim

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// Server is a Sim listening on a loopback port, like httptest.Server.
type Server struct {
	URL string // base URL, e.g. http://127.0.0.1:43121
	Sim *Sim

	ln  net.Listener
	srv *http.Server
}

// NewServer starts a simulator on 127.0.0.1 with a random port.
func NewServer(cfg Config) (*Server, error) {
	return newServer(cfg, "127.0.0.1:0")
}

func newServer(cfg Config, addr string) (*Server, error) {
	sim, err := New(cfg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	s := &Server{URL: "http://" + ln.Addr().String(), Sim: sim, ln: ln, srv: srv}
	go func() { _ = srv.Serve(ln) }()
	return s, nil
}

// Close stops the server and closes all connections (hung TimeoutRate requests end
// because their request context is cancelled).
func (s *Server) Close() {
	_ = s.srv.Close()
}

// Shutdown stops the server gracefully.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.srv.Shutdown(ctx)
}

// keyFlags collects repeatable -key values.
type keyFlags []Key

func (k *keyFlags) String() string { return fmt.Sprint(len(*k), " keys") }

// Set parses name:secret[:perm1,perm2][:cidr1,cidr2]. An empty or "*" permission
// list means all permissions; the CIDR list may contain IPv6 addresses.
func (k *keyFlags) Set(v string) error {
	key, err := ParseKey(v)
	if err != nil {
		return err
	}
	*k = append(*k, key)
	return nil
}

// ParseKey parses the -key flag syntax name:secret[:perm1,perm2][:cidr1,cidr2].
func ParseKey(v string) (Key, error) {
	parts := strings.SplitN(v, ":", 4)
	if len(parts) < 2 || parts[0] == "" || parts[1] == "" {
		return Key{}, fmt.Errorf("key %q: want name:secret[:perm1,perm2][:cidr1,cidr2]", v)
	}
	k := Key{Name: parts[0], Secret: parts[1]}
	if len(parts) > 2 && parts[2] != "" && parts[2] != "*" {
		k.Permissions = splitList(parts[2])
	}
	if len(parts) > 3 && parts[3] != "" {
		k.AllowedIPs = splitList(parts[3])
	}
	return k, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// fileConfig is the JSON form of Config for -config (durations as strings like "3s").
type fileConfig struct {
	Mode                   Mode     `json:"mode"`
	MaxObjects             int      `json:"max_objects"`
	MaxBodyBytes           int      `json:"max_body_bytes"`
	Keys                   []Key    `json:"keys"`
	TrackLimit             int      `json:"track_limit"`
	TrackWindow            string   `json:"track_window"`
	OtherLimit             int      `json:"other_limit"`
	OtherWindow            string   `json:"other_window"`
	UserOpsLimit           int      `json:"user_ops_limit"`
	UserOpsWindow          string   `json:"user_ops_window"`
	SubscriptionLimit      int      `json:"subscription_limit"`
	SubscriptionWindow     string   `json:"subscription_window"`
	HourlyLimit            int      `json:"hourly_limit"`
	HourlyUsed             int      `json:"hourly_used"`
	Fatal2xxShare          float64  `json:"fatal_2xx_share"`
	Validate               *bool    `json:"validate"`
	CountOnly              bool     `json:"count_only"`
	Latency                string   `json:"latency"`
	BlacklistedExternalIDs []string `json:"blacklisted_external_ids"`
	BlacklistedPrefix      *string  `json:"blacklisted_prefix"`
	MaxHistoryPerUser      *int     `json:"max_history_per_user"`
	Faults                 *Faults  `json:"faults"`
}

func loadConfigFile(path string, c *Config) (*Faults, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var fc fileConfig
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if fc.Mode != "" {
		c.Mode = fc.Mode
	}
	setInt := func(dst *int, v int) {
		if v != 0 {
			*dst = v
		}
	}
	setInt(&c.MaxObjects, fc.MaxObjects)
	setInt(&c.MaxBodyBytes, fc.MaxBodyBytes)
	setInt(&c.TrackLimit, fc.TrackLimit)
	setInt(&c.OtherLimit, fc.OtherLimit)
	setInt(&c.UserOpsLimit, fc.UserOpsLimit)
	setInt(&c.SubscriptionLimit, fc.SubscriptionLimit)
	setInt(&c.HourlyLimit, fc.HourlyLimit)
	setInt(&c.HourlyUsed, fc.HourlyUsed)
	if fc.Fatal2xxShare != 0 {
		c.Fatal2xxShare = fc.Fatal2xxShare
	}
	if len(fc.Keys) > 0 {
		c.Keys = fc.Keys
	}
	for _, d := range []struct {
		s   string
		dst *time.Duration
	}{{fc.TrackWindow, &c.TrackWindow}, {fc.OtherWindow, &c.OtherWindow}, {fc.UserOpsWindow, &c.UserOpsWindow},
		{fc.SubscriptionWindow, &c.SubscriptionWindow}, {fc.Latency, &c.Latency}} {
		if d.s == "" {
			continue
		}
		v, err := time.ParseDuration(d.s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		*d.dst = v
	}
	if fc.Validate != nil {
		c.Validate = *fc.Validate
	}
	c.CountOnly = c.CountOnly || fc.CountOnly
	c.BlacklistedExternalIDs = append(c.BlacklistedExternalIDs, fc.BlacklistedExternalIDs...)
	if fc.BlacklistedPrefix != nil {
		c.BlacklistedPrefix = *fc.BlacklistedPrefix
	}
	if fc.MaxHistoryPerUser != nil {
		c.MaxHistoryPerUser = *fc.MaxHistoryPerUser
	}
	return fc.Faults, nil
}

// RunCLI runs the standalone simulator: it parses args (without the program name),
// serves until ctx is done, then shuts down. See the package documentation for flags.
func RunCLI(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("brazesim", flag.ContinueOnError)
	fs.SetOutput(stdout)
	d := DefaultConfig()
	addr := fs.String("addr", "127.0.0.1:4610", "listen address")
	mode := fs.String("mode", string(d.Mode), "object limit mode: combined (75 in total) or per_array (75 per array)")
	maxObjects := fs.Int("max-objects", d.MaxObjects, "object limit per /users/track request")
	maxBody := fs.Int("max-body-bytes", d.MaxBodyBytes, "payload limit in bytes (413 above)")
	trackLimit := fs.Int("track-limit", d.TrackLimit, "/users/track requests per -track-window (negative = unlimited)")
	trackWindow := fs.Duration("track-window", d.TrackWindow, "/users/track rate-limit window")
	userOpsLimit := fs.Int("user-ops-limit", d.UserOpsLimit, "/users/delete, /users/alias/new, /users/identify, /users/merge requests per -user-ops-window (shared; negative = unlimited)")
	userOpsWindow := fs.Duration("user-ops-window", d.UserOpsWindow, "shared user-ops rate-limit window")
	subLimit := fs.Int("subscription-limit", d.SubscriptionLimit, "/subscription/status/set requests per -subscription-window (negative = unlimited)")
	subWindow := fs.Duration("subscription-window", d.SubscriptionWindow, "/subscription/status/set rate-limit window")
	latency := fs.Duration("latency", 0, "fixed latency added to every API request")
	hourlyLimit := fs.Int("hourly-limit", 0, "MAU contract: /users/track requests per clock hour; headers then describe the hour (Reset = seconds remaining) and the burst window shows only through 429s (0 = off)")
	hourlyUsed := fs.Int("hourly-used", 0, "requests of the starting hour already used by other traffic (with -hourly-limit)")
	fatal2xx := fs.Float64("fatal-2xx-share", 0, "share (0..1) of /users/track requests answered 201 with a fatal message, nothing applied")
	validate := fs.Bool("validate", true, "per-object validation of /users/track")
	countOnly := fs.Bool("count-only", false, "only count /users/track objects and answer 201 (no state)")
	maxHistory := fs.Int("max-history", d.MaxHistoryPerUser, "events and purchases kept per user (0 = unlimited)")
	configFile := fs.String("config", "", "optional JSON config file (flags given explicitly override it)")
	var keys keyFlags
	fs.Var(&keys, "key", "API key name:secret[:perm1,perm2][:cidr1,cidr2] (repeatable; default dev:dev-key with all permissions)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("brazesim: unexpected arguments %q", fs.Args())
	}
	cfg := d
	var faults *Faults
	if *configFile != "" {
		f, err := loadConfigFile(*configFile, &cfg)
		if err != nil {
			return err
		}
		faults = f
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	apply := func(name string, fn func()) {
		if set[name] || *configFile == "" {
			fn()
		}
	}
	apply("mode", func() { cfg.Mode = Mode(*mode) })
	apply("max-objects", func() { cfg.MaxObjects = *maxObjects })
	apply("max-body-bytes", func() { cfg.MaxBodyBytes = *maxBody })
	apply("track-limit", func() { cfg.TrackLimit = *trackLimit })
	apply("track-window", func() { cfg.TrackWindow = *trackWindow })
	apply("user-ops-limit", func() { cfg.UserOpsLimit = *userOpsLimit })
	apply("user-ops-window", func() { cfg.UserOpsWindow = *userOpsWindow })
	apply("subscription-limit", func() { cfg.SubscriptionLimit = *subLimit })
	apply("subscription-window", func() { cfg.SubscriptionWindow = *subWindow })
	apply("latency", func() { cfg.Latency = *latency })
	apply("hourly-limit", func() { cfg.HourlyLimit = *hourlyLimit })
	apply("hourly-used", func() { cfg.HourlyUsed = *hourlyUsed })
	apply("fatal-2xx-share", func() { cfg.Fatal2xxShare = *fatal2xx })
	apply("validate", func() { cfg.Validate = *validate })
	apply("count-only", func() { cfg.CountOnly = *countOnly })
	apply("max-history", func() { cfg.MaxHistoryPerUser = *maxHistory })
	if len(keys) > 0 {
		cfg.Keys = keys
	}
	srv, err := newServer(cfg, *addr)
	if err != nil {
		return err
	}
	if faults != nil {
		srv.Sim.SetFaults(*faults)
	}
	c := srv.Sim.Config()
	fmt.Fprintf(stdout, "brazesim listening on %s (mode=%s, max_objects=%d, track_limit=%d/%s, hourly_limit=%d (used %d), fatal_2xx_share=%g, keys=%d, admin at %s/_sim/)\n",
		srv.URL, c.Mode, c.MaxObjects, c.TrackLimit, c.TrackWindow, c.HourlyLimit, c.HourlyUsed, c.Fatal2xxShare, len(c.Keys), srv.URL)
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	return nil
}
