package telemetry

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds of the probe and metrics listener (README "HTTP listener"). Its clients are the
// kubelet (probes) and the metrics scraper: a handful of short requests, so everything beyond
// that is refused rather than served.
const (
	// HTTPMaxConns is the most connections served at once; a connection beyond it is
	// closed as soon as it is accepted (it costs no goroutine and no buffer).
	HTTPMaxConns = 64
	// HTTPReadHeaderTimeout bounds how long a client may take to send the request headers.
	HTTPReadHeaderTimeout = 5 * time.Second
	// HTTPReadTimeout bounds reading one whole request.
	HTTPReadTimeout = 10 * time.Second
	// HTTPWriteTimeout bounds writing one answer (a /metrics exposition included).
	HTTPWriteTimeout = 30 * time.Second
	// HTTPIdleTimeout closes a keep-alive connection that sends no next request.
	HTTPIdleTimeout = 30 * time.Second
	// HTTPMaxHeaderBytes caps request headers (net/http adds 4 KiB of slack to it).
	HTTPMaxHeaderBytes = 8 << 10
)

// ServerOptions overrides the listener's bounds (zero: the constants above). Tests use short
// timeouts; production runs on the defaults.
type ServerOptions struct {
	MaxConns          int
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
}

func (o ServerOptions) withDefaults() ServerOptions {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.MaxConns <= 0 {
		o.MaxConns = HTTPMaxConns
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = HTTPMaxHeaderBytes
	}
	def(&o.ReadHeaderTimeout, HTTPReadHeaderTimeout)
	def(&o.ReadTimeout, HTTPReadTimeout)
	def(&o.WriteTimeout, HTTPWriteTimeout)
	def(&o.IdleTimeout, HTTPIdleTimeout)
	return o
}

// Server is the probe and metrics HTTP server with every outside-facing bound set: timeouts,
// a header size cap and a connection cap. Its own errors (accept failures, TLS-less garbage,
// handler panics) are logged through slog, never as plain text.
type Server struct {
	srv *http.Server
	ln  *LimitedListener
}

// NewServer wraps ln with the connection cap and returns the bounded server for h.
func NewServer(ln net.Listener, h http.Handler, log *slog.Logger, o ServerOptions) *Server {
	o = o.withDefaults()
	if log == nil {
		log = slog.Default()
	}
	lim := NewLimitedListener(ln, o.MaxConns, log)
	return &Server{ln: lim, srv: &http.Server{
		Handler:           h,
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		ReadTimeout:       o.ReadTimeout,
		WriteTimeout:      o.WriteTimeout,
		IdleTimeout:       o.IdleTimeout,
		MaxHeaderBytes:    o.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelWarn),
	}}
}

// Serve serves until Shutdown; it returns http.ErrServerClosed after a Shutdown.
func (s *Server) Serve() error { return s.srv.Serve(s.ln) }

// Shutdown stops accepting and closes idle connections, waiting for active ones up to ctx.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// Addr is the listening address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Open is the number of connections being served now.
func (s *Server) Open() int { return s.ln.Open() }

// Shed is the number of connections closed at accept because the cap was reached.
func (s *Server) Shed() int64 { return s.ln.Shed() }

// LimitedListener serves at most max connections at once. Unlike a listener that blocks in
// Accept at the cap (whose waiting connections pile up in the kernel's backlog and time out
// there), it accepts and closes the surplus at once, so the caller sees a closed connection
// and the process holds no file descriptor for it.
type LimitedListener struct {
	net.Listener
	sem  chan struct{}
	shed atomic.Int64
	log  *slog.Logger
	// lastLog is the unix-nano time of the last "connections shed" line (one per 10 s).
	lastLog atomic.Int64
}

// NewLimitedListener caps ln at max open connections.
func NewLimitedListener(ln net.Listener, max int, log *slog.Logger) *LimitedListener {
	return &LimitedListener{Listener: ln, sem: make(chan struct{}, max), log: log}
}

// Accept returns the next connection within the cap, closing any beyond it.
func (l *LimitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.sem <- struct{}{}:
			return &limitedConn{Conn: c, release: func() { <-l.sem }}, nil
		default:
			_ = c.Close()
			n := l.shed.Add(1)
			now := time.Now().UnixNano()
			if last := l.lastLog.Load(); now-last >= int64(10*time.Second) && l.lastLog.CompareAndSwap(last, now) {
				l.log.Warn("http: connection cap reached; closing new connections", "component", "http",
					"max_conns", cap(l.sem), "shed_total", n)
			}
		}
	}
}

// Open is the number of connections currently held.
func (l *LimitedListener) Open() int { return len(l.sem) }

// Shed is the number of connections closed at accept.
func (l *LimitedListener) Shed() int64 { return l.shed.Load() }

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
