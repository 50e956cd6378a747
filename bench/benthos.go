package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// BenthosVersion is the peer the issue compares against.
const BenthosVersion = "v4.27.0"

// benthosMain is the whole peer: Benthos with only the io, kafka and pure components. It is
// built at run time, outside the repository, into the git-ignored cache; no Benthos code is
// committed.
const benthosMain = `package main

import (
	"context"

	_ "github.com/benthosdev/benthos/v4/public/components/io"
	_ "github.com/benthosdev/benthos/v4/public/components/kafka"
	_ "github.com/benthosdev/benthos/v4/public/components/pure"
	"github.com/benthosdev/benthos/v4/public/service"
)

func main() { service.RunCLI(context.Background()) }
`

// ensureBenthos returns the path of the peer binary in cacheDir, building it when missing
// (about a minute and a half: module download and build).
func ensureBenthos(cacheDir string, logf func(string, ...any)) (string, error) {
	bin, err := filepath.Abs(filepath.Join(cacheDir, "benthos-"+BenthosVersion))
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", err
	}
	src, err := os.MkdirTemp("", "benthos-peer-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(src)
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(benthosMain), 0o644); err != nil {
		return "", err
	}
	logf("building Benthos %s peer in %s (about 1.5 min)", BenthosVersion, src)
	t0 := time.Now()
	for _, argv := range [][]string{
		{"go", "mod", "init", "peer"},
		{"go", "get", "github.com/benthosdev/benthos/v4@" + BenthosVersion},
		{"go", "mod", "tidy"},
		{"go", "build", "-o", bin, "."},
	} {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("%s: %v\n%s", strings.Join(argv, " "), err, tail(string(out), 2000))
		}
	}
	logf("built Benthos peer in %s", time.Since(t0).Round(time.Second))
	return bin, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
