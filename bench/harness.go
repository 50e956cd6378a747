package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/braze-ingestor/braze-ingestor/brazesim"
)

// Options configures a harness run.
type Options struct {
	Records    int64    // records to load for the throughput phases
	Users      int      // distinct users in the synthetic traffic
	Seed       uint64   // generator seed
	Partitions int      // partitions of the source topic
	Brokers    []string // external brokers; empty = start the kfake broker child
	BrokerAddr string   // listen address of the kfake broker child
	Contenders []string // throughput phases, in order (see Contenders)
	Repeat     int      // rounds of all phases (the order rotates each round); PrintBar uses medians

	LatencyRate     float64       // offered records/s of the latency phase (0 = skip)
	LatencyDuration time.Duration // how long the paced producer runs
	LatencyWarmup   time.Duration // stamps younger than this after the start are reported apart

	PhaseTimeout time.Duration // bound of one phase
	OutDir       string        // logs, profiles, results, built binaries
	RepoDir      string        // where cmd/ingestor is built from
	IngestorBin  string        // use this binary instead of building one
	BenthosBin   string        // use this binary instead of building one
	PeersDir     string        // Benthos peer configs
	WorkerEnv    []string      // extra KEY=VALUE for the worker (e.g. KAFKA_FETCH_MIN_BYTES=65536)
	Self         string        // this executable (children re-exec it)
	Log          io.Writer
}

// Contenders lists the throughput phases the harness knows.
var Contenders = map[string]string{
	"raw":              "plain kafka-go consumer group, messages discarded (the ceiling)",
	"worker":           "ingestor binary -> the counting endpoint (count.go: auth, content type, 4 MB, objects counted and held to 75; rate limits off: worker BRAZE_RATE_LIMIT=0)",
	"worker-sim":       "ingestor binary -> brazesim CountOnly (also checks JSON syntax; the worker phase's endpoint until 2026-11-26)",
	"worker-tuned":     "ingestor binary, rate limits off, fetch tuned like the raw consumer (KAFKA_FETCH_MIN_BYTES=65536, KAFKA_FETCH_MAX_WAIT=100ms, KAFKA_QUEUE_CAPACITY=10000) -> the counting endpoint",
	"worker-null":      "ingestor binary, rate limits off -> a trivial /users/track counter that answers 201 without parsing (isolates the sink's CPU on a 2-core box)",
	"worker-inproc-wb": "as worker-inproc, but the Braze client's transport has WriteBufferSize 64 KiB (experiment: suggested change 1)",
	"worker-paced":     "ingestor binary with its default client rate limit (BRAZE_RATE_LIMIT default) -> the counting endpoint",
	"worker-validate":  "ingestor binary -> brazesim with validation (rate limits off)",
	"worker-inproc":    "pipeline in the bench binary with pprof CPU+allocs -> the counting endpoint",
	"benthos":          "Benthos " + BenthosVersion + " benthos-kafka-to-http.yaml (parsed) -> /events counter",
	"benthos-raw":      "Benthos " + BenthosVersion + " benthos-kafka-to-http-raw.yaml (raw join) -> /events counter",
}

// DefaultContenders is the order of a full run.
var DefaultContenders = []string{"raw", "worker", "benthos", "benthos-raw", "worker-validate"}

// Result is one phase's measurement.
type Result struct {
	Name        string
	Round       int
	Description string
	Error       string `json:",omitempty"`

	Records  int64
	Messages int64

	// Times are relative to the child's start.
	FirstActivity time.Duration // first request at the sink (raw: first message read)
	Delivered     time.Duration // all records at the sink (worker) / all read (raw); 0 = unknown
	Committed     time.Duration // the group's committed offsets reached the end of every partition

	RecordsPerSecStart float64 // Records / Committed: child start to last commit (headline)
	RecordsPerSecDeliv float64 // Records / Delivered: child start to the last record acknowledged by the sink (raw: read)
	RecordsPerSecFirst float64 // Records / (Committed - FirstActivity)
	RecordsPerSecBody  float64 // records/s between 10% and 90% of the backlog delivered (backlog-phase rate)
	MessagesPerSec     float64 // Messages / Committed

	Requests         int64
	ObjectsPerReq    float64 // mean over the phase (worker: objects; Benthos: messages)
	ObjectsPerReqMid float64 // between 10% and 90% delivered (while there is backlog)
	MaxObjectsInReq  int64

	CPU            time.Duration // the contender's user+system CPU (rusage)
	CPUPerMRecords float64       // seconds per million records
	PeakRSS        int64         // bytes: VmHWM of the child, read just before it is stopped
	BrokerCPU      time.Duration // the broker child's CPU during the phase
	HarnessCPU     time.Duration // this process's CPU during the phase (sink + monitor)
	LoadBefore     string
	LoadAfter      string

	Sim *brazesim.Stats `json:",omitempty"`

	// Latency phase only.
	Latency       *LatencyStats `json:",omitempty"`
	LatencySteady *LatencyStats `json:",omitempty"`
	Offered       *PacedResult  `json:",omitempty"`
}

