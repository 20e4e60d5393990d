// Package doctor inspects a Ceph cluster and the Kubernetes nodes that will
// map its images, and reports, before any pod is stuck, what would make a
// volume fail to provision or map: unreachable monitors, a pool that is
// missing, not tagged for RBD or nearly full, a user whose caps fall short,
// CRUSH tunables and cluster requirements newer than a node's kernel, and
// image features krbd on those kernels cannot map. Every finding names its
// fix. The kernel and feature rules are the krbd mapper's own tables.
package doctor

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/rbd-csi/rbd-csi/internal/cephadmin"
	"github.com/rbd-csi/rbd-csi/internal/node/mapper"
)

// Severity of a finding.
type Severity string

// Severities, mildest first.
const (
	OK   Severity = "ok"   // checked, nothing wrong
	Warn Severity = "warn" // works, but worse than it could
	Fail Severity = "fail" // something will fail
)

// Finding is one result. Fix is empty only for OK.
type Finding struct {
	Check    string   `json:"check"` // stable ID, e.g. "crush-tunables"
	Severity Severity `json:"severity"`
	Subject  string   `json:"subject,omitempty"` // node, image or StorageClass concerned
	Message  string   `json:"message"`
	Fix      []string `json:"fix,omitempty"` // alternatives, best first
}

// Node is a Kubernetes node (or a bare kernel version given by hand) that
// maps images.
type Node struct {
	Name   string `json:"name"`
	Kernel string `json:"kernel"`
}

// StorageClass is a StorageClass of the driver, by name and parameters.
type StorageClass struct {
	Name       string            `json:"name"`
	Parameters map[string]string `json:"parameters"`
}

// Input says what to inspect.
type Input struct {
	Pool  string // "" skips the pool, quota and image checks
	User  string // "" skips the caps check
	Nodes []Node
	// StorageClasses are checked for image features krbd cannot map.
	StorageClasses []StorageClass
	// NodeMapper is the node plugin's default mapper (--mapper), for
	// StorageClasses without a mounter parameter.
	NodeMapper string
	// QuotaWarn is the used share of a quota that is reported (default 0.8).
	QuotaWarn float64
}

// Report is the outcome of one run.
type Report struct {
	Findings []Finding `json:"findings"`
	Failed   int       `json:"failed"`
	Warnings int       `json:"warnings"`
}

func (r *Report) add(f Finding) {
	r.Findings = append(r.Findings, f)
	switch f.Severity {
	case Fail:
		r.Failed++
	case Warn:
		r.Warnings++
	}
}

// Run inspects the cluster behind c. It never stops at the first problem,
// except when the monitors do not answer: then nothing else can be asked.
func Run(ctx context.Context, c *cephadmin.Client, in Input) Report {
	var r Report
	if !checkMonitors(ctx, c, &r) {
		return r
	}
	kernels := parseKernels(in.Nodes, &r)
	if in.Pool != "" {
		if checkPool(ctx, c, in.Pool, &r) {
			checkQuota(ctx, c, in.Pool, in.QuotaWarn, &r)
			checkImages(ctx, c, in.Pool, kernels, in.NodeMapper, &r)
		}
	}
	if in.User != "" {
		checkUser(ctx, c, in.User, in.Pool, &r)
	}
	checkKernels(ctx, c, kernels, &r)
	checkStorageClasses(in.StorageClasses, kernels, in.NodeMapper, &r)
	return r
}

// nodeKernel is a node with its parsed kernel version.
type nodeKernel struct {
	Node
	v mapper.KernelVersion
}

func parseKernels(nodes []Node, r *Report) []nodeKernel {
	var out []nodeKernel
	for _, n := range nodes {
		v, err := mapper.ParseKernelVersion(n.Kernel)
		if err != nil {
			r.add(Finding{Check: "kernel-version", Severity: Warn, Subject: n.Name, Message: err.Error(),
				Fix: []string{"give the node's `uname -r` (or kubectl's status.nodeInfo.kernelVersion) with --kernels"}})
			continue
		}
		out = append(out, nodeKernel{n, v})
	}
	slices.SortStableFunc(out, func(a, b nodeKernel) int {
		if a.v.Less(b.v) {
			return -1
		}
		if b.v.Less(a.v) {
			return 1
		}
		return 0
	})
	return out
}

// below lists the nodes whose kernel is older than v, as "name (kernel)".
func below(kernels []nodeKernel, v mapper.KernelVersion) []string {
	var out []string
	for _, k := range kernels {
		if k.v.Less(v) {
			out = append(out, k.label())
		}
	}
	return out
}

func (k nodeKernel) label() string {
	if k.Name == "" || k.Name == k.Kernel {
		return "kernel " + k.Kernel
	}
	return fmt.Sprintf("%s (kernel %s)", k.Name, k.Kernel)
}

// Print writes the report for a person: one block per finding, failures
// first, then a summary line.
func (r Report) Print(w io.Writer) {
	order := []Severity{Fail, Warn, OK}
	for _, sev := range order {
		for _, f := range r.Findings {
			if f.Severity != sev {
				continue
			}
			subject := ""
			if f.Subject != "" {
				subject = " [" + f.Subject + "]"
			}
			fmt.Fprintf(w, "%-4s %s%s: %s\n", strings.ToUpper(string(f.Severity)), f.Check, subject, f.Message)
			for i, fix := range f.Fix {
				lead := "       or: "
				if i == 0 {
					lead = "     fix: "
				}
				fmt.Fprintf(w, "%s%s\n", lead, fix)
			}
		}
	}
	fmt.Fprintf(w, "%d failed, %d warnings, %d checks\n", r.Failed, r.Warnings, len(r.Findings))
}
