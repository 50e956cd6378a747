package worker

import (
	"io"
	"log/slog"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/braze-ingestor/braze-ingestor/pipeline"
)

// TestDefaults: Defaults is what LoadConfig reads from an environment that sets only the
// required variables, and a valid configuration once those are filled in.
func TestDefaults(t *testing.T) {
	for _, env := range envconfigNames() {
		t.Setenv(env, "") // restored after the test
		os.Unsetenv(env)
	}
	required := map[string]string{"KAFKA_BROKERS": "b:9092", "KAFKA_TOPICS": "t", "KAFKA_GROUP_ID": "g",
		"KAFKA_DLQ_TOPIC": "dlq", "BRAZE_REST_ENDPOINT": "https://rest.iad-01.braze.com", "BRAZE_API_KEY": "k"}
	for k, v := range required {
		t.Setenv(k, v)
	}
	loaded, err := LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	d := Defaults()
	if d.Lanes != 64 || d.BatchMaxBytes != 3_500_000 || d.KafkaCommitInterval != time.Second || d.KafkaStartOffset != "earliest" || d.BrazeRateLimit != 1000 {
		t.Fatalf("Defaults did not read the tags: %+v", d)
	}
	d.KafkaBrokers, d.KafkaTopics, d.KafkaGroupID, d.KafkaDLQTopic = []string{"b:9092"}, []string{"t"}, "g", "dlq"
	d.BrazeEndpoint, d.BrazeAPIKey = "https://rest.iad-01.braze.com", "k"
	if p := d.Validate(); len(p) != 0 {
		t.Fatalf("defaults are not a valid configuration: %q", p)
	}
	if !reflect.DeepEqual(&d, loaded) {
		t.Fatalf("Defaults differs from LoadConfig's defaults:\n%+v\n%+v", d, *loaded)
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
