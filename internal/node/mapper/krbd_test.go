package mapper

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// krbdRig is a krbd mapper wired to a fake kernel, a recording executor
// (which must stay unused) and a canned kernel log.
type krbdRig struct {
	kernel *fakeKernel
	exec   *fakeExec
	klog   *fakeKernelLog
	cfg    Config
}

func newKRBDRig(t *testing.T, o fakeKernelOpts) *krbdRig {
	t.Helper()
	r := &krbdRig{kernel: newFakeKernel(t, o), exec: &fakeExec{}, klog: &fakeKernelLog{}}
	r.cfg = Config{
		SysfsRoot: r.kernel.sysfs,
		DevRoot:   r.kernel.devRoot,
		Exec:      r.exec,
		KernelLog: r.klog,
		Resolver:  fakeResolver{"mon-a.example": {"10.0.0.5"}, "mon-v6.example": {"fd00::7"}},
	}
	t.Cleanup(func() {
		if calls := r.exec.Calls(); len(calls) > 0 {
			t.Errorf("krbd ran commands, want none: %v", calls)
		}
	})
	return r
}

func (r *krbdRig) mapper(t *testing.T) Mapper {
	t.Helper()
	m, err := New(KRBD, r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type fakeResolver map[string][]string

func (f fakeResolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	ips, ok := f[host]
	if !ok {
		return nil, fmt.Errorf("no such host %s", host)
	}
	var out []net.IPAddr
	for _, ip := range ips {
		out = append(out, net.IPAddr{IP: net.ParseIP(ip)})
	}
	return out, nil
}

func krbdImage(name string) Image {
	return Image{
		Monitors: []string{"192.168.1.1:6789", "192.168.1.2:6789"},
		User:     "csi-rbd",
		Key:      testKey,
		Pool:     "kube",
		Name:     name,
		Features: ceph.FeatureLayering,
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestKRBDMapWritesAddStringAndDiscoversDevice(t *testing.T) {
	withNS := krbdImage("img-ns")
	withNS.RadosNamespace = "tenant-a"
	named := krbdImage("img-dns")
	named.Monitors = []string{"mon-a.example:6789", "[fd00::1]:3300", "mon-v6.example"}
	tests := []struct {
		name     string
		opts     fakeKernelOpts
		img      Image
		mapOpts  MapOptions
		wantAdd  string
		wantFile string
	}{
		{
			name:     "default namespace via add_single_major",
			img:      krbdImage("img-a"),
			wantAdd:  "192.168.1.1:6789,192.168.1.2:6789 name=csi-rbd,secret=" + testKey + " kube img-a -",
			wantFile: "add_single_major",
		},
		{
			name:     "rados namespace goes into _pool_ns",
			img:      withNS,
			wantAdd:  "192.168.1.1:6789,192.168.1.2:6789 name=csi-rbd,secret=" + testKey + ",_pool_ns=tenant-a kube img-ns -",
			wantFile: "add_single_major",
		},
		{
			name:     "read-only and StorageClass options, legacy add file",
			opts:     fakeKernelOpts{legacyOnly: true},
			img:      krbdImage("img-ro"),
			mapOpts:  MapOptions{ReadOnly: true, Extra: "queue_depth=128,notrim,ms_mode=prefer-crc"},
			wantAdd:  "192.168.1.1:6789,192.168.1.2:6789 name=csi-rbd,secret=" + testKey + ",ro,queue_depth=128,notrim,ms_mode=prefer-crc kube img-ro -",
			wantFile: "add",
		},
		{
			name:     "monitor host names are resolved, IPv6 bracketed",
			img:      named,
			wantAdd:  "10.0.0.5:6789,[fd00::1]:3300,[fd00::7] name=csi-rbd,secret=" + testKey + " kube img-dns -",
			wantFile: "add_single_major",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.supportedFeatures = "0x3d"
			rig := newKRBDRig(t, tc.opts)
			logs := captureKlog(t)
			dev, err := rig.mapper(t).Map(ctxTimeout(t, 5*time.Second), tc.img, tc.mapOpts)
			if err != nil {
				t.Fatalf("Map: %v", err)
			}
			writes := rig.kernel.Writes()
			if len(writes) != 1 || writes[0] != tc.wantAdd {
				t.Fatalf("kernel got writes %q, want exactly [%q]", writes, tc.wantAdd)
			}
			if filepath.Base(rig.kernel.addPath) != tc.wantFile {
				t.Fatalf("test setup: add file %s", rig.kernel.addPath)
			}
			want := Device{Path: filepath.Join(rig.kernel.devRoot, "rbd0"), Mapper: KRBD, Attrs: map[string]string{
				AttrDevID: "0", AttrPool: "kube", AttrNamespace: tc.img.RadosNamespace, AttrImage: tc.img.Name,
				AttrReadOnly: fmt.Sprint(tc.mapOpts.ReadOnly),
			}}
			if fmt.Sprint(dev) != fmt.Sprint(want) {
				t.Errorf("Map returned %+v, want %+v", dev, want)
			}
			if strings.Contains(fmt.Sprint(dev), testKey) || strings.Contains(logs.String(), testKey) {
				t.Error("the key leaked into the Device or the logs")
			}
		})
	}
}

func TestKRBDDiscoversEachImageAmongSeveral(t *testing.T) {
	rig := newKRBDRig(t, fakeKernelOpts{supportedFeatures: "0x3d"})
	m := rig.mapper(t)
	ctx := ctxTimeout(t, 5*time.Second)
	// Same image name in the default namespace and in a namespace: they
	// are different images and must get different devices.
	a := krbdImage("shared-name")
	b := krbdImage("shared-name")
	b.RadosNamespace = "ns1"
	c := krbdImage("other")
	for i, img := range []Image{a, b, c} {
		dev, err := m.Map(ctx, img, MapOptions{})
		if err != nil {
			t.Fatalf("Map(%s): %v", img.Spec(), err)
		}
		if want := filepath.Join(rig.kernel.devRoot, fmt.Sprintf("rbd%d", i)); dev.Path != want {
			t.Errorf("Map(%s) = %s, want %s", img.Spec(), dev.Path, want)
		}
	}
	// Mapping them again (also from a "restarted" mapper) finds each one.
	for i, img := range []Image{a, b, c} {
		dev, err := rig.mapper(t).Map(ctx, img, MapOptions{})
		if err != nil {
			t.Fatalf("re-Map(%s): %v", img.Spec(), err)
		}
		if want := filepath.Join(rig.kernel.devRoot, fmt.Sprintf("rbd%d", i)); dev.Path != want {
			t.Errorf("re-Map(%s) = %s, want %s", img.Spec(), dev.Path, want)
		}
	}
	if n := len(rig.kernel.Writes()); n != 3 {
		t.Errorf("kernel got %d add writes, want 3 (re-Map must not add)", n)
	}
}

// A mapping of the same pool/image from another cluster is not this
// image's; without a known fsid (callers before fsids) it is, as before.
func TestKRBDMapKeysExistingMappingsByClusterFSID(t *testing.T) {
	const ours, other = "6bc57004-69bf-4513-b1b7-209960b4bab4", "0d2a0c1e-0000-4000-8000-000000000001"
	tests := []struct {
		name              string
		imageFSID, mapped string // the image's cluster; the existing mapping's
		wantDevice        string
		wantAdds          int
	}{
		{"same cluster reuses the mapping", ours, ours, "rbd0", 0},
		{"same cluster, fsid in upper case", strings.ToUpper(ours), ours, "rbd0", 0},
		{"other cluster's mapping is left alone", ours, other, "rbd1", 1},
		{"fsid unknown reuses the mapping (compatibility)", "", other, "rbd0", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rig := newKRBDRig(t, fakeKernelOpts{supportedFeatures: "0x3d"}) // new mappings: ours
			rig.kernel.addDevice(0, "kube", "", "img", "-", "0", "")
			rig.kernel.writeFile(filepath.Join(rig.kernel.bus, "devices", "0", "cluster_fsid"), tc.mapped+"\n")
			img := krbdImage("img")
			img.ClusterFSID = tc.imageFSID
			dev, err := rig.mapper(t).Map(ctxTimeout(t, 5*time.Second), img, MapOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(rig.kernel.devRoot, tc.wantDevice); dev.Path != want {
				t.Errorf("Map = %s, want %s", dev.Path, want)
			}
			if n := len(rig.kernel.Writes()); n != tc.wantAdds {
				t.Errorf("kernel got %d add writes, want %d", n, tc.wantAdds)
			}
		})
	}
}

func TestKRBDMapWaitsForDeviceNode(t *testing.T) {
	rig := newKRBDRig(t, fakeKernelOpts{supportedFeatures: "0x3d"})
	// The device entry exists but /dev/rbd0 appears late, as with udev.
	rig.kernel.addDevice(0, "kube", "", "late-node", "-", "0", "")
	node := filepath.Join(rig.kernel.devRoot, "rbd0")
	if err := os.Remove(node); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(150 * time.Millisecond)
		_ = os.WriteFile(node, nil, 0o600)
	}()
	dev, err := rig.mapper(t).Map(ctxTimeout(t, 5*time.Second), krbdImage("late-node"), MapOptions{})
	if err != nil || dev.Path != node {
		t.Fatalf("Map = %v, %v; want %s", dev.Path, err, node)
	}

	// A node that never appears fails with advice, not a hang.
	rig.kernel.addDevice(1, "kube", "", "no-node", "-", "0", "")
	_ = os.Remove(filepath.Join(rig.kernel.devRoot, "rbd1"))
	_, err = rig.mapper(t).Map(ctxTimeout(t, 300*time.Millisecond), krbdImage("no-node"), MapOptions{})
	if !errors.Is(err, ErrMapFailed) || !strings.Contains(err.Error(), "udev") {
		t.Errorf("Map without device node: %v, want ErrMapFailed mentioning udev", err)
	}
}

func TestKRBDMapRefusesAccessModeConflict(t *testing.T) {
	rig := newKRBDRig(t, fakeKernelOpts{supportedFeatures: "0x3d"})
	ctx := ctxTimeout(t, 5*time.Second)
	img := krbdImage("img")
	if _, err := rig.mapper(t).Map(ctx, img, MapOptions{ReadOnly: true}); err != nil {
		t.Fatal(err)
	}
	_, err := rig.mapper(t).Map(ctx, img, MapOptions{ReadOnly: false})
	if !errors.Is(err, ErrMappingConflict) {
		t.Errorf("read-write Map over read-only mapping: %v, want ErrMappingConflict", err)
	}
}

func TestKRBDUnmapWritesRemoveAndIsIdempotent(t *testing.T) {
	rig := newKRBDRig(t, fakeKernelOpts{supportedFeatures: "0x3d"})
	ctx := ctxTimeout(t, 5*time.Second)
	m := rig.mapper(t)
	other, err := m.Map(ctx, krbdImage("other"), MapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := m.Map(ctx, krbdImage("img"), MapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := rig.mapper(t).Unmap(ctx, dev); err != nil {
		t.Fatalf("Unmap: %v", err)
	}
	// The fake processes a FIFO write just after the writer returns (the
	// real kernel before); let it catch up before the next call.
	rig.kernel.waitWrites(3, 2*time.Second)
	if err := rig.mapper(t).Unmap(ctx, dev); err != nil {
		t.Fatalf("second Unmap: %v", err)
	}
	writes := rig.kernel.waitWrites(4, 200*time.Millisecond)
	if len(writes) != 3 || writes[2] != "1" {
		t.Fatalf("kernel writes %q, want two adds then exactly one remove \"1\"", writes)
	}
	if _, err := os.Stat(filepath.Join(rig.kernel.bus, "devices", "1")); !errors.Is(err, os.ErrNotExist) {
		t.Error("device 1 still exists after Unmap")
	}
	if healthy, _ := m.Check(ctx, other); !healthy {
		t.Error("unmapping one image disturbed another")
	}

	// The id of an unmapped device may be reused by another image; a stale
	// Device must not unmap the newcomer.
	newcomer, err := m.Map(ctx, krbdImage("newcomer"), MapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if newcomer.Attrs[AttrDevID] != dev.Attrs[AttrDevID] {
		t.Fatalf("test setup: newcomer got id %s, want reused id %s", newcomer.Attrs[AttrDevID], dev.Attrs[AttrDevID])
	}
	if err := m.Unmap(ctx, dev); err != nil {
		t.Fatalf("Unmap of stale device: %v", err)
	}
	if n := len(rig.kernel.waitWrites(5, 200*time.Millisecond)); n != 4 {
		t.Errorf("stale Unmap wrote to the kernel (%d writes, want 4)", n)
	}
	if healthy, msg := m.Check(ctx, newcomer); !healthy {
		t.Errorf("stale Unmap removed the newcomer: %s", msg)
	}
}

func TestKRBDForceUnmapWritesForce(t *testing.T) {
	rig := newKRBDRig(t, fakeKernelOpts{supportedFeatures: "0x3d"})
	ctx := ctxTimeout(t, 5*time.Second)
	m := rig.mapper(t)
	dev, err := m.Map(ctx, krbdImage("img"), MapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fu, ok := m.(ForceUnmapper)
	if !ok {
		t.Fatal("krbd does not implement ForceUnmapper")
	}
	if err := fu.ForceUnmap(ctx, dev); err != nil {
		t.Fatal(err)
	}
	if w := rig.kernel.waitWrites(2, 2*time.Second); w[len(w)-1] != "0 force" {
		t.Errorf("last write %q, want \"0 force\"", w[len(w)-1])
	}
}

func TestKRBDRefusesFeaturesTheKernelLacks(t *testing.T) {
	tests := []struct {
		name       string
		supported  string
		features   ceph.Features
		readOnly   bool
		wantErr    bool
		wantInMsg  []string
		notInMsg   []string
		wantWrites int
	}{
		{
			name:      "old kernel, default features: names them and offers feature disable",
			supported: "0x1",
			features:  ceph.FeatureLayering | ceph.FeatureExclusiveLock | ceph.FeatureObjectMap | ceph.FeatureFastDiff | ceph.FeatureDeepFlatten,
			wantErr:   true,
			wantInMsg: []string{
				"exclusive-lock, object-map, fast-diff, deep-flatten",
				"rbd feature disable kube/img deep-flatten fast-diff object-map exclusive-lock",
				"imageFeatures=layering", "mounter: rbd-nbd", "supported_features=0x1",
			},
		},
		{
			name:      "journaling is not supported by krbd",
			supported: "0x3d",
			features:  ceph.FeatureLayering | ceph.FeatureExclusiveLock | ceph.FeatureJournaling,
			wantErr:   true,
			wantInMsg: []string{"journaling", "rbd feature disable kube/img journaling", "mounter: rbd-nbd"},
			notInMsg:  []string{"exclusive-lock,"},
		},
		{
			name:      "data-pool cannot be disabled: no feature-disable advice",
			supported: "0x3d",
			features:  ceph.FeatureLayering | ceph.FeatureDataPool,
			wantErr:   true,
			wantInMsg: []string{"data-pool", "imageFeatures=layering", "mounter: rbd-nbd"},
			notInMsg:  []string{"rbd feature disable"},
		},
		{
			name:       "read-only map only needs the read-incompatible features",
			supported:  "0x3d",
			features:   ceph.FeatureLayering | ceph.FeatureExclusiveLock | ceph.FeatureJournaling,
			readOnly:   true,
			wantWrites: 1,
		},
		{
			name:       "all features supported",
			supported:  "0xbd",
			features:   ceph.FeatureLayering | ceph.FeatureExclusiveLock | ceph.FeatureObjectMap | ceph.FeatureFastDiff | ceph.FeatureDeepFlatten | ceph.FeatureDataPool,
			wantWrites: 1,
		},
		{
			name:       "unknown feature names are left to the kernel",
			supported:  "0x3d",
			features:   ceph.FeatureLayering | ceph.Features(1<<20),
			wantWrites: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rig := newKRBDRig(t, fakeKernelOpts{supportedFeatures: tc.supported})
			img := krbdImage("img")
			img.Features = tc.features
			_, err := rig.mapper(t).Map(ctxTimeout(t, 5*time.Second), img, MapOptions{ReadOnly: tc.readOnly})
			if tc.wantErr != (err != nil) {
				t.Fatalf("Map error = %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr {
				if !errors.Is(err, ErrUnsupportedFeatures) {
					t.Errorf("error %v is not ErrUnsupportedFeatures/FailedPrecondition", err)
				}
				for _, s := range tc.wantInMsg {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q lacks %q", err, s)
					}
				}
				for _, s := range tc.notInMsg {
					if strings.Contains(err.Error(), s) {
						t.Errorf("error %q should not contain %q", err, s)
					}
				}
			}
			if n := len(rig.kernel.Writes()); n != tc.wantWrites {
				t.Errorf("kernel got %d writes, want %d", n, tc.wantWrites)
			}
		})
	}
}

func TestKRBDMapTimeoutDiagnosesCrushTunables(t *testing.T) {
	rig := newKRBDRig(t, fakeKernelOpts{supportedFeatures: "0x3d", stallAdd: true})
	rig.klog.lines = []string{
		"rbd: loaded (major 251)",
		"libceph: mon0 (1)192.168.1.1:6789 feature set mismatch, my 107b84a842aca < server's 40107b84a842aca, missing 400000000000000",
		"libceph: mon0 (1)192.168.1.1:6789 missing required protocol features",
	}
	img := krbdImage("img")
	before := time.Now()
	_, err := rig.mapper(t).Map(ctxTimeout(t, 300*time.Millisecond), img, MapOptions{})
	if elapsed := time.Since(before); elapsed > 3*time.Second {
		t.Errorf("Map took %v despite a 300ms deadline", elapsed)
	}
	if !errors.Is(err, ErrClusterIncompatible) || !errors.Is(err, ErrMapTimeout) {
		t.Fatalf("Map: %v, want ErrClusterIncompatible wrapping ErrMapTimeout", err)
	}
	for _, s := range []string{
		"CRUSH_TUNABLES5", "ceph osd crush tunables hammer", "rebalance",
		"upgrade the node kernel", "mounter: rbd-nbd", "feature set mismatch",
	} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error lacks %q: %v", s, err)
		}
	}
	if strings.Contains(err.Error(), testKey) {
		t.Error("the error contains the key")
	}
	if len(rig.klog.since) != 1 || rig.klog.since[0].Before(before) {
		t.Errorf("kernel log asked since %v, want one call at or after %v", rig.klog.since, before)
	}

}

func TestKRBDRetryAfterTimeoutReusesLateMapping(t *testing.T) {
	rig := newKRBDRig(t, fakeKernelOpts{supportedFeatures: "0x3d", stallAdd: true})
	m := rig.mapper(t)
	img := krbdImage("img")
	// The first call's deadline ends once its add write is in flight (and
	// stuck: the kernel is not serving), whatever the machine's load.
	ctx, cancel := context.WithCancel(ctxTimeout(t, time.Minute))
	go func() {
		waitFor(t, func() bool { return m.(*krbd).hasPending(img.Spec()) })
		cancel()
	}()
	_, err := m.Map(ctx, img, MapOptions{})
	if !errors.Is(err, ErrMapTimeout) {
		t.Fatalf("Map: %v, want ErrMapTimeout/DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), "192.168.1.1:6789") {
		t.Errorf("timeout error does not name the monitors: %v", err)
	}
	// While the first add is still blocked, a retry waits for it rather
	// than adding again, until its own deadline.
	_, err = m.Map(ctxTimeout(t, 200*time.Millisecond), img, MapOptions{})
	if !errors.Is(err, ErrMapTimeout) || !strings.Contains(err.Error(), "still waiting for the kernel") {
		t.Fatalf("retry while pending: %v, want ErrMapTimeout about the pending map", err)
	}
	// The kernel completes the first add. Like the real kernel, whose add
	// write returns only once /sys/bus/rbd/devices/N exists, the retry
	// below starts after the device exists (a FIFO write returns before
	// the fake handles it, so wait for the fake).
	rig.kernel.serveAdd()
	if n := len(rig.kernel.waitWrites(1, time.Minute)); n != 1 {
		t.Fatalf("kernel got %d add writes after serving, want 1", n)
	}
	dev, err := m.Map(ctxTimeout(t, time.Minute), img, MapOptions{})
	if err != nil {
		t.Fatalf("retry after the kernel finished: %v", err)
	}
	if dev.Path != filepath.Join(rig.kernel.devRoot, "rbd0") {
		t.Errorf("retry returned %s, want rbd0", dev.Path)
	}
	if n := len(rig.kernel.Writes()); n != 1 {
		t.Errorf("kernel got %d add writes, want 1", n)
	}
}

// waitFor polls cond until it holds; the test's own timeout bounds it.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for !cond() {
		time.Sleep(time.Millisecond)
	}
}

func TestKRBDWithoutKernelSupport(t *testing.T) {
	rig := newKRBDRig(t, fakeKernelOpts{supportedFeatures: "0x3d"})
	cfg := rig.cfg
	cfg.SysfsRoot = t.TempDir() // no bus/rbd
	m, err := New(KRBD, cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Map(ctxTimeout(t, time.Second), krbdImage("img"), MapOptions{})
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "modprobe rbd") || !strings.Contains(err.Error(), "rbd-nbd") {
		t.Errorf("Map without krbd: %v, want ErrUnsupported with modprobe and rbd-nbd advice", err)
	}
}

func TestKRBDRejectsUnsafeInputBeforeTouchingTheKernel(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Image, *MapOptions)
	}{
		{"secret in map options", func(_ *Image, o *MapOptions) { o.Extra = "secret=AQBx" }},
		{"name in map options", func(_ *Image, o *MapOptions) { o.Extra = "name=admin" }},
		{"namespace in map options", func(_ *Image, o *MapOptions) { o.Extra = "_pool_ns=other" }},
		{"space in option value", func(_ *Image, o *MapOptions) { o.Extra = "queue_depth=1 kube evil -" }},
		{"newline in options", func(_ *Image, o *MapOptions) { o.Extra = "notrim\nexclusive" }},
		{"unknown option", func(_ *Image, o *MapOptions) { o.Extra = "frobnicate" }},
		{"flag with value", func(_ *Image, o *MapOptions) { o.Extra = "notrim=1" }},
		{"non-numeric value", func(_ *Image, o *MapOptions) { o.Extra = "queue_depth=lots" }},
		{"space in image name", func(i *Image, _ *MapOptions) { i.Name = "img other" }},
		{"comma in namespace", func(i *Image, _ *MapOptions) { i.RadosNamespace = "ns,secret=x" }},
		{"slash in pool", func(i *Image, _ *MapOptions) { i.Pool = "../etc" }},
		{"key with comma", func(i *Image, _ *MapOptions) { i.Key = testKey + ",ro" }},
		{"key with embedded newline", func(i *Image, _ *MapOptions) { i.Key = testKey[:20] + "\n" + testKey[20:] }},
		{"key with embedded CRLF", func(i *Image, _ *MapOptions) { i.Key = testKey[:20] + "\r\n" + testKey[20:] }},
		{"key not a cephx key", func(i *Image, _ *MapOptions) { i.Key = "aGVsbG8=" }},
		{"user with prefix", func(i *Image, _ *MapOptions) { i.User = "client.admin" }},
		{"monitor with space", func(i *Image, _ *MapOptions) { i.Monitors = []string{"1.2.3.4:6789 name=x"} }},
		{"monitor with two prefixes", func(i *Image, _ *MapOptions) { i.Monitors = []string{"v1:v2:1.2.3.4:6789"} }},
		{"no monitors", func(i *Image, _ *MapOptions) { i.Monitors = nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rig := newKRBDRig(t, fakeKernelOpts{supportedFeatures: "0x3d"})
			img, opts := krbdImage("img"), MapOptions{}
			tc.modify(&img, &opts)
			_, err := rig.mapper(t).Map(ctxTimeout(t, time.Second), img, opts)
			if !errors.Is(err, ErrInvalidImage) && !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("Map: %v, want ErrInvalidImage or ErrInvalidOptions", err)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Error("the error contains the key")
			}
			if w := rig.kernel.Writes(); len(w) != 0 {
				t.Errorf("kernel got writes %q", w)
			}
		})
	}
}