type harness struct {
	o          Options
	brokers    []string
	broker     *child
	sink       *sinkServer
	srcTopic   string
	latTopic   string
	dlqTopic   string
	load       LoadResult
	endSum     int64
	ingestor   string
	benthos    string
	benthosErr error
	runID      string
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.o.Log, "%s  %s\n", time.Now().UTC().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// Run runs the whole benchmark and returns the results of every phase.
func Run(ctx context.Context, o Options) ([]*Result, error) {
	h := &harness{o: o, runID: time.Now().UTC().Format("20060102-150405")}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, err
	}
	h.logf("run %s: %d records, %d users, %d partitions, contenders %v, GOMAXPROCS %d, load %s",
		h.runID, o.Records, o.Users, o.Partitions, o.Contenders, runtime.GOMAXPROCS(0), loadavg())
	h.srcTopic, h.latTopic, h.dlqTopic = "bench-src", "bench-lat", "bench-dlq"
	if len(o.Brokers) > 0 {
		// A shared real broker: topics of this run only.
		suffix := "-" + h.runID
		h.srcTopic, h.latTopic, h.dlqTopic = h.srcTopic+suffix, h.latTopic+suffix, h.dlqTopic+suffix
		h.brokers = o.Brokers
		if err := createTopics(ctx, h.brokers, o.Partitions, []string{h.srcTopic, h.latTopic}, []string{h.dlqTopic}); err != nil {
			return nil, err
		}
	} else {
		c, err := startChild("broker", []string{o.Self, "broker", "-addr", o.BrokerAddr, "-partitions", fmt.Sprint(o.Partitions),
			"-topics", h.srcTopic + "," + h.latTopic, "-dlq-topics", h.dlqTopic}, nil, filepath.Join(o.OutDir, "broker.log"), true)
		if err != nil {
			return nil, err
		}
		h.broker = c
		defer c.stop(5 * time.Second)
		select {
		case line := <-c.lines:
			if !strings.HasPrefix(line, "ready ") {
				return nil, fmt.Errorf("broker: %s", line)
			}
			h.brokers = []string{strings.TrimPrefix(line, "ready ")}
		case <-c.done:
			return nil, fmt.Errorf("broker exited: %v (see %s)", c.err, filepath.Join(o.OutDir, "broker.log"))
		case <-time.After(30 * time.Second):
			return nil, errors.New("broker did not start in 30s")
		}
		h.logf("broker (kfake, separate process pid %d) on %v", c.cmd.Process.Pid, h.brokers)
	}
	sink, err := startSink()
	if err != nil {
		return nil, err
	}
	defer sink.Close()
	h.sink = sink

	h.snapshotSources()
	if err := h.prepareBinaries(ctx); err != nil {
		return nil, err
	}

	var results []*Result
	if len(o.Contenders) > 0 {
		bcpu := h.brokerCPU()
		h.logf("loading %d records into %s ...", o.Records, h.srcTopic)
		lr, err := Load(ctx, h.brokers, h.srcTopic, o.Records, o.Users, o.Seed)
		if err != nil {
			return nil, fmt.Errorf("load: %w", err)
		}
		h.load = lr
		// Return the loader's garbage to the OS now: otherwise the runtime's scavenger does
		// it during the first phases (measured at ~0.5 CPU-s of madvise), on the cores the
		// contenders share.
		debug.FreeOSMemory()
		off := newOffsets(h.brokers, h.srcTopic, o.Partitions)
		_, h.endSum, err = off.End(ctx)
		if err != nil {
			return nil, err
		}
		h.logf("loaded %s; end offsets sum %d; broker CPU %s; broker RSS %.0f MiB", lr, h.endSum,
			(h.brokerCPU() - bcpu).Round(time.Millisecond), float64(h.brokerRSS())/(1<<20))
	}
	for round := 1; round <= max(1, o.Repeat); round++ {
		// Rotate the order each round so a noisy neighbour does not always hit the same phase.
		n := len(o.Contenders)
		for i := 0; i < n && ctx.Err() == nil; i++ {
			name := o.Contenders[(i+round-1)%n]
			r := h.runThroughput(ctx, name)
			r.Round = round
			results = append(results, r)
			h.logf("round %d: %s", round, r.Summary())
		}
		if o.LatencyRate > 0 && ctx.Err() == nil {
			r := h.runLatency(ctx)
			r.Round = round
			results = append(results, r)
			h.logf("round %d: %s", round, r.Summary())
		}
	}
	path := filepath.Join(o.OutDir, "results-"+h.runID+".json")
	if b, err := json.MarshalIndent(map[string]any{"run": h.runID, "options": o, "load": h.load, "results": results,
		"ingestor": h.ingestor, "benthos": h.benthos, "benthos_error": errString(h.benthosErr)}, "", "  "); err == nil {
		_ = os.WriteFile(path, b, 0o644)
		h.logf("results in %s", path)
	}
	return results, nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// collectBetweenPhases runs the broker child's and the harness's garbage collections now, so
// that they do not land inside the next phase.
func (h *harness) collectBetweenPhases() {
	runtime.GC()
	if h.broker == nil {
		return
	}
	for len(h.broker.lines) > 0 {
		<-h.broker.lines
	}
	if _, err := fmt.Fprintln(h.broker.stdin, "gc"); err != nil {
		return
	}
	timeout := time.After(60 * time.Second)
	for {
		select {
		case line := <-h.broker.lines:
			if line == "gc done" {
				return
			}
		case <-h.broker.done:
			return
		case <-timeout:
			h.logf("broker did not report its collection within 60s")
			return
		}
	}
}

func (h *harness) brokerCPU() time.Duration {
	if h.broker == nil {
		return 0
	}
	return procCPU(h.broker.cmd.Process.Pid)
}

func (h *harness) brokerRSS() int64 {
	if h.broker == nil {
		return 0
	}
	return procRSS(h.broker.cmd.Process.Pid)
}

func (h *harness) prepareBinaries(ctx context.Context) error {
	need := func(names ...string) bool {
		for _, c := range h.o.Contenders {
			for _, n := range names {
				if c == n {
					return true
				}
			}
		}
		return false
	}
	if need("worker", "worker-validate") || h.o.LatencyRate > 0 {
		h.ingestor = h.o.IngestorBin
		if h.ingestor == "" {
			bin, err := filepath.Abs(filepath.Join(h.o.OutDir, "ingestor"))
			if err != nil {
				return err
			}
			cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/ingestor")
			cmd.Dir = h.o.RepoDir
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("build ingestor: %v\n%s", err, out)
			}
			h.ingestor = bin
			rev, _ := exec.Command("git", "-C", h.o.RepoDir, "describe", "--always", "--dirty").Output()
			h.logf("built ingestor from the working tree (%s) -> %s", strings.TrimSpace(string(rev)), bin)
		}
	}
	if need("benthos", "benthos-raw") {
		h.benthos = h.o.BenthosBin
		if h.benthos == "" {
			h.benthos, h.benthosErr = ensureBenthos(filepath.Join(h.o.RepoDir, ".cache", "peers"), h.logf)
			if h.benthosErr != nil {
				h.logf("Benthos peer unavailable: %v", h.benthosErr)
			}
		}
	}
	return nil
}

