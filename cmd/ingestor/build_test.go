package main

// Checks the container build without a Docker engine: the Dockerfile is parsed, and the binary
// is built exactly as its `go build` line says (same environment assignments, flags and
// package, from a copy of the repository filtered by .dockerignore, as `COPY . .` sees it),
// then inspected and run.

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dockerfile is what the tests need from the Dockerfile.
type dockerfile struct {
	stages     []dockerStage
	args       map[string]string // ARG defaults (any stage)
	build      string            // the shell command segment that runs `go build`
	buildStage int
}

type dockerStage struct {
	image, name string
	user        string
	entrypoint  []string
	cmd         []string
	expose      []string
	copies      [][]string // COPY arguments, flags included
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root: %v", err)
	}
	return root
}

// parseDockerfile reads the instructions the tests rely on. Comment lines are dropped (also
// inside continued lines, as Docker does) and backslash continuations are joined.
func parseDockerfile(t *testing.T) *dockerfile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var instrs []string
	var cur strings.Builder
	for _, line := range strings.Split(string(raw), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\"))
			cur.WriteString(" ")
			continue
		}
		cur.WriteString(trimmed)
		if s := strings.TrimSpace(cur.String()); s != "" {
			instrs = append(instrs, s)
		}
		cur.Reset()
	}
	df := &dockerfile{args: map[string]string{}, buildStage: -1}
	for _, in := range instrs {
		kw, rest, _ := strings.Cut(in, " ")
		rest = strings.TrimSpace(rest)
		kw = strings.ToUpper(kw)
		if kw == "FROM" {
			words := stripFlags(strings.Fields(rest))
			st := dockerStage{image: words[0]}
			if len(words) == 3 && strings.EqualFold(words[1], "AS") {
				st.name = words[2]
			}
			df.stages = append(df.stages, st)
			continue
		}
		if kw == "ARG" {
			for _, a := range strings.Fields(rest) {
				name, def, _ := strings.Cut(a, "=")
				if _, seen := df.args[name]; !seen || def != "" {
					df.args[name] = strings.Trim(def, `"`)
				}
			}
			continue
		}
		if len(df.stages) == 0 {
			t.Fatalf("Dockerfile: %s before FROM", kw)
		}
		st := &df.stages[len(df.stages)-1]
		switch kw {
		case "RUN":
			if !strings.Contains(rest, "go build") {
				continue
			}
			if df.build != "" {
				t.Fatalf("Dockerfile: more than one RUN with go build")
			}
			words := strings.Fields(rest)
			for len(words) > 0 && strings.HasPrefix(words[0], "--") {
				words = words[1:]
			}
			for _, seg := range regexp.MustCompile(`&&|;|\|\|`).Split(strings.Join(words, " "), -1) {
				if strings.Contains(seg, "go build") {
					df.build = strings.TrimSpace(seg)
				}
			}
			df.buildStage = len(df.stages) - 1
		case "USER":
			st.user = rest
		case "ENTRYPOINT":
			st.entrypoint = execForm(t, kw, rest)
		case "CMD":
			st.cmd = execForm(t, kw, rest)
		case "EXPOSE":
			st.expose = append(st.expose, strings.Fields(rest)...)
		case "COPY", "ADD":
			st.copies = append(st.copies, append([]string{kw}, strings.Fields(rest)...))
		}
	}
	if len(df.stages) < 2 {
		t.Fatalf("Dockerfile: want a multi-stage build, got %d stages", len(df.stages))
	}
	if df.build == "" {
		t.Fatalf("Dockerfile: no RUN ... go build")
	}
	return df
}

func stripFlags(words []string) []string {
	for len(words) > 0 && strings.HasPrefix(words[0], "--") {
		words = words[1:]
	}
	return words
}

func execForm(t *testing.T, kw, s string) []string {
	t.Helper()
	var v []string
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("Dockerfile %s %s: want the exec (JSON) form: %v", kw, s, err)
	}
	return v
}

