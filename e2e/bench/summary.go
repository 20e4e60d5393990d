package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"time"
)

// row is one line of the closing table: a figure measured through the
// driver and its baseline from the same run.
type row struct {
	figure      string
	driver, raw string
	ratio       float64
	goal        string
	met         bool
}

// summary collects the rows, the ratios of repeated runs (for their
// spread) and the latencies the histograms are drawn from.
type summary struct {
	rows   []row
	ratios map[string][]float64 // figure → ratio per run
	order  []string
	hists  []histogram
	// notes are lines written after the table (round trips per call).
	notes []string
}

// note prints a line and keeps it for table.txt.
func (s *summary) note(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	fmt.Println(line)
	s.notes = append(s.notes, line)
}

func newSummary() *summary { return &summary{ratios: map[string][]float64{}} }

// throughput records a driver/raw throughput ratio whose goal is minRatio.
func (s *summary) throughput(figure string, drv, raw result, minRatio float64) {
	ratio := drv.opsPerSec() / raw.opsPerSec()
	if _, ok := s.ratios[figure]; !ok {
		s.order = append(s.order, figure)
	}
	s.ratios[figure] = append(s.ratios[figure], ratio)
	s.hists = append(s.hists, histogram{title: figure, driver: drv.latencies, raw: raw.latencies})
	goal := "-"
	if minRatio > 0 {
		goal = fmt.Sprintf(">= %.2f", minRatio)
	}
	s.rows = append(s.rows, row{
		figure: figure, driver: fmt.Sprintf("%.1f ops/s", drv.opsPerSec()), raw: fmt.Sprintf("%.1f ops/s", raw.opsPerSec()),
		ratio: ratio, goal: goal, met: ratio >= minRatio,
	})
}

// bound records a figure with an absolute goal (lower is better).
func (s *summary) bound(figure, driver, raw string, ratio float64, goal string, met bool) {
	s.rows = append(s.rows, row{figure: figure, driver: driver, raw: raw, ratio: ratio, goal: goal, met: met})
}

// spread prints, for every figure measured in more than one run, the
// lowest, median and highest ratio.
func (s *summary) spread(w io.Writer) {
	for _, f := range s.order {
		rs := append([]float64(nil), s.ratios[f]...)
		if len(rs) < 2 {
			continue
		}
		sort.Float64s(rs)
		fmt.Fprintf(w, "spread of %-22s over %d runs: min %.2f median %.2f max %.2f (max-min %.2f)\n", f, len(rs), rs[0], rs[len(rs)/2], rs[len(rs)-1], rs[len(rs)-1]-rs[0])
	}
}

// table writes the side-by-side table. Repeated figures show the median
// run's ratio (all runs are in the spread lines).
func (s *summary) table(w io.Writer) {
	fmt.Fprintf(w, "%-28s %18s %18s %7s %-20s %s\n", "figure", "driver", "raw", "ratio", "goal", "met?")
	seen := map[string]bool{}
	for _, r := range s.medianRows() {
		if seen[r.figure] {
			continue
		}
		seen[r.figure] = true
		ratio := "-"
		if !math.IsNaN(r.ratio) {
			ratio = fmt.Sprintf("%.2f", r.ratio)
		}
		met := "no"
		if r.met {
			met = "yes"
		}
		fmt.Fprintf(w, "%-28s %18s %18s %7s %-20s %s\n", r.figure, r.driver, r.raw, ratio, r.goal, met)
	}
}

// medianRows returns the rows with each repeated figure replaced by its
// median run.
func (s *summary) medianRows() []row {
	byFigure := map[string][]row{}
	for _, r := range s.rows {
		byFigure[r.figure] = append(byFigure[r.figure], r)
	}
	var out []row
	for _, r := range s.rows {
		rs := byFigure[r.figure]
		if len(rs) == 0 {
			continue
		}
		sorted := append([]row(nil), rs...)
		sort.Slice(sorted, func(i, j int) bool { return sorted[i].ratio < sorted[j].ratio })
		out = append(out, sorted[len(sorted)/2])
		byFigure[r.figure] = nil
	}
	return out
}

// write puts table.txt, the spread and one latency histogram SVG per
// throughput figure into a new folder under dir, and returns its path.
func (s *summary) write(dir, header string) (string, error) {
	out := filepath.Join(dir, time.Now().UTC().Format("20060102T150405Z"))
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(header + "\n\n")
	s.table(&b)
	b.WriteString("\n")
	s.spread(&b)
	if len(s.notes) > 0 {
		b.WriteString("\n" + strings.Join(s.notes, "\n") + "\n")
	}
	if err := os.WriteFile(filepath.Join(out, "table.txt"), []byte(b.String()), 0o644); err != nil {
		return "", err
	}
	seen := map[string]int{}
	for _, h := range s.hists {
		seen[h.title]++
		name := fmt.Sprintf("latency-%s-run%d.svg", slug(h.title), seen[h.title])
		if err := os.WriteFile(filepath.Join(out, name), []byte(h.svg()), 0o644); err != nil {
			return "", err
		}
	}
	return out, nil
}

func slug(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '-'
	}, s)
}

// startCPUProfile starts a CPU profile into path ("" for none) and
// returns what stops it.
func startCPUProfile(path string) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// writeHeapProfile writes the heap profile to path ("" for none).
func writeHeapProfile(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	runtime.GC()
	return pprof.WriteHeapProfile(f)
}
