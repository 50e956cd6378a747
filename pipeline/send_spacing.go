package pipeline

import (
	"context"
	"time"
)

// spacingLayer keeps Config.UserMinSpacing between two requests carrying the same user
// (USER_MIN_SPACING; off by default). Braze processes /users/track asynchronously and says
// that separate requests for one user may take a few seconds to apply and so can race
// (docs/architecture.md "Per-user order"); the lane already keeps one request in flight per
// user, and this layer additionally waits until the user's previous request is that long ago.
// A no-op when UserMinSpacing is 0.
type spacingLayer struct {
	p       *Pipeline
	next    sendLayer
	spacing time.Duration
}

func newSpacingLayer(p *Pipeline, next sendLayer) sendLayer {
	if p.cfg.UserMinSpacing <= 0 {
		return next
	}
	return &spacingLayer{p: p, next: next, spacing: p.cfg.UserMinSpacing}
}

// userSends is one lane's record of when each user last went out (a lane owns its users, so
// no lock is needed). Entries older than the spacing are pruned as the lane goes.
type userSends struct {
	last  map[uint64]time.Time
	prune time.Time
}

type userSendsKey struct{}

func (s *spacingLayer) send(ctx context.Context, r *request) results {
	us, _ := ctx.Value(userSendsKey{}).(*userSends)
	if us == nil {
		return s.next.send(ctx, r)
	}
	now := time.Now()
	var wait time.Duration
	for i := range r.items {
		if t, ok := us.last[r.items[i].user]; ok {
			wait = max(wait, t.Add(s.spacing).Sub(now))
		}
	}
	if wait > 0 && !pause(ctx, wait) {
		return s.next.send(ctx, r) // stopping: the answer layer leaves the records to Kafka
	}
	sent := time.Now()
	if sent.After(us.prune) {
		for u, t := range us.last {
			if sent.Sub(t) >= s.spacing {
				delete(us.last, u)
			}
		}
		us.prune = sent.Add(s.spacing)
	}
	for i := range r.items {
		us.last[r.items[i].user] = sent
	}
	return s.next.send(ctx, r)
}

// withUserSends gives a lane's chain its record of sends, when spacing is on.
func (p *Pipeline) withUserSends(ctx context.Context) context.Context {
	if p.cfg.UserMinSpacing <= 0 {
		return ctx
	}
	return context.WithValue(ctx, userSendsKey{}, &userSends{last: map[uint64]time.Time{}})
}
