package main

import (
	"strings"
	"testing"

	"github.com/braze-ingestor/braze-ingestor/brazesim"
)

// TestCheckEndpointPermissions: `ingestor check` proves the key's permission for every endpoint
// in ENDPOINTS, one line each, against the simulator's per-key permissions, and writes nothing.
func TestCheckEndpointPermissions(t *testing.T) {
	k := newTestKafka(t, 1)
	sim := newSim(t, func(c *brazesim.Config) {
		c.Keys = []brazesim.Key{
			{Name: "good", Secret: "good-key-0123456789"},
			{Name: "track-merge", Secret: "tm-key-0123456789", Permissions: []string{brazesim.PermUsersTrack, brazesim.PermUsersMerge}},
		}
	})
	const endpoints = "track,alias,identify,merge,subscription,delete"
	for _, tc := range []struct {
		name, key, endpoints string
		wantCode             int
		want, notWant        []string
	}{
		{"all permitted", "good-key-0123456789", endpoints, 0, []string{
			"✓ Braze " + sim.URL + ": key accepted for users.track",
			"✓ Braze " + sim.URL + " /users/alias/new: key accepted for users.alias.new",
			"✓ Braze " + sim.URL + " /users/identify: key accepted for users.identify",
			"✓ Braze " + sim.URL + " /users/merge: key accepted for users.merge",
			"✓ Braze " + sim.URL + " /users/delete: key accepted for users.delete",
			"✓ Braze " + sim.URL + " /subscription/status/set: key accepted for subscription.status.set",
		}, []string{"✗"}},
		{"key without users.delete", "tm-key-0123456789", "track, merge, delete", 1, []string{
			"✓ Braze " + sim.URL + ": key accepted for users.track",
			"✓ Braze " + sim.URL + " /users/merge: key accepted for users.merge",
			"✗ Braze " + sim.URL + " /users/delete: HTTP 403: ",
			"refused: the API key lacks the users.delete permission",
			"with the permissions users.track, users.merge, users.delete;",
			"or remove delete from ENDPOINTS",
		}, []string{"/users/alias/new", "/users/identify"}},
		{"track only by default", "tm-key-0123456789", "", 0, []string{"✓ Braze " + sim.URL + ": key accepted for users.track"},
			[]string{"/users/merge", "/users/delete"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkEnv(t, k, sim, tc.key)
			if tc.endpoints != "" {
				t.Setenv("ENDPOINTS", tc.endpoints)
			}
			code, out, errOut := runCheck(t, "--dlq-write=false")
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
			if strings.Contains(out+errOut, "-key-0123456789") {
				t.Error("output shows an API key")
			}
		})
	}
	if users := sim.Sim.Users(); len(users) != 0 {
		t.Errorf("simulator has %d users after the checks, want none", len(users))
	}
}
