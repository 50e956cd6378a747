package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/braze-ingestor/braze-ingestor/dlq"
)

const replayUsage = `ingestor replay [flags]: move dead letters back to a source topic.

Reads every partition of the DLQ topic from its beginning up to the end offsets observed at
start (so it terminates while the worker keeps writing), selects records by reason, source
topic, dlq.failed_at and dlq.replay.count, and republishes each selected record with
acks=all, in produce requests within the target topic's max.message.bytes: key and value as
they are (an envelope is valid worker input), the source's own headers (trace context
included) without the dlq.* ones, plus dlq.replay.count (previous + 1), dlq.replay.at and
dlq.replay.from (dlq-topic/partition/offset). A record that fails again is dead-lettered
with these marks, so a second failure is visible. Records go back to the partition they came
from when the target is their source topic; with --to, the key decides the partition.
Always skipped: preflight_check markers written by "ingestor check"; tombstone and
dlq_too_large dead letters (they hold no record: the source coordinates say where it is);
and a dead letter that was replayed before and failed again (its newer copy, which names it
in dlq.replay.from, is replayed instead), so repeated runs do not multiply records.
The format is described in docs/dlq.md.

Configuration: KAFKA_BROKERS and the KAFKA_TLS_* / KAFKA_SASL_* settings from the
environment, as for "ingestor run" (Braze settings are not needed); KAFKA_DLQ_TOPIC is
the default of --dlq.

Replaying twice: replay keeps no state and commits no offsets. A record replayed and
delivered is replayed again by the next run (harmless for attribute updates; it duplicates
events and purchases): pass --since with the start time the previous run printed. Records
dead-lettered again after being replayed carry a new dlq.failed_at, so they are selected,
and the ones replayed before are not. --max-replays N leaves out records already replayed
N times. Use --dry-run first.

Exit status: 0 done, 1 a Kafka error or records the target refused as too large (the
summary says how far it got), 2 bad flags or configuration.

Flags:
`

func cmdReplay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, replayUsage); fs.PrintDefaults() }
	dlqTopic := fs.String("dlq", "", "DLQ topic to read (default: KAFKA_DLQ_TOPIC)")
	reasons := fs.String("reason", "", "comma-separated dlq.reason values to replay, e.g. braze_rejected,retries_exhausted (required unless --all)")
	all := fs.Bool("all", false, "replay every reason")
	sourceTopic := fs.String("source-topic", "", "only records whose dlq.source.topic is this")
	since := fs.String("since", "", "only records with dlq.failed_at at or after this RFC 3339 time")
	until := fs.String("until", "", "only records with dlq.failed_at before this RFC 3339 time")
	to := fs.String("to", "", "topic to publish to (default: each record's dlq.source.topic)")
	maxReplays := fs.Int("max-replays", 0, "leave out records already replayed N times or more (dlq.replay.count >= N; 0: no limit)")
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
	opt := dlq.ReplayOptions{SourceTopic: *sourceTopic, To: strings.TrimSpace(*to), DryRun: *dryRun, Limit: *limit,
		MaxReplays: *maxReplays, Verbose: *verbose || *dryRun}
	switch {
	case *all && *reasons != "":
		return usageErr("--reason and --all exclude each other")
	case !*all && *reasons == "":
		return usageErr("say which dead letters to replay: --reason a,b (e.g. braze_rejected) or --all")
	case !*all:
		opt.Reasons = map[dlq.Reason]bool{}
		for _, r := range strings.Split(*reasons, ",") {
			if r = strings.TrimSpace(r); r != "" {
				opt.Reasons[dlq.Reason(r)] = true
			}
		}
		if len(opt.Reasons) == 0 {
			return usageErr("--reason names no reason")
		}
		if opt.Reasons[dlq.ReasonPreflightCheck] {
			return usageErr("preflight_check records are markers written by ingestor check, not dead letters")
		}
	}
	if *limit < 0 {
		return usageErr("--limit must not be negative")
	}
	if *maxReplays < 0 {
		return usageErr("--max-replays must not be negative")
	}
	for _, tf := range []struct {
		name, v string
		dst     *time.Time
	}{{"--since", *since, &opt.Since}, {"--until", *until, &opt.Until}} {
		if tf.v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, tf.v)
		if err != nil {
			return usageErr("%s %q: want an RFC 3339 time such as 2026-01-02T15:04:05Z", tf.name, tf.v)
		}
		*tf.dst = t
	}
	if !opt.Since.IsZero() && !opt.Until.IsZero() && !opt.Since.Before(opt.Until) {
		return usageErr("--since must be before --until")
	}

	cfg, err := loadKafkaEnv()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	opt.DLQ = *dlqTopic
	if opt.DLQ == "" {
		opt.DLQ = cfg.KafkaDLQTopic
	}
	if opt.DLQ == "" {
		return usageErr("no DLQ topic: set KAFKA_DLQ_TOPIC or pass --dlq")
	}
	if opt.To == opt.DLQ {
		return usageErr("--to %s is the DLQ topic itself", opt.To)
	}
	tlsCfg, mech, err := kafkaSecurity(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "ingestor replay:", err)
		return 2
	}
	conn := dlq.Conn{Brokers: cfg.KafkaBrokers, Transport: kafkaTransport(tlsCfg, mech), Dialer: kafkaDialer(tlsCfg, mech)}

	start := time.Now().UTC()
	st, err := dlq.Replay(ctx, conn, opt, stdout)
	dlq.PrintSummary(stdout, opt, st, start)
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
