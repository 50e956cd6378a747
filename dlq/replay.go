package dlq

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// ReplayOptions select the dead letters Replay moves back and where to.
type ReplayOptions struct {
	DLQ         string
	Reasons     map[Reason]bool // nil: every replayable reason
	SourceTopic string          // only records whose dlq.source.topic is this ("" = any)
	Since       time.Time       // only records with dlq.failed_at at or after this (zero = any)
	Until       time.Time       // only records with dlq.failed_at before this (zero = any)
	To          string          // target topic ("" = each record's dlq.source.topic)
	// MaxReplays leaves out records already replayed this many times or more
	// (dlq.replay.count >= MaxReplays); 0 = no limit.
	MaxReplays int
	DryRun     bool
	Limit      int // replay at most this many records (0 = no limit)
	Verbose    bool
	// RequestBytes bounds the records of one produce request; 0 = the target topic's
	// max.message.bytes when it can be read, capped at DefaultRequestBytes.
	RequestBytes int
}

// Conn is how Replay reaches the brokers.
type Conn struct {
	Brokers   []string
	Transport *kafka.Transport // nil = plaintext
	Dialer    *kafka.Dialer    // nil = kafka.DefaultDialer
}

// ReplayStats count what a replay run did.
type ReplayStats struct {
	Read, Matched, Replayed                     int
	SkippedFilter, SkippedMarker, SkippedTarget int
	// SkippedReplayed counts dead letters left out because a later record in the DLQ was
	// replayed from them and failed again: that copy stands for them.
	SkippedReplayed int
	// SkippedMax counts dead letters left out by MaxReplays.
	SkippedMax int
	// NotReplayable counts tombstones and dlq_too_large references: no record to send back.
	NotReplayable int
	// TooLarge counts records the target topic refused as too large even alone.
	TooLarge int
	// Requests counts produce requests; SentAlone the records sent again one at a time
	// after the target refused their batch as too large (the budget was too generous).
	Requests, SentAlone int
	ByTarget            map[string]int
	ByReason            map[string]int
}

type tpKey struct {
	topic     string
	partition int
}

// replayer holds the state of one replay run.
type replayer struct {
	opt        ReplayOptions
	conn       Conn
	client     *kafka.Client
	out        io.Writer
	st         *ReplayStats
	parts      map[string]int // partition count of each target topic
	limits     map[string]int // request byte budget of each target topic
	superseded map[string]bool
	pending    map[tpKey]*pendingBatch
	npend      int
	now        time.Time
}

type pendingBatch struct {
	recs  []replayed
	bytes int
}

// replayed is one record waiting to be produced. It keeps plain bytes, not kafka.Bytes
// readers, so that a batch can be sent again one record at a time.
type replayed struct {
	key, value []byte
	headers    []kafka.Header
}

func (p replayed) size() int {
	n := len(p.key) + len(p.value) + 32
	for _, h := range p.headers {
		n += len(h.Key) + len(h.Value) + 8
	}
	return n
}

func (p replayed) record() kafka.Record {
	rec := kafka.Record{Time: time.Now(), Value: kafka.NewBytes(p.value), Headers: p.headers}
	if p.key != nil {
		rec.Key = kafka.NewBytes(p.key)
	}
	return rec
}

// Replay moves the selected dead letters of opt.DLQ back to a source topic (docs/dlq.md
// "Replay"). It reads every DLQ partition from its beginning up to the end offsets seen at
// start, so it terminates while the worker keeps writing.
func Replay(ctx context.Context, conn Conn, opt ReplayOptions, out io.Writer) (*ReplayStats, error) {
	st := &ReplayStats{ByTarget: map[string]int{}, ByReason: map[string]int{}}
	client := &kafka.Client{Addr: kafka.TCP(conn.Brokers...), Transport: conn.Transport, Timeout: 30 * time.Second}
	if conn.Transport == nil {
		client.Transport = nil
	}
	r := &replayer{opt: opt, conn: conn, client: client, out: out, st: st, parts: map[string]int{}, limits: map[string]int{},
		superseded: map[string]bool{}, pending: map[tpKey]*pendingBatch{}, now: time.Now().UTC()}
	ranges, err := r.dlqRanges(ctx)
	if err != nil {
		return st, err
	}
	// First pass: which dead letters were replayed and failed again (their copy names them in
	// dlq.replay.from); only the newest copy of a record is replayed.
	for _, p := range ranges {
		if _, err := r.readPartition(ctx, p, r.noteCopy); err != nil {
			return st, err
		}
	}
	for _, p := range ranges {
		done, err := r.readPartition(ctx, p, r.handle)
		if err != nil {
			return st, err
		}
		if done {
			break
		}
	}
	if err := r.flushAll(ctx); err != nil {
		return st, err
	}
	if st.TooLarge > 0 {
		return st, fmt.Errorf("%d record(s) too large for their target topic even alone", st.TooLarge)
	}
	return st, nil
}

