// Command brazesim runs the local Braze REST API simulator (package brazesim).
//
//	go run ./cmd/brazesim -addr 127.0.0.1:4610 -track-limit 3000 -track-window 3s
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/braze-ingestor/braze-ingestor/brazesim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := brazesim.RunCLI(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "brazesim:", err)
		os.Exit(2)
	}
}
