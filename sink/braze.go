// Package sink talks to the outside world on the way out: the Braze REST client (/users/track
// and the other endpoints of package endpoint) and the guard in front of it.
package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Class is the one action a Braze answer maps to (docs/design.md §3).
type Class int

const (
	// Delivered: 2xx without errors[]; every object in the request is accepted.
	Delivered Class = iota
	// Partial: 2xx with errors[]; the objects named there are rejected, the rest accepted.
	Partial
	// Split: 400 or 413; bisect the request until the offending objects stand alone.
	Split
	// Halt: 401, 403, 404, 415; a configuration or key problem. Nothing is dead-lettered.
	Halt
	// Retry: 429, 5xx, other unexpected statuses, timeouts and connection errors.
	Retry
)

func (c Class) String() string {
	switch c {
	case Delivered:
		return "delivered"
	case Partial:
		return "partial"
	case Split:
		return "split"
	case Halt:
		return "halt"
	case Retry:
		return "retry"
	}
	return "unknown"
}

// ItemError is one entry of a /users/track errors[] array.
type ItemError struct {
	Type       string `json:"type"`
	InputArray string `json:"input_array"`
	Index      int    `json:"index"`
}

// Response is a classified Braze answer.
type Response struct {
	// Endpoint is the endpoint that answered (Track for answers built by hand).
	Endpoint endpoint.Endpoint
	Status   int
	Class    Class
	// Message is Braze's "message", secrets redacted. For the endpoints other than Track,
	// whose errors[] Braze does not document, it also carries the text of any errors[].
	Message string
	// Errors is the errors[] of a /users/track 2xx (Partial) or fatal answer; always empty
	// for the other endpoints (their errors[] names no object: docs/architecture.md "Answers").
	Errors []ItemError
	// Throttled: Braze refused the request for its rate limit (429); RetryAfter is its hint.
	Throttled  bool
	RetryAfter time.Duration
	RateLimit  RateLimit // bounded rate-limit headers (sink/ratelimit.go)
	// Err is the transport error behind a Retry without a status (timeout, reset, refused).
	Err error
	// Waited is how long the request waited for the rate limiter, 429 pauses and the
	// circuit breaker before it was sent.
	Waited time.Duration
	// cause is set by Classify and the client; zero means "derive it from Status" (answers
	// built by hand, e.g. in tests).
	cause Cause
}

// Cause says why an answer has its Class. It is derived in this file, from the status, the
// body and the transport error, and nowhere else: every layer above the HTTP client acts on
// Class and Cause, never on a status code or a message text (docs/architecture.md).
type Cause uint8

const (
	causeUnset Cause = iota
	// CauseAccepted: a 2xx whose body confirms it: "success" or "queued", or for
	// /users/delete its documented {"deleted": n}.
	CauseAccepted
	// CauseRejected: Braze judged the request as a whole (400, a 2xx carrying a fatal
	// message instead of its endpoint's success, or, on an endpoint other than Track, a 2xx
	// with errors[]).
	CauseRejected
	// CauseTooLarge: 413, the request body is over the size limit.
	CauseTooLarge
	// CauseTooMany: 400 "Max Input Length Exceeded" from /users/track, more objects than the
	// contract allows in one request (the other endpoints' limit is fixed: endpoint.MaxObjects).
	CauseTooMany
	// CauseKey: 401, 403, 404, 415; the key, its permissions or the endpoint are wrong.
	CauseKey
	// CauseNotBraze: an answer that is not Braze's JSON (a proxy or WAF page): never Braze's
	// verdict on a record.
	CauseNotBraze
	// CauseThrottled: 429, a rate limit.
	CauseThrottled
	// CauseOutage: 5xx, timeout, reset, refused connection.
	CauseOutage
	// CauseUnexpected: any other status (3xx, 408, 409...).
	CauseUnexpected
	// CauseCanceled: the caller gave up before an answer.
	CauseCanceled
)

var causeNames = [...]string{"unset", "accepted", "rejected", "too_large", "too_many", "key", "not_braze", "throttled", "outage", "unexpected", "canceled"}

func (c Cause) String() string {
	if int(c) < len(causeNames) {
		return causeNames[c]
	}
	return "unknown"
}

