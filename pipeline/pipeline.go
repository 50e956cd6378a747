// Package pipeline is the run loop: a kafka-go consumer group with one fetch loop per
// assigned partition, per-user ordering lanes that pack and send requests, a dead-letter
// stage, and an offset tracker that commits only what is delivered or dead-lettered.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

	"github.com/braze-ingestor/braze-ingestor/batcher"
	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"github.com/braze-ingestor/braze-ingestor/schemas"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// Sender sends one /users/track body and classifies Braze's answer. A sender that paces or
// guards requests (sink.Guard) reports its waiting in Response.Waited.
type Sender interface {
	Track(ctx context.Context, body []byte) sink.Response
}

// Decoder turns one Kafka message value into records (schemas.Decoder is the native one).
// A decoder is used by one fetch loop at a time.
type Decoder interface {
	Decode(value []byte, out []schemas.Record) ([]schemas.Record, error)
}

// pauser is implemented by senders that can suspend delivery (an open circuit breaker):
// fetching pauses with them, so Kafka keeps the backlog instead of memory.
type pauser interface{ Paused() bool }

// breakerStater exposes a circuit breaker's state for metrics.
type breakerStater interface{ State() sink.BreakerState }

// DeadLetterWriter durably writes dead letters (all-replica acks) or returns an error.
type DeadLetterWriter interface {
	Write(ctx context.Context, letters []dlq.Letter) error
}

// Config configures a Pipeline. Zero durations and sizes take the defaults in Defaults.
type Config struct {
	Brokers     []string
	Topics      []string
	GroupID     string
	StartOffset int64         // kafka.FirstOffset (default) or kafka.LastOffset for a new group
	Dialer      *kafka.Dialer // TLS/SASL; nil = plaintext

	CommitInterval    time.Duration
	SessionTimeout    time.Duration
	RebalanceTimeout  time.Duration
	HeartbeatInterval time.Duration
	// DrainTimeout bounds how long a revoked partition waits for its in-flight records
	// before its final commit; keep it under the session timeout.
	DrainTimeout time.Duration
	// ShutdownTimeout bounds the whole graceful shutdown.
	ShutdownTimeout time.Duration

	// FetchMode is FetchBatch (default) or FetchReader.
	FetchMode     string
	MinBytes      int
	MaxBytes      int
	MaxWait       time.Duration
	QueueCapacity int
	// MaxRunAhead bounds how many offsets past its oldest unsettled message a partition hands
	// out (DefaultMaxRunAhead), which keeps the offset map within the commit metadata limit.
	MaxRunAhead int
	// MaxInflightBytes bounds the bytes of fetched messages not yet settled, over all
	// partitions (DefaultMaxInflightBytes); a single larger message still passes alone.
	MaxInflightBytes int64

	Lanes     int
	LaneQueue int // records buffered per lane
	// Linger is how long a batch that is not full waits for more records while the request
	// budget is far from used; MaxLatency bounds the longer wait as usage approaches the
	// budget (lane.go linger).
	Linger     time.Duration
	MaxLatency time.Duration
	Limits     batcher.Limits

	RetryInitial time.Duration
	RetryMax     time.Duration
	// RetryMaxDuration > 0 turns records that cannot be delivered for that long into
	// retries_exhausted dead letters. 0 (default) retries until Braze is back.
	RetryMaxDuration time.Duration
	// HaltProbeMax caps the back-off between probes while halted.
	HaltProbeMax time.Duration
	// Isolate5xxAfter is how long a request may get only 5xx answers, while other requests
	// are accepted, before it is split to isolate the payload (send_isolate.go); a lone
	// record in that state is dead-lettered as persistent_5xx. 0 = 5 minutes; < 0 = never.
	Isolate5xxAfter time.Duration
	// UserMinSpacing > 0 keeps at least that long between two requests carrying the same
	// user (send_spacing.go); 0 (default) sends as soon as the lane may.
	UserMinSpacing time.Duration
	// Spacing is the least time between a user's record settling at one endpoint and its
	// next record going to another (ENDPOINT_SPACING, ParseSpacing); zero pairs do not wait;
	// nil takes the default (defaultSpacing).
	Spacing *Spacing
	// StuckAfter is how long a lane, fetch loop or committer may make no progress while it
	// has work before Alive reports false (liveness.go).
	StuckAfter time.Duration
	// Endpoints are the Braze endpoints the worker may use (ENDPOINTS); Track is always on,
	// and the zero value is /users/track only. A record for an endpoint not enabled is
	// dead-lettered invalid_record. Enabling another requires a sender implementing
	// sink.Poster.
	Endpoints [endpoint.Count]bool

	Logger *slog.Logger
	// NewDecoder returns the decoder for a topic's messages; nil means the native format
	// (envelopes and bundles) for every topic.
	NewDecoder func(topic string) Decoder
	// Optimize turns on coalescing, unchanged-attribute suppression and de-duplication
	// (optimize.go); all off by default.
	Optimize Optimize
	// TracerProvider and MeterProvider default to the global OTel providers.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
}

