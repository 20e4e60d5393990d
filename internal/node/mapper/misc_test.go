package mapper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

func TestValidateMapOptions(t *testing.T) {
	tests := []struct {
		mapper, extra string
		ok            bool
		msg           string
	}{
		{KRBD, "", true, ""},
		{KRBD, "queue_depth=1024,alloc_size=65536,lock_on_read,exclusive,notrim", true, ""},
		{KRBD, "ms_mode=secure,read_from_replica=localize,crush_location=host:node1|rack:r1", true, ""},
		{KRBD, " notrim ", true, ""},
		{KRBD, "ms_mode=plaintext", false, "wants one of"},
		{KRBD, "crush_location=host:a b", false, "may only contain"},
		{KRBD, "queue_depth=-1", false, "integer from 1 to 10240"},
		{KRBD, "mount_timeout=0", false, `"mount_timeout" wants an integer from 1 to 600 (seconds), got "0"`},
		{KRBD, "mount_timeout=1", true, ""},
		{KRBD, "mount_timeout=600", true, ""},
		{KRBD, "mount_timeout=601", false, "from 1 to 600"},
		{KRBD, "mount_timeout=99999999999", false, "from 1 to 600"},
		{KRBD, "osdkeepalive=0", false, `"osdkeepalive" wants an integer from 1 to 300`},
		{KRBD, "osd_idle_ttl=86400", false, `"osd_idle_ttl" wants an integer from 1 to 3600`},
		{KRBD, "osd_request_timeout=0", true, ""}, // the kernel's default
		{KRBD, "osd_request_timeout=3601", false, "from 0 to 3600"},
		{KRBD, "lock_timeout=0", true, ""}, // the kernel's default
		{KRBD, "queue_depth=0", false, "from 1 to 10240"},
		{KRBD, "queue_depth=100000", false, "from 1 to 10240"},
		{KRBD, "alloc_size=65535", false, `"alloc_size" wants a power of two from 512`},
		{KRBD, "alloc_size=256", false, "from 512 to 33554432 (bytes)"},
		{RBDNBD, "io-timeout=0", false, `"io-timeout" wants an integer from 1 to 3600 (seconds)`},
		{RBDNBD, "reattach-timeout=0", true, ""},
		{RBDNBD, "reattach-timeout=1000000", false, "from 0 to 3600"},
		{KRBD, "queue_depth", false, "needs a value"},
		{KRBD, "notrim,notrim", false, "more than once"},
		{KRBD, "notrim,,exclusive", false, "empty option"},
		{KRBD, "secret=AQB", false, "cannot be set"},
		{KRBD, "key=client.admin", false, "cannot be set"},
		{KRBD, "ro", false, "access mode"},
		{KRBD, "fsid=1", false, "cannot be set"},
		{KRBD, "io-timeout=30", false, "not allowed"},
		{KRBD, "notrim\n", true, ""}, // trailing whitespace is trimmed
		{KRBD, "notrim\nexclusive", false, "not allowed"},
		{RBDNBD, "io-timeout=30,reattach-timeout=300,exclusive", true, ""},
		{RBDNBD, "device=/dev/nbd9", false, "cannot be set"},
		{RBDNBD, "quiesce-hook=/bin/sh", false, "arbitrary programs"},
		{RBDNBD, "notrim", false, "not allowed"},
		{Fuse, "", true, ""},
		{Fuse, "notrim", false, "takes no map options"},
		{"rbd-ggate", "", false, "unknown mapper"},
	}
	for _, tc := range tests {
		t.Run(tc.mapper+"/"+tc.extra, func(t *testing.T) {
			err := ValidateMapOptions(tc.mapper, tc.extra)
			if tc.ok != (err == nil) {
				t.Fatalf("ValidateMapOptions(%q, %q) = %v, want ok=%v", tc.mapper, tc.extra, err, tc.ok)
			}
			if err != nil && (!errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), tc.msg)) {
				t.Errorf("error %q: want ErrInvalidOptions containing %q", err, tc.msg)
			}
		})
	}
}

