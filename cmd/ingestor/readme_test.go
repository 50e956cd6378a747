package main

import (
	"flag"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

var updateREADME = flag.Bool("update-readme", false, "rewrite the README configuration table from Config")

const (
	tableStart = "<!-- config-table:start -->"
	tableEnd   = "<!-- config-table:end -->"
)

// configTable renders every setting of Config: name, default, meaning.
func configTable() string {
	var b strings.Builder
	b.WriteString("| Variable | Default | Meaning |\n| --- | --- | --- |\n")
	t := reflect.TypeOf(Config{})
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := f.Tag.Get("envconfig")
		def := f.Tag.Get("default")
		if def == "" {
			def = "—"
		} else {
			def = "`" + def + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", name, def, strings.ReplaceAll(f.Tag.Get("desc"), "|", "\\|"))
	}
	return b.String()
}

// The README's configuration table is generated from Config, so it cannot drift: this test
// fails when a setting is added, removed or changed without updating the README
// (go test ./cmd/ingestor -run TestREADMEConfigTable -update-readme rewrites it).
func TestREADMEConfigTable(t *testing.T) {
	const path = "../../README.md"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i, j := strings.Index(s, tableStart), strings.Index(s, tableEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md lacks the %s … %s markers", tableStart, tableEnd)
	}
	want := configTable()
	got := strings.TrimPrefix(s[i+len(tableStart):j], "\n")
	if got == want {
		return
	}
	if *updateREADME {
		s = s[:i+len(tableStart)] + "\n" + want + s[j:]
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("README configuration table is out of date; run: go test ./cmd/ingestor -run TestREADMEConfigTable -update-readme")
}