// Cause is why the answer has its class.
func (r Response) Cause() Cause {
	if r.cause != causeUnset {
		return r.cause
	}
	return deriveCause(r)
}

// WithCause returns r with its cause set (tests and senders that build answers by hand).
func (r Response) WithCause(c Cause) Response { r.cause = c; return r }

// Answered reports whether an HTTP answer arrived (Status is set).
func (r Response) Answered() bool { return r.Status != 0 }

// StatusClass is 1..5 for 1xx..5xx and 0 for no answer, for metrics.
func (r Response) StatusClass() int { return r.Status / 100 % 6 }

func deriveCause(r Response) Cause {
	switch {
	case r.Status == 0:
		if r.Err != nil && errors.Is(r.Err, context.Canceled) {
			return CauseCanceled
		}
		return CauseOutage
	case r.Status/100 == 2:
		switch r.Class {
		case Split:
			return CauseRejected
		case Halt:
			return CauseNotBraze
		}
		return CauseAccepted
	case r.Status == http.StatusBadRequest:
		if r.Class == Halt {
			return CauseNotBraze
		}
		if r.Endpoint == endpoint.Track && isTooMany(r.Message) {
			return CauseTooMany
		}
		return CauseRejected
	case r.Status == http.StatusRequestEntityTooLarge:
		return CauseTooLarge
	case r.Status == http.StatusUnauthorized || r.Status == http.StatusForbidden ||
		r.Status == http.StatusNotFound || r.Status == http.StatusUnsupportedMediaType:
		return CauseKey
	case r.Status == http.StatusTooManyRequests:
		return CauseThrottled
	case r.Status >= 500:
		return CauseOutage
	}
	return CauseUnexpected
}

// Describe is a short human-readable account of the answer, safe to log (no secrets).
func (r Response) Describe() string {
	if r.Status == 0 {
		return fmt.Sprintf("no answer: %v", r.Err)
	}
	if r.Message != "" {
		return fmt.Sprintf("HTTP %d: %s", r.Status, r.Message)
	}
	return fmt.Sprintf("HTTP %d", r.Status)
}

// ClientConfig configures a Client.
type ClientConfig struct {
	Endpoint string // REST endpoint base URL, e.g. https://rest.iad-01.braze.com
	APIKey   string
	Timeout  time.Duration // per request
	// MaxIdleConns bounds kept-alive connections to Braze (one per lane is plenty).
	MaxIdleConns int
	// Transport overrides the HTTP transport (tests). TLS verification is never disabled.
	Transport http.RoundTripper
	// UserAgent, e.g. "braze-ingestor/1.2.3".
	UserAgent string
}

// Client sends /users/track requests. It is safe for concurrent use.
type Client struct {
	base     string // the REST base URL without a trailing slash
	trackURL string
	auth     string
	key      string
	ua       string
	// The transport is called directly, not through an http.Client: Braze does not
	// redirect /users/track (and a POST should not follow one), so the client's redirect
	// bookkeeping (a header copier per request) was pure cost (~2% of the worker's CPU).
	rt      http.RoundTripper
	timeout time.Duration
}

// ErrBadEndpoint is returned by NewClient for an unusable endpoint.
var ErrBadEndpoint = errors.New("bad Braze REST endpoint")

