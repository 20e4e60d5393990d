package doctor

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/cephadmin"
	"github.com/rbd-csi/rbd-csi/internal/cephadmin/cephadminfake"
)

// fakeCluster is a healthy fake whose monitor accepts TCP connections.
func fakeCluster(t *testing.T) *cephadminfake.Cluster {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	f := cephadminfake.New()
	f.Monitors = []string{l.Addr().String()}
	f.Pools["kube"] = &cephadminfake.Pool{Apps: []string{"rbd"}, Images: map[string]ceph.Features{}}
	f.Users["client.kube"] = cephadmin.RecommendedCaps("kube")
	return f
}

func TestKernelChecksFollowTheClusterAndTheNodes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		tunables string
		straw2   bool
		compat   string
		kernels  string
		failed   []string // checks that fail
	}{
		{"modern nodes", "jewel", true, "luminous", "5.10,6.1", nil},
		{"jewel vs 4.4", "jewel", false, "hammer", "4.4", []string{"crush-tunables"}},
		{"hammer vs 4.4", "hammer", false, "jewel", "4.4", []string{"min-compat-client"}},
		{"seed's case", "jewel", true, "luminous", "3.10", []string{"crush-tunables", "crush-straw2", "min-compat-client"}},
		{"bobtail vs 3.10", "bobtail", false, "", "3.10", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := fakeCluster(t)
			f.Tunables, f.Straw2, f.MinCompat = tc.tunables, tc.straw2, tc.compat
			r := Run(context.Background(), f.Client(), Input{Nodes: KernelList(tc.kernels)})
			var failed []string
			for _, fd := range r.Findings {
				if fd.Severity == Fail {
					failed = append(failed, fd.Check)
				}
				if fd.Severity != OK && len(fd.Fix) == 0 {
					t.Errorf("%s: no fix", fd.Check)
				}
			}
			if strings.Join(failed, ",") != strings.Join(tc.failed, ",") {
				t.Errorf("failed checks %q, want %q: %+v", failed, tc.failed, r.Findings)
			}
		})
	}
}

func TestQuotaIsReportedBeforeItIsFull(t *testing.T) {
	for _, tc := range []struct {
		used uint64
		want Severity
	}{{10, OK}, {85, Warn}, {100, Fail}} {
		f := fakeCluster(t)
		f.Pools["kube"].Quota, f.Pools["kube"].Used = 100, tc.used
		r := Run(context.Background(), f.Client(), Input{Pool: "kube"})
		if got := findings(r, "pool-quota"); len(got) != 1 || got[0].Severity != tc.want {
			t.Errorf("used %d of 100: %+v, want %s", tc.used, got, tc.want)
		}
	}
}

func TestPoolWithoutTheRbdApplicationIsFlaggedWithItsFix(t *testing.T) {
	f := fakeCluster(t)
	f.Pools["kube"].Apps = nil
	r := Run(context.Background(), f.Client(), Input{Pool: "kube"})
	got := findings(r, "pool-application")
	if len(got) != 1 || got[0].Severity != Fail || got[0].Fix[0] != "rbd pool init kube" {
		t.Errorf("%+v", got)
	}
}

func TestUnreachableMonitorsStopTheRunWithOneFinding(t *testing.T) {
	f := fakeCluster(t)
	f.Unreachable = true
	r := Run(context.Background(), f.Client(), Input{Pool: "kube", User: "kube", Nodes: KernelList("5.10")})
	if len(r.Findings) != 1 || r.Findings[0].Check != "monitors" || r.Failed != 1 {
		t.Errorf("%+v", r.Findings)
	}
}

func TestKubectlJSONIsReadForKernelsAndTheDriversStorageClasses(t *testing.T) {
	nodes, err := NodesFromJSON([]byte(`{"kind":"NodeList","items":[{"metadata":{"name":"n1"},"status":{"nodeInfo":{"kernelVersion":"3.10.0-1160.el7.x86_64"}}}]}`))
	if err != nil || len(nodes) != 1 || nodes[0] != (Node{Name: "n1", Kernel: "3.10.0-1160.el7.x86_64"}) {
		t.Errorf("nodes: %+v %v", nodes, err)
	}
	scs, err := StorageClassesFromJSON([]byte(`{"kind":"StorageClassList","items":[
		{"metadata":{"name":"ours"},"provisioner":"rbd.csi.dev","parameters":{"imageFeatures":"layering"}},
		{"metadata":{"name":"theirs"},"provisioner":"ebs.csi.aws.com"}]}`), "rbd.csi.dev")
	if err != nil || len(scs) != 1 || scs[0].Name != "ours" {
		t.Errorf("storageclasses: %+v %v", scs, err)
	}
	if _, err := NodesFromJSON([]byte("not json")); err == nil {
		t.Error("bad JSON accepted")
	}
}