// Summary is one line per phase.
func (r *Result) Summary() string {
	if r.Error != "" {
		return fmt.Sprintf("%-15s ERROR %s", r.Name, r.Error)
	}
	if r.Latency != nil {
		return fmt.Sprintf("%-15s offered %.0f records/s (achieved %.0f) for %s: %d records, requests %d, obj/req %.2f (max %d), 429s %d, CPU %.2fs = %.2f s/Mrec, peakRSS %.0f MiB, broker CPU %.2fs, load %s -> %s"+
			"\n                produce-to-acknowledged (all %d): p50 %s p90 %s p99 %s max %s mean %s"+
			"\n                produce-to-acknowledged (produced after warm-up, %d): p50 %s p90 %s p99 %s max %s mean %s",
			r.Name, r.Offered.OfferedRate, r.Offered.ActualRate, r.Offered.Elapsed.Round(time.Millisecond), r.Records, r.Requests, r.ObjectsPerReq, r.MaxObjectsInReq,
			r.Sim.RateLimited, r.CPU.Seconds(), r.CPUPerMRecords, float64(r.PeakRSS)/(1<<20), r.BrokerCPU.Seconds(), r.LoadBefore, r.LoadAfter,
			r.Latency.Samples, ms(r.Latency.P50), ms(r.Latency.P90), ms(r.Latency.P99), ms(r.Latency.Max), ms(r.Latency.Mean),
			r.LatencySteady.Samples, ms(r.LatencySteady.P50), ms(r.LatencySteady.P90), ms(r.LatencySteady.P99), ms(r.LatencySteady.Max), ms(r.LatencySteady.Mean))
	}
	s := fmt.Sprintf("%-15s %9.0f rec/s (start->commit %s)  %9.0f rec/s (start->delivered %s)  %9.0f rec/s (first->commit)  %9.0f rec/s (10-90%%)  req %d  obj/req %.2f (10-90%% %.2f, max %d)  CPU %.2fs = %.2f s/Mrec  peakRSS %.0f MiB  broker CPU %.2fs  harness CPU %.2fs  load %s -> %s",
		r.Name, r.RecordsPerSecStart, r.Committed.Round(time.Millisecond), r.RecordsPerSecDeliv, r.Delivered.Round(time.Millisecond), r.RecordsPerSecFirst, r.RecordsPerSecBody, r.Requests, r.ObjectsPerReq,
		r.ObjectsPerReqMid, r.MaxObjectsInReq, r.CPU.Seconds(), r.CPUPerMRecords, float64(r.PeakRSS)/(1<<20), r.BrokerCPU.Seconds(),
		r.HarnessCPU.Seconds(), r.LoadBefore, r.LoadAfter)
	return s
}

