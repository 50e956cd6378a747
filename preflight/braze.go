package preflight

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http/httptrace"
	"strings"
	"syscall"

	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// brazeProbeBody is refused by Braze for its content ("Valid data must be provided…"), which it
// checks only after the key, its permission and its IP allowlist: Braze judging the request
// proves everything else and writes nothing.
const brazeProbeBody = `{}`

// CheckBraze sends the probe {} to /users/track with cfg's key and reports what the answer
// proves, then (checkEndpoints) the same probe to every other enabled endpoint, proving the
// key's permission for each. A key that cannot be sent as a header is reported as the local
// error it is, without a request: before, it failed inside the HTTP client and read like an
// unreachable endpoint.
func CheckBraze(ctx context.Context, cfg Config, p *Printer) {
	ep := cfg.BrazeEndpoint
	if err := CheckAPIKey(cfg.APIKey); err != nil {
		p.Fail("fix the key in BRAZE_API_KEY / BRAZE_API_KEY_FILE (copy it again from Braze › Settings › APIs and Identifiers)",
			"Braze %s: not contacted: the API key is malformed (%v): it cannot be sent as an HTTP header; a local configuration error, not an outage", ep, err)
		return
	}
	client, err := sink.NewClient(sink.ClientConfig{
		Endpoint: ep, APIKey: cfg.APIKey, Timeout: cfg.HTTPTimeout, MaxIdleConns: 1,
		UserAgent: "braze-ingestor/" + cfg.Version + " (check)", Transport: cfg.BrazeTransport,
	})
	if err != nil {
		p.Fail("fix BRAZE_REST_ENDPOINT / BRAZE_API_KEY", "Braze: %v", err)
		return
	}
	var local string
	trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) {
		if ci.Conn != nil {
			if a, ok := ci.Conn.LocalAddr().(*net.TCPAddr); ok {
				local = a.IP.String()
			}
		}
	}}
	res := client.Track(httptrace.WithClientTrace(ctx, trace), []byte(brazeProbeBody))
	hint := keyHint(cfg.Endpoints)
	reportProbe(p, ep, res, cfg.APIKey, local, hint)
	checkEndpoints(ctx, client, cfg, p, probeOutcome(res), hint)
}

// checkEndpoints probes every enabled endpoint other than /users/track with {} and prints one
// line for each: Braze checks the key's permission for the endpoint before the body, and {}
// names no user, so no answer to it changes data. When the /users/track probe showed that
// Braze cannot be reached or is not answering, the others are not sent.
func checkEndpoints(ctx context.Context, client *sink.Client, cfg Config, p *Printer, track probe, hint string) {
	for e := endpoint.Track + 1; e < endpoint.Count; e++ {
		if !cfg.Endpoints[e] {
			continue
		}
		switch track {
		case probeJudged, probeKey, probeThrottled:
		default:
			p.Warn("", "Braze %s %s: %s permission not checked (the /users/track probe failed)", cfg.BrazeEndpoint, e.Path(), e.Permission())
			continue
		}
		res := client.Post(ctx, e, []byte(brazeProbeBody))
		reportEndpointProbe(p, cfg.BrazeEndpoint, e, res, cfg.APIKey, hint)
	}
}

// reportEndpointProbe prints what the answer of an endpoint other than /users/track to {}
// proves. Unlike /users/track, such an endpoint may accept {} (e.g. /users/delete deleting
// no one): that too proves the permission.
func reportEndpointProbe(p *Printer, base string, ep endpoint.Endpoint, res sink.Response, key, hint string) {
	desc := sink.Redact(res.Describe(), key)
	switch probeOutcome(res) {
	case probeJudged:
		p.OK("Braze %s %s: key accepted for %s (probe {} refused for its content as expected; nothing written)", base, ep.Path(), ep.Permission())
	case probeAcceptedEmpty:
		p.OK("Braze %s %s: key accepted for %s (probe {} names no user; nothing written)", base, ep.Path(), ep.Permission())
	case probeKey:
		p.Fail(hint+"; or remove "+ep.Name()+" from ENDPOINTS", "Braze %s %s: %s: refused: %s", base, ep.Path(), desc, sink.HaltCause(res))
	case probeThrottled:
		p.Warn("", "Braze %s %s: %s: rate limited: %s not verified; retry later", base, ep.Path(), desc, ep.Permission())
	case probeNoAnswer:
		what, fix := explainHTTPErr(res.Err)
		p.Fail(fix, "Braze %s %s: unreachable: %s", base, ep.Path(), what)
	case probeOutage:
		p.Fail("Braze or a proxy is failing; retry later", "Braze %s %s: %s", base, ep.Path(), desc)
	case probeNotBraze:
		p.Fail("check that no proxy, WAF or load balancer answers in Braze's place", "Braze %s %s: %s: %s", base, ep.Path(), desc, sink.HaltCause(res))
	default:
		p.Fail("check BRAZE_REST_ENDPOINT points at Braze's REST endpoint (a proxy or firewall may answer in its place)",
			"Braze %s %s: unexpected answer to the probe: %s", base, ep.Path(), desc)
	}
}

