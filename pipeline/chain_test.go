package pipeline

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/braze-ingestor/braze-ingestor/batcher"
	"github.com/braze-ingestor/braze-ingestor/dlq"
	"github.com/braze-ingestor/braze-ingestor/schemas"
	"github.com/braze-ingestor/braze-ingestor/sink"
)

// Only the HTTP client layer (sink/braze.go) reads status codes: every other non-test file
// of the delivery path acts on sink.Class, sink.Cause and sink.Verdict.
func TestNoStatusCodesAboveTheHTTPClient(t *testing.T) {
	for _, dir := range []string{".", "../sink", "../batcher"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") || filepath.Base(f) == "braze.go" && strings.HasSuffix(dir, "sink") {
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			fset := token.NewFileSet()
			file, err := parser.ParseFile(fset, f, src, 0)
			if err != nil {
				t.Fatal(err)
			}
			ast.Inspect(file, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.BinaryExpr:
					for _, side := range []ast.Expr{n.X, n.Y} {
						if sel, ok := side.(*ast.SelectorExpr); ok && (sel.Sel.Name == "Status" || sel.Sel.Name == "StatusCode") {
							t.Errorf("%s: status code compared outside the HTTP client layer", fset.Position(n.Pos()))
						}
					}
				case *ast.SelectorExpr:
					if id, ok := n.X.(*ast.Ident); ok && id.Name == "http" && strings.HasPrefix(n.Sel.Name, "Status") && n.Sel.Name != "StatusText" {
						t.Errorf("%s: http.%s used outside the HTTP client layer", fset.Position(n.Pos()), n.Sel.Name)
					}
				}
				return true
			})
		}
	}
}

// The chain returns one verdict per record: a fatal answer naming one object rejects that
// one, the rest is sent again and delivered; nothing is acknowledged twice.
func TestChainVerdictPerRecord(t *testing.T) {
	braze := &fakeBraze{answer: func(b map[string][]map[string]any) sink.Response {
		for i, o := range b["events"] {
			if o["external_id"] == "bad" {
				return sink.Response{Status: 400, Class: sink.Split, Errors: []sink.ItemError{{Type: "invalid", InputArray: "events", Index: i}}}
			}
		}
		return sink.Response{Status: 201, Class: sink.Delivered}
	}}
	p, _, ps, stop := laneHarness(t, braze, testLimits())
	defer stop()
	items := []item{
		{kind: schemas.KindEvent, raw: ev("a", 1), ack: ps.track(msgAt(0), 1)},
		{kind: schemas.KindEvent, raw: ev("bad", 2), ack: ps.track(msgAt(1), 1)},
		{kind: schemas.KindEvent, raw: ev("c", 3), ack: ps.track(msgAt(2), 1)},
	}
	res := p.chain.send(t.Context(), newRequest(items))
	want := []sink.Outcome{sink.OutcomeDelivered, sink.OutcomeRejected, sink.OutcomeDelivered}
	for i, o := range want {
		if v := res.at(i); v.Outcome != o {
			t.Errorf("record %d: %v, want %v", i, v.Outcome, o)
		}
	}
	if v := res.at(1); v.Reason != dlq.ReasonBrazeRejected || v.Error != "invalid" {
		t.Errorf("rejected verdict %+v", v)
	}
	if len(braze.requests) != 2 {
		t.Errorf("%d requests, want 2 (the fatal one, then the rest without bisecting)", len(braze.requests))
	}
}

func testLimits() batcher.Limits {
	return batcher.Limits{Mode: batcher.Combined, MaxObjects: 75, MaxBytes: 1 << 20}
}

func msgAt(off int64) *kafka.Message { return &kafka.Message{Topic: "t", Offset: off} }
