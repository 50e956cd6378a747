package preflight

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http/httptrace"
	"syscall"

	"github.com/braze-ingestor/braze-ingestor/sink"
)

// brazeProbeBody is refused by Braze for its content ("Valid data must be provided…"), which it
// checks only after the key, its permission and its IP allowlist: Braze judging the request
// proves everything else and writes nothing.
const brazeProbeBody = `{}`

// CheckBraze sends the probe {} to /users/track with cfg's key and reports what the answer
// proves. A key that cannot be sent as a header is reported as the local error it is, without
// a request: before, it failed inside the HTTP client and read like an unreachable endpoint.
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
	reportProbe(p, ep, res, cfg.APIKey, local)
}

// reportProbe prints what the classified answer to the probe means (any echo of the key in
// the answer is redacted).
func reportProbe(p *Printer, ep string, res sink.Response, key, local string) {
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
		p.Fail(keyHint, "Braze %s: %s: refused: %s%s", ep, desc, sink.HaltCause(res), ipNote)
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

const keyHint = "check BRAZE_API_KEY (a key of a workspace on this instance, with the users.track permission; permissions cannot be edited, rotate the key), " +
	"BRAZE_REST_ENDPOINT (your instance's REST endpoint, no path), and the key's IP allowlist in Braze (Settings › APIs and Identifiers)"

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
