package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/braze-ingestor/braze-ingestor/pipeline"
	"github.com/braze-ingestor/braze-ingestor/telemetry"
)

// serveHTTP listens on addr and serves h until stop is called; it returns the address it
// listens on (useful with port 0).
func serveHTTP(addr string, h http.Handler, log *slog.Logger) (string, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("HTTP_ADDR %s: %w", addr, err)
	}
	// Bounded listener: timeouts, header cap, connection cap; its errors go to the JSON log.
	srv := telemetry.NewServer(ln, h, log, telemetry.ServerOptions{})
	go func() {
		if err := srv.Serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "error", err)
		}
	}()
	stop := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}
	return ln.Addr().String(), stop, nil
}

// Handler serves the health probes (and, with telemetry, /metrics) on one port.
func Handler(p *pipeline.Pipeline, metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) {
		if !p.Alive(15 * time.Second) {
			http.Error(w, "not alive: the run loop stalled, or a lane, fetch loop or committer is stuck (named in the log)", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case p.Halted():
			http.Error(w, "halted: Braze refuses the key or endpoint", http.StatusServiceUnavailable)
		case p.Paused():
			http.Error(w, "paused: circuit breaker open, Braze considered down", http.StatusServiceUnavailable)
		case !p.Ready():
			http.Error(w, "not in the consumer group yet", http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "ok")
		}
	})
	return mux
}