// Defaults fills zero fields.
func (c *Config) Defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.StartOffset == 0 {
		c.StartOffset = kafka.FirstOffset
	}
	def(&c.CommitInterval, time.Second)
	def(&c.SessionTimeout, 30*time.Second)
	def(&c.RebalanceTimeout, 30*time.Second)
	def(&c.HeartbeatInterval, 3*time.Second)
	def(&c.DrainTimeout, 10*time.Second)
	def(&c.ShutdownTimeout, 25*time.Second)
	if c.FetchMode == "" {
		c.FetchMode = FetchBatch
	}
	defInt(&c.MinBytes, 1)
	defInt(&c.MaxBytes, 10<<20)
	def(&c.MaxWait, 250*time.Millisecond)
	defInt(&c.QueueCapacity, 1000)
	defInt(&c.MaxRunAhead, DefaultMaxRunAhead)
	if c.MaxInflightBytes <= 0 {
		c.MaxInflightBytes = DefaultMaxInflightBytes
	}
	defInt(&c.Lanes, 64)
	defInt(&c.LaneQueue, 256)
	def(&c.Linger, 100*time.Millisecond)
	def(&c.MaxLatency, time.Second)
	if c.Limits.Mode == "" {
		c.Limits.Mode = batcher.Combined
	}
	defInt(&c.Limits.MaxObjects, batcher.DefaultMaxObjects)
	defInt(&c.Limits.MaxBytes, 3_500_000)
	def(&c.RetryInitial, 200*time.Millisecond)
	def(&c.RetryMax, 30*time.Second)
	def(&c.HaltProbeMax, 30*time.Second)
	def(&c.StuckAfter, DefaultStuckAfter)
	if c.Spacing == nil {
		sp, _ := ParseSpacing(defaultSpacing)
		c.Spacing = &sp
	}
	if c.Isolate5xxAfter == 0 {
		c.Isolate5xxAfter = 5 * time.Minute
	}
	c.Endpoints[endpoint.Track] = true
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// DefaultMaxInflightBytes is the default byte bound on fetched, unsettled messages: with the
// copies a request makes of them (body, compression) it keeps the worker well inside the
// Deployment's 320Mi memory limit (deploy/k8s/base/deployment.yaml).
const DefaultMaxInflightBytes = 32 << 20

// Pipeline moves records from Kafka to Braze. Create it with New and call Run once.
type Pipeline struct {
	cfg    Config
	sender Sender
	dlq    DeadLetterWriter
	log    *slog.Logger
	stats  Stats

	lanes []*lane
	dlqCh chan dlqEntry
	// endpoints are the senders of the enabled endpoints besides /users/track (endpoints.go);
	// multi is true when there is one: lanes then note their users' track settles (held.go).
	endpoints [endpoint.Count]*epSender
	multi     bool

	// draining makes lanes flush without lingering (revoke or shutdown in progress).
	draining     atomic.Int32
	shuttingDown atomic.Bool
	halted       atomic.Bool
	// revokeEpoch counts generation ends; see item.epoch.
	revokeEpoch atomic.Int64
	recordLog   rate.Sometimes
	mapLog      rate.Sometimes

	// flow accounts records and bytes in flight (flow.go); client makes the group's offset
	// requests that carry the offset map (commit.go).
	flow   flow
	client *kafka.Client
	// chain sends a lane's requests (chain.go); halt is the worker-wide halt gate.
	chain sendLayer
	halt  *haltGate
	mass  massGuard
	// objCap is the object cap lowered by a "too many objects" answer (send_split.go); 0
	// while the configured limit holds.
	objCap atomic.Int64
	// lastAccepted is when Braze last accepted a request, per endpoint (unix nanos;
	// send_observe.go): proof for send_isolate.go that the endpoint is up.
	lastAccepted [endpoint.Count]atomic.Int64

	fetchDialer *kafka.Dialer
	// workCtx ends only at the hard stop (shutdown timeout).
	workCtx context.Context
	ins     instruments
	closers sync.WaitGroup // readers closing in the background
	opt     *optimizer     // nil unless an optimization is on (optimize.go)
	// granter is the sender's rate limiter, when it has one (lane.go); merge lets a request
	// carry several lanes' records (off with optimizations or USER_MIN_SPACING).
	granter Granter
	merge   bool
	spare   chan time.Time // grants handed on by lanes that could not use them (lane.go donate)
	fill    atomic.Uint64  // float64 bits: recent requests' fill (lane.go noteFill)

	mu         sync.Mutex
	partitions []*partitionState // of the current generation
	inGroup    atomic.Bool
	lastLoop   atomic.Int64 // unix nanos of the last run-loop heartbeat (liveness)
	watch      watchdog     // progress marks of lanes, fetch loops and committers (liveness.go)
}

