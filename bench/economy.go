package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/braze-ingestor/braze-ingestor/brazesim"
	"github.com/braze-ingestor/braze-ingestor/synth"
	"github.com/braze-ingestor/braze-ingestor/worker"
)

// EconomyOptions configures the request-economy phases (BENCHMARKS.md "Request economy"):
// workers in this process against the simulator enforcing a burst window of WindowLimit
// requests per 3 s; the worker's BRAZE_RATE_LIMIT is WindowLimit/3 per second and its burst
// WindowLimit, as the defaults are for Braze's 3,000 per 3 s.
type EconomyOptions struct {
	Brokers     []string
	WindowLimit int   // requests per 3 s the simulator allows (3000 = Braze's)
	Records     int64 // backlog size of phase (a)
	Users       int
	Partitions  int
	PacedFor    time.Duration
	Seed        uint64
	Only        string // run only the phases whose name contains this
	// Benthos is the peer binary (ensureBenthos); "" leaves the peer out. It runs the peer
	// configuration's input and batching (PeersDir/benthos-kafka-to-http.yaml: 75 messages or
	// 200 ms per partition) with the output pointed at /users/track under a local rate limit
	// of WindowLimit per 3 s (benthosEconomyYAML).
	Benthos string
	OutDir  string
}

// benthosEconomyYAML is the peer configuration (/work/shared/peers/benthos-kafka-to-http.yaml)
// with its output aimed at the simulator's /users/track, with the API key, under a local rate
// limit resource matching the simulator's burst window.
const benthosEconomyYAML = `http:
  enabled: false
rate_limit_resources:
  - label: braze
    local:
      count: ${WINDOW}
      interval: 3s
input:
  kafka_franz:
    seed_brokers: [ "${BROKERS}" ]
    topics: [ "${TOPIC}" ]
    consumer_group: "${GROUP}"
    start_from_oldest: true
    checkpoint_limit: 1024
    commit_period: 1s
    batching:
      count: 75
      period: 200ms
pipeline:
  threads: -1
  processors:
    - archive:
        format: json_array
    - mapping: 'root = {"events": this}'
output:
  http_client:
    url: "${SINK_URL}"
    verb: POST
    headers:
      Content-Type: application/json
      Authorization: Bearer dev-key
    rate_limit: braze
    max_in_flight: 64
    timeout: 10s
logger:
  level: WARN
`

// noBundles makes every message one record (synth reads a zero share as its default), so that
// the Benthos peer, which sends one object per message, carries the same objects.
const noBundles = 1e-9

// ceiling is records/s at full requests.
func (o EconomyOptions) ceiling() float64 { return float64(o.WindowLimit) / 3 * 75 }

// RunEconomy runs phases (a) backlog at the ceiling, uniform and skewed; the small skewed
// backlog; (b) paced loads at 10% and 50% of the ceiling; (c) three replicas sharing the limit.
func RunEconomy(ctx context.Context, o EconomyOptions, w io.Writer) error {
	run := time.Now().UTC().Format("150405")
	sink, err := startSink()
	if err != nil {
		return err
	}
	defer sink.Close()
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return err
	}
	hot := func(opts synth.Options) synth.Options {
		opts.HotUsers, opts.HotShare = max(1, opts.Users/100), 0.5
		return opts
	}
	fmt.Fprintf(w, "ceiling: %d requests per 3 s x 75 = %.0f records/s; one record per message; hot-user skew: half the messages from 1%% of the users\n", o.WindowLimit, o.ceiling())
	n := 0
	topic := func() string { n++; return fmt.Sprintf("econ-%s-%d", run, n) }
	contenders := []string{"worker"}
	if o.Benthos != "" {
		contenders = append(contenders, "benthos")
	}
	for _, ph := range []struct {
		name     string
		opts     synth.Options
		records  int64
		replicas int
		window   int
	}{
		{"(a) backlog, uniform users", synth.Options{Users: o.Users, Seed: o.Seed, BundleShare: noBundles}, o.Records, 1, o.WindowLimit},
		{"(a) backlog, hot-user skew", hot(synth.Options{Users: o.Users, Seed: o.Seed, BundleShare: noBundles}), o.Records, 1, o.WindowLimit},
		{"small skewed backlog, 20k records of 500 users", hot(synth.Options{Users: 500, Seed: o.Seed, BundleShare: noBundles}), 20_000, 1, 3000},
		{"(c) backlog, 3 replicas sharing the limit", synth.Options{Users: o.Users, Seed: o.Seed, BundleShare: noBundles}, o.Records, 3, o.WindowLimit},
	} {
		if !strings.Contains(ph.name, o.Only) {
			continue
		}
		for _, c := range contenders {
			if c == "benthos" && (ph.replicas > 1 || ph.window != o.WindowLimit) {
				continue // the comparison covers (a) and (b)
			}
			if err := o.backlog(ctx, w, sink, c, topic(), ph.name, ph.opts, ph.records, ph.replicas, ph.window); err != nil {
				return err
			}
		}
	}
	for _, share := range []float64{0.10, 0.50} {
		if !strings.Contains("(b) paced", o.Only) {
			continue
		}
		for _, c := range contenders {
			if err := o.paced(ctx, w, sink, c, topic(), share); err != nil {
				return err
			}
		}
	}
	return nil
}

