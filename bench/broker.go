// Package bench is the benchmark harness (BENCHMARKS.md): it loads synthetic records into a
// 12-partition topic, runs the real ingestor binary (and, for comparison, a plain kafka-go
// consumer group and the Benthos peers) against counting Braze endpoints, and reports
// throughput, request packing, CPU, peak RSS and produce-to-acknowledged latency.
//
// Every contender runs as a separate child process, and so does the broker (kfake), so each
// one's CPU seconds and peak RSS come from its own rusage. See BENCHMARKS.md.
package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

// BrokerOptions configures the in-memory broker child.
type BrokerOptions struct {
	Addr       string   // host:port to listen on (loopback)
	Partitions int      // partitions of each source topic
	Topics     []string // source topics (Partitions each)
	DLQTopics  []string // dead-letter topics (3 partitions each)
}

// RunBroker runs kfake until stdin closes or a signal arrives. It prints "ready <addr>" on
// stdout once it listens.
func RunBroker(o BrokerOptions, stdout io.Writer) error {
	_, portStr, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return err
	}
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(port), kfake.AllowAutoTopicCreation()}
	if len(o.Topics) > 0 {
		opts = append(opts, kfake.SeedTopics(int32(o.Partitions), o.Topics...))
	}
	if len(o.DLQTopics) > 0 {
		opts = append(opts, kfake.SeedTopics(3, o.DLQTopics...))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("kfake: %w", err)
	}
	defer c.Close()
	fmt.Fprintf(stdout, "ready %s\n", c.ListenAddrs()[0])
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		// The parent holds our stdin; when it dies we go too. A "gc" line asks for a
		// collection now, between phases, answered by "gc done": the broker holds the whole
		// preloaded topic (~2 GB for 2M records), so a collection marks gigabytes, and one
		// left to the runtime's pacing landed in a random phase about every other phase,
		// taking up to a second of CPU from whichever contender was running. Collected just
		// before a phase, the heap does not reach its next goal during it.
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if sc.Text() == "gc" {
				runtime.GC()
				fmt.Fprintln(stdout, "gc done")
			}
		}
		stop()
	}()
	<-ctx.Done()
	return nil
}