func TestValidateImage(t *testing.T) {
	good := Image{Monitors: []string{"10.0.0.1:6789"}, User: "admin", Key: testKey, Pool: "kube", Name: "csi-vol-1"}
	tests := []struct {
		name   string
		modify func(*Image)
		ok     bool
	}{
		{"valid", func(*Image) {}, true},
		{"valid namespace and fsid", func(i *Image) {
			i.RadosNamespace = "tenant_1"
			i.ClusterFSID = "6bc57004-69bf-4513-b1b7-209960b4bab4"
		}, true},
		{"monitor forms", func(i *Image) { i.Monitors = []string{"mon1", "mon-2.example.com:3300", "[fd00::1]:6789", "[::1]"} }, true},
		{"unicode image name", func(i *Image) { i.Name = "données" }, true},
		{"empty pool", func(i *Image) { i.Pool = "" }, false},
		{"dot-dot image", func(i *Image) { i.Name = ".." }, false},
		{"leading dash", func(i *Image) { i.Name = "-o" }, false},
		{"at sign (snapshot spec)", func(i *Image) { i.Name = "img@snap" }, false},
		{"tab in pool", func(i *Image) { i.Pool = "a\tb" }, false},
		{"equals in namespace", func(i *Image) { i.RadosNamespace = "a=b" }, false},
		{"overlong name", func(i *Image) { i.Name = strings.Repeat("x", 201) }, false},
		{"invalid utf8", func(i *Image) { i.Name = "\xff" }, false},
		{"empty user", func(i *Image) { i.User = "" }, false},
		{"user with space", func(i *Image) { i.User = "a b" }, false},
		{"key with newline", func(i *Image) { i.Key = testKey + "\n[client.x]" }, false},
		{"key split by a line break", func(i *Image) { i.Key = testKey[:10] + "\r\n" + testKey[10:] }, false},
		{"monitors with messenger prefixes", func(i *Image) { i.Monitors = []string{"v1:10.0.0.1:6789", "v2:[fd00::1]:3300", "v2:mon-a"} }, true},
		{"monitor with unknown prefix", func(i *Image) { i.Monitors = []string{"v3:10.0.0.1:6789"} }, false},
		{"monitor with empty port", func(i *Image) { i.Monitors = []string{"10.0.0.1:"} }, false},
		{"key of wrong type", func(i *Image) { i.Key = makeKey(nil) }, false},
		{"bare IPv6 monitor", func(i *Image) { i.Monitors = []string{"fd00::1"} }, false},
		{"monitor port out of range", func(i *Image) { i.Monitors = []string{"10.0.0.1:70000"} }, false},
		{"monitor with comma", func(i *Image) { i.Monitors = []string{"10.0.0.1:6789,10.0.0.2"} }, false},
		{"monitor v4 in brackets", func(i *Image) { i.Monitors = []string{"[10.0.0.1]:6789"} }, false},
		{"bad fsid", func(i *Image) { i.ClusterFSID = "not-a-uuid" }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img := good
			tc.modify(&img)
			err := validateImage(img)
			if tc.ok != (err == nil) {
				t.Fatalf("validateImage = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && (!errors.Is(err, ErrInvalidImage) || strings.Contains(err.Error(), testKey)) {
				t.Errorf("error %q: want ErrInvalidImage without the key", err)
			}
		})
	}
}

func TestMissingFeatures(t *testing.T) {
	const future = ceph.Features(1 << 20)
	tests := []struct {
		features  ceph.Features
		supported ceph.Features
		readOnly  bool
		missing   ceph.Features
		unknown   ceph.Features
	}{
		{ceph.FeatureLayering, 0x1, false, 0, 0},
		{ceph.FeatureFastDiff | ceph.FeatureLayering | ceph.FeatureObjectMap | ceph.FeatureExclusiveLock, 0x1, false, ceph.FeatureExclusiveLock | ceph.FeatureObjectMap | ceph.FeatureFastDiff, 0},
		{ceph.FeatureLayering | ceph.FeatureJournaling, 0x3d, false, ceph.FeatureJournaling, 0},
		{ceph.FeatureJournaling | ceph.FeatureDataPool, 0x3d, true, ceph.FeatureDataPool, 0},
		{ceph.FeatureLayering | future, 0x3d, false, 0, future},
	}
	for _, tc := range tests {
		missing, unknown := missingFeatures(tc.features, tc.supported, tc.readOnly)
		if missing != tc.missing || unknown != tc.unknown {
			t.Errorf("missingFeatures(%v, %#x, ro=%v) = %v, %#x; want %v, %#x", tc.features, uint64(tc.supported), tc.readOnly, missing, uint64(unknown), tc.missing, uint64(tc.unknown))
		}
	}
	for in, want := range map[string]ceph.Features{"0x3d\n": 0x3d, "3d": 0x3d, "0X1": 1} {
		if got, err := parseFeatureMask(in); err != nil || got != want {
			t.Errorf("parseFeatureMask(%q) = %#x, %v", in, uint64(got), err)
		}
	}
	if _, err := parseFeatureMask("zz"); err == nil {
		t.Error("parseFeatureMask accepted junk")
	}
}