// buildCommand expands the `go build` segment with vars (as the shell does with ARGs) and
// splits it into leading NAME=value assignments and the command's words.
func (df *dockerfile) buildCommand(t *testing.T, vars map[string]string) (env, argv []string) {
	t.Helper()
	expanded := os.Expand(df.build, func(name string) string {
		v, ok := vars[name]
		if !ok {
			t.Fatalf("Dockerfile go build: $%s is not an ARG with a default (or the test does not set it)", name)
		}
		return v
	})
	words := shellWords(t, expanded)
	assign := regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)
	for len(words) > 0 && assign.MatchString(words[0]) {
		env, words = append(env, words[0]), words[1:]
	}
	if len(words) < 2 || words[0] != "go" || words[1] != "build" {
		t.Fatalf("Dockerfile: cannot read the go build command from %q", df.build)
	}
	return env, words
}

// shellWords splits a command line as sh does for simple quoting (no expansion).
func shellWords(t *testing.T, s string) []string {
	t.Helper()
	var words []string
	var w strings.Builder
	inWord := false
	var quote rune
	for i := 0; i < len(s); i++ {
		c := rune(s[i])
		switch {
		case quote == '\'':
			if c == '\'' {
				quote = 0
			} else {
				w.WriteRune(c)
			}
		case quote == '"':
			switch {
			case c == '"':
				quote = 0
			case c == '\\' && i+1 < len(s) && strings.ContainsRune(`"\$`+"`", rune(s[i+1])):
				i++
				w.WriteByte(s[i])
			default:
				w.WriteRune(c)
			}
		case c == '\'' || c == '"':
			quote, inWord = c, true
		case c == '\\' && i+1 < len(s):
			i++
			w.WriteByte(s[i])
			inWord = true
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(c)
			inWord = true
		}
	}
	if quote != 0 {
		t.Fatalf("unterminated quote in %q", s)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

// flagValue returns the value of a go build flag (-name value or -name=value).
func flagValue(argv []string, name string) (string, int, bool) {
	for i, a := range argv {
		if a == name && i+1 < len(argv) {
			return argv[i+1], i + 1, true
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, i, true
		}
	}
	return "", -1, false
}

// TestDockerfile checks the image's shape: static build flags, distroless non-root final
// stage holding only the binary, entrypoint, default command and port.
func TestDockerfile(t *testing.T) {
	df := parseDockerfile(t)
	builder := df.stages[df.buildStage]
	final := df.stages[len(df.stages)-1]
	if !strings.HasPrefix(builder.image, "golang:1.26") {
		t.Errorf("builder image %q: want golang:1.26 (the module's Go)", builder.image)
	}
	switch final.image {
	case "gcr.io/distroless/static-debian12:nonroot":
	case "scratch":
		certs := false
		for _, c := range final.copies {
			certs = certs || strings.Contains(strings.Join(c, " "), "ca-certificates")
		}
		if !certs {
			t.Errorf("scratch final stage without CA certificates: Braze and Kafka TLS need them")
		}
	default:
		if !strings.HasPrefix(final.image, "gcr.io/distroless/static-debian12:nonroot@") {
			t.Errorf("final image %q: want gcr.io/distroless/static-debian12:nonroot (or scratch with CA certificates)", final.image)
		}
	}
	if u, _, _ := strings.Cut(final.user, ":"); u != "65532" {
		t.Errorf("final stage USER %q: want numeric 65532 (runAsNonRoot verifies numeric users only)", final.user)
	}
	if !slices.Equal(final.entrypoint, []string{"/ingestor"}) {
		t.Errorf("ENTRYPOINT %q, want [\"/ingestor\"]", final.entrypoint)
	}
	if !slices.Equal(final.cmd, []string{"run"}) {
		t.Errorf("CMD %q, want [\"run\"]", final.cmd)
	}
	f, _ := reflect.TypeFor[Config]().FieldByName("HTTPAddr")
	_, port, err := net.SplitHostPort(f.Tag.Get("default"))
	if err != nil {
		t.Fatalf("HTTP_ADDR default: %v", err)
	}
	if !slices.Contains(final.expose, port) && !slices.Contains(final.expose, port+"/tcp") {
		t.Errorf("EXPOSE %v: want %s (HTTP_ADDR's default port)", final.expose, port)
	}
	if df.args["VERSION"] != "dev" {
		t.Errorf("ARG VERSION default %q, want dev", df.args["VERSION"])
	}

	const stamp = "v9.9.9-dockerfile"
	vars := map[string]string{"VERSION": stamp, "TARGETOS": "linux", "TARGETARCH": "amd64"}
	env, argv := df.buildCommand(t, vars)
	if !slices.Contains(env, "CGO_ENABLED=0") {
		t.Errorf("go build environment %v: want CGO_ENABLED=0 (static binary)", env)
	}
	if !slices.Contains(argv, "-trimpath") {
		t.Errorf("go build %v: want -trimpath", argv)
	}
	ld, _, _ := flagValue(argv, "-ldflags")
	ldw := strings.Fields(ld)
	if !slices.Contains(ldw, "-s") || !slices.Contains(ldw, "-w") || !strings.Contains(ld, "-X main.version="+stamp) {
		t.Errorf("-ldflags %q: want -s -w -X main.version=${VERSION}", ld)
	}
	_ = version // the variable -X main.version stamps

	// The final stage holds only the binary built above, at the ENTRYPOINT's path.
	out, _, ok := flagValue(argv, "-o")
	if !ok {
		t.Fatalf("go build %v: no -o", argv)
	}
	if len(final.copies) != 1 {
		t.Fatalf("final stage has %d COPY/ADD instructions, want exactly the binary", len(final.copies))
	}
	c := final.copies[0]
	from := ""
	for _, w := range c[1:] {
		if v, ok := strings.CutPrefix(w, "--from="); ok {
			from = v
		}
	}
	args := stripFlags(c[1:])
	if c[0] != "COPY" || (from != builder.name && from != "0") || len(args) != 2 || args[0] != out || args[1] != final.entrypoint[0] {
		t.Errorf("final stage %v: want COPY --from=%s %s %s", c, builder.name, out, final.entrypoint[0])
	}
}

// dockerignore is a .dockerignore matcher for the syntax Docker documents (*, ?, **, leading
// !, paths relative to the context root; a match excludes a directory's contents too).
type dockerignore []struct {
	re     *regexp.Regexp
	negate bool
}

func loadDockerignore(t *testing.T, root string) dockerignore {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var rules dockerignore
	for _, line := range strings.Split(string(raw), "\n") {
		p := strings.TrimSpace(line)
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(path.Clean("/"+strings.TrimPrefix(p, "!")), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(p); i++ {
			switch {
			case strings.HasPrefix(p[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(p[i:], "**"):
				re.WriteString(".*")
				i++
			case p[i] == '*':
				re.WriteString("[^/]*")
			case p[i] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(p[i : i+1]))
			}
		}
		re.WriteString("$")
		rules = append(rules, struct {
			re     *regexp.Regexp
			negate bool
		}{regexp.MustCompile(re.String()), neg})
	}
	return rules
}

func (d dockerignore) excluded(rel string) bool {
	rel = filepath.ToSlash(rel)
	out := false
	for _, r := range d {
		for p := rel; ; p = path.Dir(p) {
			if r.re.MatchString(p) {
				out = !r.negate
				break
			}
			if !strings.Contains(p, "/") {
				break
			}
		}
	}
	return out
}

// copyContext copies root to dst as `COPY . .` would see it after .dockerignore.
func copyContext(t *testing.T, root, dst string, ign dockerignore) {
	t.Helper()
	negations := slices.ContainsFunc(ign, func(r struct {
		re     *regexp.Regexp
		negate bool
	}) bool {
		return r.negate
	})
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		if ign.excluded(rel) {
			if d.IsDir() && !negations {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			return os.WriteFile(target, b, 0o644)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("copying the build context: %v", err)
	}
}

// TestDockerBuild builds the binary as the Dockerfile does and checks it is static, stamped
// and runs. Skipped with -short (it compiles the whole program once more).
func TestDockerBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	df := parseDockerfile(t)
	root := repoRoot(t)
	ign := loadDockerignore(t, root)
	for _, must := range []string{"go.mod", "go.sum", "cmd/ingestor/main.go"} {
		if ign.excluded(must) {
			t.Fatalf(".dockerignore excludes %s", must)
		}
	}
	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	copyContext(t, root, src, ign)

	const stamp = "v0.0.0-buildtest"
	vars := map[string]string{}
	for k, v := range df.args {
		vars[k] = v
	}
	// The test builds for this machine so it can run the result; the image builds for the
	// target platform BuildKit passes in TARGETOS/TARGETARCH.
	vars["VERSION"], vars["TARGETOS"], vars["TARGETARCH"] = stamp, runtime.GOOS, runtime.GOARCH
	env, argv := df.buildCommand(t, vars)
	bin := filepath.Join(tmp, "ingestor")
	_, i, ok := flagValue(argv, "-o")
	if !ok || !strings.HasPrefix(argv[i], "/") {
		t.Fatalf("go build %v: want -o with an absolute path", argv)
	}
	argv[i] = bin
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, goTool, argv[1:]...)
	build.Dir = src
	// The golang image sets no GOFLAGS; the context has no .git (so no VCS stamping either).
	build.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
	build.Env = append(build.Env, env...)
	t0 := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%s %s (in the .dockerignore-filtered context): %v\n%s", strings.Join(env, " "), shellQuote(argv), err, out)
	}
	t.Logf("built in %s: %s %s", time.Since(t0).Round(time.Millisecond), strings.Join(env, " "), shellQuote(argv))

	// Static and stripped.
	if runtime.GOOS == "linux" {
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("binary has a PT_INTERP program header: dynamically linked")
			}
		}
		if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
			t.Errorf("binary needs shared libraries %v (%v): want a static binary", libs, err)
		}
		if f.Section(".symtab") != nil {
			t.Errorf("binary has a symbol table: -ldflags -s missing?")
		}
		f.Close()
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(src)) {
		t.Errorf("binary contains the build directory %s: -trimpath missing?", src)
	}
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
		t.Errorf("build settings CGO_ENABLED=%q -trimpath=%q: want 0 and true", settings["CGO_ENABLED"], settings["-trimpath"])
	}

	t.Run("version", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, "version").Output()
		if err != nil {
			t.Fatalf("ingestor version: %v", err)
		}
		if got, want := string(out), "ingestor "+stamp+"\n"; got != want {
			t.Errorf("ingestor version printed %q, want %q", got, want)
		}
	})

	t.Run("dev", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "dev", "-records", "2000", "-rate", "0")
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		cmd.WaitDelay = 10 * time.Second
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		cmd.Dir = t.TempDir()
		t0 := time.Now()
		err := cmd.Run()
		if ctx.Err() != nil {
			t.Fatalf("ingestor dev -records 2000 -rate 0 did not finish in time\nstdout:\n%s\nstderr:\n%s", lastChars(stdout.String()), lastChars(stderr.String()))
		}
		if err != nil {
			t.Fatalf("ingestor dev -records 2000 -rate 0: %v\nstdout:\n%s\nstderr:\n%s", err, lastChars(stdout.String()), lastChars(stderr.String()))
		}
		if !strings.Contains(stdout.String(), "summary") {
			t.Errorf("ingestor dev printed no summary\nstdout:\n%s\nstderr:\n%s", lastChars(stdout.String()), lastChars(stderr.String()))
		}
		t.Logf("ingestor dev finished in %s", time.Since(t0).Round(time.Millisecond))
	})
}

// lastChars keeps the end of a long output for a failure message.
func lastChars(s string) string {
	const n = 3000
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

func shellQuote(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = w
		if strings.ContainsAny(w, " \t\"'$") {
			q[i] = strconv.Quote(w)
		}
	}
	return strings.Join(q, " ")
}
