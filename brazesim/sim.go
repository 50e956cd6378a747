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
)

// Endpoints served by the simulator.
const (
	PathTrack    = "/users/track"
	PathDelete   = "/users/delete"
	PathAliasNew = "/users/alias/new"
	PathIdentify = "/users/identify"
	PathMerge    = "/users/merge"
)

type endpoint struct {
	path  string
	perm  string
	class int // limiter class
}

const (
	classTrack = iota
	classUserOps
	classOther
)

var endpoints = []endpoint{
	{PathTrack, PermUsersTrack, classTrack},
	{PathDelete, PermUsersDelete, classUserOps},
	{PathAliasNew, PermUsersAliasNew, classUserOps},
	{PathIdentify, PermUsersIdentify, classUserOps},
	{PathMerge, PermUsersMerge, classUserOps},
}

// Sim is a simulated Braze REST API workspace. It implements http.Handler and is
// safe for concurrent use.
type Sim struct {
	cfg       Config
	keys      map[string]*keyInfo
	blacklist map[string]bool
	now       func() time.Time

	faults    atomic.Pointer[Faults]
	limits    [3]limiter
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
	byEndpoint                                                         [6]atomic.Int64 // endpoints + "other"
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
	s.limits[classTrack] = limiter{limit: c.TrackLimit, window: c.TrackWindow}
	s.limits[classUserOps] = limiter{limit: c.UserOpsLimit, window: c.UserOpsWindow}
	s.limits[classOther] = limiter{limit: c.OtherLimit, window: c.OtherWindow}
	s.initHour()
	s.faults.Store(&Faults{})
	s.reqPool.New = func() any { return &reqState{} }
	s.bufPool.New = func() any { return new(bytes.Buffer) }
	return s, nil
}

// Config returns the effective configuration.
func (s *Sim) Config() Config { return s.cfg }

// SetFaults replaces the injected faults (safe at any time).
func (s *Sim) SetFaults(f Faults) { s.faults.Store(&f) }

// Faults returns the current faults.
func (s *Sim) Faults() Faults { return *s.faults.Load() }