type partRange struct {
	partition   int
	first, last int64
}

// dlqRanges lists [first, last) of every non-empty DLQ partition.
func (r *replayer) dlqRanges(ctx context.Context) ([]partRange, error) {
	n, err := r.partitions(ctx, r.opt.DLQ)
	if err != nil {
		return nil, err
	}
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for p := 0; p < n; p++ {
		req.Topics[r.opt.DLQ] = append(req.Topics[r.opt.DLQ], kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	offs, err := r.client.ListOffsets(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("DLQ %s: list offsets: %w", r.opt.DLQ, err)
	}
	po := offs.Topics[r.opt.DLQ]
	sort.Slice(po, func(i, j int) bool { return po[i].Partition < po[j].Partition })
	var out []partRange
	for _, p := range po {
		if p.Error != nil {
			return nil, fmt.Errorf("DLQ %s partition %d: list offsets: %w", r.opt.DLQ, p.Partition, p.Error)
		}
		if p.FirstOffset < p.LastOffset {
			out = append(out, partRange{p.Partition, p.FirstOffset, p.LastOffset})
		}
	}
	return out, nil
}

// readPartition reads [first, last) of one DLQ partition into fn. done reports that
// opt.Limit is reached.
func (r *replayer) readPartition(ctx context.Context, p partRange, fn func(context.Context, kafka.Message) error) (done bool, err error) {
	dialer := r.conn.Dialer
	if dialer == nil {
		dialer = kafka.DefaultDialer
	}
	rd := kafka.NewReader(kafka.ReaderConfig{
		Brokers: r.conn.Brokers, Topic: r.opt.DLQ, Partition: p.partition, Dialer: dialer,
		MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 250 * time.Millisecond,
	})
	defer rd.Close()
	if err := rd.SetOffset(p.first); err != nil {
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
			return false, fmt.Errorf("DLQ %s partition %d: read at offset %d (end %d): %w", r.opt.DLQ, p.partition, rd.Offset(), p.last, err)
		}
		if m.Offset >= p.last {
			return false, nil
		}
		if err := fn(ctx, m); err != nil {
			return false, err
		}
		if r.opt.Limit > 0 && r.st.Matched >= r.opt.Limit {
			return true, nil
		}
		if m.Offset+1 >= p.last {
			return false, nil
		}
	}
}

// noteCopy records the DLQ position a replayed-and-failed-again copy names.
func (r *replayer) noteCopy(_ context.Context, m kafka.Message) error {
	if from, ok := Header(m.Headers, HeaderReplayFrom); ok && strings.HasPrefix(from, r.opt.DLQ+"/") {
		r.superseded[from] = true
	}
	return nil
}

// selected applies the filters to one DLQ record.
func (r *replayer) selected(d *Record) bool {
	if r.opt.Reasons != nil && !r.opt.Reasons[d.Reason] {
		return false
	}
	if r.opt.SourceTopic != "" && d.SourceTopic != r.opt.SourceTopic {
		return false
	}
	if !r.opt.Since.IsZero() || !r.opt.Until.IsZero() {
		if d.FailedAt.IsZero() {
			return false // no usable time: cannot be inside the window
		}
		if (!r.opt.Since.IsZero() && d.FailedAt.Before(r.opt.Since)) || (!r.opt.Until.IsZero() && !d.FailedAt.Before(r.opt.Until)) {
			return false
		}
	}
	return true
}

// skip says why a DLQ record is not replayed ("" = replay it) and counts it.
func (r *replayer) skip(d *Record, pos string) string {
	switch {
	case d.Reason == ReasonPreflightCheck:
		r.st.SkippedMarker++
		return "marker"
	case !r.selected(d):
		r.st.SkippedFilter++
		return "filter"
	case !d.Reason.Replayable():
		r.st.NotReplayable++
		return fmt.Sprintf("not replayable (%s: the record is at %s/%d/%d)", d.Reason, d.SourceTopic, d.SourcePartition, d.SourceOffset)
	case r.superseded[pos]:
		r.st.SkippedReplayed++
		return "replayed before; a later copy in the DLQ stands for it"
	case r.opt.MaxReplays > 0 && d.ReplayCount >= r.opt.MaxReplays:
		r.st.SkippedMax++
		return fmt.Sprintf("replayed %d time(s) already (--max-replays %d)", d.ReplayCount, r.opt.MaxReplays)
	}
	return ""
}

func (r *replayer) handle(ctx context.Context, m kafka.Message) error {
	r.st.Read++
	d := Parse(m.Headers)
	pos := Position(r.opt.DLQ, m.Partition, m.Offset)
	if why := r.skip(&d, pos); why != "" {
		if r.opt.Verbose && why != "marker" && why != "filter" {
			fmt.Fprintf(r.out, "skip    %s  reason=%s  %s\n", pos, d.Reason, why)
		}
		return nil
	}
	r.st.Matched++
	target := r.opt.To
	if target == "" {
		target = d.SourceTopic
	}
	if target == "" || target == r.opt.DLQ {
		r.st.SkippedTarget++
		fmt.Fprintf(r.out, "skip    %s  reason=%s  no usable target topic (dlq.source.topic %q; use --to)\n", pos, d.Reason, d.SourceTopic)
		return nil
	}
	partition, err := r.targetPartition(ctx, target, &d, m.Key)
	if err != nil {
		if !r.opt.DryRun {
			return err
		}
		r.st.SkippedTarget++
		fmt.Fprintf(r.out, "would fail %s  reason=%s  -> %s: %v\n", pos, d.Reason, target, err)
		return nil
	}
	count := d.ReplayCount + 1
	verb := "replay"
	if r.opt.DryRun {
		verb = "would replay"
	}
	if r.opt.Verbose {
		fmt.Fprintf(r.out, "%s %s  reason=%s  -> %s[%d]  replay.count=%d  error=%q\n", verb, pos, d.Reason, target, partition, count, truncate(d.Error, 200))
	}
	r.st.ByReason[string(d.Reason)]++
	r.st.ByTarget[target]++
	if r.opt.DryRun {
		r.st.Replayed++ // counted as "would replay"
		return nil
	}
	return r.add(ctx, tpKey{target, partition}, replayRecord(m, count, r.now, pos))
}

// targetPartition is the record's source partition when the target is its source topic, else
// the partition its key hashes to.
func (r *replayer) targetPartition(ctx context.Context, target string, d *Record, key []byte) (int, error) {
	nparts, err := r.partitions(ctx, target)
	if err != nil {
		return 0, err
	}
	if r.opt.To == "" && d.SourcePartition >= 0 && d.SourcePartition < nparts {
		// Back to the partition it came from, next to the records it was consumed with.
		return d.SourcePartition, nil
	}
	ids := make([]int, nparts)
	for i := range ids {
		ids[i] = i
	}
	return (&kafka.Hash{}).Balance(kafka.Message{Key: key}, ids...), nil
}

// replayRecord is the record replay produces: the key and value as they are, the source's
// own headers without the dlq.* ones, and the replay marks.
func replayRecord(m kafka.Message, count int, now time.Time, pos string) replayed {
	headers := make([]kafka.Header, 0, len(m.Headers)+3)
	for _, h := range m.Headers {
		if !strings.HasPrefix(h.Key, Prefix) {
			headers = append(headers, h)
		}
	}
	headers = append(headers,
		kafka.Header{Key: HeaderReplayCount, Value: []byte(strconv.Itoa(count))},
		kafka.Header{Key: HeaderReplayAt, Value: []byte(now.Format(time.RFC3339Nano))},
		kafka.Header{Key: HeaderReplayFrom, Value: []byte(pos)},
	)
	return replayed{key: m.Key, value: m.Value, headers: headers}
}

// pendingLimit bounds what replay holds in memory before it flushes everything.
const pendingLimit = 16 << 20

// add queues rec for k, first flushing k when rec would take its batch over the target's
// request budget.
func (r *replayer) add(ctx context.Context, k tpKey, rec replayed) error {
	size := rec.size()
	budget, err := r.requestBytes(ctx, k.topic)
	if err != nil {
		return err
	}
	b := r.pending[k]
	if b == nil {
		b = &pendingBatch{}
		r.pending[k] = b
	}
	if len(b.recs) > 0 && b.bytes+size > budget {
		if err := r.flush(ctx, k); err != nil {
			return err
		}
	}
	b.recs = append(b.recs, rec)
	b.bytes += size
	r.npend += size
	if r.npend >= pendingLimit {
		return r.flushAll(ctx)
	}
	return nil
}

// flushAll produces every pending batch, per target partition in DLQ order.
func (r *replayer) flushAll(ctx context.Context) error {
	keys := make([]tpKey, 0, len(r.pending))
	for k, b := range r.pending {
		if len(b.recs) > 0 {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b tpKey) int {
		if c := strings.Compare(a.topic, b.topic); c != 0 {
			return c
		}
		return a.partition - b.partition
	})
	for _, k := range keys {
		if err := r.flush(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

// flush produces the pending records of k with acks=all. A lone record the topic refuses as
// too large is counted and left out; any other error ends the run.
func (r *replayer) flush(ctx context.Context, k tpKey) error {
	b := r.pending[k]
	recs := b.recs
	r.npend -= b.bytes
	b.recs, b.bytes = nil, 0
	err := r.produce(ctx, k, recs)
	switch {
	case err == nil:
		r.st.Replayed += len(recs)
		return nil
	case tooLarge(err) && len(recs) > 1:
		// The budget was too generous for this topic: send one record at a time.
		r.st.SentAlone += len(recs)
		for _, rec := range recs {
			if err := r.flushOne(ctx, k, rec); err != nil {
				return err
			}
		}
		return nil
	case tooLarge(err):
		r.st.TooLarge++
		fmt.Fprintf(r.out, "too large for %s[%d]: %v\n", k.topic, k.partition, err)
		return nil
	}
	return fmt.Errorf("produce %d record(s) to %s partition %d: %w", len(recs), k.topic, k.partition, err)
}

func (r *replayer) flushOne(ctx context.Context, k tpKey, rec replayed) error {
	r.pending[k].recs = []replayed{rec}
	return r.flush(ctx, k)
}

func (r *replayer) produce(ctx context.Context, k tpKey, recs []replayed) error {
	r.st.Requests++
	krecs := make([]kafka.Record, len(recs))
	for i := range recs {
		krecs[i] = recs[i].record()
	}
	res, err := r.client.Produce(ctx, &kafka.ProduceRequest{
		Topic: k.topic, Partition: k.partition, RequiredAcks: kafka.RequireAll, Records: kafka.NewRecordReader(krecs...),
	})
	if err == nil && res.Error != nil {
		err = res.Error
	}
	if err == nil {
		for _, e := range res.RecordErrors {
			return e
		}
	}
	return err
}

// requestBytes is the produce budget for topic: opt.RequestBytes, or the topic's
// max.message.bytes (less a batch header) capped at DefaultRequestBytes.
func (r *replayer) requestBytes(ctx context.Context, topic string) (int, error) {
	if r.opt.RequestBytes > 0 {
		return r.opt.RequestBytes, nil
	}
	if n, ok := r.limits[topic]; ok {
		return n, nil
	}
	n := DefaultRequestBytes
	res, err := r.client.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: []string{"max.message.bytes"}}}})
	if err == nil {
		for _, res := range res.Resources {
			for _, e := range res.ConfigEntries {
				if v, err := strconv.Atoi(e.ConfigValue); err == nil && e.ConfigName == "max.message.bytes" && v-batchHeader < n {
					n = max(v-batchHeader, 1)
				}
			}
		}
	}
	r.limits[topic] = n
	return n, nil
}