// NewClient returns a client for cfg.
func NewClient(cfg ClientConfig) (*Client, error) {
	u, err := ValidateEndpoint(cfg.Endpoint)
	if err != nil {
		return nil, err
	}
	if cfg.APIKey == "" {
		return nil, errors.New("braze client: empty API key")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	tr := cfg.Transport
	if tr == nil {
		n := cfg.MaxIdleConns
		if n <= 0 {
			n = 64
		}
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConns = n
		t.MaxIdleConnsPerHost = n
		t.IdleConnTimeout = 90 * time.Second
		// Bodies are up to a few hundred KB: a 64 KiB write buffer sends one in a few
		// syscalls instead of dozens (measured: -31% allocations, -7% CPU per record).
		t.WriteBufferSize = 64 << 10
		tr = t
	}
	return &Client{
		base:     strings.TrimRight(u.String(), "/"),
		trackURL: strings.TrimRight(u.String(), "/") + endpoint.Track.Path(),
		auth:     "Bearer " + cfg.APIKey,
		key:      cfg.APIKey,
		ua:       cfg.UserAgent,
		rt:       tr,
		timeout:  cfg.Timeout,
	}, nil
}

// ValidateEndpoint checks that raw is an absolute http(s) URL without query, and https unless
// the host is loopback (a local simulator).
func ValidateEndpoint(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadEndpoint, err)
	}
	if u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("%w: %q is not an absolute http(s) URL", ErrBadEndpoint, raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("%w: %q must have no query, fragment or credentials", ErrBadEndpoint, raw)
	}
	if u.Scheme == "http" && !IsLoopback(u.Hostname()) {
		return nil, fmt.Errorf("%w: %q must use https (plain http is allowed only on loopback)", ErrBadEndpoint, raw)
	}
	if strings.HasSuffix(u.Path, "/users/track") {
		return nil, fmt.Errorf("%w: %q: give the REST endpoint base URL, without /users/track", ErrBadEndpoint, raw)
	}
	return u, nil
}

// IsLoopback reports whether host is localhost or a loopback IP.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Track POSTs one /users/track body and classifies the answer. It never returns an error:
// transport problems are a Response of class Retry with Err set.
func (c *Client) Track(ctx context.Context, body []byte) Response {
	return c.post(ctx, endpoint.Track, c.trackURL, body)
}

// Post POSTs one body to ep and classifies the answer, as Track does.
func (c *Client) Post(ctx context.Context, ep endpoint.Endpoint, body []byte) Response {
	if ep == endpoint.Track {
		return c.Track(ctx, body)
	}
	return c.post(ctx, ep, c.base+ep.Path(), body)
}

func (c *Client) post(ctx context.Context, ep endpoint.Endpoint, url string, body []byte) Response {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return Response{Endpoint: ep, Class: Retry, Err: fmt.Errorf("build request: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", c.auth)
	if c.ua != "" {
		req.Header.Set("User-Agent", c.ua)
	}
	resp, err := c.rt.RoundTrip(req)
	if err != nil {
		// The key is in a header and never appears in a transport error.
		return Response{Endpoint: ep, Class: Retry, Err: fmt.Errorf("POST %s: %w", ep.Path(), err), cause: transportCause(ctx)}
	}
	defer resp.Body.Close()
	// Answers are small; cap what we read so a misbehaving proxy cannot balloon memory.
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		// A cut-off answer (timeout, reset) says nothing for sure, a 2xx included: its
		// records are sent again (docs/design.md §3: a timeout is a retry).
		return Response{Endpoint: ep, Class: Retry, Status: resp.StatusCode, Err: fmt.Errorf("read answer: %w", err), cause: transportCause(ctx)}
	}
	r := classify(ep, resp.StatusCode, resp.Header, data, time.Now(), c.key)
	r.redact(c.key)
	return r
}

func transportCause(ctx context.Context) Cause {
	if errors.Is(ctx.Err(), context.Canceled) {
		return CauseCanceled
	}
	return CauseOutage
}

// redact removes the key from every text of the answer an upstream could have echoed it in,
// before the answer reaches a log, a dead-letter header, a span or a metric.
func (r *Response) redact(key string) {
	r.Message = Redact(r.Message, key)
	for i := range r.Errors {
		r.Errors[i].Type = Redact(r.Errors[i].Type, key)
	}
}

var (
	errorsKey = []byte(`"errors"`)
	// successKey opens Braze's usual success answer; a body that does not open with it is
	// decoded, so that only a top-level message counts.
	successKey = []byte(`{"message":"success"`)
)

// answerBody is the part of a Braze answer that decides its class. errors[] and deleted are
// kept raw: their shapes differ by endpoint (answerFacts).
type answerBody struct {
	Message string          `json:"message"`
	Errors  json.RawMessage `json:"errors"`
	Deleted json.RawMessage `json:"deleted"`
}

// Classify maps a /users/track answer to its action (ClassifyEndpoint for Track).
func Classify(status int, h http.Header, body []byte, now time.Time) Response {
	return classify(endpoint.Track, status, h, body, now, "")
}

