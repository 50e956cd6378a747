package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/segmentio/kafka-go"

	"github.com/braze-ingestor/braze-ingestor/sink"
)

// Replay headers: a replayed record carries them back to its source topic, and a record that
// fails again keeps them in the DLQ (sink.DeadLetter.Message keeps dlq.replay*), so a second
// failure is visible.
const (
	HeaderReplayCount = "dlq.replay.count" // how many times the record was replayed
	HeaderReplayAt    = "dlq.replay.at"    // RFC 3339 time of the last replay
	HeaderReplayFrom  = "dlq.replay.from"  // dlq-topic/partition/offset it was replayed from
)

const replayUsage = `ingestor replay [flags]: move dead letters back to a source topic.

Reads every partition of the DLQ topic from its beginning up to the end offsets observed at
start (so it terminates while the worker keeps writing), selects records by reason, source
topic and dlq.failed_at, and republishes each selected record with acks=all: key and value
as they are (an envelope is valid worker input), the source's own headers (trace context
included) without the dlq.* ones, plus dlq.replay.count (previous + 1), dlq.replay.at and
dlq.replay.from (dlq-topic/partition/offset). A record that fails again is dead-lettered
with these marks, so a second failure is visible. Records go back to the partition they came
from when the target is their source topic; with --to, the key decides the partition.
preflight_check markers written by "ingestor check" are always skipped.

Configuration: KAFKA_BROKERS and the KAFKA_TLS_* / KAFKA_SASL_* settings from the
environment, as for "ingestor run" (Braze settings are not needed); KAFKA_DLQ_TOPIC is
the default of --dlq.

Replaying twice: replay keeps no state and commits no offsets. Running it again over the
same records replays them again (the worker then delivers them again, which is harmless
for attribute updates and duplicates events and purchases). To replay only what failed
after a previous run, pass --since with the start time that run printed: records dead-
lettered again after being replayed carry a new dlq.failed_at, so they are selected, and the
ones replayed before are not. Use --dry-run first.

Exit status: 0 done, 1 a Kafka error (the summary says how far it got), 2 bad flags or
configuration.

Flags:
`

type replayOptions struct {
	dlq         string
	reasons     map[string]bool // nil: all reasons
	sourceTopic string
	since       time.Time
	until       time.Time
	to          string
	dryRun      bool
	limit       int
	verbose     bool
}

type replayStats struct {
	read, matched, replayed, skippedFilter, skippedMarker, skippedNoTarget int
	byTarget                                                               map[string]int
	byReason                                                               map[string]int
}

func cmdReplay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, replayUsage); fs.PrintDefaults() }
	dlq := fs.String("dlq", "", "DLQ topic to read (default: KAFKA_DLQ_TOPIC)")
	reasons := fs.String("reason", "", "comma-separated dlq.reason values to replay, e.g. braze_rejected,retries_exhausted (required unless --all)")
	all := fs.Bool("all", false, "replay every reason")
	sourceTopic := fs.String("source-topic", "", "only records whose dlq.source.topic is this")
	since := fs.String("since", "", "only records with dlq.failed_at at or after this RFC 3339 time")
	until := fs.String("until", "", "only records with dlq.failed_at before this RFC 3339 time")
	to := fs.String("to", "", "topic to publish to (default: each record's dlq.source.topic)")
	dryRun := fs.Bool("dry-run", false, "print what would be replayed (one line per record) and write nothing")
	limit := fs.Int("limit", 0, "replay at most N records (0: no limit)")
	verbose := fs.Bool("v", false, "print one line per replayed record (always on with --dry-run)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "ingestor replay: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected arguments %q", fs.Args())
	}
	opt := replayOptions{sourceTopic: *sourceTopic, to: strings.TrimSpace(*to), dryRun: *dryRun, limit: *limit, verbose: *verbose || *dryRun}
	switch {
	case *all && *reasons != "":
		return usageErr("--reason and --all exclude each other")
	case !*all && *reasons == "":
		return usageErr("say which dead letters to replay: --reason a,b (e.g. braze_rejected) or --all")
	case !*all:
		opt.reasons = map[string]bool{}
		for _, r := range strings.Split(*reasons, ",") {
			if r = strings.TrimSpace(r); r != "" {
				opt.reasons[r] = true
			}
		}
		if len(opt.reasons) == 0 {
			return usageErr("--reason names no reason")
		}
		if opt.reasons[ReasonPreflightCheck] {
			return usageErr("preflight_check records are markers written by ingestor check, not dead letters")
		}
	}
	if *limit < 0 {
		return usageErr("--limit must not be negative")
	}
	for _, tf := range []struct {
		name, v string
		dst     *time.Time
	}{{"--since", *since, &opt.since}, {"--until", *until, &opt.until}} {
		if tf.v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, tf.v)
		if err != nil {
			return usageErr("%s %q: want an RFC 3339 time such as 2026-01-02T15:04:05Z", tf.name, tf.v)
		}
		*tf.dst = t
	}
	if !opt.since.IsZero() && !opt.until.IsZero() && !opt.since.Before(opt.until) {
		return usageErr("--since must be before --until")
	}

	cfg, err := loadKafkaEnv()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	opt.dlq = *dlq
	if opt.dlq == "" {
		opt.dlq = cfg.KafkaDLQTopic
	}
	if opt.dlq == "" {
		return usageErr("no DLQ topic: set KAFKA_DLQ_TOPIC or pass --dlq")
	}
	if opt.to == opt.dlq {
		return usageErr("--to %s is the DLQ topic itself", opt.to)
	}

	start := time.Now().UTC()
	st, err := runReplay(ctx, cfg, opt, stdout)
	printReplaySummary(stdout, opt, st, start)
	if err != nil {
		fmt.Fprintln(stderr, "ingestor replay:", err)
		return 1
	}
	return 0
}

