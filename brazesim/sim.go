package brazesim

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
)

// Endpoints served by the simulator (their facts live in package endpoint).
const (
	PathTrack        = "/users/track"
	PathDelete       = "/users/delete"
	PathAliasNew     = "/users/alias/new"
	PathIdentify     = "/users/identify"
	PathMerge        = "/users/merge"
	PathSubscription = "/subscription/status/set"
)

// route is one served endpoint: its path, the key permission it needs and its rate-limit
// group, all from package endpoint (the one home of endpoint facts).
type route struct {
	ep    endpoint.Endpoint
	path  string
	perm  string
	group endpoint.Group
}

// epOther indexes per-endpoint counters for requests to unknown paths.
const epOther = endpoint.Count

var routes = func() (r [endpoint.Count]route) {
	for e := endpoint.Endpoint(0); e < endpoint.Count; e++ {
		r[e] = route{ep: e, path: e.Path(), perm: e.Permission(), group: e.Group()}
	}
	return
}()

// Sim is a simulated Braze REST API workspace. It implements http.Handler and is
// safe for concurrent use.
type Sim struct {
	cfg       Config
	keys      map[string]*keyInfo
	blacklist map[string]bool
	now       func() time.Time

	faults    atomic.Pointer[Faults]
	limits    [endpoint.GroupCount]limiter
	hour      limiter      // /users/track hourly limit of MAU contracts (Config.HourlyLimit)
	smu       sync.RWMutex // structural lock: R for /users/track, W for deletes/merges/reset
	st        *store
	ctr       counters
	reqSeq    atomic.Uint64
	updSeq    atomic.Uint64
	nUsers    atomic.Int64
	bidSeq    atomic.Uint64
	bidPrefix [4]byte

	reqPool sync.Pool
	bufPool sync.Pool
}

type counters struct {
	requests, objects, attrs, events, purchases, objErrors, dataPoints atomic.Int64
	rateLimited, limitRejected, maxObjects, sameUser, bulk, fatal2xx   atomic.Int64
	byStatus                                                           [600]atomic.Int64
	byEndpoint                                                         [endpoint.Count + 1]atomic.Int64 // endpoints + "other"
	// Per endpoint (+ "other"): answers by status, and entries of the requests answered 2xx
	// (the /users/track entries are the objects counter).
	epStatus  [endpoint.Count + 1][600]atomic.Int64
	epEntries [endpoint.Count]atomic.Int64
}

// New returns a simulator for cfg (see DefaultConfig).
func New(cfg Config) (*Sim, error) {
	c, keys, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	s := &Sim{cfg: c, keys: keys, now: c.Now, st: newStore(), blacklist: map[string]bool{}}
	if s.now == nil {
		s.now = time.Now
	}
	for _, id := range c.BlacklistedExternalIDs {
		s.blacklist[id] = true
	}
	_, _ = rand.Read(s.bidPrefix[:])
	s.limits[endpoint.GroupTrack] = limiter{limit: c.TrackLimit, window: c.TrackWindow}
	s.limits[endpoint.GroupUsers] = limiter{limit: c.UserOpsLimit, window: c.UserOpsWindow}
	s.limits[endpoint.GroupSubscription] = limiter{limit: c.SubscriptionLimit, window: c.SubscriptionWindow}
	s.initHour()
	s.SetFaults(Faults{})
	s.reqPool.New = func() any { return &reqState{} }
	s.bufPool.New = func() any { return new(bytes.Buffer) }
	return s, nil
}

// Config returns the effective configuration.
func (s *Sim) Config() Config { return s.cfg }

// SetFaults replaces the injected faults (safe at any time). Entries of f.Endpoints with
// an unknown endpoint name are ignored (Faults.Check reports them).
func (s *Sim) SetFaults(f Faults) {
	f.compile()
	s.faults.Store(&f)
}

// Faults returns the current faults.
func (s *Sim) Faults() Faults { return *s.faults.Load() }

