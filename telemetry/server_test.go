package telemetry

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

func okHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /panic", func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	return mux
}

func startServer(t *testing.T, o ServerOptions) (*Server, *syncBuf) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuf{}
	s := NewServer(ln, okHandler(), slog.New(slog.NewJSONHandler(logs, nil)), o)
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		<-done
	})
	return s, logs
}

// get sends one keep-alive request on c and reads the answer's status.
func getOn(c net.Conn, br *bufio.Reader, path string) (int, error) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func probe(t *testing.T, addr string) {
	t.Helper()
	cl := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := cl.Get("http://" + addr + "/livez")
	if err != nil {
		t.Fatalf("probe: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("probe: HTTP %d", resp.StatusCode)
	}
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestServerIdleKeepAliveClosed: 2,000 keep-alive connections, each served one request and
// then left idle, are closed by the server after the idle timeout (before it, with only a
// read-header timeout, they stayed open indefinitely).
func TestServerIdleKeepAliveClosed(t *testing.T) {
	const n = 2000
	idle := time.Second
	s, _ := startServer(t, ServerOptions{MaxConns: n + 10, IdleTimeout: idle})
	conns := make([]net.Conn, 0, n)
	readers := make([]*bufio.Reader, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	maxOpen := 0
	for range n {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		br := bufio.NewReader(c)
		readers = append(readers, br)
		if code, err := getOn(c, br, "/livez"); err != nil || code != 200 {
			t.Fatalf("request %d: %d %v", len(conns), code, err)
		}
		maxOpen = max(maxOpen, s.Open())
	}
	t.Logf("%d keep-alive connections, up to %d open at once", n, maxOpen)
	if maxOpen < 100 {
		t.Fatalf("at most %d connections were open at once: the test did not hold them", maxOpen)
	}
	waitFor(t, "idle keep-alive connections still open", 20*idle+5*time.Second, func() bool { return s.Open() == 0 })
	// The client side sees the close too.
	for i, br := range readers[:50] {
		_ = conns[i].SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("conn %d after the idle timeout: read %v, want EOF", i, err)
		}
	}
	probe(t, s.Addr().String())
}

// TestServerConnectionCap: with the cap held by silent connections, further connections are
// closed at once (not served, no goroutine); once the silent ones hit the read-header timeout
// the probe answers again.
func TestServerConnectionCap(t *testing.T) {
	const capN = 20
	s, logs := startServer(t, ServerOptions{MaxConns: capN, ReadHeaderTimeout: 3 * time.Second})
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range capN {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	waitFor(t, "the silent connections are not all accepted", 5*time.Second, func() bool { return s.Open() == capN })
	for i := range 200 {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		code, err := getOn(c, bufio.NewReader(c), "/livez")
		c.Close()
		if err == nil {
			t.Fatalf("connection %d beyond the cap was served (HTTP %d)", capN+i+1, code)
		}
	}
	if s.Open() > capN {
		t.Fatalf("open %d > cap %d", s.Open(), capN)
	}
	// The client may see its connection closed before the server has counted it.
	waitFor(t, "200 connections shed", 5*time.Second, func() bool { return s.Shed() >= 200 })
	if !strings.Contains(logs.String(), `"msg":"http: connection cap reached; closing new connections"`) {
		t.Fatalf("no JSON log line about the cap: %s", logs.String())
	}
	waitFor(t, "silent connections not closed by the read-header timeout", 10*time.Second, func() bool { return s.Open() == 0 })
	probe(t, s.Addr().String())
}

// TestServerBoundedUnderConnectionFlood: 3,000 connections that each send a request line and
// then stall (slowloris) against the default cap: the server holds at most HTTPMaxConns of
// them, its goroutines and resident memory stay bounded, and a probe answers once they end.
func TestServerBoundedUnderConnectionFlood(t *testing.T) {
	const n = 3000
	s, _ := startServer(t, ServerOptions{ReadHeaderTimeout: 2 * time.Second})
	runtime.GC()
	rss0, g0, st0 := rssBytes(t), runtime.NumGoroutine(), stackInuse()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	maxOpen := 0
	for range n {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		_, _ = io.WriteString(c, "GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: ") // never finished
		maxOpen = max(maxOpen, s.Open())
	}
	time.Sleep(200 * time.Millisecond)
	maxOpen = max(maxOpen, s.Open())
	g1, rss1, st1 := runtime.NumGoroutine(), rssBytes(t), stackInuse()
	t.Logf("%d stalled connections: server holds %d (cap %d), shed %d; goroutines %d -> %d; stacks %.1f -> %.1f MiB; RSS (client sockets included) %.1f -> %.1f MiB",
		n, maxOpen, HTTPMaxConns, s.Shed(), g0, g1, mib(st0), mib(st1), mib(rss0), mib(rss1))
	if maxOpen > HTTPMaxConns {
		t.Errorf("server held %d connections, cap %d", maxOpen, HTTPMaxConns)
	}
	if g1-g0 > HTTPMaxConns+20 {
		t.Errorf("goroutines grew by %d under the flood, want at most about the cap (%d)", g1-g0, HTTPMaxConns)
	}
	// Unbounded, each held connection costs a goroutine stack and a read buffer: 3,000 of
	// them grew the stacks by ~23 MiB here (the binary in the field: RSS 85 -> 421 MiB at
	// 20,600 connections). RSS in this process also carries the 3,000 client sockets, so the
	// server's share is asserted on the stacks and goroutines.
	if grown := int64(st1) - int64(st0); grown > 2<<20 {
		t.Errorf("goroutine stacks grew by %.1f MiB under the flood", mib(uint64(grown)))
	}
	// Whole-process RSS, client sockets included: ~6 MiB with the cap (up to 18 MiB under
	// -race and load), ~50 MiB without.
	if grown := int64(rss1) - int64(rss0); grown > 32<<20 {
		t.Errorf("RSS grew by %.1f MiB under the flood", mib(uint64(grown)))
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	waitFor(t, "connections not released", 10*time.Second, func() bool { return s.Open() == 0 })
	probe(t, s.Addr().String())
}

// TestServerHeaderCap: headers beyond the cap are refused with 431 and the connection served
// no further.
func TestServerHeaderCap(t *testing.T) {
	s, _ := startServer(t, ServerOptions{})
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	big := strings.Repeat("a", 64<<10)
	fmt.Fprintf(c, "GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", big)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("64 KiB header: HTTP %d, want 431", resp.StatusCode)
	}
	// Just below the cap is served.
	c2, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	code, err := getOn(c2, bufio.NewReader(c2), "/livez")
	if err != nil || code != 200 {
		t.Fatalf("plain request: %d %v", code, err)
	}
}

// TestServerErrorLogIsJSON: the server's own error lines (here a handler panic) are JSON
// records through slog, not plain text on stderr.
func TestServerErrorLogIsJSON(t *testing.T) {
	s, logs := startServer(t, ServerOptions{})
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = getOn(c, bufio.NewReader(c), "/panic")
	waitFor(t, "no log line for the panic", 5*time.Second, func() bool { return strings.Contains(logs.String(), "boom") })
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if strings.Contains(line, "boom") && (rec["level"] != "WARN" || rec["component"] != "http") {
			t.Fatalf("panic line %s: want level WARN, component http", line)
		}
	}
}

func rssBytes(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Skip("no VmRSS")
	return 0
}

func stackInuse() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.StackInuse
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
