package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// configEnv clears every setting Config reads and sets a valid minimal environment plus extra.
func configEnv(t *testing.T, extra map[string]string) {
	t.Helper()
	names, _ := configSettings(t)
	for _, n := range names {
		t.Setenv(n, "")
		os.Unsetenv(n)
	}
	for k, v := range map[string]string{
		"KAFKA_BROKERS": "localhost:9092", "KAFKA_TOPICS": "events", "KAFKA_GROUP_ID": "g",
		"KAFKA_DLQ_TOPIC": "dlq", "BRAZE_REST_ENDPOINT": "https://rest.iad-01.braze.com", "BRAZE_API_KEY": "0123-abcd",
	} {
		t.Setenv(k, v)
	}
	for k, v := range extra {
		t.Setenv(k, v)
	}
}

func configProblems(t *testing.T) []string {
	t.Helper()
	_, err := LoadConfig()
	if err == nil {
		return nil
	}
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("LoadConfig: %v, want a *ConfigError", err)
	}
	return ce.Problems
}

// TestConfigOneProblemPerBadValue: an unparsable value is reported once, with its name and the
// shape wanted, and causes no follow-on problems (envconfig stopped at the first bad value and
// the half-filled struct produced ~10 more).
func TestConfigOneProblemPerBadValue(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string // one problem each, in order of Config's fields
	}{
		{"LANES=abc", map[string]string{"LANES": "abc"},
			[]string{`LANES="abc": want a whole number`}},
		{"several bad values", map[string]string{"LANES": "abc", "BATCH_LINGER": "100", "BREAKER_FAILURES": "five",
			"COALESCE_ATTRIBUTES": "maybe", "BRAZE_RATE_LIMIT": "NaN"},
			[]string{`BATCH_LINGER="100": want a duration with its unit`, `LANES="abc": want a whole number`,
				`BRAZE_RATE_LIMIT="NaN": want a number`, `BREAKER_FAILURES="five": want a whole number`,
				`COALESCE_ATTRIBUTES="maybe": want true or false`}},
		{"a bad value is not related to others", map[string]string{"KAFKA_SESSION_TIMEOUT": "30", "KAFKA_DRAIN_TIMEOUT": "40s"},
			[]string{`KAFKA_SESSION_TIMEOUT="30": want a duration`}},
		{"valid values still checked", map[string]string{"LANES": "abc", "LANE_QUEUE": "0"},
			[]string{`LANES="abc"`, "LANE_QUEUE must be at least 1"}},
		{"one problem per variable", map[string]string{"BATCH_MAX_OBJECTS": "100"},
			[]string{"BATCH_MAX_OBJECTS 100: want 1..75"}},
		{"long value cut", map[string]string{"LANES": strings.Repeat("9", 100) + "x"},
			[]string{`LANES="` + strings.Repeat("9", 40) + `"…: want a whole number`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			configEnv(t, tc.env)
			got := configProblems(t)
			if len(got) != len(tc.want) {
				t.Fatalf("%d problems, want %d:\n  %s", len(got), len(tc.want), strings.Join(got, "\n  "))
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}

// TestConfigDefaultsAndValues: unset settings take their defaults and set ones are parsed.
func TestConfigDefaultsAndValues(t *testing.T) {
	configEnv(t, map[string]string{"LANES": " 8 ", "BATCH_LINGER": "5ms", "KAFKA_BROKERS": "a:1, b:2", "DEDUP_EVENTS": "true"})
	c, err := LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if c.Lanes != 8 || c.BatchLinger.Milliseconds() != 5 || strings.Join(c.KafkaBrokers, ";") != "a:1;b:2" || !c.DedupEvents {
		t.Errorf("parsed %d %s %q %v", c.Lanes, c.BatchLinger, c.KafkaBrokers, c.DedupEvents)
	}
	if c.LaneQueue != 256 || c.BrazeRateLimit != 1000 || c.KafkaStartOffset != "earliest" {
		t.Errorf("defaults %d %v %q", c.LaneQueue, c.BrazeRateLimit, c.KafkaStartOffset)
	}
}

// TestConfigAPIKeyWhitespace: surrounding whitespace (a trailing newline) is trimmed from the
// key, in the variable and in the file; whitespace or control characters inside are refused with
// a precise message that does not show the key (before, the key was accepted and every request
// failed locally, reported as Braze being down).
func TestConfigAPIKeyWhitespace(t *testing.T) {
	const key = "5ec7e7a0-0000-4a4a-9b9b-0123456789ab"
	dir := t.TempDir()
	file := func(name, content string) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		wantErr string
	}{
		{"trailing newline", map[string]string{"BRAZE_API_KEY": key + "\n"}, ""},
		{"surrounding spaces and CRLF", map[string]string{"BRAZE_API_KEY": "  " + key + "\r\n"}, ""},
		{"file with trailing newline", map[string]string{"BRAZE_API_KEY": "", "BRAZE_API_KEY_FILE": file("newline", key+"\n")}, ""},
		{"interior newline", map[string]string{"BRAZE_API_KEY": key[:8] + "\n" + key[8:]}, "BRAZE_API_KEY: contains a control character (0x0a) at byte 9"},
		{"interior space", map[string]string{"BRAZE_API_KEY": key[:8] + " " + key[8:]}, "BRAZE_API_KEY: contains whitespace at byte 9"},
		{"file with interior NUL", map[string]string{"BRAZE_API_KEY": "", "BRAZE_API_KEY_FILE": file("nul", key+"\x00x\n")}, "BRAZE_API_KEY_FILE: contains a control character (0x00)"},
		{"non-ASCII", map[string]string{"BRAZE_API_KEY": key + "é"}, "BRAZE_API_KEY: contains a non-ASCII byte"},
		{"only whitespace", map[string]string{"BRAZE_API_KEY": " \n"}, "BRAZE_API_KEY or BRAZE_API_KEY_FILE is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			configEnv(t, tc.env)
			c, err := LoadConfig()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.BrazeAPIKey != key {
					t.Fatalf("key %q, want it trimmed to %q", c.BrazeAPIKey, key)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted; want %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q, want %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), key[8:]) {
				t.Errorf("error shows the key: %q", err)
			}
			if n := strings.Count(err.Error(), "\n  - "); n != 1 {
				t.Errorf("%d problems, want 1: %q", n, err)
			}
		})
	}
}
