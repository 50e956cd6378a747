package worker

import (
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/braze-ingestor/braze-ingestor/batcher"
	"github.com/braze-ingestor/braze-ingestor/endpoint"
	"github.com/braze-ingestor/braze-ingestor/pipeline"
	"github.com/braze-ingestor/braze-ingestor/preflight"
	"github.com/braze-ingestor/braze-ingestor/schemas"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// Config is the worker's whole configuration, read from the environment. The first six names
// are fixed by docs/design.md §5; every other setting is optional and listed in the README.
// The default tags below are the one home of the worker's defaults: LoadConfig and Defaults
// apply them (setField), and the libraries' own zero-value fallbacks
// (pipeline.Config.Defaults) are held equal to them by TestDefaultsOneHome.
type Config struct {
	KafkaBrokers    []string `envconfig:"KAFKA_BROKERS" desc:"Kafka bootstrap brokers, comma-separated (required)"`
	KafkaTopics     []string `envconfig:"KAFKA_TOPICS" desc:"source topics, comma-separated (required)"`
	KafkaGroupID    string   `envconfig:"KAFKA_GROUP_ID" desc:"consumer group id (required)"`
	KafkaDLQTopic   string   `envconfig:"KAFKA_DLQ_TOPIC" desc:"dead-letter topic (required)"`
	BrazeEndpoint   string   `envconfig:"BRAZE_REST_ENDPOINT" desc:"Braze REST endpoint of your instance, e.g. https://rest.iad-01.braze.com (required; https except on loopback)"`
	BrazeAPIKey     string   `envconfig:"BRAZE_API_KEY" desc:"Braze REST API key with users.track and the permission of each other endpoint in ENDPOINTS (this or BRAZE_API_KEY_FILE)"`
	BrazeAPIKeyFile string   `envconfig:"BRAZE_API_KEY_FILE" desc:"file holding the API key (Kubernetes secret mount)"`

	KafkaStartOffset       string        `envconfig:"KAFKA_START_OFFSET" default:"earliest" desc:"where a new group starts: earliest or latest"`
	KafkaCommitInterval    time.Duration `envconfig:"KAFKA_COMMIT_INTERVAL" default:"1s" desc:"upper bound between commits while records settle (commits follow settlement, coalesced to one per 100 ms, or per 25 ms once 64 messages settled)"`
	KafkaSessionTimeout    time.Duration `envconfig:"KAFKA_SESSION_TIMEOUT" default:"30s" desc:"consumer group session timeout"`
	KafkaRebalanceTimeout  time.Duration `envconfig:"KAFKA_REBALANCE_TIMEOUT" default:"30s" desc:"consumer group rebalance timeout"`
	KafkaHeartbeatInterval time.Duration `envconfig:"KAFKA_HEARTBEAT_INTERVAL" default:"3s" desc:"consumer group heartbeat interval"`
	KafkaDrainTimeout      time.Duration `envconfig:"KAFKA_DRAIN_TIMEOUT" default:"10s" desc:"on revoke, how long in-flight records may finish before the final commit (below the session timeout)"`
	KafkaMinBytes          int           `envconfig:"KAFKA_FETCH_MIN_BYTES" default:"1" desc:"fetch min bytes"`
	KafkaMaxBytes          int           `envconfig:"KAFKA_FETCH_MAX_BYTES" default:"10485760" desc:"fetch max bytes (at least the largest message)"`
	KafkaMaxWait           time.Duration `envconfig:"KAFKA_FETCH_MAX_WAIT" default:"250ms" desc:"fetch max wait (also bounds how long closing a fetcher takes)"`
	KafkaFetcher           string        `envconfig:"KAFKA_FETCHER" default:"batch" desc:"batch (fetch responses read on the partition's own loop; fastest) or reader (a kafka-go Reader per partition)"`
	KafkaQueueCapacity     int           `envconfig:"KAFKA_QUEUE_CAPACITY" default:"1000" desc:"messages prefetched per partition (reader fetcher only)"`
	KafkaMaxRunAhead       int           `envconfig:"KAFKA_MAX_RUN_AHEAD" default:"2048" desc:"most offsets a partition hands out past its oldest unsettled message (1..2800; bounds the offset map in the commit metadata)"`
	MaxInflightBytes       int           `envconfig:"MAX_INFLIGHT_BYTES" default:"33554432" desc:"most bytes of fetched messages not yet delivered or dead-lettered, over all partitions (at least 1048576; a larger single message still passes alone)"`

	KafkaTLSEnabled    bool   `envconfig:"KAFKA_TLS_ENABLED" default:"false" desc:"use TLS to the brokers (implied by KAFKA_TLS_CA_FILE)"`
	KafkaTLSCAFile     string `envconfig:"KAFKA_TLS_CA_FILE" desc:"PEM CA bundle to verify the brokers (default: system roots)"`
	KafkaTLSCertFile   string `envconfig:"KAFKA_TLS_CERT_FILE" desc:"PEM client certificate (mutual TLS)"`
	KafkaTLSKeyFile    string `envconfig:"KAFKA_TLS_KEY_FILE" desc:"PEM client key (mutual TLS)"`
	KafkaTLSServerName string `envconfig:"KAFKA_TLS_SERVER_NAME" desc:"expected broker certificate name, when it differs from the address"`
	KafkaSASLMechanism string `envconfig:"KAFKA_SASL_MECHANISM" desc:"plain, scram-sha-256 or scram-sha-512 (empty: no SASL)"`
	KafkaSASLUsername  string `envconfig:"KAFKA_SASL_USERNAME" desc:"SASL user name"`
	KafkaSASLPassword  string `envconfig:"KAFKA_SASL_PASSWORD" desc:"SASL password (or KAFKA_SASL_PASSWORD_FILE)"`
	KafkaSASLPassFile  string `envconfig:"KAFKA_SASL_PASSWORD_FILE" desc:"file holding the SASL password"`

	BatchLimitMode  string        `envconfig:"BATCH_LIMIT_MODE" default:"combined" desc:"combined (75 objects per request in total) or per_array (75 per array, legacy contracts)"`
	BatchMaxObjects int           `envconfig:"BATCH_MAX_OBJECTS" default:"75" desc:"object limit per request (combined) or per array (per_array)"`
	BatchMaxBytes   int           `envconfig:"BATCH_MAX_BYTES" default:"3500000" desc:"request body limit in bytes (Braze refuses over 4 MB)"`
	BatchLinger     time.Duration `envconfig:"BATCH_LINGER" default:"100ms" desc:"how long a request that is not full waits for more records while the request budget is far from used (the prompt linger)"`
	MaxLatency      time.Duration `envconfig:"MAX_LATENCY" default:"1s" desc:"latency target: as the request budget (burst window, hourly budget when known) nears use, a request that is not full waits longer to fill, up to this long (BATCH_LINGER up to 1m)"`
	Lanes           int           `envconfig:"LANES" default:"64" desc:"ordering lanes = most requests in flight; one request per lane at a time"`
	LaneQueue       int           `envconfig:"LANE_QUEUE" default:"256" desc:"records buffered per lane (back-pressure beyond; about 3 full requests)"`

	Endpoints                  []string      `envconfig:"ENDPOINTS" default:"track" desc:"Braze endpoints the worker may use, comma-separated: track (always required), alias, identify, merge, subscription, delete; a record for an endpoint not listed is dead-lettered as invalid_record; ingestor check verifies the API key's permission for each"`
	BrazeRateLimit             float64       `envconfig:"BRAZE_RATE_LIMIT" default:"1000" desc:"requests per second this replica may send (Braze: 3,000 per 3 s per workspace; with N replicas either set limit/N or keep the default and let the adaptive limiter share the window); 0 = unpaced"`
	BrazeRateBurst             int           `envconfig:"BRAZE_RATE_BURST" default:"3000" desc:"token-bucket burst of the rate limiter"`
	BrazeUsersRateLimit        int           `envconfig:"BRAZE_USERS_RATE_LIMIT" default:"20000" desc:"requests per MINUTE this replica may send to /users/alias/new, /users/identify, /users/merge and /users/delete together (Braze: 20,000 per minute shared by them per workspace; with N replicas set limit/N); 1..1000000, burst one second's worth"`
	BrazeSubscriptionRateLimit int           `envconfig:"BRAZE_SUBSCRIPTION_RATE_LIMIT" default:"5000" desc:"requests per MINUTE this replica may send to /subscription/status/set (Braze: 5,000 per minute per workspace; with N replicas set limit/N); 1..1000000, burst one second's worth"`
	BreakerFailures            int           `envconfig:"BREAKER_FAILURES" default:"5" desc:"consecutive outage answers (5xx, timeouts, connection errors) that open the circuit breaker"`
	BreakerOpenFor             time.Duration `envconfig:"BREAKER_OPEN_FOR" default:"10s" desc:"how long the breaker stays open before one half-open probe"`
	HaltProbeMax               time.Duration `envconfig:"HALT_PROBE_MAX" default:"30s" desc:"while halted (401/403/404/415), the longest wait between probes"`
	BrazeHTTPTimeout           time.Duration `envconfig:"BRAZE_HTTP_TIMEOUT" default:"10s" desc:"timeout of one Braze request"`
	RetryInitial               time.Duration `envconfig:"RETRY_INITIAL" default:"200ms" desc:"first retry back-off (exponential, full jitter)"`
	RetryMax                   time.Duration `envconfig:"RETRY_MAX" default:"30s" desc:"back-off cap"`
	RetryMaxDuration           time.Duration `envconfig:"RETRY_MAX_DURATION" default:"0s" desc:"0 = retry until Braze is back; >0 dead-letters records undeliverable for that long as retries_exhausted"`
	Isolate5xxAfter            time.Duration `envconfig:"ISOLATE_5XX_AFTER" default:"5m" desc:"a request that gets only 5xx answers this long is split to isolate the payload; a lone record is then dead-lettered as persistent_5xx only while Braze accepts other requests of the same endpoint; 0 = never"`
	UserMinSpacing             time.Duration `envconfig:"USER_MIN_SPACING" default:"0s" desc:"0 = off; >0 (at most 1m) keeps at least that long between two requests carrying the same user, for Braze's advice on racing /users/track calls (costs throughput: a lane waits)"`
	EndpointSpacing            string        `envconfig:"ENDPOINT_SPACING" default:"*>*=100ms,track>*=3s,alias>*=5s" desc:"least time between a user's record settling at one endpoint and its next record going to another: from>to=duration pairs, comma separated, endpoint names or * (most specific wins), each 0 to 10m; a held user holds its partition's commit (README Per-user order)"`

	CoalesceAttributes   bool          `envconfig:"COALESCE_ATTRIBUTES" default:"false" desc:"merge a user's plain attribute updates within one request (last write per key wins; operators, nested objects and _merge_objects kept apart); if Braze rejects a merged object every record behind it is dead-lettered"`
	SuppressUnchanged    bool          `envconfig:"SUPPRESS_UNCHANGED_ATTRIBUTES" default:"false" desc:"leave out plain attribute writes equal to the last value Braze accepted for that user (saves data points; a value changed outside the pipeline is not re-sent until SUPPRESS_TTL passes)"`
	SuppressCacheSize    int           `envconfig:"SUPPRESS_CACHE_SIZE" default:"1000000" desc:"in-memory store: most (user, attribute) hashes kept (LRU)"`
	SuppressTTL          time.Duration `envconfig:"SUPPRESS_TTL" default:"24h" desc:"how long a delivered attribute value is trusted as unchanged"`
	DedupEvents          bool          `envconfig:"DEDUP_EVENTS" default:"false" desc:"skip events and purchases whose envelope id was delivered within DEDUP_WINDOW (marked after Braze accepted them; attribute writes are always sent)"`
	DedupWindow          time.Duration `envconfig:"DEDUP_WINDOW" default:"24h" desc:"de-duplication window for record ids"`
	DedupCacheSize       int           `envconfig:"DEDUP_CACHE_SIZE" default:"1000000" desc:"in-memory store: most record ids kept (LRU)"`
	RedisURL             string        `envconfig:"REDIS_URL" desc:"redis:// or rediss:// URL of a Redis shared by the replicas for suppression and de-duplication (empty: in-memory per replica)"`
	OptimizeStoreTimeout time.Duration `envconfig:"OPTIMIZE_STORE_TIMEOUT" default:"2s" desc:"bound of one suppression/de-duplication store round trip (on failure the request goes out unoptimized)"`

	ShutdownTimeout    time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"25s" desc:"graceful shutdown bound (keep the pod's terminationGracePeriodSeconds above it)"`
	HTTPAddr           string        `envconfig:"HTTP_ADDR" default:":8080" desc:"listen address for /metrics, /livez, /readyz"`
	LivenessStuckAfter time.Duration `envconfig:"LIVENESS_STUCK_AFTER" default:"1m" desc:"/livez fails when a lane, fetch loop or committer makes no progress this long while it has work (10s to 1h; deliberate waits do not count)"`
	LogLevel           string        `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`

	KafkaTopicFormats          string `envconfig:"KAFKA_TOPIC_FORMATS" desc:"input format per source topic, topic:format comma-separated, format native or segment (e.g. events:native,segment-tracks:segment); unlisted topics are native (docs/segment.md)"`
	SegmentAnonymousAliasLabel string `envconfig:"SEGMENT_ANONYMOUS_ALIAS_LABEL" default:"anonymous_id" desc:"segment topics: alias_label of the user_alias built from anonymousId when a call has no userId"`
	SegmentUnsupported         string `envconfig:"SEGMENT_UNSUPPORTED" default:"skip" desc:"segment topics: calls that map to nothing (alias unless merge is in ENDPOINTS; page, screen, group unless mapped): skip (acknowledge, counted) or dlq (dead-letter as invalid_record)"`
	SegmentIdentifyAlias       string `envconfig:"SEGMENT_IDENTIFY_ALIAS" default:"auto" desc:"segment topics: an identify with a userId and an anonymousId also sends a /users/identify record (the anonymous alias to external_id userId) before its attributes: on, off, or auto (on when identify is in ENDPOINTS)"`
	SegmentPageAsEvent         bool   `envconfig:"SEGMENT_PAGE_AS_EVENT" default:"false" desc:"segment topics: send page and screen calls as events named Viewed Page and Viewed Screen"`
	SegmentGroupAsAttribute    bool   `envconfig:"SEGMENT_GROUP_AS_ATTRIBUTE" default:"false" desc:"segment topics: send group calls as the custom attribute ab_segment_group_<groupId>: true"`
	SegmentDefaultCurrency     string `envconfig:"SEGMENT_DEFAULT_CURRENCY" default:"USD" desc:"segment topics: purchase currency when neither the product nor the order has one (ISO 4217)"`
	SegmentOrderCompleted      string `envconfig:"SEGMENT_ORDER_COMPLETED" default:"purchases" desc:"segment topics: what track Order Completed becomes: purchases (one legacy purchase per product) or ecommerce (one ecommerce.order_placed event)"`
}

// ConfigError lists every configuration problem at once.
type ConfigError struct{ Problems []string }

func (e *ConfigError) Error() string {
	return "invalid configuration:\n  - " + strings.Join(e.Problems, "\n  - ")
}

// LoadConfig reads and validates the environment. Secrets from files are resolved here.
//
// Every variable is parsed on its own, so one unparsable value is reported once, with its
// name and the shape wanted, and the others are still read. A variable that failed to parse
// takes its default for the rest of the validation, and the checks that relate it to other
// settings are skipped: a typo never causes follow-on errors about fields it left empty.
func LoadConfig() (*Config, error) {
	var c Config
	v := &problems{bad: map[string]bool{}, seen: map[string]bool{}}
	c.parseEnv(v)
	c.validate(v)
	if len(v.list) > 0 {
		return nil, &ConfigError{Problems: v.list}
	}
	return &c, nil
}

// EnvconfigProblem words an envconfig parse error (`ingestor replay` reads its settings
// with envconfig).
func EnvconfigProblem(err error) string {
	var pe *envconfig.ParseError
	if errors.As(err, &pe) {
		return fmt.Sprintf("%s: cannot parse %q as %s", pe.KeyName, pe.Value, pe.TypeName)
	}
	return err.Error()
}

// problems collects configuration problems, at most one per variable.
type problems struct {
	list []string
	bad  map[string]bool // variables whose value did not parse
	seen map[string]bool // variables with a problem reported
}

// add reports a problem about vars (one name, or several separated by '/'), unless one of them
// failed to parse or already has a problem reported.
func (p *problems) add(vars, format string, args ...any) {
	names := strings.Split(vars, "/")
	for _, n := range names {
		if p.bad[n] || p.seen[n] {
			return
		}
	}
	for _, n := range names {
		p.seen[n] = true
	}
	p.list = append(p.list, fmt.Sprintf(format, args...))
}

// addAll reports the problems of a sub-validator (whose lines start with their variable),
// except those about a variable that failed to parse.
func (p *problems) addAll(lines []string) {
	for _, l := range lines {
		name, _, _ := strings.Cut(l, " ")
		name = strings.TrimSuffix(name, ":")
		if p.bad[name] {
			continue
		}
		p.seen[name] = true
		p.list = append(p.list, l)
	}
}

// parseEnv fills c from the environment and the fields' defaults. A value that does not parse
// is reported with the shape wanted; the field keeps its default.
func (c *Config) parseEnv(p *problems) {
	rv := reflect.ValueOf(c).Elem()
	rt := rv.Type()
	for i := range rt.NumField() {
		f := rt.Field(i)
		name := f.Tag.Get("envconfig")
		def, hasDef := f.Tag.Lookup("default")
		raw, set := os.LookupEnv(name)
		if hasDef {
			if err := setField(rv.Field(i), def); err != nil {
				panic(fmt.Sprintf("Config.%s: default %q: %v", f.Name, def, err)) // a bug, caught by every test
			}
		}
		if !set {
			continue
		}
		if err := setField(rv.Field(i), raw); err != nil {
			p.bad[name] = true
			p.list = append(p.list, fmt.Sprintf("%s=%s: want %s", name, quoteShort(raw), shapeOf(f.Type)))
		}
	}
}

// setField parses s into the field's type (the types Config uses).
func setField(v reflect.Value, s string) error {
	switch v.Interface().(type) {
	case string:
		v.SetString(s)
	case []string:
		v.Set(reflect.ValueOf(strings.Split(s, ",")))
	case time.Duration:
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
	case int:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 0)
		if err != nil {
			return err
		}
		v.SetInt(n)
	case float64:
		x, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Errorf("not a finite number")
		}
		v.SetFloat(x)
	case bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return err
		}
		v.SetBool(b)
	default:
		return fmt.Errorf("unsupported type %s", v.Type())
	}
	return nil
}

// shapeOf describes the values a field of type t accepts.
func shapeOf(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[time.Duration]():
		return "a duration with its unit, e.g. 250ms, 10s, 1m30s"
	case reflect.TypeFor[int]():
		return "a whole number, e.g. 64"
	case reflect.TypeFor[float64]():
		return "a number, e.g. 1000 or 0.5"
	case reflect.TypeFor[bool]():
		return "true or false"
	}
	return "text"
}

// quoteShort quotes a value for an error message, cut to 40 bytes. Only values of typed
// (non-string) fields and ENDPOINTS entries are ever quoted, so no secret is echoed.
func quoteShort(s string) string {
	if len(s) > 40 {
		return strconv.Quote(s[:40]) + "…"
	}
	return strconv.Quote(s)
}

// Validate returns every problem of c, as LoadConfig reports them. It also trims the list
// settings and reads the secret files into their settings.
func (c *Config) Validate() []string {
	v := &problems{bad: map[string]bool{}, seen: map[string]bool{}}
	c.validate(v)
	return v.list
}

func (c *Config) validate(p *problems) {
	c.validateRequired(p)
	c.validateBatch(p)
	c.validateDurations(p)
	c.validateLimits(p)
	p.addAll(c.ValidateKafkaSecurity())
	p.addAll(c.validateOptimize())
	p.addAll(c.validateFormats())
}

// validateRequired checks the variables without a default: brokers, topics, group, DLQ topic,
// the Braze endpoint and key; and the start offset.
func (c *Config) validateRequired(p *problems) {
	c.KafkaBrokers = TrimList(c.KafkaBrokers)
	c.KafkaTopics = TrimList(c.KafkaTopics)
	if len(c.KafkaBrokers) == 0 {
		p.add("KAFKA_BROKERS", "KAFKA_BROKERS is required (e.g. broker-1:9092,broker-2:9092)")
	}
	if len(c.KafkaTopics) == 0 {
		p.add("KAFKA_TOPICS", "KAFKA_TOPICS is required (comma-separated source topics)")
	}
	if c.KafkaGroupID == "" {
		p.add("KAFKA_GROUP_ID", "KAFKA_GROUP_ID is required")
	}
	if c.KafkaDLQTopic == "" {
		p.add("KAFKA_DLQ_TOPIC", "KAFKA_DLQ_TOPIC is required")
	}
	for _, t := range c.KafkaTopics {
		if t == c.KafkaDLQTopic && t != "" {
			p.add("KAFKA_DLQ_TOPIC", "KAFKA_DLQ_TOPIC %q must not also be a source topic", t)
		}
	}
	if c.BrazeEndpoint == "" {
		p.add("BRAZE_REST_ENDPOINT", "BRAZE_REST_ENDPOINT is required (e.g. https://rest.iad-01.braze.com)")
	} else if _, err := sink.ValidateEndpoint(c.BrazeEndpoint); err != nil {
		p.add("BRAZE_REST_ENDPOINT", "BRAZE_REST_ENDPOINT: %v", err)
	}
	c.validateAPIKey(p)
	switch c.KafkaStartOffset {
	case "earliest", "latest":
	default:
		p.add("KAFKA_START_OFFSET", "KAFKA_START_OFFSET %q: want earliest or latest", c.KafkaStartOffset)
	}
}

// validateDurations checks the durations and their bounds.
func (c *Config) validateDurations(p *problems) {
	positive := map[string]time.Duration{
		"KAFKA_COMMIT_INTERVAL": c.KafkaCommitInterval, "KAFKA_SESSION_TIMEOUT": c.KafkaSessionTimeout,
		"KAFKA_REBALANCE_TIMEOUT": c.KafkaRebalanceTimeout, "KAFKA_HEARTBEAT_INTERVAL": c.KafkaHeartbeatInterval,
		"KAFKA_DRAIN_TIMEOUT": c.KafkaDrainTimeout, "KAFKA_FETCH_MAX_WAIT": c.KafkaMaxWait, "BATCH_LINGER": c.BatchLinger,
		"BRAZE_HTTP_TIMEOUT": c.BrazeHTTPTimeout, "RETRY_INITIAL": c.RetryInitial, "RETRY_MAX": c.RetryMax,
		"SHUTDOWN_TIMEOUT": c.ShutdownTimeout, "HALT_PROBE_MAX": c.HaltProbeMax, "BREAKER_OPEN_FOR": c.BreakerOpenFor,
	}
	for _, name := range sortedKeys(positive) {
		if positive[name] <= 0 {
			p.add(name, "%s must be positive", name)
		}
	}
	if c.RetryMaxDuration < 0 {
		p.add("RETRY_MAX_DURATION", "RETRY_MAX_DURATION must not be negative")
	}
	if c.Isolate5xxAfter < 0 {
		p.add("ISOLATE_5XX_AFTER", "ISOLATE_5XX_AFTER must not be negative (0 = never)")
	}
	if c.LivenessStuckAfter < 10*time.Second || c.LivenessStuckAfter > time.Hour {
		p.add("LIVENESS_STUCK_AFTER", "LIVENESS_STUCK_AFTER %s: want 10s up to 1h", c.LivenessStuckAfter)
	}
	if c.MaxLatency < c.BatchLinger || c.MaxLatency > time.Minute {
		p.add("MAX_LATENCY/BATCH_LINGER", "MAX_LATENCY %s: want BATCH_LINGER (%s) up to 1m", c.MaxLatency, c.BatchLinger)
	}
	if c.UserMinSpacing < 0 || c.UserMinSpacing > time.Minute {
		p.add("USER_MIN_SPACING", "USER_MIN_SPACING %s: want 0 (off) up to 1m", c.UserMinSpacing)
	}
	if _, err := pipeline.ParseSpacing(c.EndpointSpacing); err != nil {
		p.add("ENDPOINT_SPACING", "ENDPOINT_SPACING: %v", err)
	}
	if c.KafkaDrainTimeout >= c.KafkaSessionTimeout && c.KafkaSessionTimeout > 0 {
		p.add("KAFKA_DRAIN_TIMEOUT/KAFKA_SESSION_TIMEOUT", "KAFKA_DRAIN_TIMEOUT (%s) must be below KAFKA_SESSION_TIMEOUT (%s)", c.KafkaDrainTimeout, c.KafkaSessionTimeout)
	}
}

// validateLimits checks rates, counts and sizes.
func (c *Config) validateLimits(p *problems) {
	if c.BrazeRateLimit < 0 {
		p.add("BRAZE_RATE_LIMIT", "BRAZE_RATE_LIMIT must not be negative (0 = unpaced)")
	}
	if c.BrazeRateBurst < 1 {
		p.add("BRAZE_RATE_BURST", "BRAZE_RATE_BURST must be at least 1")
	}
	c.validateEndpoints(p)
	if c.BreakerFailures < 1 {
		p.add("BREAKER_FAILURES", "BREAKER_FAILURES must be at least 1")
	}
	if c.Lanes < 1 || c.Lanes > 4096 {
		p.add("LANES", "LANES %d: want 1..4096", c.Lanes)
	}
	if c.LaneQueue < 1 {
		p.add("LANE_QUEUE", "LANE_QUEUE must be at least 1")
	}
	if c.KafkaMinBytes < 1 || c.KafkaMaxBytes < c.KafkaMinBytes {
		p.add("KAFKA_FETCH_MIN_BYTES/KAFKA_FETCH_MAX_BYTES", "KAFKA_FETCH_MIN_BYTES/KAFKA_FETCH_MAX_BYTES: want 1 <= min <= max")
	}
	switch c.KafkaFetcher {
	case "batch", "reader":
	default:
		p.add("KAFKA_FETCHER", "KAFKA_FETCHER %q: want batch or reader", c.KafkaFetcher)
	}
	if c.KafkaQueueCapacity < 1 {
		p.add("KAFKA_QUEUE_CAPACITY", "KAFKA_QUEUE_CAPACITY must be at least 1")
	}
	if c.KafkaMaxRunAhead < 1 || c.KafkaMaxRunAhead > 2800 {
		p.add("KAFKA_MAX_RUN_AHEAD", "KAFKA_MAX_RUN_AHEAD %d: want 1..2800 (the offset map must fit the broker's 4096-byte commit metadata)", c.KafkaMaxRunAhead)
	}
	if c.MaxInflightBytes < 1<<20 {
		p.add("MAX_INFLIGHT_BYTES", "MAX_INFLIGHT_BYTES %d: want at least 1048576", c.MaxInflightBytes)
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		p.add("LOG_LEVEL", "LOG_LEVEL %q: want debug, info, warn or error", c.LogLevel)
	}
}

// maxPerMinute bounds BRAZE_USERS_RATE_LIMIT and BRAZE_SUBSCRIPTION_RATE_LIMIT: 50 times Braze's
// default for the users group, room for any contract increase.
const maxPerMinute = 1_000_000

// validateEndpoints checks ENDPOINTS (trimmed here) and the per-minute rate limits of the
// groups other than /users/track.
func (c *Config) validateEndpoints(p *problems) {
	c.Endpoints = TrimList(c.Endpoints)
	var names []string
	for e := endpoint.Endpoint(0); e < endpoint.Count; e++ {
		names = append(names, e.Name())
	}
	var unknown []string
	for _, n := range c.Endpoints {
		if _, ok := endpoint.Parse(n); !ok {
			unknown = append(unknown, quoteShort(n))
		}
	}
	if len(unknown) > 0 {
		p.add("ENDPOINTS", "ENDPOINTS: unknown endpoint %s: want a comma-separated list of %s", strings.Join(unknown, ", "), strings.Join(names, ", "))
	}
	if !slices.Contains(c.Endpoints, endpoint.Track.Name()) {
		p.add("ENDPOINTS", "ENDPOINTS %q: must include track", strings.Join(c.Endpoints, ","))
	}
	rates := map[string]int{"BRAZE_USERS_RATE_LIMIT": c.BrazeUsersRateLimit, "BRAZE_SUBSCRIPTION_RATE_LIMIT": c.BrazeSubscriptionRateLimit}
	for _, name := range sortedKeys(rates) {
		if v := rates[name]; v < 1 || v > maxPerMinute {
			p.add(name, "%s %d: want 1..%d requests per minute", name, v, maxPerMinute)
		}
	}
}

// EnabledEndpoints is ENDPOINTS as a set (after validation; /users/track always in it).
func (c *Config) EnabledEndpoints() [endpoint.Count]bool {
	var on [endpoint.Count]bool
	on[endpoint.Track] = true
	for _, n := range c.Endpoints {
		if e, ok := endpoint.Parse(strings.TrimSpace(n)); ok {
			on[e] = true
		}
	}
	return on
}

// validateBatch checks the request limits: each variable on its own first, then the three
// together (batcher.Limits) only when each is usable.
func (c *Config) validateBatch(p *problems) {
	switch batcher.Mode(c.BatchLimitMode) {
	case batcher.Combined, batcher.PerArray:
	default:
		p.add("BATCH_LIMIT_MODE", "BATCH_LIMIT_MODE %q: want %s or %s", c.BatchLimitMode, batcher.Combined, batcher.PerArray)
	}
	if c.BatchMaxObjects < 1 || c.BatchMaxObjects > 75 {
		p.add("BATCH_MAX_OBJECTS", "BATCH_MAX_OBJECTS %d: want 1..75 (Braze accepts at most 75)", c.BatchMaxObjects)
	}
	if c.BatchMaxBytes > 4*1024*1024 {
		p.add("BATCH_MAX_BYTES", "BATCH_MAX_BYTES %d: Braze refuses bodies over 4 MB", c.BatchMaxBytes)
	}
	if err := (batcher.Limits{Mode: batcher.Mode(c.BatchLimitMode), MaxObjects: c.BatchMaxObjects, MaxBytes: c.BatchMaxBytes}).Validate(); err != nil {
		p.add("BATCH_LIMIT_MODE/BATCH_MAX_OBJECTS/BATCH_MAX_BYTES", "BATCH_LIMIT_MODE/BATCH_MAX_OBJECTS/BATCH_MAX_BYTES: %v", err)
	}
}

// validateAPIKey resolves BRAZE_API_KEY(_FILE). Surrounding whitespace (a trailing newline
// from `echo` or an editor) is trimmed; a key with whitespace or a control character inside,
// or a byte outside printable ASCII, is refused here: it could never be sent as a header, and
// every request would fail locally. The key itself is never echoed.
func (c *Config) validateAPIKey(p *problems) {
	name := "BRAZE_API_KEY"
	switch {
	case c.BrazeAPIKey != "" && c.BrazeAPIKeyFile != "":
		p.add("BRAZE_API_KEY/BRAZE_API_KEY_FILE", "set only one of BRAZE_API_KEY and BRAZE_API_KEY_FILE")
		return
	case c.BrazeAPIKeyFile != "":
		name = "BRAZE_API_KEY_FILE"
		key, err := readSecretFile(c.BrazeAPIKeyFile)
		if err != nil {
			p.add(name, "BRAZE_API_KEY_FILE: %v", err)
			return
		}
		c.BrazeAPIKey = key
	default:
		c.BrazeAPIKey = strings.TrimSpace(c.BrazeAPIKey)
		if c.BrazeAPIKey == "" {
			p.add(name, "BRAZE_API_KEY or BRAZE_API_KEY_FILE is required")
			return
		}
	}
	if err := preflight.CheckAPIKey(c.BrazeAPIKey); err != nil {
		p.add(name, "%s: %v", name, err)
	}
}

// ValidateKafkaSecurity returns the problems of the TLS and SASL settings (replay and check
// need only these).
func (c *Config) ValidateKafkaSecurity() []string {
	var p []string
	switch strings.ToLower(c.KafkaSASLMechanism) {
	case "":
		if c.KafkaSASLUsername != "" || c.KafkaSASLPassword != "" || c.KafkaSASLPassFile != "" {
			p = append(p, "KAFKA_SASL_USERNAME/PASSWORD set but KAFKA_SASL_MECHANISM is empty")
		}
	case "plain", "scram-sha-256", "scram-sha-512":
		if c.KafkaSASLUsername == "" {
			p = append(p, "KAFKA_SASL_USERNAME is required with KAFKA_SASL_MECHANISM")
		}
		switch {
		case c.KafkaSASLPassword != "" && c.KafkaSASLPassFile != "":
			p = append(p, "set only one of KAFKA_SASL_PASSWORD and KAFKA_SASL_PASSWORD_FILE")
		case c.KafkaSASLPassFile != "":
			pw, err := readSecretFile(c.KafkaSASLPassFile)
			if err != nil {
				p = append(p, fmt.Sprintf("KAFKA_SASL_PASSWORD_FILE: %v", err))
			}
			c.KafkaSASLPassword = pw
		case c.KafkaSASLPassword == "":
			p = append(p, "KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE is required with KAFKA_SASL_MECHANISM")
		}
	default:
		p = append(p, fmt.Sprintf("KAFKA_SASL_MECHANISM %q: want plain, scram-sha-256 or scram-sha-512", c.KafkaSASLMechanism))
	}
	if (c.KafkaTLSCertFile == "") != (c.KafkaTLSKeyFile == "") {
		p = append(p, "KAFKA_TLS_CERT_FILE and KAFKA_TLS_KEY_FILE go together")
	}
	for name, f := range map[string]string{"KAFKA_TLS_CA_FILE": c.KafkaTLSCAFile, "KAFKA_TLS_CERT_FILE": c.KafkaTLSCertFile, "KAFKA_TLS_KEY_FILE": c.KafkaTLSKeyFile} {
		if f != "" {
			if _, err := os.Stat(f); err != nil {
				p = append(p, fmt.Sprintf("%s: %v", name, err))
			}
		}
	}
	return p
}

func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err // the path is not secret; the contents are never echoed
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

// TrimList drops empty items and the spaces around the others (comma-separated settings).
func TrimList(in []string) []string {
	var out []string
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Input formats of KAFKA_TOPIC_FORMATS.
const (
	formatNative  = "native"
	formatSegment = "segment"
)

// topicFormats parses KAFKA_TOPIC_FORMATS into topic → format, with every problem found.
func (c *Config) topicFormats() (map[string]string, []string) {
	var p []string
	formats := map[string]string{}
	for _, item := range TrimList(strings.Split(c.KafkaTopicFormats, ",")) {
		topic, format, ok := strings.Cut(item, ":")
		topic, format = strings.TrimSpace(topic), strings.TrimSpace(format)
		switch {
		case !ok || topic == "":
			p = append(p, fmt.Sprintf("KAFKA_TOPIC_FORMATS item %q: want topic:format (e.g. segment-tracks:segment)", item))
			continue
		case format != formatNative && format != formatSegment:
			p = append(p, fmt.Sprintf("KAFKA_TOPIC_FORMATS %s: format %q: want native or segment", topic, format))
			continue
		case !slices.Contains(TrimList(c.KafkaTopics), topic):
			p = append(p, fmt.Sprintf("KAFKA_TOPIC_FORMATS names topic %q, which is not in KAFKA_TOPICS", topic))
			continue
		}
		if _, dup := formats[topic]; dup {
			p = append(p, fmt.Sprintf("KAFKA_TOPIC_FORMATS lists topic %q twice", topic))
			continue
		}
		formats[topic] = format
	}
	return formats, p
}

func (c *Config) validateFormats() []string {
	_, p := c.topicFormats()
	switch c.SegmentUnsupported {
	case "", "skip", "dlq":
	default:
		p = append(p, fmt.Sprintf("SEGMENT_UNSUPPORTED %q: want skip or dlq", c.SegmentUnsupported))
	}
	switch c.SegmentIdentifyAlias {
	case "", "auto", "off":
	case "on":
		if !c.EnabledEndpoints()[endpoint.Identify] {
			p = append(p, "SEGMENT_IDENTIFY_ALIAS=on needs identify in ENDPOINTS")
		}
	default:
		p = append(p, fmt.Sprintf("SEGMENT_IDENTIFY_ALIAS %q: want auto, on or off", c.SegmentIdentifyAlias))
	}
	switch c.SegmentOrderCompleted {
	case "", "purchases", "ecommerce":
	default:
		p = append(p, fmt.Sprintf("SEGMENT_ORDER_COMPLETED %q: want purchases or ecommerce", c.SegmentOrderCompleted))
	}
	if c.SegmentAnonymousAliasLabel == "" {
		p = append(p, "SEGMENT_ANONYMOUS_ALIAS_LABEL must not be empty")
	}
	if cur := c.SegmentDefaultCurrency; cur != "" && (len(cur) != 3 || strings.Trim(cur, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "") {
		p = append(p, fmt.Sprintf("SEGMENT_DEFAULT_CURRENCY %q: want a 3-letter upper-case ISO 4217 code", cur))
	}
	return p
}

// segmentDecoder builds the one Segment decoder every segment topic shares (its counters are
// the worker's Segment metrics).
func (c *Config) segmentDecoder(maxRecordBytes int) *schemas.SegmentDecoder {
	d := &schemas.SegmentDecoder{
		AliasLabel: c.SegmentAnonymousAliasLabel, PageAsEvent: c.SegmentPageAsEvent,
		GroupAsAttribute: c.SegmentGroupAsAttribute, DefaultCurrency: c.SegmentDefaultCurrency,
		MaxRecordBytes: maxRecordBytes,
	}
	if c.SegmentUnsupported == "dlq" {
		d.Unsupported = schemas.SegmentDeadLetter
	}
	if c.SegmentOrderCompleted == "ecommerce" {
		d.OrderCompleted = schemas.SegmentOrderEcommerce
	}
	// The records of other endpoints (docs/segment.md "identify, alias and delete"):
	// identify as SEGMENT_IDENTIFY_ALIAS says, alias calls when merge is enabled; deletes
	// always (dead-lettered by the pipeline when delete is not enabled).
	d.IdentifyAlias = c.SegmentIdentifyAlias == "on" ||
		(c.SegmentIdentifyAlias != "off" && c.EnabledEndpoints()[endpoint.Identify])
	d.AliasAsMerge = c.EnabledEndpoints()[endpoint.Merge]
	return d
}

// newDecoderFunc returns pipeline.Config.NewDecoder for KAFKA_TOPIC_FORMATS: nil when every
// topic is native (the pipeline's default), otherwise a function giving segment topics the
// shared Segment decoder and the others a native one.
func (c *Config) newDecoderFunc() func(topic string) pipeline.Decoder {
	f, _ := c.newDecoders()
	return f
}

// newDecoders is newDecoderFunc plus the shared Segment decoder (nil when no topic is
// Segment), whose counters telemetry exports.
func (c *Config) newDecoders() (func(topic string) pipeline.Decoder, *schemas.SegmentDecoder) {
	formats, _ := c.topicFormats() // validated by LoadConfig
	maxBytes := c.BatchMaxBytes
	if maxBytes <= 0 {
		maxBytes = Defaults().BatchMaxBytes
	}
	maxRecord := batcher.Limits{MaxBytes: maxBytes}.MaxRecordBytes()
	var seg *schemas.SegmentDecoder
	for _, f := range formats {
		if f == formatSegment {
			seg = c.segmentDecoder(maxRecord)
		}
	}
	if seg == nil {
		return nil, nil
	}
	return func(topic string) pipeline.Decoder {
		if formats[topic] == formatSegment {
			return seg
		}
		return &schemas.Decoder{MaxRecordBytes: maxRecord}
	}, seg
}
