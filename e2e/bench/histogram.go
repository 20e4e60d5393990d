package main

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// histogram is the latency distribution of one figure, driver against raw,
// drawn as an SVG with logarithmic latency buckets so that both the bulk
// and the tail are visible.
type histogram struct {
	title       string
	driver, raw []time.Duration
}

const (
	svgW, svgH       = 720, 360
	plotX0, plotY0   = 60, 30
	plotW, plotH     = 620, 270
	bucketsPerDecade = 10
)

func (h histogram) svg() string {
	lo, hi := h.bounds()
	n := int(math.Ceil(math.Log10(hi/lo) * bucketsPerDecade))
	if n < 1 {
		n = 1
	}
	dc, rc := bucketCounts(h.driver, lo, n), bucketCounts(h.raw, lo, n)
	peak := 1
	for i := range n {
		peak = max(peak, dc[i], rc[i])
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", svgW, svgH)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="%d" y="18" font-size="14">%s latency (ms, log scale): driver (blue, %d) vs raw (orange, %d)</text>`+"\n", plotX0, h.title, len(h.driver), len(h.raw))
	bw := float64(plotW) / float64(n)
	for i := range n {
		x := float64(plotX0) + float64(i)*bw
		for j, c := range []struct {
			count int
			color string
		}{{rc[i], "#f28e2b"}, {dc[i], "#4e79a7"}} {
			hgt := float64(c.count) / float64(peak) * plotH
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" fill-opacity="0.7"/>`+"\n", x+float64(j)*bw/2, float64(plotY0+plotH)-hgt, bw/2, hgt, c.color)
		}
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", plotX0, plotY0+plotH, plotX0+plotW, plotY0+plotH)
	for d := math.Pow(10, math.Floor(math.Log10(lo))); d <= hi; d *= 10 {
		for _, m := range []float64{1, 2, 5} {
			v := d * m
			if v < lo || v > hi {
				continue
			}
			x := float64(plotX0) + math.Log10(v/lo)*bucketsPerDecade*bw
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black"/><text x="%.1f" y="%d" text-anchor="middle">%g</text>`+"\n", x, plotY0+plotH, x, plotY0+plotH+5, x, plotY0+plotH+18, v)
		}
	}
	fmt.Fprintf(&b, `<text x="12" y="%d" transform="rotate(-90 12 %d)">calls per bucket (max %d)</text>`+"\n", plotY0+plotH/2+40, plotY0+plotH/2, peak)
	b.WriteString("</svg>\n")
	return b.String()
}

// bounds are the lowest and highest latency in ms, widened to whole
// buckets.
func (h histogram) bounds() (lo, hi float64) {
	lo, hi = math.Inf(1), 0
	for _, s := range [][]time.Duration{h.driver, h.raw} {
		for _, d := range s {
			v := msf(d)
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	if hi == 0 {
		return 0.1, 1
	}
	lo = math.Max(lo, 0.01)
	return lo, hi * 1.0001
}

func bucketCounts(ds []time.Duration, lo float64, n int) []int {
	out := make([]int, n)
	for _, d := range ds {
		i := int(math.Log10(math.Max(msf(d), lo)/lo) * bucketsPerDecade)
		out[min(max(i, 0), n-1)]++
	}
	return out
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
