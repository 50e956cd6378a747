package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/braze-ingestor/braze-ingestor/brazesim"
	"github.com/braze-ingestor/braze-ingestor/dlq"
)

// checkEnv sets the environment `ingestor check` reads, for broker k and simulator sim.
func checkEnv(t *testing.T, k *testKafka, sim *brazesim.Server, key string) {
	t.Helper()
	for name, v := range map[string]string{
		"KAFKA_BROKERS": strings.Join(k.Brokers, ","), "KAFKA_TOPICS": k.Topic, "KAFKA_GROUP_ID": "check",
		"KAFKA_DLQ_TOPIC": k.DLQ, "BRAZE_REST_ENDPOINT": sim.URL, "BRAZE_API_KEY": key,
	} {
		t.Setenv(name, v)
	}
	// Nothing else from the developer's environment.
	for _, name := range []string{"BRAZE_API_KEY_FILE", "KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD",
		"KAFKA_SASL_PASSWORD_FILE", "KAFKA_TLS_ENABLED", "KAFKA_TLS_CA_FILE", "KAFKA_TLS_CERT_FILE", "KAFKA_TLS_KEY_FILE"} {
		t.Setenv(name, "")
		os.Unsetenv(name)
	}
}

func runCheck(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := cmdCheck(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestCheck runs the preflight against an in-process broker and the Braze simulator: it passes
// with a good key and names the exact problem otherwise, and it never writes user data.
func TestCheck(t *testing.T) {
	k := newTestKafka(t, 3)
	sim := newSim(t, func(c *brazesim.Config) {
		c.Keys = []brazesim.Key{
			{Name: "good", Secret: "good-key-0123456789"},
			{Name: "delete-only", Secret: "noperm-key-0123456789", Permissions: []string{brazesim.PermUsersDelete}},
			{Name: "office", Secret: "ip-key-0123456789", AllowedIPs: []string{"10.0.0.0/8"}},
		}
	})
	secrets := []string{"good-key-0123456789", "noperm-key-0123456789", "ip-key-0123456789", "wrong-key-0123456789"}

	cases := []struct {
		name     string
		key      string
		env      map[string]string
		args     []string
		wantCode int
		want     []string // substrings of the output
		notWant  []string
	}{
		{name: "good key", key: "good-key-0123456789", wantCode: 0, want: []string{
			"✓ config valid", "✓ brokers reachable (plaintext)", "✓ source topic " + k.Topic + ": exists, 3 partitions",
			"✓ consumer group check: new (no committed offsets; starts at the earliest offset)",
			"✓ DLQ topic " + k.DLQ + ": exists, 3 partitions", "✓ DLQ topic " + k.DLQ + ": writable (acks=all",
			"✓ Braze " + sim.URL + ": key accepted for users.track",
		}, notWant: []string{"✗"}},
		{name: "plain output", key: "good-key-0123456789", args: []string{"--plain", "--dlq-write=false"}, wantCode: 0,
			want: []string{"ok   config valid", "WARN DLQ topic " + k.DLQ + ": writability not tested"}},
		{name: "wrong key", key: "wrong-key-0123456789", wantCode: 1, want: []string{
			"✗ Braze " + sim.URL + ": HTTP 401: ", ": refused: the API key is invalid, from another workspace",
			"fix: check BRAZE_API_KEY",
			"✓ brokers reachable",
		}},
		{name: "key without users.track", key: "noperm-key-0123456789", wantCode: 1, want: []string{
			"✗ Braze " + sim.URL + ": HTTP 403: Access Denied: refused: the API key lacks the users.track permission",
			"fix: check BRAZE_API_KEY (a key of a workspace on this instance, with the users.track permission",
		}},
		{name: "IP not allowed", key: "ip-key-0123456789", wantCode: 1, want: []string{
			"✗ Braze " + sim.URL + ": HTTP 401: IP address not allowed for this API key: refused:", "this host's address is 127.0.0.1",
			"the key's IP allowlist in Braze",
		}},
		{name: "missing source topic", key: "good-key-0123456789", env: map[string]string{"KAFKA_TOPICS": k.Topic + ",no-such-topic"}, wantCode: 1, want: []string{
			"✓ source topic " + k.Topic + ": exists",
			"✗ source topic no-such-topic: does not exist",
			"fix: create the topic, or correct KAFKA_TOPICS",
			"✓ Braze",
		}},
		{name: "missing DLQ topic", key: "good-key-0123456789", env: map[string]string{"KAFKA_DLQ_TOPIC": "no-such-dlq"}, wantCode: 1, want: []string{
			"✗ DLQ topic no-such-dlq: does not exist", "correct KAFKA_DLQ_TOPIC",
		}, notWant: []string{"writable"}},
		{name: "unreachable broker", key: "good-key-0123456789", env: map[string]string{"KAFKA_BROKERS": "127.0.0.1:1"}, wantCode: 1, want: []string{
			"✗ broker 127.0.0.1:1: unreachable: connection refused", "fix: check the host:port in KAFKA_BROKERS",
			"✗ topics: not checked (no broker usable)", "✓ Braze",
		}},
		{name: "one of two brokers unreachable", key: "good-key-0123456789", env: map[string]string{"KAFKA_BROKERS": "127.0.0.1:1," + strings.Join(k.Brokers, ",")}, wantCode: 0, want: []string{
			"! broker 127.0.0.1:1: unreachable: connection refused (other brokers answer", "✓ brokers reachable",
		}},
		{name: "unreachable Braze", key: "good-key-0123456789", env: map[string]string{"BRAZE_REST_ENDPOINT": "http://127.0.0.1:1"}, wantCode: 1, want: []string{
			"✗ Braze http://127.0.0.1:1: endpoint unreachable: connection refused",
		}},
		{name: "wrong endpoint path", key: "good-key-0123456789", env: map[string]string{"BRAZE_REST_ENDPOINT": sim.URL + "/v1"}, wantCode: 1, want: []string{
			"HTTP 404: Not Found: refused: wrong REST endpoint URL",
		}},
		{name: "invalid config", key: "", wantCode: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkEnv(t, k, sim, tc.key)
			for n, v := range tc.env {
				t.Setenv(n, v)
			}
			code, out, errOut := runCheck(t, tc.args...)
			t.Logf("exit %d\n%s%s", code, out, errOut)
			if code != tc.wantCode {
				t.Errorf("exit status %d, want %d", code, tc.wantCode)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q", w)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(out, w) {
					t.Errorf("output has %q", w)
				}
			}
			for _, s := range secrets {
				if strings.Contains(out+errOut, s) {
					t.Errorf("output shows an API key")
				}
			}
			if tc.wantCode == 2 && !strings.Contains(errOut, "invalid configuration:") {
				t.Errorf("stderr lacks the configuration error: %q", errOut)
			}
		})
	}

	// The probes wrote no user data, and the DLQ holds only preflight markers.
	if users := sim.Sim.Users(); len(users) != 0 {
		t.Errorf("simulator has %d users after the checks, want none", len(users))
	}
	if st := sim.Sim.Stats(); st.Objects != 0 || st.DataPoints != 0 {
		t.Errorf("simulator counted %d objects, %d data points; want 0", st.Objects, st.DataPoints)
	}
	markers := 0
	for _, m := range readDLQ(t, k) {
		if header(m, dlq.HeaderReason) != string(dlq.ReasonPreflightCheck) || !strings.Contains(string(m.Value), `"preflight_check"`) {
			t.Errorf("unexpected DLQ record: %v %q", m.Headers, m.Value)
		}
		markers++
	}
	if markers == 0 {
		t.Errorf("no preflight marker in the DLQ")
	}
}

