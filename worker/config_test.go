package worker

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/braze-ingestor/braze-ingestor/schemas"
)

// TestSegmentConfig: KAFKA_TOPIC_FORMATS and the SEGMENT_* settings are validated with every
// problem listed, and the decoder factory gives segment topics the shared Segment decoder.
func TestSegmentConfig(t *testing.T) {
	base := func() *Config {
		return &Config{KafkaTopics: []string{"events", "seg"}, SegmentAnonymousAliasLabel: "anonymous_id",
			SegmentUnsupported: "skip", SegmentDefaultCurrency: "USD", BatchMaxBytes: 3_500_000}
	}
	for _, tc := range []struct {
		name    string
		mut     func(*Config)
		problem string
	}{
		{"no colon", func(c *Config) { c.KafkaTopicFormats = "seg" }, `KAFKA_TOPIC_FORMATS item "seg": want topic:format`},
		{"unknown format", func(c *Config) { c.KafkaTopicFormats = "seg:rudder" }, `KAFKA_TOPIC_FORMATS seg: format "rudder": want native or segment`},
		{"not a source topic", func(c *Config) { c.KafkaTopicFormats = "other:segment" }, `names topic "other", which is not in KAFKA_TOPICS`},
		{"twice", func(c *Config) { c.KafkaTopicFormats = "seg:segment, seg:native" }, `lists topic "seg" twice`},
		{"unsupported", func(c *Config) { c.SegmentUnsupported = "drop" }, `SEGMENT_UNSUPPORTED "drop": want skip or dlq`},
		{"label", func(c *Config) { c.SegmentAnonymousAliasLabel = "" }, `SEGMENT_ANONYMOUS_ALIAS_LABEL must not be empty`},
		{"currency", func(c *Config) { c.SegmentDefaultCurrency = "usd" }, `SEGMENT_DEFAULT_CURRENCY "usd"`},
		{"order", func(c *Config) { c.SegmentOrderCompleted = "events" }, `SEGMENT_ORDER_COMPLETED "events": want purchases or ecommerce`},
		{"identify alias", func(c *Config) { c.SegmentIdentifyAlias = "yes" }, `SEGMENT_IDENTIFY_ALIAS "yes": want auto, on or off`},
		{"identify alias on", func(c *Config) { c.SegmentIdentifyAlias = "on" }, `SEGMENT_IDENTIFY_ALIAS=on needs identify in ENDPOINTS`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mut(c)
			p := c.validateFormats()
			if len(p) != 1 || !strings.Contains(p[0], tc.problem) {
				t.Errorf("problems %q, want one containing %q", p, tc.problem)
			}
		})
	}

	c := base()
	if c.newDecoderFunc() != nil {
		t.Errorf("no segment topic: want the pipeline's default decoder (nil)")
	}
	c.KafkaTopicFormats = " events:native , seg:segment "
	c.SegmentUnsupported, c.SegmentPageAsEvent, c.SegmentOrderCompleted = "dlq", true, "ecommerce"
	if p := c.validateFormats(); len(p) != 0 {
		t.Fatalf("problems %q", p)
	}
	f := c.newDecoderFunc()
	seg, ok := f("seg").(*schemas.SegmentDecoder)
	if !ok || f("seg") != seg {
		t.Fatalf("segment topic decoder %T is not one shared *SegmentDecoder", f("seg"))
	}
	if seg.Unsupported != schemas.SegmentDeadLetter || !seg.PageAsEvent || seg.AliasLabel != "anonymous_id" ||
		seg.OrderCompleted != schemas.SegmentOrderEcommerce ||
		seg.DefaultCurrency != "USD" || seg.MaxRecordBytes <= 0 || seg.MaxRecordBytes >= 3_500_000 {
		t.Errorf("segment decoder options %+v", seg)
	}
	if seg.IdentifyAlias || seg.AliasAsMerge {
		t.Errorf("ENDPOINTS track only: IdentifyAlias %v AliasAsMerge %v, want neither", seg.IdentifyAlias, seg.AliasAsMerge)
	}
	// SEGMENT_IDENTIFY_ALIAS=auto follows ENDPOINTS; alias calls are merged when merge is on.
	for _, tc := range []struct {
		endpoints             []string
		identifyAlias         string
		wantIdentify, wantMrg bool
	}{
		{[]string{"track", "identify"}, "auto", true, false},
		{[]string{"track", "merge"}, "auto", false, true},
		{[]string{"track", "identify", "merge"}, "off", false, true},
		{[]string{"track", "identify"}, "on", true, false},
		{[]string{"track"}, "", false, false},
	} {
		c.Endpoints, c.SegmentIdentifyAlias = tc.endpoints, tc.identifyAlias
		if p := c.validateFormats(); len(p) != 0 {
			t.Errorf("%v %q: problems %q", tc.endpoints, tc.identifyAlias, p)
		}
		_, d := c.newDecoders()
		if d.IdentifyAlias != tc.wantIdentify || d.AliasAsMerge != tc.wantMrg {
			t.Errorf("ENDPOINTS %v SEGMENT_IDENTIFY_ALIAS %q: IdentifyAlias %v AliasAsMerge %v; want %v %v",
				tc.endpoints, tc.identifyAlias, d.IdentifyAlias, d.AliasAsMerge, tc.wantIdentify, tc.wantMrg)
		}
	}
	for _, topic := range []string{"events", "unlisted"} {
		if _, ok := f(topic).(*schemas.Decoder); !ok {
			t.Errorf("topic %s: decoder %T, want native", topic, f(topic))
		}
	}
}

// TestOptimizeConfig: settings and their validation.
func TestOptimizeConfig(t *testing.T) {
	c := &Config{SuppressCacheSize: 0, DedupCacheSize: 1, SuppressTTL: time.Hour, DedupWindow: 0, OptimizeStoreTimeout: time.Second, RedisURL: "http://x"}
	got := strings.Join(c.validateOptimize(), "; ")
	for _, want := range []string{"SUPPRESS_CACHE_SIZE", "DEDUP_WINDOW", "REDIS_URL"} {
		if !strings.Contains(got, want) {
			t.Errorf("problems %q lack %s", got, want)
		}
	}
	c = &Config{SuppressCacheSize: 1, DedupCacheSize: 1, SuppressTTL: time.Hour, DedupWindow: time.Hour, OptimizeStoreTimeout: time.Second, RedisURL: "redis://127.0.0.1:1/0"}
	if p := c.validateOptimize(); len(p) != 0 {
		t.Fatal(p)
	}
	// Unreachable Redis is a start-up error, not a silent fallback.
	c.SuppressUnchanged = true
	if _, _, err := optimizeConfig(context.Background(), c, NewLogger(io.Discard, "error")); err == nil {
		t.Fatal("unreachable Redis accepted")
	}
}
