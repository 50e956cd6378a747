// Command ingestor reads user events, attributes and purchases from Kafka and delivers them to
// Braze's /users/track endpoint. See README.md. The worker itself is package worker; this
// command reads the environment and flags and calls it.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/braze-ingestor/braze-ingestor/worker"
)

// version is stamped at build time: -ldflags "-X main.version=1.2.3".
var version = "dev"

const usage = `ingestor: Kafka to Braze /users/track, at-least-once, per-user order.

Usage:
  ingestor [run]        run the worker (configuration from the environment; see README)
  ingestor check        preflight: config, brokers, topics, DLQ writable, Braze key (exit 1 on failure)
  ingestor replay ...   move dead letters back to their source topic (ingestor replay -h)
  ingestor dev [flags]  the whole pipeline on embedded defaults (in-process Kafka and Braze)
  ingestor brazesim     run the Braze REST simulator
  ingestor version      print the version
`

func main() {
	worker.SetGCPercent()
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
}

// Main runs a subcommand and returns the process exit status: 0 ok, 1 failure, 2 bad
// configuration or usage.
func Main(args []string, stdout, stderr io.Writer) int {
	sub := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	switch sub {
	case "run":
		return cmdRun(ctx, stderr)
	case "dev":
		return cmdDev(ctx, args, stdout, stderr)
	case "check":
		return cmdCheck(ctx, args, stdout, stderr)
	case "replay":
		return cmdReplay(ctx, args, stdout, stderr)
	case "brazesim":
		return cmdBrazesim(ctx, args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "ingestor", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "ingestor: unknown command %q\n\n%s", sub, usage)
		return 2
	}
}

func cmdRun(ctx context.Context, stderr io.Writer) int {
	cfg, err := LoadConfig()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	log := worker.NewLogger(stderr, cfg.LogLevel)
	if err := worker.Run(ctx, cfg, log, worker.Options{Version: version}); err != nil {
		log.Error("worker failed", "error", err)
		return 1
	}
	return 0
}