// Reset clears users, statistics, rate-limit windows, the concurrency tracker and faults.
func (s *Sim) Reset() {
	s.smu.Lock()
	s.st = newStore()
	s.nUsers.Store(0)
	s.smu.Unlock()
	s.SetFaults(Faults{})
	for i := range s.limits {
		s.limits[i].reset()
	}
	s.initHour()
	c := &s.ctr
	for _, a := range []*atomic.Int64{&c.requests, &c.objects, &c.attrs, &c.events, &c.purchases, &c.objErrors,
		&c.dataPoints, &c.rateLimited, &c.limitRejected, &c.maxObjects, &c.sameUser, &c.bulk, &c.fatal2xx} {
		a.Store(0)
	}
	for i := range c.byStatus {
		c.byStatus[i].Store(0)
	}
	for i := range c.byEndpoint {
		c.byEndpoint[i].Store(0)
	}
	for i := range c.epStatus {
		for j := range c.epStatus[i] {
			c.epStatus[i][j].Store(0)
		}
	}
	for i := range c.epEntries {
		c.epEntries[i].Store(0)
	}
}

// Stats returns a snapshot of the counters.
func (s *Sim) Stats() Stats {
	c := &s.ctr
	st := Stats{
		Requests: c.requests.Load(), ByStatus: map[int]int64{}, ByEndpoint: map[string]int64{},
		Objects: c.objects.Load(), Attributes: c.attrs.Load(), Events: c.events.Load(), Purchases: c.purchases.Load(),
		ObjectErrors: c.objErrors.Load(), DataPoints: c.dataPoints.Load(), RateLimited: c.rateLimited.Load(),
		LimitRejected: c.limitRejected.Load(), MaxObjectsInRequest: c.maxObjects.Load(),
		SameUserConcurrency: c.sameUser.Load(), BulkHeader: c.bulk.Load(), Users: s.nUsers.Load(),
		Fatal2xx: c.fatal2xx.Load(),
	}
	for i := range c.byStatus {
		if n := c.byStatus[i].Load(); n > 0 {
			st.ByStatus[i] = n
		}
	}
	for i, e := range routes {
		if n := c.byEndpoint[i].Load(); n > 0 {
			st.ByEndpoint[e.path] = n
		}
	}
	if n := c.byEndpoint[epOther].Load(); n > 0 {
		st.ByEndpoint["other"] = n
	}
	st.Endpoints = s.endpointStats()
	return st
}

// endpointStats returns the per-endpoint counters (Stats.Endpoints), keyed by endpoint
// name; endpoints that saw no request are left out.
func (s *Sim) endpointStats() map[string]EndpointStats {
	c := &s.ctr
	out := map[string]EndpointStats{}
	for i := 0; i <= int(epOther); i++ {
		n := c.byEndpoint[i].Load()
		if n == 0 {
			continue
		}
		es := EndpointStats{Requests: n, ByStatus: map[int]int64{}}
		for code := range c.epStatus[i] {
			if k := c.epStatus[i][code].Load(); k > 0 {
				es.ByStatus[code] = k
			}
		}
		name := "other"
		if i < int(endpoint.Count) {
			name = endpoint.Endpoint(i).Name()
			es.Entries = c.epEntries[i].Load()
			if endpoint.Endpoint(i) == endpoint.Track {
				es.Entries = c.objects.Load()
			}
		}
		out[name] = es
	}
	return out
}

// ---- rate limiting (docs/braze-rules.md §3) ----

// limiter is a fixed-window counter; windows are aligned to the Unix epoch.
type limiter struct {
	mu     sync.Mutex
	limit  int
	window time.Duration
	idx    int64
	used   int
}

func (l *limiter) reset() {
	l.mu.Lock()
	l.idx, l.used = 0, 0
	l.mu.Unlock()
}

// take counts one request. It returns whether it is allowed, the requests left, and the window end.
func (l *limiter) take(now time.Time) (ok bool, remaining int, end time.Time) {
	w := int64(l.window)
	idx := now.UnixNano() / w
	end = time.Unix(0, (idx+1)*w)
	if l.limit < 0 {
		return true, -1, end
	}
	l.mu.Lock()
	if idx != l.idx {
		l.idx, l.used = idx, 0
	}
	if l.used >= l.limit {
		l.mu.Unlock()
		return false, 0, end
	}
	l.used++
	remaining = l.limit - l.used
	l.mu.Unlock()
	return true, remaining, end
}

func ceilSeconds(d time.Duration) int64 {
	n := int64((d + time.Second - 1) / time.Second)
	if n < 1 {
		n = 1
	}
	return n
}

// ---- HTTP ----

type reqState struct {
	tr    trackReq
	users []*user // users entered (Stats.SameUserConcurrency)
	out   []byte
}