// loadKafkaEnv reads only the Kafka connection settings of Config from the environment: replay
// needs the brokers and their TLS/SASL, not Braze or the consumer group.
func loadKafkaEnv() (*Config, error) {
	var c Config
	var problems []string
	if err := envconfig.Process("", &c); err != nil {
		problems = append(problems, cleanEnvconfigError(err))
	}
	c.KafkaBrokers = trimList(c.KafkaBrokers)
	if len(c.KafkaBrokers) == 0 {
		problems = append(problems, "KAFKA_BROKERS is required (e.g. broker-1:9092,broker-2:9092)")
	}
	problems = append(problems, c.ValidateKafkaSecurity()...)
	if len(problems) > 0 {
		return nil, &ConfigError{Problems: problems}
	}
	return &c, nil
}

type tpKey struct {
	topic     string
	partition int
}

// replayer holds the state of one replay run.
type replayer struct {
	opt     replayOptions
	client  *kafka.Client
	out     io.Writer
	st      *replayStats
	parts   map[string]int // partition count of each target topic
	pending map[tpKey][]kafka.Record
	npend   int
	now     time.Time
}

func runReplay(ctx context.Context, cfg *Config, opt replayOptions, out io.Writer) (*replayStats, error) {
	st := &replayStats{byTarget: map[string]int{}, byReason: map[string]int{}}
	tlsCfg, mech, err := kafkaSecurity(cfg)
	if err != nil {
		return st, err
	}
	client := &kafka.Client{Addr: kafka.TCP(cfg.KafkaBrokers...), Transport: kafkaTransport(tlsCfg, mech), Timeout: 30 * time.Second}
	r := &replayer{opt: opt, client: client, out: out, st: st, parts: map[string]int{}, pending: map[tpKey][]kafka.Record{}, now: time.Now().UTC()}

	dlqParts, err := r.partitions(ctx, opt.dlq)
	if err != nil {
		return st, err
	}
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for p := 0; p < dlqParts; p++ {
		req.Topics[opt.dlq] = append(req.Topics[opt.dlq], kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	offs, err := client.ListOffsets(ctx, req)
	if err != nil {
		return st, fmt.Errorf("DLQ %s: list offsets: %w", opt.dlq, err)
	}
	po := offs.Topics[opt.dlq]
	sort.Slice(po, func(i, j int) bool { return po[i].Partition < po[j].Partition })
	dialer := kafkaDialer(tlsCfg, mech)
	for _, p := range po {
		if p.Error != nil {
			return st, fmt.Errorf("DLQ %s partition %d: list offsets: %w", opt.dlq, p.Partition, p.Error)
		}
		if p.FirstOffset >= p.LastOffset {
			continue
		}
		done, err := r.readPartition(ctx, cfg.KafkaBrokers, dialer, p.Partition, p.FirstOffset, p.LastOffset)
		if err != nil {
			return st, err
		}
		if done {
			break
		}
	}
	return st, r.flush(ctx)
}

// readPartition reads [first, end) of one DLQ partition. done reports that --limit is reached.
func (r *replayer) readPartition(ctx context.Context, brokers []string, dialer *kafka.Dialer, partition int, first, end int64) (done bool, err error) {
	rd := kafka.NewReader(kafka.ReaderConfig{
		Brokers: brokers, Topic: r.opt.dlq, Partition: partition, Dialer: dialer,
		MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 250 * time.Millisecond,
	})
	defer rd.Close()
	if err := rd.SetOffset(first); err != nil {
		return false, err
	}
	for {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		m, err := rd.ReadMessage(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			return false, fmt.Errorf("DLQ %s partition %d: read at offset %d (end %d): %w", r.opt.dlq, partition, rd.Offset(), end, err)
		}
		if m.Offset >= end {
			return false, nil
		}
		r.st.read++
		if err := r.handle(ctx, m); err != nil {
			return false, err
		}
		if r.opt.limit > 0 && r.st.matched >= r.opt.limit {
			return true, nil
		}
		if m.Offset+1 >= end {
			return false, nil
		}
	}
}

func headerValue(hs []kafka.Header, key string) (string, bool) {
	for _, h := range hs {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// selected applies the filters to one DLQ record.
func (r *replayer) selected(m kafka.Message) bool {
	reason, _ := headerValue(m.Headers, sink.HeaderReason)
	if r.opt.reasons != nil && !r.opt.reasons[reason] {
		return false
	}
	if r.opt.sourceTopic != "" {
		if src, _ := headerValue(m.Headers, sink.HeaderSourceTopic); src != r.opt.sourceTopic {
			return false
		}
	}
	if !r.opt.since.IsZero() || !r.opt.until.IsZero() {
		v, _ := headerValue(m.Headers, sink.HeaderFailedAt)
		at, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return false // no usable time: cannot be inside the window
		}
		if (!r.opt.since.IsZero() && at.Before(r.opt.since)) || (!r.opt.until.IsZero() && !at.Before(r.opt.until)) {
			return false
		}
	}
	return true
}

func (r *replayer) handle(ctx context.Context, m kafka.Message) error {
	reason, _ := headerValue(m.Headers, sink.HeaderReason)
	if reason == ReasonPreflightCheck {
		r.st.skippedMarker++
		return nil
	}
	if !r.selected(m) {
		r.st.skippedFilter++
		return nil
	}
	r.st.matched++
	src, _ := headerValue(m.Headers, sink.HeaderSourceTopic)
	errText, _ := headerValue(m.Headers, sink.HeaderError)
	target := r.opt.to
	if target == "" {
		target = src
	}
	pos := fmt.Sprintf("%s/%d/%d", r.opt.dlq, m.Partition, m.Offset)
	if target == "" || target == r.opt.dlq {
		r.st.skippedNoTarget++
		fmt.Fprintf(r.out, "skip    %s  reason=%s  no usable target topic (dlq.source.topic %q; use --to)\n", pos, reason, src)
		return nil
	}
	nparts, err := r.partitions(ctx, target)
	if err != nil {
		if !r.opt.dryRun {
			return err
		}
		r.st.skippedNoTarget++
		fmt.Fprintf(r.out, "would fail %s  reason=%s  -> %s: %v\n", pos, reason, target, err)
		return nil
	}
	partition := -1
	if r.opt.to == "" {
		// Back to the partition it came from, next to the records it was consumed with.
		if sp, err := strconv.Atoi(headerOr(m.Headers, sink.HeaderSourcePartition)); err == nil && sp >= 0 && sp < nparts {
			partition = sp
		}
	}
	if partition < 0 {
		ids := make([]int, nparts)
		for i := range ids {
			ids[i] = i
		}
		partition = (&kafka.Hash{}).Balance(kafka.Message{Key: m.Key}, ids...)
	}
	count := 1
	if prev, ok := headerValue(m.Headers, HeaderReplayCount); ok {
		if n, err := strconv.Atoi(prev); err == nil && n >= 0 {
			count = n + 1
		}
	}
	verb := "replay"
	if r.opt.dryRun {
		verb = "would replay"
	}
	if r.opt.verbose {
		fmt.Fprintf(r.out, "%s %s  reason=%s  -> %s[%d]  replay.count=%d  error=%q\n", verb, pos, reason, target, partition, count, truncateText(errText, 200))
	}
	r.st.byReason[reason]++
	r.st.byTarget[target]++
	if r.opt.dryRun {
		r.st.replayed++ // counted as "would replay"
		return nil
	}
	headers := make([]kafka.Header, 0, len(m.Headers)+3)
	for _, h := range m.Headers {
		if !strings.HasPrefix(h.Key, "dlq.") {
			headers = append(headers, h)
		}
	}
	headers = append(headers,
		kafka.Header{Key: HeaderReplayCount, Value: []byte(strconv.Itoa(count))},
		kafka.Header{Key: HeaderReplayAt, Value: []byte(r.now.Format(time.RFC3339Nano))},
		kafka.Header{Key: HeaderReplayFrom, Value: []byte(pos)},
	)
	rec := kafka.Record{Time: time.Now(), Value: kafka.NewBytes(m.Value), Headers: headers}
	if m.Key != nil {
		rec.Key = kafka.NewBytes(m.Key)
	}
	k := tpKey{target, partition}
	r.pending[k] = append(r.pending[k], rec)
	r.npend++
	if r.npend >= 500 {
		return r.flush(ctx)
	}
	return nil
}

func headerOr(hs []kafka.Header, key string) string {
	v, _ := headerValue(hs, key)
	return v
}

// flush produces the pending records, per target partition in DLQ order, with acks=all.
func (r *replayer) flush(ctx context.Context) error {
	keys := make([]tpKey, 0, len(r.pending))
	for k := range r.pending {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b tpKey) int {
		if c := strings.Compare(a.topic, b.topic); c != 0 {
			return c
		}
		return a.partition - b.partition
	})
	for _, k := range keys {
		recs := r.pending[k]
		res, err := r.client.Produce(ctx, &kafka.ProduceRequest{
			Topic: k.topic, Partition: k.partition, RequiredAcks: kafka.RequireAll, Records: kafka.NewRecordReader(recs...),
		})
		if err == nil && res.Error != nil {
			err = res.Error
		}
		if err == nil {
			for _, e := range res.RecordErrors {
				err = e
				break
			}
		}
		if err != nil {
			return fmt.Errorf("produce %d record(s) to %s partition %d: %w", len(recs), k.topic, k.partition, err)
		}
		r.st.replayed += len(recs)
		delete(r.pending, k)
		r.npend -= len(recs)
	}
	return nil
}

// partitions returns the partition count of topic (cached), or an error if it does not exist.
func (r *replayer) partitions(ctx context.Context, topic string) (int, error) {
	if n, ok := r.parts[topic]; ok {
		return n, nil
	}
	md, err := r.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, fmt.Errorf("metadata of %s: %w", topic, err)
	}
	for _, t := range md.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			return 0, fmt.Errorf("topic %s: %w", topic, t.Error)
		}
		if len(t.Partitions) == 0 {
			return 0, fmt.Errorf("topic %s has no partitions", topic)
		}
		r.parts[topic] = len(t.Partitions)
		return len(t.Partitions), nil
	}
	return 0, fmt.Errorf("topic %s: %w", topic, kafka.UnknownTopicOrPartition)
}

