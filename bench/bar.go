package bench

import (
	"fmt"
	"io"
	"slices"
	"time"
)

// median returns, per phase name, a Result holding the median of each figure over the
// rounds that succeeded (PeakRSS: the maximum), and how many rounds that was.
func median(results []*Result) (map[string]*Result, map[string]int) {
	byName := map[string][]*Result{}
	for _, r := range results {
		if r.Error == "" {
			byName[r.Name] = append(byName[r.Name], r)
		}
	}
	out, n := map[string]*Result{}, map[string]int{}
	for name, rs := range byName {
		med := func(f func(*Result) float64) float64 {
			v := make([]float64, len(rs))
			for i, r := range rs {
				v[i] = f(r)
			}
			slices.Sort(v)
			if len(v)%2 == 1 {
				return v[len(v)/2]
			}
			return (v[len(v)/2-1] + v[len(v)/2]) / 2
		}
		m := *rs[0]
		m.RecordsPerSecStart = med(func(r *Result) float64 { return r.RecordsPerSecStart })
		m.RecordsPerSecDeliv = med(func(r *Result) float64 { return r.RecordsPerSecDeliv })
		m.RecordsPerSecFirst = med(func(r *Result) float64 { return r.RecordsPerSecFirst })
		m.RecordsPerSecBody = med(func(r *Result) float64 { return r.RecordsPerSecBody })
		m.ObjectsPerReq = med(func(r *Result) float64 { return r.ObjectsPerReq })
		m.ObjectsPerReqMid = med(func(r *Result) float64 { return r.ObjectsPerReqMid })
		m.CPUPerMRecords = med(func(r *Result) float64 { return r.CPUPerMRecords })
		for _, r := range rs {
			m.PeakRSS = max(m.PeakRSS, r.PeakRSS)
		}
		if m.Latency != nil {
			l, ls := *m.Latency, *m.LatencySteady
			l.P50 = time.Duration(med(func(r *Result) float64 { return float64(r.Latency.P50) }))
			l.P99 = time.Duration(med(func(r *Result) float64 { return float64(r.Latency.P99) }))
			ls.P50 = time.Duration(med(func(r *Result) float64 { return float64(r.LatencySteady.P50) }))
			ls.P99 = time.Duration(med(func(r *Result) float64 { return float64(r.LatencySteady.P99) }))
			m.Latency, m.LatencySteady = &l, &ls
		}
		out[name], n[name] = &m, len(rs)
	}
	return out, n
}

// PrintBar checks the results against the performance bar (BENCHMARKS.md), on the medians over the rounds.
func PrintBar(w io.Writer, results []*Result) {
	by, n := median(results)
	fmt.Fprintln(w, "\n== medians over rounds ==")
	for _, name := range append(slices.Clone(DefaultContenders), "worker-sim", "worker-inproc", "worker-inproc-wb", "worker-tuned", "worker-null", "worker-paced", "latency") {
		m := by[name]
		if m == nil {
			continue
		}
		if m.Latency != nil {
			fmt.Fprintf(w, "%-15s (%d rounds) p50 %s p99 %s (after warm-up: p50 %s p99 %s)  peakRSS max %.0f MiB  CPU %.2f s/Mrec\n", name, n[name],
				ms(m.Latency.P50), ms(m.Latency.P99), ms(m.LatencySteady.P50), ms(m.LatencySteady.P99), float64(m.PeakRSS)/(1<<20), m.CPUPerMRecords)
			continue
		}
		fmt.Fprintf(w, "%-15s (%d rounds) %9.0f rec/s start->commit  %9.0f start->delivered  %9.0f first->commit  %9.0f 10-90%%  obj/req %.2f (10-90%% %.2f)  CPU %.2f s/Mrec  peakRSS max %.0f MiB\n",
			name, n[name], m.RecordsPerSecStart, m.RecordsPerSecDeliv, m.RecordsPerSecFirst, m.RecordsPerSecBody, m.ObjectsPerReq, m.ObjectsPerReqMid,
			m.CPUPerMRecords, float64(m.PeakRSS)/(1<<20))
	}
	fmt.Fprintln(w, "\n== the performance bar, on the medians ==")
	mark := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "MISS"
	}
	wk := by["worker"]
	if wk == nil {
		fmt.Fprintln(w, "no successful worker (CountOnly) phase")
	} else {
		rate := wk.RecordsPerSecStart
		fmt.Fprintf(w, "%s  worker >= 200,000 records/s end to end: %.0f (start->last commit), %.0f (start->all delivered), %.0f (first request->last commit), %.0f (10-90%%)\n",
			mark(rate >= 200_000), rate, wk.RecordsPerSecDeliv, wk.RecordsPerSecFirst, wk.RecordsPerSecBody)
		ratio := func(name, label string, want float64) {
			if o := by[name]; o != nil && o.RecordsPerSecStart > 0 && o.RecordsPerSecDeliv > 0 {
				x := rate / o.RecordsPerSecStart
				y := wk.RecordsPerSecDeliv / o.RecordsPerSecDeliv
				fmt.Fprintf(w, "%s  worker / %s = %.2f start->last commit, %.2f start->all delivered (want >= %.2f; %s %.0f / %.0f records/s)\n",
					mark(x >= want && y >= want), label, x, y, want, name, o.RecordsPerSecStart, o.RecordsPerSecDeliv)
			} else {
				fmt.Fprintf(w, "n/a   worker / %s: no successful %s phase\n", label, name)
			}
		}
		ratio("raw", "raw kafka-go consume", 0.5)
		ratio("benthos", "Benthos (parsed)", 3)
		ratio("benthos-raw", "Benthos (raw join)", 1.5)
		fmt.Fprintf(w, "%s  mean objects per request >= 74 while there is backlog: %.2f (10-90%%), %.2f (whole phase)\n",
			mark(wk.ObjectsPerReqMid >= 74), wk.ObjectsPerReqMid, wk.ObjectsPerReq)
		fmt.Fprintf(w, "%s  peak RSS < 256 MiB at full speed: %.0f MiB (max over rounds, %d records backlog)\n", mark(wk.PeakRSS < 256<<20), float64(wk.PeakRSS)/(1<<20), wk.Records)
	}
	if l := by["latency"]; l != nil && l.Latency != nil {
		budget := 100*time.Millisecond + 250*time.Millisecond
		fmt.Fprintf(w, "%s  p99 produce-to-acknowledged < linger + 250ms = %s at %.0f records/s offered: median p99 %s (after warm-up %s), median p50 %s\n",
			mark(l.Latency.P99 < budget), budget, l.Offered.OfferedRate, ms(l.Latency.P99), ms(l.LatencySteady.P99), ms(l.Latency.P50))
	}
}