// ServeHTTP answers Braze REST API calls and the /_sim/ admin API.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if strings.HasPrefix(path, "/_sim/") {
		s.serveAdmin(w, r)
		return
	}
	s.ctr.requests.Add(1)
	epIdx, trailing := findRoute(path)
	s.ctr.byEndpoint[epIdx].Add(1)
	if epIdx == epOther {
		// Unknown path: 404 (docs/braze-rules.md §2 status table, "Invalid URL").
		s.writeMsg(w, epOther, http.StatusNotFound, "Not Found")
		return
	}
	rt := &routes[epIdx]
	now := s.now()
	f := s.faults.Load()
	if !s.preFaults(w, r, rt, now, f) {
		return
	}
	if trailing {
		// A trailing slash is listed under 403 Access Denied causes (docs/braze-rules.md §1 "Body shape and headers", §2).
		s.writeMsg(w, rt.ep, http.StatusForbidden, "Access Denied")
		return
	}
	if r.Method != http.MethodPost {
		// Braze routes only POST here; the simulator answers other methods 404 (sim choice).
		s.writeMsg(w, rt.ep, http.StatusNotFound, "Not Found")
		return
	}
	if !s.auth(w, r, rt, f) {
		return
	}
	// Rate limits (docs/braze-rules.md §3): per workspace and group, fixed windows.
	if !s.rateLimit(w, rt, now, f) {
		return
	}
	// Content type (docs/braze-rules.md §1 "Body shape and headers": missing or wrong -> 415).
	if !isJSON(r.Header.Get("Content-Type")) {
		s.writeMsg(w, rt.ep, http.StatusUnsupportedMediaType, "Unsupported Media Type: Content-Type must be application/json")
		return
	}
	buf := s.bufPool.Get().(*bytes.Buffer)
	defer s.bufPool.Put(buf)
	if !s.readBody(w, r, rt.ep, buf) {
		return
	}
	lat := s.cfg.Latency + f.ExtraLatency
	if rt.ep == endpoint.Track {
		if _, ok := r.Header["X-Braze-Bulk"]; ok {
			s.ctr.bulk.Add(1)
		}
		s.serveTrack(w, r, buf.Bytes(), now, lat)
		return
	}
	sleepCtx(r.Context(), lat)
	s.serveUserOp(w, rt.ep, buf.Bytes(), &f.ep[rt.ep])
}

// findRoute returns the endpoint a path names (epOther if none) and whether the path
// carries a trailing slash.
func findRoute(path string) (endpoint.Endpoint, bool) {
	for i := range routes {
		p := routes[i].path
		if path == p {
			return routes[i].ep, false
		}
		if len(path) == len(p)+1 && path[len(path)-1] == '/' && path[:len(path)-1] == p {
			return routes[i].ep, true
		}
	}
	return epOther, false
}

// preFaults applies the faults that act before Braze sees the request; false when one
// answered (or dropped) it.
func (s *Sim) preFaults(w http.ResponseWriter, r *http.Request, rt *route, now time.Time, f *Faults) bool {
	for _, win := range f.Outage {
		if !now.Before(win.Start) && now.Before(win.End) {
			s.writeMsg(w, rt.ep, http.StatusServiceUnavailable, "Service Unavailable")
			return false
		}
	}
	if f.ResetRate > 0 && mrand.Float64() < f.ResetRate {
		s.reset(w, rt.ep)
		return false
	}
	if f.TimeoutRate > 0 && mrand.Float64() < f.TimeoutRate {
		s.status(rt.ep, 0)
		<-r.Context().Done()
		return false
	}
	if f.Error5xxEvery > 0 && f.seq != nil && f.seq.Add(1)%uint64(f.Error5xxEvery) == 0 {
		s.writeMsg(w, rt.ep, http.StatusServiceUnavailable, "Service Unavailable")
		return false
	}
	rate := f.Error5xxRate
	if e := f.ep[rt.ep].Error5xxRate; e > rate {
		rate = e
	}
	if rate > 0 && mrand.Float64() < rate {
		codes := [...]int{500, 502, 503, 504}
		c := codes[mrand.IntN(len(codes))]
		s.writeMsg(w, rt.ep, c, http.StatusText(c))
		return false
	}
	return true
}

