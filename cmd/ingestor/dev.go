package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/braze-ingestor/braze-ingestor/brazesim"
	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/pipeline"
	"github.com/braze-ingestor/braze-ingestor/synth"
	"github.com/braze-ingestor/braze-ingestor/worker"
)

// devEnv is the embedded environment of `ingestor dev` (and of the in-process tests): an
// in-process Kafka cluster and a Braze simulator on loopback.
type devEnv struct {
	Cluster *kfake.Cluster
	Brokers []string
	Sim     *brazesim.Server
	Topic   string
	DLQ     string
}

func startDevEnv(partitions int, simCfg brazesim.Config) (*devEnv, error) {
	const topic, dlq = "braze-events", "braze-dlq"
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(partitions), topic), kfake.SeedTopics(3, dlq))
	if err != nil {
		return nil, fmt.Errorf("in-process Kafka: %w", err)
	}
	sim, err := brazesim.NewServer(simCfg)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("start the Braze simulator: %w", err)
	}
	return &devEnv{Cluster: c, Brokers: c.ListenAddrs(), Sim: sim, Topic: topic, DLQ: dlq}, nil
}

func (e *devEnv) Close() {
	e.Sim.Close()
	e.Cluster.Close()
}

// config returns a worker configuration for the environment on the worker's defaults.
func (e *devEnv) config(group string) *Config {
	c := worker.Defaults()
	c.KafkaBrokers, c.KafkaTopics, c.KafkaGroupID, c.KafkaDLQTopic = e.Brokers, []string{e.Topic}, group, e.DLQ
	c.BrazeEndpoint, c.BrazeAPIKey = e.Sim.URL, "dev-key"
	c.LaneQueue = 1024
	c.HTTPAddr, c.LogLevel = "127.0.0.1:0", "warn"
	return &c
}

// produce writes n generated messages (0 = until ctx ends) at up to rate messages/s and
// reports the number of records (plus whole invalid messages) produced.
func produce(ctx context.Context, brokers []string, topic string, gen *synth.Generator, n, rate int, produced *atomic.Int64, onMsg func(synth.Message)) error {
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{}, BatchSize: 500,
		BatchTimeout: 5 * time.Millisecond, RequiredAcks: kafka.RequireAll}
	defer w.Close()
	return produceWith(ctx, w, gen, n, rate, produced, onMsg)
}

// produceTick is how often a paced producer writes: small enough that a low rate is seen as a
// steady trickle (not a burst every few seconds), large enough that a write is not per message
// at high rates.
const produceTick = 20 * time.Millisecond

// produceChunk is the number of messages written per tick at the given rate (0: unpaced, 500).
func produceChunk(rate int) int {
	if rate <= 0 {
		return 500
	}
	return min(500, max(1, rate*int(produceTick/time.Millisecond)/1000))
}

// produceWith is produce on a given writer (tests bring one with TLS/SASL).
func produceWith(ctx context.Context, w *kafka.Writer, gen *synth.Generator, n, rate int, produced *atomic.Int64, onMsg func(synth.Message)) error {
	chunk := produceChunk(rate)
	batch := make([]kafka.Message, 0, chunk)
	start := time.Now()
	sent := 0
	for n == 0 || sent < n {
		if ctx.Err() != nil {
			return nil
		}
		batch = batch[:0]
		for len(batch) < chunk && (n == 0 || sent+len(batch) < n) {
			m := gen.Next()
			if onMsg != nil {
				onMsg(m)
			}
			batch = append(batch, kafka.Message{Key: m.Key, Value: m.Value})
			if m.WholeInvalid {
				produced.Add(1)
			} else {
				produced.Add(int64(len(m.Records)))
			}
		}
		if err := w.WriteMessages(ctx, batch...); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("produce: %w", err)
		}
		sent += len(batch)
		if rate > 0 {
			// Pace to the offered rate.
			if ahead := time.Duration(float64(sent)/float64(rate)*float64(time.Second)) - time.Since(start); ahead > 0 {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(ahead):
				}
			}
		}
	}
	return nil
}