type sample struct {
	t        time.Duration
	progress float64
	requests int64
	objects  int64
}

// workerEnv is the ingestor's configuration for a phase.
func (h *harness) workerEnv(topic, group, httpAddr string) []string {
	env := []string{
		"KAFKA_BROKERS=" + strings.Join(h.brokers, ","), "KAFKA_TOPICS=" + topic, "KAFKA_GROUP_ID=" + group,
		"KAFKA_DLQ_TOPIC=" + h.dlqTopic, "BRAZE_REST_ENDPOINT=" + h.sink.URL, "BRAZE_API_KEY=dev-key",
		"HTTP_ADDR=" + httpAddr, "LOG_LEVEL=warn",
	}
	return append(env, h.o.WorkerEnv...)
}

func (h *harness) runThroughput(ctx context.Context, name string) *Result {
	r := &Result{Name: name, Description: Contenders[name], Records: h.load.Records, Messages: h.load.Messages}
	group := fmt.Sprintf("bench-%s-%s", name, time.Now().UTC().Format("150405.000"))
	logPath := filepath.Join(h.o.OutDir, name+"-"+group+".log")
	var argv, env []string
	var st *sinkState
	var err error
	capture := false
	switch name {
	case "raw":
		st, _ = newSinkState(nil, false)
		argv = []string{h.o.Self, "rawconsume", "-brokers", strings.Join(h.brokers, ","), "-topic", h.srcTopic, "-group", group,
			"-expect", fmt.Sprint(h.load.Messages)}
		capture = true
	case "worker", "worker-sim", "worker-validate", "worker-inproc", "worker-paced", "worker-tuned", "worker-null", "worker-inproc-wb":
		cfg := brazesim.DefaultConfig()
		cfg.TrackLimit = -1 // throughput: no rate limit
		cfg.CountOnly = name != "worker-validate"
		if name == "worker-null" {
			st, _ = newSinkState(nil, false)
			st.null = true
		} else if name != "worker-sim" && name != "worker-validate" {
			st, _ = newSinkState(nil, false)
			st.count = true
		} else if st, err = newSinkState(&cfg, false); err != nil {
			r.Error = err.Error()
			return r
		}
		addr, err := freeAddr()
		if err != nil {
			r.Error = err.Error()
			return r
		}
		if strings.HasPrefix(name, "worker-inproc") {
			prefix := "worker"
			if name != "worker-inproc" {
				prefix = name
			}
			argv = []string{h.o.Self, "inproc", "-brokers", strings.Join(h.brokers, ","), "-topic", h.srcTopic, "-dlq-topic", h.dlqTopic,
				"-group", group, "-endpoint", h.sink.URL, "-cpuprofile", filepath.Join(h.o.OutDir, prefix+"-cpu.pprof"),
				"-memprofile", filepath.Join(h.o.OutDir, prefix+"-allocs.pprof")}
			if name == "worker-inproc-wb" {
				argv = append(argv, "-write-buffer", "65536")
			}
		} else {
			argv = []string{h.ingestor, "run"}
			if name != "worker-paced" {
				env = append(env, "BRAZE_RATE_LIMIT=0")
			}
			if name == "worker-tuned" {
				env = append(env, "KAFKA_FETCH_MIN_BYTES=65536", "KAFKA_FETCH_MAX_WAIT=100ms", "KAFKA_QUEUE_CAPACITY=10000")
			}
			env = append(env, h.workerEnv(h.srcTopic, group, addr)...)
		}
	case "benthos", "benthos-raw":
		if h.benthos == "" {
			r.Error = fmt.Sprintf("Benthos peer not built: %v", h.benthosErr)
			return r
		}
		st, _ = newSinkState(nil, false)
		file := "benthos-kafka-to-http.yaml"
		if name == "benthos-raw" {
			file = "benthos-kafka-to-http-raw.yaml"
		}
		argv = []string{h.benthos, "-c", filepath.Join(h.o.PeersDir, file)}
		env = []string{"BROKERS=" + strings.Join(h.brokers, ","), "TOPIC=" + h.srcTopic, "GROUP=" + group, "SINK_URL=" + h.sink.URL + "/events"}
	default:
		r.Error = "unknown contender"
		return r
	}
	h.sink.state.Store(st)
	off := newOffsets(h.brokers, h.srcTopic, h.o.Partitions)

	h.collectBetweenPhases()
	r.LoadBefore = loadavg()
	b0, s0 := h.brokerCPU(), selfCPU()
	c, err := startChild(name, argv, env, logPath, capture)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	var samples []sample
	var firstRead, lastRead int64
	deadline := time.Now().Add(h.o.PhaseTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
		el := time.Since(c.start)
		committed, cerr := off.Committed(ctx, group)
		smp := sample{t: el, requests: st.requests.Load()}
		switch {
		case st.sim != nil:
			ss := st.sim.Stats()
			smp.objects, smp.requests = ss.Objects, ss.ByEndpoint[brazesim.PathTrack]
			smp.progress = float64(ss.Objects) / float64(h.load.Records)
		case st.count:
			smp.objects = st.objects.Load()
			smp.progress = float64(smp.objects) / float64(h.load.Records)
		case name == "raw":
			smp.progress = float64(committed) / float64(h.endSum)
		default:
			smp.objects = st.bytes.Load() // progress is bytes over the final total, set below
		}
		samples = append(samples, smp)
		if hwm := procHWM(c.cmd.Process.Pid); hwm > r.PeakRSS {
			r.PeakRSS = hwm
		}
		if r.Delivered == 0 && (st.sim != nil || st.count) && smp.progress >= 1 {
			r.Delivered = el
		}
		for len(c.lines) > 0 {
			var n, bytes int64
			if _, err := fmt.Sscanf(<-c.lines, "consumed %d first %d last %d bytes %d", &n, &firstRead, &lastRead, &bytes); err == nil {
				r.FirstActivity = time.Unix(0, firstRead).Sub(c.start)
				r.Delivered = time.Unix(0, lastRead).Sub(c.start)
			}
		}
		if cerr == nil && committed >= h.endSum {
			r.Committed = el
			break
		}
		if c.exited() {
			r.Error = fmt.Sprintf("exited early: %v (see %s)", c.err, logPath)
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.Error = fmt.Sprintf("not done after %s: committed %d of %d messages (see %s)", h.o.PhaseTimeout, committed, h.endSum, logPath)
			break
		}
	}
	r.LoadAfter = loadavg()
	r.BrokerCPU, r.HarnessCPU = h.brokerCPU()-b0, selfCPU()-s0
	if hwm := procHWM(c.cmd.Process.Pid); hwm > r.PeakRSS {
		r.PeakRSS = hwm
	}
	r.CPU, _ = c.stop(40 * time.Second)
	if f := st.first.Load(); f > 0 && name != "raw" {
		r.FirstActivity = time.Unix(0, f).Sub(c.start)
	}
	if st.sim == nil && !st.count && name != "raw" {
		// Benthos: delivered = the last request before the group's commit reached the end
		// (nothing arrives after the last record); progress = bytes received so far over
		// the total received.
		if l := st.last.Load(); l > 0 {
			r.Delivered = time.Unix(0, l).Sub(c.start)
		}
		if total := st.bytes.Load(); total > 0 {
			for i := range samples {
				samples[i].progress = float64(samples[i].objects) / float64(total)
				if name == "worker-null" {
					samples[i].objects = int64(samples[i].progress * float64(h.load.Records)) // approximate records
				} else {
					samples[i].objects = int64(samples[i].progress * float64(h.load.Messages)) // approximate messages
				}
			}
		}
	}
	if st.sim != nil {
		ss := st.sim.Stats()
		r.Sim = &ss
		r.Requests = ss.ByEndpoint[brazesim.PathTrack]
		r.MaxObjectsInReq = ss.MaxObjectsInRequest
		if r.Requests > 0 {
			r.ObjectsPerReq = float64(ss.Objects) / float64(r.Requests)
		}
	} else if st.count {
		r.Requests = st.requests.Load()
		r.MaxObjectsInReq = st.maxObjects.Load()
		if r.Requests > 0 {
			r.ObjectsPerReq = float64(st.objects.Load()) / float64(r.Requests)
		}
		if n := st.overLimit.Load(); n > 0 && r.Error == "" {
			r.Error = fmt.Sprintf("%d requests over Braze's %d-object limit", n, maxTrackObjects)
		}
	} else if name == "worker-null" {
		r.Requests = st.requests.Load()
		if r.Requests > 0 {
			r.ObjectsPerReq = float64(h.load.Records) / float64(r.Requests) // records per request
		}
	} else if name != "raw" {
		r.Requests = st.requests.Load()
		if r.Requests > 0 {
			r.ObjectsPerReq = float64(h.load.Messages) / float64(r.Requests) // messages per request
		}
	}
	if r.Error != "" {
		return r
	}
	sec := r.Committed.Seconds()
	r.RecordsPerSecStart = float64(r.Records) / sec
	r.MessagesPerSec = float64(r.Messages) / sec
	if r.Delivered > 0 {
		r.RecordsPerSecDeliv = float64(r.Records) / r.Delivered.Seconds()
	}
	if r.FirstActivity > 0 {
		r.RecordsPerSecFirst = float64(r.Records) / (r.Committed - r.FirstActivity).Seconds()
	}
	if name == "raw" && lastRead > firstRead {
		r.RecordsPerSecBody = float64(r.Records) / time.Duration(lastRead-firstRead).Seconds()
	} else if s10, s90, ok := window(samples, 0.1, 0.9); ok {
		r.RecordsPerSecBody = (s90.progress - s10.progress) * float64(r.Records) / (s90.t - s10.t).Seconds()
		if s90.requests > s10.requests {
			r.ObjectsPerReqMid = float64(s90.objects-s10.objects) / float64(s90.requests-s10.requests)
		}
	}
	r.CPUPerMRecords = r.CPU.Seconds() / (float64(r.Records) / 1e6)
	return r
}