func TestNewChoosesMapper(t *testing.T) {
	for _, name := range Names() {
		m, err := New(name, Config{StateDir: t.TempDir()})
		if err != nil || m.Name() != name {
			t.Errorf("New(%q) = %v, %v", name, m, err)
		}
	}
	if _, err := New("rbd-ggate", Config{}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("New(unknown) = %v, want ErrInvalidOptions", err)
	}
	if _, err := New(Fuse, Config{}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("New(fuse) without StateDir = %v, want ErrInvalidOptions", err)
	}
}

func TestMountinfoParsing(t *testing.T) {
	mi := filepath.Join(t.TempDir(), "mountinfo")
	content := strings.Join([]string{
		`22 1 0:21 / /proc rw,nosuid shared:5 - proc proc rw`,
		`90 22 0:50 / /var/lib/x/fuse/kube/img/mnt rw,nosuid,nodev,relatime shared:40 - fuse.rbd-fuse rbd-fuse rw,user_id=0,group_id=0`,
		`91 22 0:51 / /var/lib/with\040space/mnt rw - fuse.rbd-fuse rbd-fuse rw`,
		`92 22 0:52 / /stacked rw - tmpfs tmpfs rw`,
		`93 92 0:53 / /stacked rw - fuse.rbd-fuse rbd-fuse rw`,
		`garbage line`,
	}, "\n") + "\n"
	if err := os.WriteFile(mi, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"/var/lib/x/fuse/kube/img/mnt": "fuse.rbd-fuse",
		"/var/lib/with space/mnt":      "fuse.rbd-fuse",
		"/stacked":                     "fuse.rbd-fuse",
		"/var/lib/x":                   "",
	} {
		got, err := mountAt(mi, path)
		if err != nil || got != want {
			t.Errorf("mountAt(%q) = %q, %v; want %q", path, got, err, want)
		}
	}
	if got := unescapeOctal(`a\134b\011c\`); got != "a\\b\tc\\" {
		t.Errorf("unescapeOctal = %q", got)
	}
}

func TestLoopsBackingScansSysfs(t *testing.T) {
	sysfs := t.TempDir()
	file := "/state/fuse/kube/img/mnt/img"
	mustWrite(t, filepath.Join(sysfs, "block", "loop3", "loop", "backing_file"), file+"\n")
	mustWrite(t, filepath.Join(sysfs, "block", "loop12", "loop", "backing_file"), file+" (deleted)\n")
	mustWrite(t, filepath.Join(sysfs, "block", "loop1", "loop", "backing_file"), "/other/file\n")
	mustMkdir(t, filepath.Join(sysfs, "block", "loop0")) // detached: no loop/ dir
	// Being detached (autoclear): not a mapping any more.
	mustWrite(t, filepath.Join(sysfs, "block", "loop5", "loop", "backing_file"), file+"\n")
	mustWrite(t, filepath.Join(sysfs, "block", "loop5", "loop", "autoclear"), "1\n")
	mustWrite(t, filepath.Join(sysfs, "block", "loop3", "loop", "autoclear"), "0\n")
	mustMkdir(t, filepath.Join(sysfs, "block", "loopback"))
	got, err := loopsBacking(sysfs, file)
	if err != nil || !slices.Equal(got, []string{"/dev/loop3", "/dev/loop12"}) {
		t.Errorf("loopsBacking = %v, %v; want [/dev/loop3 /dev/loop12]", got, err)
	}
	if got := loopBackingFile(sysfs, "/dev/loop12"); got != file {
		t.Errorf("loopBackingFile = %q", got)
	}
	if got := loopBackingFile(sysfs, "/dev/loop0"); got != "" {
		t.Errorf("loopBackingFile(detached) = %q", got)
	}
}

func TestParseKmsgRecord(t *testing.T) {
	ts, msg, ok := parseKmsgRecord("4,1234,5678901,-,caller=T1;libceph: mon0 feature set mismatch\n SUBSYSTEM=x\n")
	if !ok || ts != 5678901*time.Microsecond || msg != "libceph: mon0 feature set mismatch" {
		t.Errorf("parseKmsgRecord = %v, %q, %v", ts, msg, ok)
	}
	if _, _, ok := parseKmsgRecord("no separator"); ok {
		t.Error("parsed a record without ';'")
	}
}

func TestKmsgLogReadsWithoutBlocking(t *testing.T) {
	if _, err := os.Open("/dev/kmsg"); err != nil {
		t.Skipf("skipping: /dev/kmsg not readable: %v", err)
	}
	start := time.Now()
	lines, err := KmsgLog{}.Since(ctxTimeout(t, 5*time.Second), time.Now().Add(-24*time.Hour))
	if err != nil {
		t.Fatalf("Since: %v", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Errorf("reading the kernel log took %v", time.Since(start))
	}
	if len(lines) == 0 {
		t.Error("no kernel log lines in the last day")
	}
	// Nothing is logged "after now": a window in the future is empty.
	future, err := KmsgLog{}.Since(ctxTimeout(t, 5*time.Second), time.Now().Add(time.Hour))
	if err != nil || len(future) != 0 {
		t.Errorf("Since(future) = %d lines, %v", len(future), err)
	}
}

func TestFuseRejectsWhatRBDFuseCannotDo(t *testing.T) {
	m, err := New(Fuse, Config{StateDir: t.TempDir(), Exec: &fakeExec{}})
	if err != nil {
		t.Fatal(err)
	}
	img := Image{Monitors: []string{"10.0.0.1"}, User: "admin", Key: testKey, Pool: "kube", Name: "img"}
	ns := img
	ns.RadosNamespace = "tenant"
	if _, err := m.Map(ctxTimeout(t, time.Second), ns, MapOptions{}); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "rados namespace") {
		t.Errorf("Map with namespace: %v, want ErrUnsupported naming the namespace", err)
	}
	if _, err := m.Map(ctxTimeout(t, time.Second), img, MapOptions{Extra: "notrim"}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("Map with options: %v, want ErrInvalidOptions", err)
	}
	for _, dev := range []Device{
		{Path: "/dev/loop1", Mapper: KRBD, Attrs: map[string]string{AttrPool: "kube", AttrImage: "img"}},
		{Path: "/dev/sda", Mapper: Fuse, Attrs: map[string]string{AttrPool: "kube", AttrImage: "img"}},
		{Path: "/dev/loop1", Mapper: Fuse, Attrs: map[string]string{AttrPool: "../..", AttrImage: "img"}},
	} {
		if err := m.Unmap(ctxTimeout(t, time.Second), dev); !errors.Is(err, ErrInvalidDevice) {
			t.Errorf("Unmap(%+v) = %v, want ErrInvalidDevice", dev, err)
		}
	}
	// Unmapping something never mapped is success and creates nothing.
	never := Device{Path: "/dev/loop7", Mapper: Fuse, Attrs: map[string]string{AttrPool: "kube", AttrImage: "never"}}
	if err := m.Unmap(ctxTimeout(t, 5*time.Second), never); err != nil {
		t.Errorf("Unmap of a never-mapped device: %v", err)
	}
}

func TestFuseConfPassesMonitorsAsGiven(t *testing.T) {
	img := Image{Monitors: []string{"v1:10.0.0.1:6789", "v2:[fd00::1]:3300", "mon-c"}}
	conf := fuseConf(ctxTimeout(t, time.Minute), img)
	if !strings.Contains(conf, "\nmon_host = v1:10.0.0.1:6789,v2:[fd00::1]:3300,mon-c\n") {
		t.Errorf("fuse ceph.conf does not list the monitors as given:\n%s", conf)
	}
}

// A fenced rbd-fuse must fail writes, not hold them in librbd's cache.
func TestFuseConfTurnsLibrbdsCacheOff(t *testing.T) {
	conf := fuseConf(ctxTimeout(t, time.Minute), Image{Monitors: []string{"mon-a"}})
	if !strings.Contains(conf, "\nrbd_cache = false\n") {
		t.Errorf("fuse ceph.conf leaves librbd's cache on:\n%s", conf)
	}
}

func TestReadLogTailKeepsLatestStart(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	content := logMarker + "t1 starting rbd-fuse\nold failure --- with dashes\n" + logMarker + "t2 starting rbd-fuse\nnew failure\n"
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := readLogTail(p, 4096); got != "new failure\n" {
		t.Errorf("readLogTail = %q", got)
	}
}

// failingExec fails every command.
type failingExec struct{}

func (failingExec) Run(context.Context, Command) ([]byte, []byte, error) {
	return nil, []byte("boom"), errors.New("exit status 1")
}

func TestToolErrorKeepsNoStdin(t *testing.T) {
	secret := []byte("a-luks-passphrase-0123456789")
	_, err := runTool(context.Background(), failingExec{}, Command{Path: "cryptsetup", Args: []string{"open"}, Stdin: secret})
	var te *toolError
	if !errors.As(err, &te) {
		t.Fatalf("runTool error %v is no toolError", err)
	}
	if te.cmd.Stdin != nil || strings.Contains(fmt.Sprintf("%#v %+v", te, te), string(secret)) {
		t.Fatal("the failed command's error still holds its stdin")
	}
}
