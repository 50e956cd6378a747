// Package redistest starts a throwaway redis-server for tests: on a free loopback port, no
// persistence, in a temporary directory, stopped when the test ends.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Start returns the redis:// URL of a fresh server. Without redis-server on PATH the test is
// skipped, unless CI is set (then it fails: scripts/prereqs.sh installs Debian's redis-server).
func Start(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis-server not found on PATH (CI is set; scripts/prereqs.sh installs it): %v", err)
		}
		t.Skip("redis-server not found on PATH: install it (scripts/prereqs.sh) to run the Redis tests")
	}
	dir := t.TempDir()
	for attempt := 0; attempt < 5; attempt++ {
		port := freePort(t)
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", dir, "--protected-mode", "yes", "--loglevel", "warning")
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("redis-%d.log", attempt)))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatalf("start redis-server: %v", err)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if waitPing(addr, 5*time.Second) {
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				logf.Close()
			})
			return "redis://" + addr + "/0"
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
	}
	t.Fatal("redis-server did not come up")
	return ""
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitPing(addr string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, _ = c.Write([]byte("PING\r\n"))
			line, err := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if err == nil && line == "+PONG\r\n" {
				return true
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}