// workers starts replicas in-process on topic; stop ends them and waits.
func (o EconomyOptions) start(ctx context.Context, sink *sinkServer, contender, topic string, replicas, window int) (stop func(), _ error) {
	if contender == "benthos" {
		cfg := filepath.Join(o.OutDir, "benthos-economy.yaml")
		if err := os.WriteFile(cfg, []byte(benthosEconomyYAML), 0o644); err != nil {
			return nil, err
		}
		c, err := startChild("benthos", []string{o.Benthos, "-c", cfg}, []string{"BROKERS=" + strings.Join(o.Brokers, ","),
			"TOPIC=" + topic, "GROUP=" + topic + "-benthos", "SINK_URL=" + sink.URL + "/users/track", fmt.Sprintf("WINDOW=%d", window)},
			filepath.Join(o.OutDir, topic+"-benthos.log"), false)
		if err != nil {
			return nil, err
		}
		return func() { c.stop(5 * time.Second) }, nil
	}
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range replicas {
		cfg := worker.Defaults()
		cfg.KafkaBrokers, cfg.KafkaTopics, cfg.KafkaGroupID, cfg.KafkaDLQTopic = o.Brokers, []string{topic}, topic, topic+"-dlq"
		cfg.BrazeEndpoint, cfg.BrazeAPIKey = sink.URL, "dev-key"
		cfg.BrazeRateLimit, cfg.BrazeRateBurst = float64(window)/3, window
		cfg.HTTPAddr, cfg.LogLevel = "127.0.0.1:0", "error"
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = worker.Run(wctx, &cfg, worker.NewLogger(io.Discard, cfg.LogLevel), worker.Options{Version: "bench"})
		}()
	}
	return func() { cancel(); wg.Wait() }, nil
}

func newSim(window int) *brazesim.Config {
	c := brazesim.DefaultConfig()
	c.TrackLimit, c.TrackWindow = window, 3*time.Second
	c.CountOnly = true // the phases measure requests and objects, not Braze state
	return &c
}

// backlog loads records, then lets the workers drain them; the rate is measured between 10%
// and 90% of the objects Braze accepted (start-up and the tail left out).
func (o EconomyOptions) backlog(ctx context.Context, w io.Writer, sink *sinkServer, contender, topic, name string, opts synth.Options,
	records int64, replicas, window int) error {
	st, err := newSinkState(newSim(window), false)
	if err != nil {
		return err
	}
	if err := createTopics(ctx, o.Brokers, o.Partitions, []string{topic}, []string{topic + "-dlq"}); err != nil {
		return err
	}
	lr, err := LoadWith(ctx, o.Brokers, topic, records, opts)
	if err != nil {
		return err
	}
	sink.state.Store(st)
	stop, err := o.start(ctx, sink, contender, topic, replicas, window)
	if err != nil {
		return err
	}
	defer stop()
	samples := o.sampleUntilDone(ctx, st, lr.Records)
	s := st.sim.Stats()
	ok := s.ByStatus[200] + s.ByStatus[201]
	perReq := float64(s.Objects+s.ObjectErrors) / float64(max(1, ok))
	if window != o.WindowLimit {
		d := samples[len(samples)-1].at.Sub(samples[0].at).Seconds()
		fmt.Fprintf(w, "%s %s: %d records (%s); %.0f records/s (data-bound, not at the ceiling); %.1f objects per accepted request (%d requests, %d 429s)\n",
			contender, name, lr.Records, usersOf(opts), float64(lr.Records)/d, perReq, s.Requests, s.ByStatus[429])
		return nil
	}
	objs, reqs, full := fullWindows(samples, 3*time.Second, lr.Records)
	ceil := float64(window) * 75 * float64(full)
	fmt.Fprintf(w, "%s %s: %d records (%s); in the %d full 3-s windows of the backlog: %.0f records/s = %.1f%% of the ceiling, %.1f%% of the requests allowed (%d per 3 s); %.1f objects per accepted request (%d requests, %d 429s)\n",
		contender, name, lr.Records, usersOf(opts), full, float64(objs)/(3*float64(full)), 100*float64(objs)/ceil,
		100*float64(reqs)/float64(window*full), window, perReq, s.Requests, s.ByStatus[429])
	return nil
}