// Reset clears users, statistics, rate-limit windows, the concurrency tracker and faults.
func (s *Sim) Reset() {
	s.smu.Lock()
	s.st = newStore()
	s.nUsers.Store(0)
	s.smu.Unlock()
	s.faults.Store(&Faults{})
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
	for i, e := range endpoints {
		if n := c.byEndpoint[i].Load(); n > 0 {
			st.ByEndpoint[e.path] = n
		}
	}
	if n := c.byEndpoint[len(endpoints)].Load(); n > 0 {
		st.ByEndpoint["other"] = n
	}
	return st
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
	epIdx := -1
	trailing := false
	for i := range endpoints {
		if path == endpoints[i].path {
			epIdx = i
			break
		}
		if len(path) == len(endpoints[i].path)+1 && path[len(path)-1] == '/' && path[:len(path)-1] == endpoints[i].path {
			epIdx, trailing = i, true
			break
		}
	}
	if epIdx < 0 {
		s.ctr.byEndpoint[len(endpoints)].Add(1)
		// Unknown path: 404 (docs/braze-rules.md §2 status table, "Invalid URL").
		s.writeMsg(w, http.StatusNotFound, "Not Found")
		return
	}
	s.ctr.byEndpoint[epIdx].Add(1)
	ep := &endpoints[epIdx]
	now := s.now()
	f := s.faults.Load()

	// Faults that act before Braze sees the request.
	for _, win := range f.Outage {
		if !now.Before(win.Start) && now.Before(win.End) {
			s.writeMsg(w, http.StatusServiceUnavailable, "Service Unavailable")
			return
		}
	}
	if f.ResetRate > 0 && mrand.Float64() < f.ResetRate {
		s.reset(w)
		return
	}
	if f.TimeoutRate > 0 && mrand.Float64() < f.TimeoutRate {
		s.ctr.byStatus[0].Add(1)
		<-r.Context().Done()
		return
	}
	if f.Error5xxRate > 0 && mrand.Float64() < f.Error5xxRate {
		codes := [...]int{500, 502, 503, 504}
		c := codes[mrand.IntN(len(codes))]
		s.writeMsg(w, c, http.StatusText(c))
		return
	}
	if trailing {
		// A trailing slash is listed under 403 Access Denied causes (docs/braze-rules.md §1 "Body shape and headers", §2).
		s.writeMsg(w, http.StatusForbidden, "Access Denied")
		return
	}
	if r.Method != http.MethodPost {
		// Braze routes only POST here; the simulator answers other methods 404 (sim choice).
		s.writeMsg(w, http.StatusNotFound, "Not Found")
		return
	}
	if !s.auth(w, r, ep, f) {
		return
	}
	// Rate limits (docs/braze-rules.md §3): per workspace, fixed windows.
	if !s.rateLimit(w, ep, now, f) {
		return
	}
	// Content type (docs/braze-rules.md §1 "Body shape and headers": missing or wrong -> 415).
	if !isJSON(r.Header.Get("Content-Type")) {
		s.writeMsg(w, http.StatusUnsupportedMediaType, "Unsupported Media Type: Content-Type must be application/json")
		return
	}
	// Payload limit (docs/braze-rules.md §1 "Payload size": 4 MB, 413).
	if r.ContentLength > int64(s.cfg.MaxBodyBytes) {
		s.ctr.limitRejected.Add(1)
		s.writeMsg(w, http.StatusRequestEntityTooLarge, "Request Entity Too Large")
		return
	}
	buf := s.bufPool.Get().(*bytes.Buffer)
	defer s.bufPool.Put(buf)
	buf.Reset()
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	n, err := buf.ReadFrom(io.LimitReader(r.Body, int64(s.cfg.MaxBodyBytes)+1))
	if err != nil {
		s.writeMsg(w, http.StatusBadRequest, "could not read the request body")
		return
	}
	if n > int64(s.cfg.MaxBodyBytes) {
		s.ctr.limitRejected.Add(1)
		s.writeMsg(w, http.StatusRequestEntityTooLarge, "Request Entity Too Large")
		return
	}
	lat := s.cfg.Latency + f.ExtraLatency
	switch ep.path {
	case PathTrack:
		if _, ok := r.Header["X-Braze-Bulk"]; ok {
			s.ctr.bulk.Add(1)
		}
		s.serveTrack(w, r, buf.Bytes(), now, lat)
	default:
		sleepCtx(r.Context(), lat)
		s.serveUserOp(w, ep.path, buf.Bytes())
	}
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
func (s *Sim) auth(w http.ResponseWriter, r *http.Request, ep *endpoint, f *Faults) bool {
	h := r.Header.Get("Authorization")
	scheme, tok, _ := strings.Cut(strings.TrimSpace(h), " ")
	tok = strings.TrimSpace(tok)
	var k *keyInfo
	if strings.EqualFold(scheme, "bearer") && tok != "" {
		k = s.keys[tok]
	}
	if k == nil || f.InvalidKeys {
		s.writeMsg(w, http.StatusUnauthorized, "Invalid API key: "+maskKey(tok))
		return false
	}
	if len(k.nets) > 0 {
		ip, ok := remoteIP(r)
		if !ok || !k.ipAllowed(ip) {
			// Not documented by Braze (docs/braze-rules.md §4 "IP allowlisting": UNCONFIRMED);
			// the simulator answers 401 with a distinct message.
			s.writeMsg(w, http.StatusUnauthorized, "IP address not allowed for this API key")
			return false
		}
	}
	if !k.allows(ep.perm) {
		s.writeMsg(w, http.StatusForbidden, "Access Denied")
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
func (s *Sim) reset(w http.ResponseWriter) {
	s.ctr.byStatus[0].Add(1)
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

func (s *Sim) status(code int) {
	if code >= 0 && code < len(s.ctr.byStatus) {
		s.ctr.byStatus[code].Add(1)
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

func (s *Sim) writeJSON(w http.ResponseWriter, code int, body []byte) {
	s.status(code)
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

func (s *Sim) writeMsg(w http.ResponseWriter, code int, msg string) {
	b := make([]byte, 0, len(msg)+16)
	b = append(b, `{"message":`...)
	b = appendJSONString(b, msg)
	b = append(b, '}')
	s.writeJSON(w, code, b)
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