// ClassifyEndpoint maps an answer of ep to its action (docs/design.md §3, docs/architecture.md
// "Answers"). A 2xx counts as delivered only when its body is ep's documented success; an
// answer that is not Braze's JSON is never taken as Braze's verdict on the records in it.
func ClassifyEndpoint(ep endpoint.Endpoint, status int, h http.Header, body []byte, now time.Time) Response {
	return classify(ep, status, h, body, now, "")
}

// classify is ClassifyEndpoint; key, when set, is redacted from the answer's texts before
// they are cut to length (so that no part of an echoed key survives the cut).
func classify(ep endpoint.Endpoint, status int, h http.Header, body []byte, now time.Time, key string) Response {
	r := Response{Endpoint: ep, Status: status, RateLimit: ParseRateLimit(h, now).within(maxWait(ep), now)}
	if status/100 == 2 && bytes.HasPrefix(body, successKey) && !bytes.Contains(body, errorsKey) {
		// The common answer, {"message":"success","events_processed":75}: nothing else in it
		// changes the outcome, so it is not decoded.
		r.Class, r.cause = Delivered, CauseAccepted
		return r
	}
	var a answerFacts
	var isJSON bool
	r.Message, r.Errors, a, isJSON = readAnswer(ep, body, key)
	r.Class, r.cause = classifyStatus(ep, status, isJSON, a)
	if r.cause == CauseThrottled {
		r.Throttled = true
		r.RetryAfter = retryAfter(r.RateLimit, now)
	}
	return r
}

// answerFacts is what the body of an answer says, for classifyStatus.
type answerFacts struct {
	message   string
	hasErrors bool // a non-empty errors[]
	confirmed bool // the body is the endpoint's documented success
}

// readAnswer decodes an answer's body: Braze's JSON (isJSON) or a text cut to 200 bytes.
// /users/track's errors[] must be its documented objects (else the answer is not Braze's);
// another endpoint's errors[], whose shape Braze does not document, is added to the message.
func readAnswer(ep endpoint.Endpoint, body []byte, key string) (msg string, errs []ItemError, a answerFacts, isJSON bool) {
	var parsed answerBody
	if len(body) == 0 || json.Unmarshal(body, &parsed) != nil {
		if len(body) > 0 {
			msg = truncate(Redact(strings.TrimSpace(string(body)), key), 200)
		}
		return msg, nil, answerFacts{message: msg}, false
	}
	msg = parsed.Message
	a.hasErrors = !isEmpty(parsed.Errors)
	if ep == endpoint.Track {
		if len(parsed.Errors) > 0 && json.Unmarshal(parsed.Errors, &errs) != nil {
			return truncate(Redact(canonicalJSON(body), key), 200), nil, answerFacts{}, false
		}
	} else if a.hasErrors {
		if msg != "" {
			msg += "; "
		}
		msg = truncate(Redact(msg+"errors: "+errorsText(parsed.Errors), key), 400)
	}
	a.message = parsed.Message
	a.confirmed = parsed.Message == "success" || parsed.Message == "queued" ||
		ep == endpoint.Delete && parsed.Message == "" && isCount(parsed.Deleted)
	return msg, errs, a, true
}

// classifyStatus is the table of docs/architecture.md "Answers".
func classifyStatus(ep endpoint.Endpoint, status int, isJSON bool, a answerFacts) (Class, Cause) {
	switch {
	case status/100 == 2 && !isJSON:
		return Halt, CauseNotBraze
	case status/100 == 2 && a.confirmed:
		switch {
		case !a.hasErrors:
			return Delivered, CauseAccepted
		case ep == endpoint.Track:
			return Partial, CauseAccepted
		}
		// errors[] on another endpoint names no object Braze documents: a verdict on the
		// request as a whole, bisected until the offending record stands alone.
		return Split, CauseRejected
	case status/100 == 2 && a.message == "":
		// Braze's JSON always carries a top-level message (or, for /users/delete, the count):
		// without one, the answer is no verdict on the records.
		return Halt, CauseNotBraze
	case status/100 == 2:
		// A fatal message on a 2xx: nothing was processed, like a fatal 400.
		return Split, CauseRejected
	case status == http.StatusBadRequest && !isJSON:
		return Halt, CauseNotBraze
	case status == http.StatusBadRequest && ep == endpoint.Track && isTooMany(a.message):
		return Split, CauseTooMany
	case status == http.StatusBadRequest:
		return Split, CauseRejected
	case status == http.StatusRequestEntityTooLarge:
		return Split, CauseTooLarge
	case status == http.StatusUnauthorized || status == http.StatusForbidden ||
		status == http.StatusNotFound || status == http.StatusUnsupportedMediaType:
		return Halt, CauseKey
	case status == http.StatusTooManyRequests:
		return Retry, CauseThrottled
	case status >= 500:
		// Braze asks for exponential back-off on 5xx.
		return Retry, CauseOutage
	}
	// Anything unexpected (408, 409, 3xx): retrying is the only safe action.
	return Retry, CauseUnexpected
}