// New validates cfg and returns a pipeline.
func New(cfg Config, sender Sender, dlq DeadLetterWriter) (*Pipeline, error) {
	cfg.Defaults()
	if len(cfg.Brokers) == 0 || len(cfg.Topics) == 0 || cfg.GroupID == "" {
		return nil, errors.New("pipeline: brokers, topics and group id are required")
	}
	if cfg.FetchMode != FetchBatch && cfg.FetchMode != FetchReader {
		return nil, fmt.Errorf("pipeline: fetch mode %q: want %q or %q", cfg.FetchMode, FetchBatch, FetchReader)
	}
	if err := cfg.Limits.Validate(); err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	if sender == nil || dlq == nil {
		return nil, errors.New("pipeline: sender and dead-letter writer are required")
	}
	if _, ok := sender.(sink.Poster); cfg.endpointsOn() && !ok {
		return nil, errors.New("pipeline: endpoints besides track are enabled but the sender cannot post to them (sink.Poster)")
	}
	p := &Pipeline{
		cfg:       cfg,
		sender:    sender,
		dlq:       dlq,
		log:       cfg.Logger,
		dlqCh:     make(chan dlqEntry, 4096),
		recordLog: rate.Sometimes{Interval: time.Second},
		mapLog:    rate.Sometimes{First: 1},
	}
	p.flow.maxBytes = cfg.MaxInflightBytes
	p.flow.records = &p.stats.InFlightRecords
	p.client = newKafkaClient(cfg.Brokers, cfg.Dialer)
	p.halt = newHaltGate(p)
	p.chain = p.newChain()
	var err error
	if p.opt, err = newOptimizer(cfg.Optimize); err != nil {
		return nil, err
	}
	p.fetchDialer = BufferedDialer(cfg.Dialer)
	if err := p.initTelemetry(); err != nil {
		return nil, fmt.Errorf("pipeline telemetry: %w", err)
	}
	if err := p.initOffsetTelemetry(); err != nil {
		return nil, fmt.Errorf("pipeline telemetry: %w", err)
	}
	p.granter, _ = p.sender.(Granter)
	p.merge = p.opt == nil && cfg.UserMinSpacing <= 0
	p.spare = make(chan time.Time, cfg.Lanes)
	p.multi = cfg.endpointsOn()
	for e := endpoint.Track + 1; e < endpoint.Count; e++ {
		if cfg.Endpoints[e] {
			p.endpoints[e] = newEpSender(e)
		}
	}
	p.lanes = make([]*lane, cfg.Lanes)
	for i := range p.lanes {
		p.lanes[i] = &lane{id: i, in: make(chan item, cfg.LaneQueue), notes: newMailbox[settledNote]()}
		if p.multi {
			p.lanes[i].track = newTrackSettles(cfg.Spacing)
		}
	}
	return p, nil
}

// Stats returns the live counters.
func (p *Pipeline) Stats() *Stats { return &p.stats }

// Ready reports whether the worker has joined the group, is not halted, and Braze is not
// considered down (circuit breaker closed).
func (p *Pipeline) Ready() bool { return p.inGroup.Load() && !p.halted.Load() && !p.senderPaused() }