func cmdDev(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	records := fs.Int("records", 0, "stop after producing N messages and settling them (0: run until Ctrl-C)")
	rate := fs.Int("rate", 5000, "messages produced per second (0: as fast as possible)")
	partitions := fs.Int("partitions", 12, "partitions of the source topic")
	invalid := fs.Float64("invalid", 0.01, "share of records that break the input contract")
	reject := fs.Float64("reject", 0.01, "share of records the Braze simulator rejects")
	lifecycle := fs.Float64("lifecycle", 0.03, "share of messages that alias, identify, merge, change a subscription or delete a user (0: /users/track only)")
	logLevel := fs.String("log-level", "error", "worker log level (dead-letter reasons are in the summary and the DLQ)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	env, err := startDevEnv(*partitions, brazesim.DefaultConfig())
	if err != nil {
		fmt.Fprintln(stderr, "ingestor dev:", err)
		return 1
	}
	defer env.Close()
	cfg := env.config("ingestor-dev")
	cfg.LogLevel = *logLevel
	if *lifecycle > 0 {
		enableAllEndpoints(cfg)
	}
	fmt.Fprintf(stdout, "ingestor dev: Kafka (in-process) %v, topic %s (%d partitions), DLQ %s; Braze simulator %s\n",
		env.Brokers, env.Topic, *partitions, env.DLQ, env.Sim.URL)

	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	var produced atomic.Int64
	var byEndpoint endpointCounts
	var messages atomic.Int64
	producerDone := make(chan error, 1)
	go func() {
		gen := synth.New(synth.Options{InvalidShare: *invalid, RejectShare: *reject, LifecycleShare: *lifecycle, Seed: uint64(time.Now().UnixNano())})
		producerDone <- produce(runCtx, env.Brokers, env.Topic, gen, *records, *rate, &produced, func(m synth.Message) {
			messages.Add(1)
			byEndpoint.add(m)
		})
	}()

	started := make(chan *pipeline.Pipeline, 1)
	workerDone := make(chan error, 1)
	go func() {
		workerDone <- runWorker(runCtx, cfg, newLogger(stderr, cfg.LogLevel), &workerHooks{started: func(p *pipeline.Pipeline, addr string) {
			fmt.Fprintf(stdout, "worker: health and metrics on http://%s (/metrics, /livez, /readyz)\n", addr)
			started <- p
		}})
	}()
	var p *pipeline.Pipeline
	select {
	case p = <-started:
	case err := <-workerDone:
		fmt.Fprintln(stderr, "ingestor dev: worker:", err)
		return 1
	}

	t0 := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last pipeline.Snapshot
	producing := true
	var once sync.Once
	finish := func() { once.Do(stopRun) }
loop:
	for {
		select {
		case <-ctx.Done():
			finish()
			break loop
		case err := <-producerDone:
			producing = false
			if err != nil {
				fmt.Fprintln(stderr, "ingestor dev: producer:", err)
				finish()
				break loop
			}
		case <-tick.C:
			s := p.Stats().Snapshot()
			fmt.Fprintf(stdout, "%6.0fs  produced %8d  delivered %8d (%6.0f/s)  requests %6d  objects/request %5.1f  dead-lettered %5d  in flight %d\n",
				time.Since(t0).Seconds(), produced.Load(), s.RecordsDelivered, float64(s.RecordsDelivered-last.RecordsDelivered),
				s.Requests, perRequest(s), s.DeadLetteredAll, p.Stats().InFlightRecords.Load())
			last = s
			if !producing && *records > 0 && devSettled(s, produced.Load(), messages.Load(), p.Stats().InFlightRecords.Load()) {
				finish()
				break loop
			}
		}
	}
	if err := <-workerDone; err != nil {
		fmt.Fprintln(stderr, "ingestor dev: worker:", err)
		return 1
	}
	printSummary(stdout, p.Stats().Snapshot(), produced.Load(), time.Since(t0), env.Sim.Sim.Stats())
	printEndpoints(stdout, p.Stats().Snapshot(), &byEndpoint)
	return 0
}

// devSettled reports whether everything produced is delivered or dead-lettered: every record,
// or (when a message is dead-lettered whole, counting once for all its records) every message
// consumed and nothing in flight.
func devSettled(s pipeline.Snapshot, records, messages, inFlight int64) bool {
	done := s.RecordsDelivered + s.DeadLetteredAll
	return done >= records || (s.MessagesConsumed >= messages && inFlight == 0 && done >= s.RecordsConsumed)
}

func perRequest(s pipeline.Snapshot) float64 {
	if s.SuccessRequests == 0 {
		return 0
	}
	return float64(s.ObjectsSent) / float64(s.SuccessRequests)
}

func printSummary(w io.Writer, s pipeline.Snapshot, produced int64, d time.Duration, sim brazesim.Stats) {
	fmt.Fprintf(w, "\nsummary after %s\n", d.Round(time.Millisecond))
	fmt.Fprintf(w, "  records produced      %d\n", produced)
	fmt.Fprintf(w, "  records consumed      %d decoded from %d messages (unparsable messages count once, as dead letters)\n", s.RecordsConsumed, s.MessagesConsumed)
	fmt.Fprintf(w, "  delivered to Braze    %d\n", s.RecordsDelivered)
	fmt.Fprintf(w, "  dead-lettered         %d", s.DeadLetteredAll)
	for _, r := range dlq.Reasons {
		if n := s.DeadLettered[r]; n > 0 {
			fmt.Fprintf(w, "  %s=%d", r, n)
		}
	}
	fmt.Fprintf(w, "\n  Braze requests        %d (%s), %.1f objects per request\n", s.Requests, classList(s.RequestsByClass), perRequest(s))
	fmt.Fprintf(w, "  requests saved        %d (lane batches carried whole in another lane's request)\n", s.RequestsSaved)
	fmt.Fprintf(w, "  retries               %d\n", s.Retries)
	fmt.Fprintf(w, "  offset commits        %d\n", s.Commits)
	fmt.Fprintf(w, "  simulator             %d requests, %d data points billed\n", sim.Requests, sim.DataPoints)
}

func classList(m map[string]int64) string {
	out := ""
	for _, k := range []string{"delivered", "partial", "split", "halt", "retry"} {
		if m[k] > 0 {
			if out != "" {
				out += ", "
			}
			out += fmt.Sprintf("%s %d", k, m[k])
		}
	}
	return out
}

func cmdBrazesim(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if err := brazesim.RunCLI(ctx, args, stdout); err != nil {
		fmt.Fprintln(stderr, "ingestor brazesim:", err)
		return 1
	}
	return 0
}