func TestKRBDCheck(t *testing.T) {
	rig := newKRBDRig(t, fakeKernelOpts{supportedFeatures: "0x3d"})
	ctx := ctxTimeout(t, 5*time.Second)
	m := rig.mapper(t)
	dev, err := m.Map(ctx, krbdImage("img"), MapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if healthy, msg := m.Check(ctx, dev); !healthy {
		t.Fatalf("Check of a fresh mapping: %s", msg)
	}
	rig.kernel.remove("0") // e.g. someone ran `rbd unmap` by hand
	healthy, msg := m.Check(ctx, dev)
	if healthy || !strings.Contains(msg, "no longer mapped") {
		t.Errorf("Check after the kernel dropped the device = %v, %q", healthy, msg)
	}
	bad := dev
	bad.Attrs = map[string]string{AttrDevID: "0 force", AttrPool: "kube", AttrImage: "img"}
	if healthy, _ := m.Check(ctx, bad); healthy {
		t.Error("Check accepted a malformed id")
	}
	if err := m.Unmap(ctx, bad); !errors.Is(err, ErrInvalidDevice) {
		t.Errorf("Unmap with malformed id: %v, want InvalidArgument", err)
	}
}

func TestKRBDRemoveErrorsAreClassified(t *testing.T) {
	k := newKRBD(Config{}.withDefaults())
	img := krbdImage("img")
	tests := []struct {
		err  error
		want error
	}{
		{&os.PathError{Op: "write", Path: "remove", Err: syscall.EBUSY}, ErrDeviceBusy},
		{&os.PathError{Op: "write", Path: "remove", Err: syscall.EIO}, ErrUnmapFailed},
	}
	for _, tc := range tests {
		err := k.removeResult(img, "3", false, tc.err, nil)
		if !errors.Is(err, tc.want) {
			t.Errorf("removeResult(%v) = %v, want %v", tc.err, err, tc.want)
		}
	}
	if err := k.removeResult(img, "3", false, &os.PathError{Err: syscall.ENOENT}, nil); err != nil {
		t.Errorf("ENOENT (already gone) = %v, want success", err)
	}
}

// A map error becomes an Event any namespace user reads: the kernel log
// lines of other volumes' mappings must never get into it.
func TestMapErrorsQuoteOnlyTheirOwnKernelLines(t *testing.T) {
	img := krbdImage("img")
	img.ClusterFSID = "91291a01-b6fb-458d-86cb-59b9b2501437"
	mons := []string{"192.168.1.1:6789", "192.168.1.2:6789"}
	mixed := []string{
		"libceph: mon0 (1)192.168.1.1:6789 session established",
		"libceph: client4123 fsid 91291a01-b6fb-458d-86cb-59b9b2501437",
		"libceph: mon0 (1)10.9.9.9:6789 session established",
		"libceph: client9 fsid 0d2a0c1e-0000-4000-8000-000000000001",
		"rbd: image other-pvc: image uses unsupported features: 0x38",
		"rbd: image img-2: failed to watch: -13",
		"rbd: rbd3: capacity 1073741824 features 0x1",
		"libceph: osd2 (1)10.9.9.10:6801 socket closed (con state OPEN)",
		"libceph: bad option at 'secret=AQBotherkey=='",
		"rbd: image img: image uses unsupported features: 0x38",
		"libceph: missing required protocol features",
		"eth0: link up",
	}
	tests := []struct {
		name string
		img  Image
		mons []string
		want []string
	}{
		{"only this image's, this cluster's and unattributed lines", img, mons, []string{
			"libceph: mon0 (1)192.168.1.1:6789 session established",
			"libceph: client4123 fsid 91291a01-b6fb-458d-86cb-59b9b2501437",
			"rbd: image img: image uses unsupported features: 0x38",
			"libceph: missing required protocol features",
		}},
		{"fsid unknown: no fsid line is taken for ours", Image{Name: "img"}, mons, []string{
			"libceph: mon0 (1)192.168.1.1:6789 session established",
			"rbd: image img: image uses unsupported features: 0x38",
			"libceph: missing required protocol features",
		}},
		{"another image of the same cluster", Image{Name: "other-pvc", ClusterFSID: img.ClusterFSID}, mons, []string{
			"libceph: mon0 (1)192.168.1.1:6789 session established",
			"libceph: client4123 fsid 91291a01-b6fb-458d-86cb-59b9b2501437",
			"rbd: image other-pvc: image uses unsupported features: 0x38",
			"libceph: missing required protocol features",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ownKernelLines(mixed, tc.img, tc.mons)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("kept\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
	// End to end through the classifier: nothing of img-2, other-pvc or
	// the other cluster reaches the error.
	err := classifyMapFailure(img, &os.PathError{Err: syscall.ENXIO}, ownKernelLines(mixed, img, mons), nil)
	for _, foreign := range []string{"other-pvc", "img-2", "rbd3", "10.9.9", "0d2a0c1e", "AQBotherkey"} {
		if strings.Contains(err.Error(), foreign) {
			t.Errorf("the map error quotes another volume's kernel line (%q): %v", foreign, err)
		}
	}
}

func TestClassifyMapFailure(t *testing.T) {
	img := krbdImage("img")
	timeout := fmt.Errorf("%w: deadline", ErrMapTimeout)
	tests := []struct {
		name  string
		werr  error
		lines []string
		want  error
		in    []string
	}{
		{"feature mismatch after timeout", timeout,
			[]string{"libceph: mon0 (1)192.168.1.1:6789 feature set mismatch, my 2b84a042aca < server's 2f84a042aca, missing 400000000000000"},
			ErrClusterIncompatible, []string{"CRUSH_TUNABLES5", "tunables hammer"}},
		{"feature mismatch with errno", &os.PathError{Err: syscall.EIO},
			[]string{"libceph: mon0 missing required protocol features"},
			ErrClusterIncompatible, []string{"upgrade the node kernel"}},
		{"straw2 and upmap bits are named", timeout,
			[]string{"libceph: mon0 feature set mismatch, my 1 < server's 2, missing 1000000200000"},
			ErrClusterIncompatible, []string{"CRUSH_V4 (straw2", "OSDMAP_PG_UPMAP"}},
		{"kernel says unsupported image features", &os.PathError{Err: syscall.ENXIO},
			[]string{"rbd: image img: image uses unsupported features: 0x38"},
			ErrUnsupportedFeatures, []string{"object-map, fast-diff, deep-flatten", "rbd feature disable"}},
		{"no such image", &os.PathError{Err: syscall.ENOENT}, nil, ErrImageNotFound, []string{"kube/img"}},
		{"auth failure", &os.PathError{Err: syscall.EACCES}, []string{"libceph: auth protocol 'cephx' auth failed: -13"},
			ErrAccessDenied, []string{"client.csi-rbd", "auth failed"}},
		{"bad option", &os.PathError{Err: syscall.EINVAL}, nil, ErrInvalidOptions, nil},
		{"kernel mount_timeout", &os.PathError{Err: syscall.ETIMEDOUT}, nil, ErrMapTimeout, []string{"192.168.1.1:6789"}},
		{"plain timeout", timeout, []string{"unrelated: eth0 up"}, ErrMapTimeout, []string{"reach the monitors"}},
		{"other errno", &os.PathError{Err: syscall.EIO}, nil, ErrMapFailed, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := classifyMapFailure(img, tc.werr, ownKernelLines(tc.lines, img, []string{"192.168.1.1:6789"}), nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			for _, s := range tc.in {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%q lacks %q", err, s)
				}
			}
		})
	}
	err := classifyMapFailure(img, timeout, nil, errors.New("permission denied"))
	if !strings.Contains(err.Error(), "kernel log unavailable") {
		t.Errorf("an unreadable kernel log is not mentioned: %v", err)
	}
}

func TestKRBDRedactsKeyFromKernelLog(t *testing.T) {
	rig := newKRBDRig(t, fakeKernelOpts{supportedFeatures: "0x3d", stallAdd: true})
	// Old kernels echo a bad option token, which could be the secret.
	rig.klog.lines = []string{"libceph: bad option at 'secret=" + testKey + "'"}
	_, err := rig.mapper(t).Map(ctxTimeout(t, 200*time.Millisecond), krbdImage("img"), MapOptions{})
	if err == nil || strings.Contains(err.Error(), testKey) || !strings.Contains(err.Error(), "<redacted>") {
		t.Errorf("error must carry the kernel line with the key redacted: %v", err)
	}
}

func TestKRBDMonitorMessengerPrefixes(t *testing.T) {
	tests := []struct {
		name     string
		mons     []string
		extra    string
		wantMons string // "" = refused with InvalidArgument
	}{
		{"v1 prefix stripped", []string{"v1:192.168.1.1:6789", "v1:mon-a.example:6790"}, "", "192.168.1.1:6789,10.0.0.5:6790"},
		{"v2 addresses left out without ms_mode", []string{"v2:192.168.1.1:3300", "v1:192.168.1.1:6789", "192.168.1.2"}, "", "192.168.1.1:6789,192.168.1.2"},
		{"ms_mode=legacy speaks msgr1", []string{"v2:[fd00::1]:3300", "v1:[fd00::1]:6789"}, "ms_mode=legacy", "[fd00::1]:6789"},
		{"ms_mode selects msgr2", []string{"v2:192.168.1.1:3300", "v1:192.168.1.1:6789"}, "ms_mode=prefer-crc", "192.168.1.1:3300"},
		{"only v2 without ms_mode is refused", []string{"v2:192.168.1.1:3300"}, "", ""},
		{"only v1 with ms_mode=secure is refused", []string{"v1:192.168.1.1:6789"}, "ms_mode=secure", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rig := newKRBDRig(t, fakeKernelOpts{supportedFeatures: "0x3d"})
			img := krbdImage("img")
			img.Monitors = tc.mons
			_, err := rig.mapper(t).Map(ctxTimeout(t, 5*time.Second), img, MapOptions{Extra: tc.extra})
			writes := rig.kernel.Writes()
			if tc.wantMons == "" {
				if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), "ms_mode") || len(writes) != 0 {
					t.Fatalf("Map: %v, kernel writes %d; want ErrInvalidOptions about ms_mode and no write", err, len(writes))
				}
				return
			}
			if err != nil {
				t.Fatalf("Map: %v", err)
			}
			if len(writes) != 1 || !strings.HasPrefix(writes[0], tc.wantMons+" name=") {
				t.Errorf("kernel got %q, want monitors %q", writes, tc.wantMons)
			}
		})
	}
}

func TestKRBDWritesTheTrimmedKey(t *testing.T) {
	rig := newKRBDRig(t, fakeKernelOpts{supportedFeatures: "0x3d"})
	img := krbdImage("img")
	img.Key = testKey + "\n"
	if _, err := rig.mapper(t).Map(ctxTimeout(t, 5*time.Second), img, MapOptions{}); err != nil {
		t.Fatalf("Map: %v", err)
	}
	want := "192.168.1.1:6789,192.168.1.2:6789 name=csi-rbd,secret=" + testKey + " kube img -"
	if w := rig.kernel.Writes(); len(w) != 1 || w[0] != want {
		t.Errorf("kernel got %q, want [%q]", w, want)
	}
}
