package worker

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/braze-ingestor/braze-ingestor/dedup"
	"github.com/braze-ingestor/braze-ingestor/pipeline"
)

// validateOptimize checks the coalescing, suppression and de-duplication settings.
func (c *Config) validateOptimize() []string {
	var p []string
	if c.SuppressCacheSize < 1 {
		p = append(p, "SUPPRESS_CACHE_SIZE must be at least 1")
	}
	if c.DedupCacheSize < 1 {
		p = append(p, "DEDUP_CACHE_SIZE must be at least 1")
	}
	if c.SuppressTTL <= 0 {
		p = append(p, "SUPPRESS_TTL must be positive")
	}
	if c.DedupWindow <= 0 {
		p = append(p, "DEDUP_WINDOW must be positive")
	}
	if c.OptimizeStoreTimeout <= 0 {
		p = append(p, "OPTIMIZE_STORE_TIMEOUT must be positive")
	}
	if c.RedisURL != "" {
		if _, err := redis.ParseURL(c.RedisURL); err != nil {
			p = append(p, fmt.Sprintf("REDIS_URL: %v", err)) // go-redis does not echo passwords
		}
	}
	return p
}

// optimizeConfig builds pipeline.Optimize from cfg, with its store (Redis when REDIS_URL is
// set, else in memory). close releases the store.
func optimizeConfig(ctx context.Context, cfg *Config, log *slog.Logger) (opt pipeline.Optimize, close func(), err error) {
	opt = pipeline.Optimize{Coalesce: cfg.CoalesceAttributes, SuppressUnchanged: cfg.SuppressUnchanged,
		Dedup: cfg.DedupEvents, StoreTimeout: cfg.OptimizeStoreTimeout}
	close = func() {}
	if !opt.SuppressUnchanged && !opt.Dedup {
		return opt, close, nil
	}
	o := dedup.Options{AttrTTL: cfg.SuppressTTL, IDWindow: cfg.DedupWindow, AttrEntries: cfg.SuppressCacheSize, IDEntries: cfg.DedupCacheSize}
	if cfg.RedisURL == "" {
		opt.Store = dedup.NewMemory(o)
		log.Info("suppression/de-duplication store: in memory (per replica)", "attr_entries", o.AttrEntries, "id_entries", o.IDEntries)
		return opt, close, nil
	}
	redis.SetLogger(redisLogger{log})
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r, err := dedup.NewRedis(cctx, cfg.RedisURL, o)
	if err != nil {
		return opt, close, err
	}
	opt.Store = r
	log.Info("suppression/de-duplication store: Redis (shared)")
	return opt, func() { _ = r.Close() }, nil
}

// redisLogger sends go-redis's internal logs (connection retries) to slog at debug level; the
// pipeline logs store failures itself.
type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	r.l.Debug("go-redis: " + fmt.Sprintf(format, v...))
}