// readBody reads the body into buf within the payload limit (docs/braze-rules.md §1
// "Payload size": 4 MB, 413); false when it answered.
func (s *Sim) readBody(w http.ResponseWriter, r *http.Request, ep endpoint.Endpoint, buf *bytes.Buffer) bool {
	if r.ContentLength > int64(s.cfg.MaxBodyBytes) {
		s.ctr.limitRejected.Add(1)
		s.writeMsg(w, ep, http.StatusRequestEntityTooLarge, "Request Entity Too Large")
		return false
	}
	buf.Reset()
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	n, err := buf.ReadFrom(io.LimitReader(r.Body, int64(s.cfg.MaxBodyBytes)+1))
	if err != nil {
		s.writeMsg(w, ep, http.StatusBadRequest, "could not read the request body")
		return false
	}
	if n > int64(s.cfg.MaxBodyBytes) {
		s.ctr.limitRejected.Add(1)
		s.writeMsg(w, ep, http.StatusRequestEntityTooLarge, "Request Entity Too Large")
		return false
	}
	return true
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func isJSON(ct string) bool {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.EqualFold(strings.TrimSpace(ct), "application/json")
}

// auth checks the Bearer key, its IP allowlist and its permission (docs/braze-rules.md §4).
func (s *Sim) auth(w http.ResponseWriter, r *http.Request, rt *route, f *Faults) bool {
	ep := rt.ep
	h := r.Header.Get("Authorization")
	scheme, tok, _ := strings.Cut(strings.TrimSpace(h), " ")
	tok = strings.TrimSpace(tok)
	var k *keyInfo
	if strings.EqualFold(scheme, "bearer") && tok != "" {
		k = s.keys[tok]
	}
	if k == nil || f.InvalidKeys {
		s.writeMsg(w, ep, http.StatusUnauthorized, "Invalid API key: "+maskKey(tok))
		return false
	}
	if len(k.nets) > 0 {
		ip, ok := remoteIP(r)
		if !ok || !k.ipAllowed(ip) {
			// Not documented by Braze (docs/braze-rules.md §4 "IP allowlisting": UNCONFIRMED);
			// the simulator answers 401 with a distinct message.
			s.writeMsg(w, ep, http.StatusUnauthorized, "IP address not allowed for this API key")
			return false
		}
	}
	// Faults.Endpoints[name].Forbidden models a key created without the permission.
	if !k.allows(rt.perm) || f.ep[ep].Forbidden {
		s.writeMsg(w, ep, http.StatusForbidden, "Access Denied")
		return false
	}
	return true
}

// maskKey keeps the first 4 characters so answers and client logs never carry a whole key.
func maskKey(k string) string {
	if k == "" {
		return "(missing)"
	}
	if len(k) <= 4 {
		return "****"
	}
	return k[:4] + "****"
}

func remoteIP(r *http.Request) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// reset aborts the connection: hijack and close with RST where possible, else
// panic(http.ErrAbortHandler), which net/http turns into an aborted response.
func (s *Sim) reset(w http.ResponseWriter, ep endpoint.Endpoint) {
	s.status(ep, 0)
	if hj, ok := w.(http.Hijacker); ok {
		conn, _, err := hj.Hijack()
		if err == nil {
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			_ = conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// status counts an answer (0: none) overall and for its endpoint (epOther: unknown path).
func (s *Sim) status(ep endpoint.Endpoint, code int) {
	if code >= 0 && code < len(s.ctr.byStatus) {
		s.ctr.byStatus[code].Add(1)
		s.ctr.epStatus[ep][code].Add(1)
	}
}

// Header values shared by all answers (net/http only reads them; Header.Add
// appends to a copy since their capacity is 1).
var (
	hdrJSON   = []string{"application/json"}
	hdrLength = func() (t [256][]string) {
		for i := range t {
			t[i] = []string{strconv.Itoa(i)}
		}
		return
	}()
)

func (s *Sim) writeJSON(w http.ResponseWriter, ep endpoint.Endpoint, code int, body []byte) {
	s.status(ep, code)
	h := w.Header()
	h["Content-Type"] = hdrJSON
	if len(body) < len(hdrLength) {
		h["Content-Length"] = hdrLength[len(body)]
	} else {
		h["Content-Length"] = []string{strconv.Itoa(len(body))}
	}
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

func (s *Sim) writeMsg(w http.ResponseWriter, ep endpoint.Endpoint, code int, msg string) {
	b := make([]byte, 0, len(msg)+16)
	b = append(b, `{"message":`...)
	b = appendJSONString(b, msg)
	b = append(b, '}')
	s.writeJSON(w, ep, code, b)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
