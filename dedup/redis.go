package dedup

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Redis is the shared store. Attribute hashes of a user live in one hash
// <prefix>attr:<user> (field = attribute key, value = hex hash) whose TTL is refreshed on
// every write; delivered ids are keys <prefix>id:<id> set with NX and the window as TTL.
// Lookup and Record are one pipelined round trip each.
type Redis struct {
	c    redis.UniversalClient
	opts Options
}

// NewRedis connects to the Redis at url (redis:// or rediss://, as go-redis parses it) and
// checks it answers.
func NewRedis(ctx context.Context, url string, o Options) (*Redis, error) {
	o.defaults()
	ro, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	c := redis.NewClient(ro)
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("redis %s: %w", ro.Addr, err)
	}
	return &Redis{c: c, opts: o}, nil
}

// Lookup implements Store.
func (r *Redis) Lookup(ctx context.Context, q *Query) error {
	q.Seen = resizeBool(q.Seen, len(q.IDs))
	for i := range q.Users {
		q.Users[i].Hashes = resize(q.Users[i].Hashes, len(q.Users[i].Keys))
	}
	if len(q.IDs) == 0 && len(q.Users) == 0 {
		return nil
	}
	pipe := r.c.Pipeline()
	hm := make([]*redis.SliceCmd, len(q.Users))
	for i := range q.Users {
		if len(q.Users[i].Keys) > 0 {
			key := r.opts.KeyPrefix + "attr:" + q.Users[i].User
			hm[i] = pipe.HMGet(ctx, key, q.Users[i].Keys...)
			if q.Forget {
				pipe.HDel(ctx, key, q.Users[i].Keys...)
			}
		}
	}
	ex := make([]*redis.IntCmd, len(q.IDs))
	for i, id := range q.IDs {
		ex[i] = pipe.Exists(ctx, r.opts.KeyPrefix+"id:"+id)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	for i, c := range hm {
		if c == nil {
			continue
		}
		for j, v := range c.Val() {
			if s, ok := v.(string); ok {
				h, _ := strconv.ParseUint(s, 16, 64)
				q.Users[i].Hashes[j] = h
			}
		}
	}
	for i, c := range ex {
		q.Seen[i] = c.Val() > 0
	}
	return nil
}

// Record implements Store.
func (r *Redis) Record(ctx context.Context, up *Update) error {
	pipe := r.c.Pipeline()
	n := 0
	for _, u := range up.ForgetUsers {
		pipe.Del(ctx, r.opts.KeyPrefix+"attr:"+u)
		n++
	}
	for i := range up.Users {
		u := &up.Users[i]
		key := r.opts.KeyPrefix + "attr:" + u.User
		var set []any
		var del []string
		for j, k := range u.Keys {
			var h uint64
			if j < len(u.Hashes) {
				h = u.Hashes[j]
			}
			if h == 0 {
				del = append(del, k)
			} else {
				set = append(set, k, strconv.FormatUint(h, 16))
			}
		}
		if len(del) > 0 {
			pipe.HDel(ctx, key, del...)
			n++
		}
		if len(set) > 0 {
			pipe.HSet(ctx, key, set...)
			pipe.Expire(ctx, key, r.opts.AttrTTL)
			n++
		}
	}
	for _, id := range up.IDs {
		pipe.SetNX(ctx, r.opts.KeyPrefix+"id:"+id, "1", r.opts.IDWindow)
		n++
	}
	if n == 0 {
		return nil
	}
	_, err := pipe.Exec(ctx)
	if errors.Is(err, redis.Nil) {
		err = nil
	}
	return err
}

// Close implements Store.
func (r *Redis) Close() error { return r.c.Close() }
