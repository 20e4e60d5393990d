package main

import (
	"bufio"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/metrics"
)

// rpcCountPrefix starts the lines of the RPC latency histogram's
// per-method observation counts in the Prometheus text format.
const rpcCountPrefix = `rbdcsi_rpc_duration_seconds_count{method="`

// serveMetrics starts the driver's metrics endpoint on a free loopback
// port, as --metrics-address does in the binary.
func serveMetrics(m *metrics.Metrics) (*metrics.Server, error) {
	return metrics.Serve("127.0.0.1:0", m, nil)
}

// reportMetrics scrapes the endpoint as Prometheus would and prints how many
// observations each RPC method's latency histogram holds. A run that made
// calls but left the histograms empty is an error: the wiring is broken.
func reportMetrics(addr string) error {
	counts, err := scrapeRPCCounts(addr)
	if err != nil {
		return err
	}
	if len(counts) == 0 {
		return fmt.Errorf("metrics scrape of %s: the RPC latency histograms are empty", addr)
	}
	methods := make([]string, 0, len(counts))
	for m := range counts {
		methods = append(methods, m)
	}
	sort.Strings(methods)
	parts := make([]string, len(methods))
	for i, m := range methods {
		parts[i] = fmt.Sprintf("%s=%d", m, counts[m])
	}
	fmt.Printf("metrics scrape (http://%s/metrics): rbdcsi_rpc_duration_seconds observations per method: %s\n", addr, strings.Join(parts, " "))
	return nil
}

// scrapeRPCCounts reads /metrics and returns the observation count of each
// method's RPC latency histogram.
func scrapeRPCCounts(addr string) (map[string]uint64, error) {
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("metrics scrape: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics scrape: HTTP %d", resp.StatusCode)
	}
	counts := map[string]uint64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), rpcCountPrefix)
		if !ok {
			continue
		}
		method, value, ok := strings.Cut(rest, `"} `)
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(value, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("metrics scrape: bad count %q for %s", value, method)
		}
		counts[method] = n
	}
	return counts, sc.Err()
}
