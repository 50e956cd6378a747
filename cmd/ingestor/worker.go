package main

import (
	"context"
	"log/slog"

	"github.com/braze-ingestor/braze-ingestor/pipeline"
	"github.com/braze-ingestor/braze-ingestor/telemetry"
	"github.com/braze-ingestor/braze-ingestor/worker"
)

// The worker's configuration and assembly live in package worker; these names keep the
// subcommands and tests of this package short.
type (
	Config      = worker.Config
	ConfigError = worker.ConfigError
)

// LoadConfig reads and validates the worker's environment (worker.LoadConfig).
func LoadConfig() (*Config, error) { return worker.LoadConfig() }

var (
	kafkaSecurity       = worker.KafkaSecurity
	kafkaDialer         = worker.KafkaDialer
	kafkaTransport      = worker.KafkaTransport
	trimList            = worker.TrimList
	cleanEnvconfigError = worker.EnvconfigProblem
	newLogger           = worker.NewLogger
	httpHandler         = worker.Handler
)

// workerHooks lets `ingestor dev` and tests see inside a running worker.
type workerHooks struct {
	started   func(p *pipeline.Pipeline, httpAddr string)
	telemetry func(*telemetry.Options) // adds test exporters
}

// runWorker runs the worker (worker.Run) with this binary's version.
func runWorker(ctx context.Context, cfg *Config, log *slog.Logger, hooks *workerHooks) error {
	o := worker.Options{Version: version}
	if hooks != nil {
		o.Started, o.Telemetry = hooks.started, hooks.telemetry
	}
	return worker.Run(ctx, cfg, log, o)
}
