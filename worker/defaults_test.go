package worker

import (
	"io"
	"log/slog"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/braze-ingestor/braze-ingestor/pipeline"
)

// TestDefaults: Defaults reads the same default tags LoadConfig applies through envconfig, and
// the result with the required settings filled in is a valid configuration.
func TestDefaults(t *testing.T) {
	// envconfig applies a default only to an absent variable: t.Setenv restores each one after
	// the test, os.Unsetenv makes it absent now.
	for _, env := range envconfigNames() {
		t.Setenv(env, "")
		os.Unsetenv(env)
	}
	var fromEnv Config
	if err := envconfig.Process("", &fromEnv); err != nil {
		t.Fatal(err)
	}
	d := Defaults()
	if !reflect.DeepEqual(d, fromEnv) {
		t.Fatalf("Defaults differs from envconfig's defaults:\n%+v\n%+v", d, fromEnv)
	}
	if d.Lanes != 64 || d.BatchMaxBytes != 3_500_000 || d.KafkaCommitInterval != time.Second || d.KafkaStartOffset != "earliest" || d.BrazeRateLimit != 1000 {
		t.Fatalf("Defaults did not read the tags: %+v", d)
	}
	d.KafkaBrokers, d.KafkaTopics, d.KafkaGroupID, d.KafkaDLQTopic = []string{"b:9092"}, []string{"t"}, "g", "dlq"
	d.BrazeEndpoint, d.BrazeAPIKey = "https://rest.iad-01.braze.com", "k"
	if p := d.Validate(); len(p) != 0 {
		t.Fatalf("defaults are not a valid configuration: %q", p)
	}
}

// TestDefaultsOneHome: the pipeline's own zero-value fallbacks (pipeline.Config.Defaults, for
// library callers that leave fields empty) change nothing in a pipeline configuration built
// from the worker's defaults: the two cannot drift apart.
func TestDefaultsOneHome(t *testing.T) {
	d := Defaults()
	fromTags := pipelineConfig(&d)
	fromTags.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	fallback := pipeline.Config{Logger: fromTags.Logger} // every field left to the pipeline
	fallback.Defaults()
	if !reflect.DeepEqual(fromTags, fallback) {
		t.Fatalf("pipeline.Config.Defaults disagrees with the Config default tags:\nfrom tags %+v\nfallback  %+v", fromTags, fallback)
	}
}

func envconfigNames() []string {
	var names []string
	t := reflect.TypeOf(Config{})
	for i := 0; i < t.NumField(); i++ {
		names = append(names, t.Field(i).Tag.Get("envconfig"))
	}
	return names
}