type econSample struct {
	at            time.Time
	objects, reqs int64
}

// sampleUntilDone samples the simulator's counts every 5 ms until it accepted records objects.
func (o EconomyOptions) sampleUntilDone(ctx context.Context, st *sinkState, records int64) []econSample {
	var out []econSample
	deadline := time.Now().Add(time.Duration(float64(records)/o.ceiling()*3*float64(time.Second)) + time.Minute)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		s := st.sim.Stats()
		out = append(out, econSample{time.Now(), s.Objects + s.ObjectErrors, s.Requests})
		if s.Objects+s.ObjectErrors >= records {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	return out
}

// fullWindows sums objects and requests over the simulator's windows (aligned on multiples of
// win since the epoch, as brazesim counts them) that lie wholly after the first request and
// end before 90% of the records were accepted: windows in which the backlog was waiting.
func fullWindows(ss []econSample, win time.Duration, records int64) (objects, reqs int64, n int) {
	var first time.Time
	for _, s := range ss {
		if s.reqs > 0 {
			first = s.at
			break
		}
	}
	at := func(t time.Time) econSample { // the last sample at or before t
		i := sort.Search(len(ss), func(i int) bool { return ss[i].at.After(t) })
		return ss[max(0, i-1)]
	}
	if first.IsZero() {
		return 0, 0, 0
	}
	w := int64(win)
	for k := first.UnixNano()/w + 1; ; k++ {
		a, b := time.Unix(0, k*w), time.Unix(0, (k+1)*w)
		end := at(b)
		if end.at.Before(b.Add(-20*time.Millisecond)) || end.objects >= records*9/10 {
			return objects, reqs, n
		}
		start := at(a)
		objects += end.objects - start.objects
		reqs += end.reqs - start.reqs
		n++
	}
}

func usersOf(o synth.Options) string {
	if o.HotShare > 0 {
		return fmt.Sprintf("%d users, %.0f%% of messages from %d", o.Users, 100*o.HotShare, o.HotUsers)
	}
	return fmt.Sprintf("%d users, uniform", o.Users)
}

// paced offers share of the ceiling for PacedFor and reports requests per 1,000 records and
// produce-to-acknowledged latency.
func (o EconomyOptions) paced(ctx context.Context, w io.Writer, sink *sinkServer, contender, topic string, share float64) error {
	st, err := newSinkState(newSim(o.WindowLimit), true)
	if err != nil {
		return err
	}
	sink.state.Store(st)
	if err := createTopics(ctx, o.Brokers, o.Partitions, []string{topic}, []string{topic + "-dlq"}); err != nil {
		return err
	}
	stop, err := o.start(ctx, sink, contender, topic, 1, o.WindowLimit)
	if err != nil {
		return err
	}
	defer stop()
	time.Sleep(3 * time.Second) // the group is joined
	pr, err := ProducePacedWith(ctx, o.Brokers, topic, share*o.ceiling(), o.PacedFor, synth.Options{Users: o.Users, Seed: o.Seed, BundleShare: noBundles})
	if err != nil {
		return err
	}
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if s := st.sim.Stats(); s.Objects+s.ObjectErrors >= pr.Records {
			break
		}
	}
	s := st.sim.Stats()
	st.latMu.Lock()
	ls := latencyStats(st.lat)
	st.latMu.Unlock()
	fmt.Fprintf(w, "%s (b) paced %.0f%% of the ceiling (%.0f records/s offered, %.0f produced): %d records in %d requests = %.1f requests per 1,000 records (%.1f objects per request); produce-to-acknowledged p50 %s p99 %s (%d samples); %d 429s\n",
		contender, 100*share, share*o.ceiling(), pr.ActualRate, pr.Records, s.Requests, 1000*float64(s.Requests)/float64(max(1, pr.Records)),
		float64(s.Objects+s.ObjectErrors)/float64(max(1, s.Requests)), ms(ls.P50), ms(ls.P99), ls.Samples, s.ByStatus[429])
	return nil
}
