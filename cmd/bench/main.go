// Command bench is the benchmark harness (see BENCHMARKS.md).
//
//	go run ./cmd/bench [flags]             full run: load, contenders, latency
//	go run ./cmd/bench broker [flags]      the kfake broker child
//	go run ./cmd/bench rawconsume [flags]  the plain kafka-go consumer group child
//	go run ./cmd/bench inproc [flags]      the pipeline in-process with pprof (profiling child)
//	go run ./cmd/bench economy [flags]     request economy against the simulator's burst window (in-process workers)
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/braze-ingestor/braze-ingestor/bench"
)

func main() {
	args := os.Args[1:]
	sub := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	var err error
	switch sub {
	case "run":
		err = run(args)
	case "broker":
		fs := flag.NewFlagSet("broker", flag.ExitOnError)
		addr := fs.String("addr", "127.0.0.1:19192", "listen address")
		parts := fs.Int("partitions", 12, "partitions of each source topic")
		topics := fs.String("topics", "bench-src", "source topics, comma-separated")
		dlqs := fs.String("dlq-topics", "bench-dlq", "dead-letter topics (3 partitions), comma-separated")
		_ = fs.Parse(args)
		err = bench.RunBroker(bench.BrokerOptions{Addr: *addr, Partitions: *parts, Topics: split(*topics), DLQTopics: split(*dlqs)}, os.Stdout)
	case "rawconsume":
		fs := flag.NewFlagSet("rawconsume", flag.ExitOnError)
		brokers := fs.String("brokers", "127.0.0.1:19192", "brokers")
		topic := fs.String("topic", "bench-src", "topic")
		group := fs.String("group", "bench-raw", "consumer group")
		expect := fs.Int64("expect", 0, "messages expected")
		_ = fs.Parse(args)
		err = bench.RunRawConsume(bench.RawConsumeOptions{Brokers: split(*brokers), Topic: *topic, Group: *group, Expect: *expect}, os.Stdout)
	case "inproc":
		fs := flag.NewFlagSet("inproc", flag.ExitOnError)
		var o bench.InprocOptions
		brokers := fs.String("brokers", "127.0.0.1:19192", "brokers")
		fs.StringVar(&o.Topic, "topic", "bench-src", "source topic")
		fs.StringVar(&o.DLQTopic, "dlq-topic", "bench-dlq", "dead-letter topic")
		fs.StringVar(&o.Group, "group", "bench-inproc", "consumer group")
		fs.StringVar(&o.Endpoint, "endpoint", "", "Braze REST endpoint")
		fs.StringVar(&o.APIKey, "api-key", "dev-key", "Braze API key")
		fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile")
		fs.StringVar(&o.MemProfile, "memprofile", "", "write an allocation profile at exit")
		fs.IntVar(&o.MemRate, "memprofilerate", 0, "runtime.MemProfileRate (0 = default)")
		fs.IntVar(&o.WriteBuffer, "write-buffer", 0, "HTTP transport WriteBufferSize for the Braze client (0 = sink.NewClient's transport)")
		_ = fs.Parse(args)
		o.Brokers = split(*brokers)
		err = bench.RunInproc(o, os.Stderr)
	case "economy":
		fs := flag.NewFlagSet("economy", flag.ExitOnError)
		var o bench.EconomyOptions
		brokers := fs.String("brokers", "127.0.0.1:19092", "Kafka brokers (topics get a per-run name)")
		fs.IntVar(&o.WindowLimit, "window", 300, "requests per 3 s the simulator allows (Braze: 3000; 300 = a 7,500 records/s ceiling)")
		fs.Int64Var(&o.Records, "records", 100_000, "backlog of the ceiling phases")
		fs.IntVar(&o.Users, "users", 5000, "distinct users")
		fs.IntVar(&o.Partitions, "partitions", 12, "partitions of each topic")
		fs.DurationVar(&o.PacedFor, "paced-for", 15*time.Second, "duration of each paced load")
		fs.Uint64Var(&o.Seed, "seed", 1, "generator seed")
		fs.StringVar(&o.Benthos, "benthos", "", "Benthos peer binary to compare on (a) and (b) (built by the full run into .cache/peers; empty: worker only)")
		fs.StringVar(&o.OutDir, "out", ".cache/bench", "logs and the peer's configuration")
		fs.StringVar(&o.Only, "only", "", "run only the phases whose name contains this (e.g. skew, paced, replicas)")
		_ = fs.Parse(args)
		o.Brokers = split(*brokers)
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		err = bench.RunEconomy(ctx, o, os.Stdout)
		stop()
	default:
		err = fmt.Errorf("unknown command %q", sub)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	var o bench.Options
	fs.Int64Var(&o.Records, "records", 200_000, "records to load for the throughput phases")
	fs.IntVar(&o.Users, "users", 5000, "distinct users")
	seed := fs.Uint64("seed", 1, "generator seed")
	fs.IntVar(&o.Partitions, "partitions", 12, "partitions of the source topic")
	brokers := fs.String("brokers", "", "use these Kafka brokers (e.g. 127.0.0.1:19092) instead of the kfake child; topics get a per-run suffix")
	fs.StringVar(&o.BrokerAddr, "broker-addr", "127.0.0.1:19192", "listen address of the kfake broker child")
	contenders := fs.String("contenders", strings.Join(bench.DefaultContenders, ","), "throughput phases in order (raw, worker, worker-validate, worker-inproc, benthos, benthos-raw; empty: none)")
	fs.IntVar(&o.Repeat, "repeat", 1, "rounds of all phases (order rotates; the bar is checked on medians)")
	fs.Float64Var(&o.LatencyRate, "latency-rate", 37_500, "offered records/s of the latency phase (0: skip)")
	fs.DurationVar(&o.LatencyDuration, "latency-duration", 20*time.Second, "duration of the paced produce")
	fs.DurationVar(&o.LatencyWarmup, "latency-warmup", 2*time.Second, "records produced in the first part of the latency phase are also reported apart")
	fs.DurationVar(&o.PhaseTimeout, "phase-timeout", 3*time.Minute, "bound of one phase")
	fs.StringVar(&o.OutDir, "out", ".cache/bench", "logs, profiles, results and built binaries")
	fs.StringVar(&o.RepoDir, "repo", ".", "repository to build cmd/ingestor from")
	fs.StringVar(&o.IngestorBin, "ingestor", "", "prebuilt ingestor binary (default: build the working tree)")
	fs.StringVar(&o.BenthosBin, "benthos", "", "prebuilt Benthos binary (default: build "+bench.BenthosVersion+" into .cache/peers)")
	fs.StringVar(&o.PeersDir, "peers", "/work/shared/peers", "directory of the Benthos peer configs")
	fs.StringVar(&bench.Compression, "compression", "none", "producer batch compression: none, snappy, lz4, zstd, gzip")
	workerEnv := fs.String("worker-env", "", "extra worker environment, comma-separated KEY=VALUE")
	cpuProfile := fs.String("cpuprofile", "", "write the harness's own CPU profile (loader, endpoints, monitor) to this file")
	_ = fs.Parse(args)
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	o.Seed = *seed
	o.Brokers = split(*brokers)
	o.Contenders = split(*contenders)
	o.WorkerEnv = split(*workerEnv)
	for _, c := range o.Contenders {
		if _, ok := bench.Contenders[c]; !ok {
			return fmt.Errorf("unknown contender %q", c)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	o.Self = self
	o.Log = os.Stdout
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	results, err := bench.Run(ctx, o)
	if err != nil {
		return err
	}
	fmt.Println("\n== results ==")
	for _, r := range results {
		fmt.Printf("round %d: %s\n", r.Round, r.Summary())
	}
	bench.PrintBar(os.Stdout, results)
	return nil
}

func split(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