// window returns the first samples at or past progress a and b.
func window(s []sample, a, b float64) (sa, sb sample, ok bool) {
	ia, ib := -1, -1
	for i := range s {
		if ia < 0 && s[i].progress >= a {
			ia = i
		}
		if ib < 0 && s[i].progress >= b {
			ib = i
		}
	}
	if ia < 0 || ib <= ia {
		return sa, sb, false
	}
	return s[ia], s[ib], true
}

// runLatency offers LatencyRate records/s to a running worker against the validating
// simulator with Braze's default rate limit, and measures produce-to-acknowledged latency.
func (h *harness) runLatency(ctx context.Context) *Result {
	r := &Result{Name: "latency", Description: fmt.Sprintf("ingestor binary -> brazesim with validation and the default rate limit (3000 req/3 s), %.0f records/s offered for %s",
		h.o.LatencyRate, h.o.LatencyDuration)}
	cfg := brazesim.DefaultConfig()
	st, err := newSinkState(&cfg, true)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	h.sink.state.Store(st)
	group := "bench-latency-" + time.Now().UTC().Format("150405.000")
	topic := fmt.Sprintf("%s-%s", h.latTopic, time.Now().UTC().Format("150405"))
	if err := createTopics(ctx, h.brokers, h.o.Partitions, []string{topic}, nil); err != nil {
		r.Error = "create latency topic: " + err.Error()
		return r
	}
	addr, err := freeAddr()
	if err != nil {
		r.Error = err.Error()
		return r
	}
	logPath := filepath.Join(h.o.OutDir, "latency-worker-"+topic+".log")
	h.collectBetweenPhases()
	r.LoadBefore = loadavg()
	b0, s0 := h.brokerCPU(), selfCPU()
	c, err := startChild("latency-worker", []string{h.ingestor, "run"}, h.workerEnv(topic, group, addr), logPath, false)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer c.stop(40 * time.Second)
	// Wait until the worker is in the group, so the paced records meet a running worker.
	ready := false
	for t := time.Now(); time.Since(t) < 60*time.Second && !c.exited(); time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				ready = true
				break
			}
		}
	}
	if !ready {
		r.Error = fmt.Sprintf("worker not ready after 60s (see %s)", logPath)
		return r
	}
	h.logf("latency: worker ready after %s; producing %.0f records/s for %s", time.Since(c.start).Round(time.Millisecond), h.o.LatencyRate, h.o.LatencyDuration)
	pstart := time.Now()
	pr, err := ProducePaced(ctx, h.brokers, topic, h.o.LatencyRate, h.o.LatencyDuration, h.o.Users, h.o.Seed+1)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.Offered = &pr
	r.Records, r.Messages = pr.Records, pr.Messages
	off := newOffsets(h.brokers, topic, h.o.Partitions)
	_, end, err := off.End(ctx)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	for t := time.Now(); time.Since(t) < 30*time.Second; time.Sleep(50 * time.Millisecond) {
		if n, err := off.Committed(ctx, group); err == nil && n >= end {
			break
		}
	}
	r.LoadAfter = loadavg()
	r.BrokerCPU, r.HarnessCPU = h.brokerCPU()-b0, selfCPU()-s0
	r.PeakRSS = procHWM(c.cmd.Process.Pid)
	r.CPU, _ = c.stop(40 * time.Second)
	ss := st.sim.Stats()
	r.Sim = &ss
	r.Requests = ss.ByEndpoint[brazesim.PathTrack]
	r.MaxObjectsInReq = ss.MaxObjectsInRequest
	if r.Requests > 0 {
		r.ObjectsPerReq = float64(ss.Objects) / float64(r.Requests)
	}
	r.CPUPerMRecords = r.CPU.Seconds() / (float64(r.Records) / 1e6)
	st.latMu.Lock()
	all := latencyStats(st.lat)
	var steady []int64
	cut := pstart.Add(h.o.LatencyWarmup).UnixNano()
	for i, at := range st.latAt {
		if at-st.lat[i] >= cut { // produced after the warm-up
			steady = append(steady, st.lat[i])
		}
	}
	st.latMu.Unlock()
	ls := latencyStats(steady)
	r.Latency, r.LatencySteady = &all, &ls
	if int64(all.Samples) < r.Records {
		r.Error = fmt.Sprintf("only %d of %d records acknowledged with a stamp", all.Samples, r.Records)
	}
	return r
}

func ms(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }

// snapshotSources copies the worker's Go sources as they are now (close to when this binary
// and the ingestor were built) into OutDir/src, so profile line numbers stay readable while
// others edit the tree: go tool pprof -source_path OutDir/src -trim_path /path/to/repo ...
func (h *harness) snapshotSources() {
	for _, pkg := range []string{"pipeline", "sink", "schemas", "batcher", "cmd/ingestor"} {
		files, _ := filepath.Glob(filepath.Join(h.o.RepoDir, pkg, "*.go"))
		dst := filepath.Join(h.o.OutDir, "src", pkg)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return
		}
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil {
				_ = os.WriteFile(filepath.Join(dst, filepath.Base(f)), b, 0o644)
			}
		}
	}
	if rev, err := exec.Command("git", "-C", h.o.RepoDir, "describe", "--always", "--dirty").Output(); err == nil {
		_ = os.WriteFile(filepath.Join(h.o.OutDir, "src", "REVISION"), rev, 0o644)
	}
}
