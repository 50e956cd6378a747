package preflight

import (
	"fmt"
	"io"
)

// Printer prints one line per check, with a "fix:" line under a warning or failure that has a
// hint, and remembers whether any check failed.
type Printer struct {
	w                 io.Writer
	okS, failS, warnS string
	failed            bool
}

// NewPrinter prints to w with ✓/✗/!, or ok/FAIL/WARN when plain.
func NewPrinter(w io.Writer, plain bool) *Printer {
	p := &Printer{w: w, okS: "✓", failS: "✗", warnS: "!"}
	if plain {
		p.okS, p.failS, p.warnS = "ok  ", "FAIL", "WARN"
	}
	return p
}

// OK prints a passed check.
func (p *Printer) OK(format string, a ...any) {
	fmt.Fprintf(p.w, "%s %s\n", p.okS, fmt.Sprintf(format, a...))
}

// Warn prints a problem the worker can run with.
func (p *Printer) Warn(hint, format string, a ...any) {
	p.line(p.warnS, hint, format, a...)
}

// Fail prints a failed check; Failed reports true afterwards.
func (p *Printer) Fail(hint, format string, a ...any) {
	p.failed = true
	p.line(p.failS, hint, format, a...)
}

func (p *Printer) line(mark, hint, format string, a ...any) {
	fmt.Fprintf(p.w, "%s %s\n", mark, fmt.Sprintf(format, a...))
	if hint != "" {
		fmt.Fprintf(p.w, "    fix: %s\n", hint)
	}
}

// Failed reports whether any check failed.
func (p *Printer) Failed() bool { return p.failed }