// TestCheckKafkaSASL tells a refused login apart from an unreachable broker.
func TestCheckKafkaSASL(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser("PLAIN", "ingestor", "right-password"),
		kfake.SeedTopics(1, "src"), kfake.SeedTopics(1, "dlq"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	k := &testKafka{Brokers: c.ListenAddrs(), Topic: "src", DLQ: "dlq", Cluster: c}
	sim := newSim(t, nil)
	for _, tc := range []struct {
		name     string
		env      map[string]string
		wantCode int
		want     string
	}{
		{"right password", map[string]string{"KAFKA_SASL_MECHANISM": "plain", "KAFKA_SASL_USERNAME": "ingestor", "KAFKA_SASL_PASSWORD": "right-password"},
			0, "✓ brokers reachable (plaintext, SASL PLAIN)"},
		{"wrong password", map[string]string{"KAFKA_SASL_MECHANISM": "plain", "KAFKA_SASL_USERNAME": "ingestor", "KAFKA_SASL_PASSWORD": "wrong-password"},
			1, ": authentication failed (SASL)"},
		{"wrong mechanism", map[string]string{"KAFKA_SASL_MECHANISM": "scram-sha-512", "KAFKA_SASL_USERNAME": "ingestor", "KAFKA_SASL_PASSWORD": "right-password"},
			1, "✗ broker " + k.Brokers[0] + ": "},
		{"no SASL configured", nil, 1, "✗ broker " + k.Brokers[0] + ": "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkEnv(t, k, sim, "dev-key")
			for n, v := range tc.env {
				t.Setenv(n, v)
			}
			code, out, errOut := runCheck(t)
			t.Logf("exit %d\n%s%s", code, out, errOut)
			if code != tc.wantCode || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, want %d with %q", code, tc.wantCode, tc.want)
			}
			if strings.Contains(out+errOut, "password") && !strings.Contains(out, "KAFKA_SASL_PASSWORD") {
				t.Errorf("output shows the password")
			}
			if tc.wantCode != 0 && strings.Contains(out, "unreachable") {
				t.Errorf("a refused login is reported as unreachable")
			}
		})
	}
}