// Paused reports whether delivery is suspended by the sender (open circuit breaker).
func (p *Pipeline) Paused() bool { return p.senderPaused() }

func (p *Pipeline) senderPaused() bool {
	ps, ok := p.sender.(pauser)
	return ok && ps.Paused()
}

// Halted reports whether delivery is halted on a configuration or key problem.
func (p *Pipeline) Halted() bool { return p.halted.Load() }

// PartitionLag is one partition's position.
type PartitionLag struct {
	Topic     string
	Partition int
	Committed int64 // last committed offset (-1: none in this generation)
	Fetched   int64 // last fetched offset
	HighWater int64 // end offset as last seen (-1: unknown)
	Pending   int   // fetched messages not yet committable
}

// Lag reports the partitions of the current generation.
func (p *Pipeline) Lag() []PartitionLag {
	p.mu.Lock()
	parts := p.partitions
	p.mu.Unlock()
	out := make([]PartitionLag, 0, len(parts))
	for _, ps := range parts {
		ps.mu.Lock()
		c := ps.committed
		ps.mu.Unlock()
		out = append(out, PartitionLag{ps.topic, ps.partition, c, ps.fetched.Load(), ps.highWater.Load(), ps.pending()})
	}
	return out
}

// Run consumes until ctx is cancelled, then shuts down gracefully: it stops fetching,
// flushes the lanes, commits, and leaves the group within ShutdownTimeout. It returns nil
// after a clean shutdown.
func (p *Pipeline) Run(ctx context.Context) error {
	p.lastLoop.Store(time.Now().UnixNano())
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID: p.cfg.GroupID, Brokers: p.cfg.Brokers, Dialer: p.cfg.Dialer, Topics: p.cfg.Topics,
		StartOffset: p.cfg.StartOffset, SessionTimeout: p.cfg.SessionTimeout, RebalanceTimeout: p.cfg.RebalanceTimeout,
		HeartbeatInterval: p.cfg.HeartbeatInterval, JoinGroupBackoff: time.Second, ErrorLogger: kafkaLogger{p.log},
	})
	if err != nil {
		return fmt.Errorf("consumer group %s: %w", p.cfg.GroupID, err)
	}

	// Lanes and the DLQ stage outlive generations; they stop only after the group is closed
	// and drained, or when the shutdown timeout runs out.
	workCtx, stopWork := context.WithCancel(context.Background())
	p.workCtx = workCtx
	var workers sync.WaitGroup
	p.startWorkers(workCtx, &workers)

	closed := make(chan struct{})
	go func() {
		<-ctx.Done()
		p.shuttingDown.Store(true)
		p.log.Info("shutting down: stop fetching, flush, commit", "timeout", p.cfg.ShutdownTimeout)
		hard := time.AfterFunc(p.cfg.ShutdownTimeout, stopWork)
		defer hard.Stop()
		_ = cg.Close() // ends the generation: partitions drain and commit, then the group is left
		close(closed)
	}()

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	nextCh := make(chan genResult)
	for {
		r := p.nextGeneration(cg, nextCh, tick)
		if errors.Is(r.err, kafka.ErrGroupClosed) {
			break
		}
		if r.err != nil {
			p.inGroup.Store(false)
			p.log.Warn("consumer group: join failed, retrying", "group", p.cfg.GroupID, "error", r.err)
			continue
		}
		p.startGeneration(r.gen)
	}
	<-closed
	p.inGroup.Store(false)
	stopWork()
	workers.Wait()
	waitTimeout(&p.closers, 5*time.Second)
	if t, ok := p.client.Transport.(*kafka.Transport); ok {
		t.CloseIdleConnections()
	}
	p.log.Info("stopped", "delivered", p.stats.Snapshot().RecordsDelivered)
	return nil
}

// startWorkers starts the goroutines that outlive generations: the lanes, the DLQ stage and
// the endpoint senders.
func (p *Pipeline) startWorkers(workCtx context.Context, workers *sync.WaitGroup) {
	run := func(f func()) {
		workers.Add(1)
		go func() { defer workers.Done(); f() }()
	}
	for _, l := range p.lanes {
		run(func() { p.runLane(workCtx, l) })
	}
	run(func() { p.runDLQ(workCtx) })
	for _, es := range p.endpoints {
		if es != nil {
			run(func() { p.runEndpoint(workCtx, es) })
		}
	}
}