// batchHeader is the size of a record batch's header, which the broker counts against
// max.message.bytes.
const batchHeader = 61

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

// PrintSummary writes the end-of-run report of a replay that started at start.
func PrintSummary(w io.Writer, opt ReplayOptions, st *ReplayStats, start time.Time) {
	if st == nil {
		return
	}
	mode, verb := "replay", "replayed"
	if opt.DryRun {
		mode, verb = "dry run (nothing written)", "would replay"
	}
	fmt.Fprintf(w, "\nreplay summary: %s, DLQ %s, %d records read (up to the end offsets at start)\n", mode, opt.DLQ, st.Read)
	fmt.Fprintf(w, "  matched               %d\n", st.Matched)
	fmt.Fprintf(w, "  %-21s %d", verb, st.Replayed)
	if len(st.ByTarget) > 0 {
		fmt.Fprintf(w, "  (%s; %s)", kvList(st.ByTarget), kvList(st.ByReason))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  skipped by filter     %d\n", st.SkippedFilter)
	fmt.Fprintf(w, "  skipped preflight     %d (preflight_check markers)\n", st.SkippedMarker)
	fmt.Fprintf(w, "  skipped, replayed     %d (a later copy in the DLQ, replayed from it and failed again, stands for it)\n", st.SkippedReplayed)
	if opt.MaxReplays > 0 {
		fmt.Fprintf(w, "  skipped, max-replays  %d (dlq.replay.count >= %d)\n", st.SkippedMax, opt.MaxReplays)
	}
	if st.NotReplayable > 0 {
		fmt.Fprintf(w, "  not replayable        %d (tombstone or dlq_too_large: the record is at its dlq.source.* coordinates)\n", st.NotReplayable)
	}
	if st.SkippedTarget > 0 {
		fmt.Fprintf(w, "  skipped, no target    %d (no dlq.source.topic, or the target topic does not exist; see --to)\n", st.SkippedTarget)
	}
	if st.TooLarge > 0 {
		fmt.Fprintf(w, "  too large for target  %d (refused by the target topic even alone)\n", st.TooLarge)
	}
	if !opt.DryRun && st.Replayed > 0 {
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