// reportProbe prints what the classified answer to the /users/track probe means (any echo of
// the key in the answer is redacted).
func reportProbe(p *Printer, ep string, res sink.Response, key, local, hint string) {
	desc := sink.Redact(res.Describe(), key)
	switch probeOutcome(res) {
	case probeJudged:
		p.OK("Braze %s: key accepted for users.track from this IP (probe {} refused for its content as expected; nothing written)", ep)
	case probeNoAnswer:
		what, hint := explainHTTPErr(res.Err)
		p.Fail(hint, "Braze %s: endpoint unreachable: %s", ep, what)
	case probeKey:
		ipNote := ""
		if local != "" {
			ipNote = fmt.Sprintf("; this host's address is %s (behind NAT or a proxy Braze sees the egress IP)", local)
		}
		p.Fail(hint, "Braze %s: %s: refused: %s%s", ep, desc, sink.HaltCause(res), ipNote)
	case probeThrottled:
		p.Warn("", "Braze %s: %s: rate limited: endpoint reachable, key not fully verified; retry later", ep, desc)
	case probeOutage:
		p.Fail("Braze or a proxy is failing; retry later", "Braze %s: %s", ep, desc)
	case probeNotBraze:
		p.Fail("check BRAZE_REST_ENDPOINT points at Braze's REST endpoint and that no proxy, WAF or load balancer answers in its place",
			"Braze %s: %s: %s", ep, desc, sink.HaltCause(res))
	case probeAcceptedEmpty:
		p.Fail("BRAZE_REST_ENDPOINT does not look like Braze (it accepted an empty body)", "Braze %s: %s for an empty body", ep, desc)
	default:
		p.Fail("check BRAZE_REST_ENDPOINT points at Braze's REST endpoint (a proxy or firewall may answer in its place)",
			"Braze %s: unexpected answer to the probe: %s", ep, desc)
	}
}

// keyHint is the fix for a refused key: the permissions every enabled endpoint needs.
func keyHint(enabled [endpoint.Count]bool) string {
	perms := []string{endpoint.Track.Permission()}
	for e := endpoint.Track + 1; e < endpoint.Count; e++ {
		if enabled[e] {
			perms = append(perms, e.Permission())
		}
	}
	what := "the " + perms[0] + " permission"
	if len(perms) > 1 {
		what = "the permissions " + strings.Join(perms, ", ")
	}
	return "check BRAZE_API_KEY (a key of a workspace on this instance, with " + what + "; permissions cannot be edited, rotate the key), " +
		"BRAZE_REST_ENDPOINT (your instance's REST endpoint, no path), and the key's IP allowlist in Braze (Settings › APIs and Identifiers)"
}

func explainHTTPErr(err error) (what, hint string) {
	if err == nil {
		return "no answer", ""
	}
	var dnsErr *net.DNSError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalidCert x509.CertificateInvalidError
	var verifyErr *tls.CertificateVerificationError
	var recHdr tls.RecordHeaderError
	switch {
	case errors.As(err, &unknownCA), errors.As(err, &hostErr), errors.As(err, &invalidCert), errors.As(err, &verifyErr):
		return "TLS certificate not trusted: " + err.Error(),
			"a TLS-intercepting proxy needs its CA in the system trust store; otherwise check BRAZE_REST_ENDPOINT"
	case errors.As(err, &recHdr):
		return "TLS handshake failed: " + err.Error(), "check the scheme and port of BRAZE_REST_ENDPOINT"
	case errors.As(err, &dnsErr):
		return "cannot resolve the host: " + err.Error(), "check BRAZE_REST_ENDPOINT (e.g. https://rest.iad-01.braze.com) and DNS"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused: " + err.Error(), "check BRAZE_REST_ENDPOINT and any egress proxy"
	case isTimeout(err):
		return "timed out: " + err.Error(), "allow egress to the Braze REST host (firewall, NetworkPolicy, proxy)"
	}
	return err.Error(), "check BRAZE_REST_ENDPOINT and network egress to it"
}