type genResult struct {
	gen *kafka.Generation
	err error
}

// nextGeneration waits for the consumer group's next generation (or its error), showing the
// run loop's sign of life every tick meanwhile (liveness.go).
func (p *Pipeline) nextGeneration(cg *kafka.ConsumerGroup, nextCh chan genResult, tick *time.Ticker) genResult {
	go func() {
		gen, err := cg.Next(context.Background())
		nextCh <- genResult{gen, err}
	}()
	for {
		select {
		case r := <-nextCh:
			return r
		case <-tick.C:
			p.lastLoop.Store(time.Now().UnixNano())
		}
	}
}

// startGeneration runs one fetch loop per assigned partition and a committer that drains and
// commits when the generation ends (revoke or shutdown).
func (p *Pipeline) startGeneration(gen *kafka.Generation) {
	var parts []*partitionState
	var fetchers sync.WaitGroup
	starts := p.startPoints(gen)
	for topic, assigned := range gen.Assignments {
		for _, a := range assigned {
			ps := newPartitionState(topic, a.ID)
			ps.flow = &p.flow
			parts = append(parts, ps)
			fetchers.Add(1)
			sp := starts[topicPartition{topic, a.ID}]
			gen.Start(func(gctx context.Context) {
				defer fetchers.Done()
				p.fetchLoop(gctx, ps, sp)
			})
		}
	}
	p.mu.Lock()
	p.partitions = parts
	p.mu.Unlock()
	p.inGroup.Store(true)
	p.log.Info("joined group", "group", gen.GroupID, "generation", gen.ID, "member", gen.MemberID, "partitions", len(parts))

	gen.Start(func(gctx context.Context) { p.runCommitter(gctx, gen, parts, &fetchers) })
}

// runCommitter is a generation's committer: it commits as records settle, and when the
// generation ends it waits for the fetch loops, drains, commits a last time and marks the
// partitions revoked (docs/architecture.md "Shutdown order").
func (p *Pipeline) runCommitter(gctx context.Context, gen *kafka.Generation, parts []*partitionState, fetchers *sync.WaitGroup) {
	prog := p.watch.add(fmt.Sprintf("committer of generation %d", gen.ID))
	defer p.watch.remove(prog)
	// failed holds early commits back after a failed commit: retries then wait for the
	// coalescing tick.
	failed := false
	commit := func() { prog.work(); failed = !p.commit(gen, parts); prog.idle() }
	// Commits follow the watermark and the offset map as they change, coalesced to one
	// per commitCoalesce (or KAFKA_COMMIT_INTERVAL when shorter); nothing is sent while
	// nothing settles.
	t := time.NewTicker(min(p.cfg.CommitInterval, commitCoalesce))
	defer t.Stop()
	// Between ticks, a partition that has settled everything it fetched is committed at
	// once (at the end of a burst the offset need not wait for the next tick), and so is
	// a backlog of commitEarlyAfter settled messages: what a crash replays then stays
	// near that many messages (or one idleCommitCheck of deliveries at high rates), not
	// a whole tick's worth.
	idle := time.NewTicker(idleCommitCheck)
	defer idle.Stop()
	for {
		select {
		case <-t.C:
			p.lastLoop.Store(time.Now().UnixNano())
			commit()
			continue
		case <-idle.C:
			if !failed && (settledUncommitted(parts) || settledSinceCommit(parts) >= commitEarlyAfter) {
				commit()
			}
			continue
		case <-gctx.Done():
		}
		break
	}
	p.draining.Add(1)
	defer p.draining.Add(-1)
	deadline := time.Now().Add(p.drainBudget())
	fetchers.Wait()
	drained := p.drain(parts, time.Until(deadline))
	commit()
	for _, ps := range parts {
		ps.revoked.Store(true)
		ps.abandon()
	}
	p.revokeEpoch.Add(1) // after the flags: a record that sees the new epoch sees its flag
	p.log.Info("generation ended", "generation", gen.ID, "drained", drained, "partitions", len(parts))
}