// isCount reports whether raw is a JSON whole number >= 0 written as one (/users/delete's
// "deleted"; a string, a fraction or an exponent is not its documented integer).
func isCount(raw json.RawMessage) bool {
	v, err := strconv.ParseInt(string(bytes.TrimSpace(raw)), 10, 64)
	return err == nil && v >= 0
}

// isEmpty reports whether raw is absent, null or [].
func isEmpty(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || string(t) == "null" {
		return true
	}
	return len(t) >= 2 && t[0] == '[' && t[len(t)-1] == ']' && len(bytes.TrimSpace(t[1:len(t)-1])) == 0
}

// errorsText is the text of an errors[] Braze does not document for the endpoint: the types
// of entries shaped like /users/track's, the strings of a list of strings, else the raw JSON.
func errorsText(raw json.RawMessage) string {
	var items []ItemError
	if json.Unmarshal(raw, &items) == nil {
		types := make([]string, 0, len(items))
		for _, it := range items {
			if it.Type != "" {
				types = append(types, it.Type)
			}
		}
		if len(types) > 0 {
			return strings.Join(types, "; ")
		}
	}
	var texts []string
	if json.Unmarshal(raw, &texts) == nil {
		return strings.Join(texts, "; ")
	}
	return canonicalJSON(raw)
}

// canonicalJSON re-encodes raw JSON with its strings unescaped where JSON allows, so that a
// secret an upstream echoed in escaped form ("\u002d" for "-") is found by Redact.
func canonicalJSON(raw []byte) string {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return strings.TrimSpace(string(raw))
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if enc.Encode(v) != nil {
		return strings.TrimSpace(string(raw))
	}
	return strings.TrimSpace(b.String())
}

// isTooMany recognises Braze's answer to a request with more objects than the contract allows
// (docs/braze-rules.md, object limits).
func isTooMany(message string) bool {
	return strings.Contains(strings.ToLower(message), "max input length")
}

// retryAfter is the wait a 429 asks for: the bounded retry hint, else the window reset;
// 0 means "no hint, use back-off".
func retryAfter(rl RateLimit, now time.Time) time.Duration {
	if rl.RetryAfter > 0 {
		return rl.RetryAfter
	}
	if !rl.Reset.IsZero() {
		if d := rl.Reset.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// HaltCause names the likely cause of a halting status, for the operator.
func HaltCause(r Response) string {
	switch r.Cause() {
	case CauseNotBraze:
		return "the answer is not Braze's (not its JSON): a proxy, WAF or load balancer between the worker and Braze answers instead; nothing is dead-lettered on such answers"
	case CauseRejected:
		return "most recent requests are rejected as a whole with this same answer, so it is not a verdict on the records (a proxy, an API change, or every record breaking one rule); nothing is dead-lettered until a request is accepted"
	}
	switch r.Status {
	case http.StatusUnauthorized:
		return "the API key is invalid, from another workspace, or the REST endpoint is for another Braze instance (or this IP is not allow-listed for the key)"
	case http.StatusForbidden:
		return "the API key lacks the " + r.Endpoint.Permission() + " permission, the caller IP is not allow-listed, or the account is inactive"
	case http.StatusNotFound:
		return "wrong REST endpoint URL: check BRAZE_REST_ENDPOINT against the instance shown in the Braze dashboard"
	case http.StatusUnsupportedMediaType:
		return "Braze refused the content type; a proxy between the worker and Braze may be rewriting requests"
	}
	return "unexpected answer"
}