func printReplaySummary(w io.Writer, opt replayOptions, st *replayStats, start time.Time) {
	if st == nil {
		return
	}
	mode := "replay"
	verb := "replayed"
	if opt.dryRun {
		mode, verb = "dry run (nothing written)", "would replay"
	}
	fmt.Fprintf(w, "\nreplay summary: %s, DLQ %s, %d records read (up to the end offsets at start)\n", mode, opt.dlq, st.read)
	fmt.Fprintf(w, "  matched               %d\n", st.matched)
	fmt.Fprintf(w, "  %-21s %d", verb, st.replayed)
	if len(st.byTarget) > 0 {
		fmt.Fprintf(w, "  (%s; %s)", kvList(st.byTarget), kvList(st.byReason))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  skipped by filter     %d\n", st.skippedFilter)
	fmt.Fprintf(w, "  skipped preflight     %d (preflight_check markers)\n", st.skippedMarker)
	if st.skippedNoTarget > 0 {
		fmt.Fprintf(w, "  skipped, no target    %d (no dlq.source.topic, or the target topic does not exist; see --to)\n", st.skippedNoTarget)
	}
	if !opt.dryRun && st.replayed > 0 {
		fmt.Fprintf(w, "  next run: add --since %s to leave out what this run replayed\n", start.Format(time.RFC3339Nano))
	}
}

func kvList(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
