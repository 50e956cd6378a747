package pipeline

import (
	"context"
	"sync"
	"time"

	"github.com/braze-ingestor/braze-ingestor/batcher"
	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"github.com/braze-ingestor/braze-ingestor/schemas"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// Endpoint senders (docs/architecture.md "A record's path"): one goroutine per enabled
// endpoint other than /users/track collects the records lanes dispatch to it (held.go),
// packs up to the endpoint's per-request limit of one kind and pack key
// (schemas.Record.PackKey) within the byte limit, lingers BATCH_LINGER, and sends through
// the same sender chain as the lanes. Records of different users are independent (a user
// has at most one record at the endpoint senders), so a few requests per endpoint are in
// flight at once. Every record settles through settle (acknowledged or dead-lettered) and
// then its lane is told, which releases its user.

// endpointInflight is how many requests one endpoint sender keeps in flight.
const endpointInflight = 4

// epSender is one endpoint's sender.
type epSender struct {
	ep    endpoint.Endpoint
	in    *mailbox[item]
	freed chan struct{} // (capacity 1) a request finished
	slots chan struct{} // a token per request in flight
	wg    sync.WaitGroup
	prog  *progress
	// pending are the waiting records, a batch per pack (one kind per endpoint).
	pending []*epBatch
}

// epBatch is the records waiting for one pack: one PackKey, and schemas.SamePack with its
// first record (a PackKey is a hash: two groups may share one).
type epBatch struct {
	pack  uint32
	items []item
	bytes int // their Raw sizes
	first time.Time
}

func newEpSender(ep endpoint.Endpoint) *epSender {
	return &epSender{ep: ep, in: newMailbox[item](), freed: make(chan struct{}, 1),
		slots: make(chan struct{}, endpointInflight)}
}

// runEndpoint runs es until ctx ends; its requests in flight end with ctx too.
func (p *Pipeline) runEndpoint(ctx context.Context, es *epSender) {
	es.prog = p.watch.add("endpoint sender " + es.ep.Name())
	defer p.watch.remove(es.prog)
	defer es.wg.Wait()
	ctx = withProgress(ctx, nil) // the requests' waits are deliberate (liveness.go)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var buf []item
	for {
		es.prog.work()
		buf = es.in.take(buf[:0])
		for _, it := range buf {
			es.add(it)
		}
		clear(buf)
		next := p.sendReady(ctx, es)
		var deadline <-chan time.Time
		if !next.IsZero() {
			timer.Reset(max(time.Until(next), time.Millisecond))
			deadline = timer.C
		}
		es.prog.idle() // waiting for records, the linger or a request slot
		select {
		case <-es.in.wake:
		case <-es.freed:
		case <-deadline:
		case <-ctx.Done():
			return
		}
		if deadline != nil && !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

func (es *epSender) add(it item) {
	var b *epBatch
	for _, c := range es.pending {
		if c.pack == it.pack && schemas.SamePack(it.kind, c.items[0].raw, it.raw) {
			b = c
			break
		}
	}
	if b == nil {
		b = &epBatch{pack: it.pack, first: time.Now()}
		es.pending = append(es.pending, b)
	}
	b.items = append(b.items, it)
	b.bytes += len(it.raw)
}

// sendReady starts a request for every batch that is ready (full, lingered, or draining)
// while a request slot is free; it returns when the next waiting batch is due (zero: none).
func (p *Pipeline) sendReady(ctx context.Context, es *epSender) time.Time {
	maxBytes := p.cfg.Limits.MaxBytes
	var next time.Time
	kept := es.pending[:0]
	defer func() {
		clear(es.pending[len(kept):])
		es.pending = kept
	}()
	for i, b := range es.pending {
		for len(b.items) > 0 {
			due := b.first.Add(p.cfg.Linger)
			ready := !batcher.EndpointFits(b.items[0].kind, len(b.items), b.bytes, maxBytes) || p.draining.Load() > 0 || !time.Now().Before(due)
			if !ready {
				if next.IsZero() || due.Before(next) {
					next = due
				}
				break
			}
			select {
			case es.slots <- struct{}{}:
			default:
				kept = append(kept, es.pending[i:]...)
				return time.Time{} // every slot is busy: a finished request wakes the loop
			}
			req := b.take(maxBytes)
			es.wg.Add(1)
			go func() {
				defer es.wg.Done()
				p.sendEndpoint(ctx, req)
				<-es.slots
				select {
				case es.freed <- struct{}{}:
				default:
				}
			}()
		}
		if len(b.items) > 0 {
			kept = append(kept, b)
		}
	}
	return next
}

// take removes the oldest records that fit one request (batcher.EndpointFits; one record
// always goes: the decoder refuses larger ones).
func (b *epBatch) take(maxBytes int) []item {
	n, size := 1, len(b.items[0].raw)
	for n < len(b.items) && batcher.EndpointFits(b.items[0].kind, n+1, size+len(b.items[n].raw), maxBytes) {
		size += len(b.items[n].raw)
		n++
	}
	req := append([]item(nil), b.items[:n]...)
	rest := copy(b.items, b.items[n:])
	clear(b.items[rest:])
	b.items = b.items[:rest]
	b.bytes -= size
	return req
}

// sendEndpoint sends one endpoint request through the chain, settles its records and tells
// their lanes, which release the users.
func (p *Pipeline) sendEndpoint(ctx context.Context, items []item) {
	res := p.chain.send(ctx, &request{items: items, body: batcher.Encode(nil, items)})
	p.settle(ctx, items, &res)
	now := time.Now()
	for i := range items {
		if !res.at(i).Outcome.Final() {
			continue // stopping: the user stays held and the record is left to Kafka
		}
		it := &items[i]
		p.lanes[it.user%uint64(len(p.lanes))].notes.put(settledNote{user: it.ObjectUser(), ep: it.kind.Endpoint(), at: now})
	}
}

// endpointsOn reports whether any endpoint besides /users/track is enabled.
func (c *Config) endpointsOn() bool {
	for e := endpoint.Track + 1; e < endpoint.Count; e++ {
		if c.Endpoints[e] {
			return true
		}
	}
	return false
}

// poster returns the sender's Post, or nil when it has none (sink.Poster).
func (p *Pipeline) poster() sink.Poster {
	ps, _ := p.sender.(sink.Poster)
	return ps
}

// endpointOn reports whether the worker sends to ep (/users/track always).
func (p *Pipeline) endpointOn(ep endpoint.Endpoint) bool {
	return ep == endpoint.Track || p.endpoints[ep] != nil
}

// kindOn reports whether records of kind k are sent (their endpoint is enabled).
func (p *Pipeline) kindOn(k schemas.Kind) bool { return p.endpointOn(k.Endpoint()) }