// drain waits until every record handed out from parts is resolved, or timeout. Records a
// held user's spacing keeps in its lane (parked) are not waited for: Kafka keeps them.
func (p *Pipeline) drain(parts []*partitionState, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		var n int64
		for _, ps := range parts {
			n += ps.outstanding.Load() - ps.parked.Load()
		}
		if n == 0 {
			return true
		}
		if time.Now().After(deadline) {
			p.log.Warn("drain timed out; undelivered records will be read again by the next owner", "records", n)
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fetchAllowed blocks while delivery is halted (no point reading what cannot be sent; Kafka
// keeps the data). It returns false when ctx ends.
func (p *Pipeline) fetchAllowed(ctx context.Context) bool {
	for p.halted.Load() || p.senderPaused() {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return ctx.Err() == nil
}

// messageSource is a partition's stream of messages: a kafka-go Reader, or a batchSource.
// next returns a message that stays valid until the following call; returning it by
// pointer spares copying the 150-byte struct several times per message.
type messageSource interface {
	next(ctx context.Context) (*kafka.Message, error)
	Close() error
}

// readerSource adapts a kafka-go Reader to messageSource.
type readerSource struct {
	*kafka.Reader
	m kafka.Message
}

func (r *readerSource) next(ctx context.Context) (*kafka.Message, error) {
	var err error
	r.m, err = r.FetchMessage(ctx)
	return &r.m, err
}

// Fetch modes (Config.FetchMode).
const (
	FetchBatch  = "batch"  // Conn.ReadBatch on the fetch loop's goroutine (default)
	FetchReader = "reader" // a kafka-go Reader per partition
)

func (p *Pipeline) newSource(ps *partitionState, offset int64) (messageSource, error) {
	if p.cfg.FetchMode == FetchReader {
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers:          p.cfg.Brokers,
			Dialer:           p.fetchDialer,
			Topic:            ps.topic,
			Partition:        ps.partition,
			MinBytes:         p.cfg.MinBytes,
			MaxBytes:         p.cfg.MaxBytes,
			MaxWait:          p.cfg.MaxWait,
			ReadBatchTimeout: 2 * time.Second,
			QueueCapacity:    p.cfg.QueueCapacity,
			ErrorLogger:      kafkaLogger{p.log},
		})
		if err := r.SetOffset(offset); err != nil {
			r.Close()
			return nil, err
		}
		return &readerSource{Reader: r}, nil
	}
	return &batchSource{p: p, topic: ps.topic, partition: ps.partition, offset: offset}, nil
}

// drainBudget is how long a generation's end may wait for in-flight records: the drain
// timeout on a revoke, most of the shutdown timeout on shutdown.
func (p *Pipeline) drainBudget() time.Duration {
	if p.shuttingDown.Load() {
		return p.cfg.ShutdownTimeout - time.Second
	}
	return p.cfg.DrainTimeout
}

// handoffContext ends drainBudget after gctx ends (or at the hard stop): a message fetched
// before the end is still handed out whole, but a fetch loop stuck behind full lanes (Braze
// down) cannot hold up the rebalance for longer than the drain may take.
func (p *Pipeline) handoffContext(gctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(p.workCtx)
	go func() {
		select {
		case <-gctx.Done():
			t := time.NewTimer(p.drainBudget())
			defer t.Stop()
			select {
			case <-t.C:
				cancel()
			case <-ctx.Done():
			}
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// fetchSession is what one fetch loop holds for its partition: the source, the decoder and
// the handoff context that bounds a blocked hand-out during a drain.
type fetchSession struct {
	ps      *partitionState
	r       messageSource
	dec     Decoder
	handoff context.Context
	skip    skipSet
	oldest  int64 // the partition's oldest unsettled offset as last looked up (admit)
	recs    []schemas.Record
}

func (p *Pipeline) fetchLoop(gctx context.Context, ps *partitionState, sp startPoint) {
	handoff, cancelHandoff := p.handoffContext(gctx)
	defer cancelHandoff()
	fs, ok := p.openFetch(gctx, ps, sp)
	if !ok {
		return
	}
	fs.handoff = handoff
	// Reader.Close can wait for MaxWait (kafka-go #428); keep it off the drain's critical path,
	// but let Run wait for it so no goroutine outlives the pipeline.
	defer func() {
		p.closers.Add(1)
		go func() { defer p.closers.Done(); _ = fs.r.Close() }()
	}()
	prog := p.watch.add(fmt.Sprintf("fetch loop %s/%d", ps.topic, ps.partition))
	defer p.watch.remove(prog)
	for {
		if !p.fetchAllowed(gctx) {
			return
		}
		if ps.highWater.Load() > ps.fetched.Load()+1 {
			prog.work() // unread messages are known: this fetch has work (liveness.go)
		}
		m, err := fs.r.next(gctx)
		prog.idle()
		if err != nil {
			if gctx.Err() != nil {
				return
			}
			p.log.Warn("fetch failed, retrying", "topic", ps.topic, "partition", ps.partition, "error", err)
			select {
			case <-gctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		if !p.takeMessage(gctx, fs, m) {
			return
		}
	}
}

// openFetch resolves the partition's start, starts its tracking and opens its source.
func (p *Pipeline) openFetch(gctx context.Context, ps *partitionState, sp startPoint) (*fetchSession, bool) {
	offset := sp.offset
	if offset < 0 {
		var ok bool
		if offset, ok = p.resolveStart(gctx, ps, offset); !ok {
			return nil, false
		}
	}
	settled := p.orderSafeSkips(gctx, ps, offset, sp.settled)
	if gctx.Err() != nil {
		return nil, false
	}
	ps.start(offset, sp.fromCommit, settled)
	r, err := p.newSource(ps, offset)
	if err != nil {
		p.log.Error("set offset", "topic", ps.topic, "partition", ps.partition, "offset", offset, "error", err)
		return nil, false
	}
	return &fetchSession{ps: ps, r: r, dec: p.newDecoder(ps.topic), skip: skipSet{runs: settled}, oldest: -1}, true
}

// newDecoder returns the decoder for a topic's messages (Config.NewDecoder, or the native one).
func (p *Pipeline) newDecoder(topic string) Decoder {
	if p.cfg.NewDecoder != nil {
		return p.cfg.NewDecoder(topic)
	}
	return &schemas.Decoder{MaxRecordBytes: p.cfg.Limits.MaxRecordBytes()}
}

// takeMessage skips, admits, decodes and hands out one fetched message. It reports false when
// the loop must end (the generation ends or a hand-out was cut short by a drain).
func (p *Pipeline) takeMessage(gctx context.Context, fs *fetchSession, m *kafka.Message) bool {
	ps := fs.ps
	p.stats.MessagesConsumed.Add(1)
	if fs.skip.settled(m.Offset) {
		// Settled by the previous owner, and no earlier message of its users is delivered
		// again (its offset map, narrowed by resume.go): done without a second delivery.
		ps.complete(ps.track(m, 0))
		p.stats.ResumeSkipped.Add(1)
		return true
	}
	if !p.admit(gctx, ps, m, &fs.oldest) {
		return false
	}
	var derr error
	fs.recs, derr = fs.dec.Decode(m.Value, fs.recs[:0])
	if derr != nil {
		ack := ps.track(m, 1)
		ps.hold(1)
		p.logRecordProblem("message dead-lettered", ps, m.Offset, -1, derr)
		if !p.toDLQ(fs.handoff, dlqEntry{ack: ack, kind: kindOther, letter: dlq.ForMessage(m.Value, derr)}) {
			ps.release(1)
			return false
		}
		return true
	}
	ack := ps.track(m, len(fs.recs))
	if len(fs.recs) == 0 {
		// Nothing to deliver (a format may skip a message, e.g. an unsupported Segment
		// call): the message is done as soon as it is read.
		ps.complete(ack)
		return true
	}
	return p.handOut(fs, m, ack)
}

// handOut gives a decoded message's records to their lanes (or the DLQ stage). Counters move
// once per message, not per record: they are shared by every fetch loop and lane, and
// contended atomics are a measurable cost at 200k records/s.
func (p *Pipeline) handOut(fs *fetchSession, m *kafka.Message, ack *msgAck) bool {
	ps, recs := fs.ps, fs.recs
	n := int64(len(recs))
	epoch := p.revokeEpoch.Load()
	ps.hold(n)
	var kinds [schemas.NumKinds]int64
	for i := range recs {
		kinds[recs[i].Kind]++
	}
	for k, c := range kinds {
		if c > 0 {
			p.stats.RecordsConsumed[k].Add(c)
		}
	}
	for i := range recs {
		rec := &recs[i]
		handedOut := true
		if rec.Err != nil || (!rec.Kind.Tracked() && p.endpoints[rec.Kind.Endpoint()] == nil) {
			handedOut = p.refuse(fs, m, ack, rec)
		} else {
			it := item{kind: rec.Kind, pack: rec.PackKey, idKind: rec.IDKind, user: rec.UserHash, raw: rec.Raw, index: rec.Index, id: rec.ID, ack: ack, epoch: epoch}
			handedOut = p.toLane(fs.handoff, p.lanes[rec.UserHash%uint64(len(p.lanes))], it)
		}
		if !handedOut {
			// The rest of this message is never handed out, so it never completes and is
			// never committed: the next owner reads it again. A drain must not wait for it.
			ps.release(n - int64(i))
			return false
		}
	}
	return true
}

// refuse dead-letters a record the decoder refused, or one for an endpoint not enabled
// (Config.Endpoints); false when the handoff context ends first.
func (p *Pipeline) refuse(fs *fetchSession, m *kafka.Message, ack *msgAck, rec *schemas.Record) bool {
	reason, msg := dlq.ReasonInvalidRecord, ""
	if rec.Err != nil {
		reason, msg = rec.Err.Reason, rec.Err.Error()
	} else {
		msg = disabledMessage(rec.Kind.Endpoint())
	}
	p.logRecordProblem("record dead-lettered", fs.ps, m.Offset, rec.Index, errors.New(msg))
	return p.toDLQ(fs.handoff, dlqEntry{ack: ack, kind: int(rec.Kind), letter: dlq.Letter{
		Reason: reason, Error: msg, Type: rec.Kind.EnvelopeType(), Record: rec.Raw, ID: rec.ID, RecordIndex: rec.Index,
	}})
}

// toLane queues it on lane l; false when the handoff context ends first.
func (p *Pipeline) toLane(handoff context.Context, l *lane, it item) bool {
	select {
	case l.in <- it: // the common case: room in the lane, no select over two channels
		return true
	default:
	}
	select {
	case l.in <- it:
		return true
	case <-handoff.Done():
		return false
	}
}

func (p *Pipeline) logRecordProblem(msg string, ps *partitionState, offset int64, index int, err error) {
	p.recordLog.Do(func() {
		// Contents are never logged at info level: only the position and the rule broken.
		p.log.Warn(msg+" (further record problems this second are not logged)", "topic", ps.topic, "partition", ps.partition, "offset", offset, "record", index, "error", err)
	})
	p.log.Debug(msg, "topic", ps.topic, "partition", ps.partition, "offset", offset, "record", index, "error", err)
}

// sleepCtx sleeps d or until ctx ends; it reports whether it slept the whole time.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// backoff returns a full-jitter exponential back-off for the attempt (1-based).
func backoff(initial, max time.Duration, attempt int) time.Duration {
	d := initial
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return time.Duration(rand.Int64N(int64(d) + 1))
}

// kafkaLogger sends kafka-go's internal error logs to slog at debug level: the pipeline logs
// what matters to operators itself.
type kafkaLogger struct{ l *slog.Logger }

func (k kafkaLogger) Printf(format string, args ...any) {
	k.l.Debug("kafka-go: " + fmt.Sprintf(format, args...))
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// idleCommitCheck is how often the committer looks for fully settled partitions and for
// commitEarlyAfter settled messages: at most 1/idleCommitCheck early commits per second.
const idleCommitCheck = 25 * time.Millisecond

// commitEarlyAfter is how many messages settled since the last commit, over a generation's
// partitions, make the committer commit before its coalescing tick (docs/offsets.md).
const commitEarlyAfter = 64

// settledSinceCommit counts the messages of parts settled since their last commit.
func settledSinceCommit(parts []*partitionState) uint64 {
	var n uint64
	for _, ps := range parts {
		ps.mu.Lock()
		n += ps.seq - ps.committedSeq
		ps.mu.Unlock()
	}
	return n
}

// settledUncommitted reports whether some partition has nothing in flight and an offset to
// commit.
func settledUncommitted(parts []*partitionState) bool {
	for _, ps := range parts {
		if ps.outstanding.Load() == 0 && ps.pending() == 0 && ps.toCommit() >= 0 {
			return true
		}
	}
	return false
}
