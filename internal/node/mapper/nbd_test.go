package mapper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// nbdRig is an rbd-nbd mapper with a fake rbd-nbd (executor) and a fake
// /sys/block for the nbd devices.
type nbdRig struct {
	exec      *fakeExec
	sysfs     string
	proc      string
	secretDir string
	cfg       Config

	mu     sync.Mutex
	mapped []nbdMapped // what the fake list-mapped reports
}

func newNBDRig(t *testing.T) *nbdRig {
	t.Helper()
	r := &nbdRig{exec: &fakeExec{}, sysfs: t.TempDir(), proc: t.TempDir(), secretDir: t.TempDir()}
	if err := os.Mkdir(filepath.Join(r.sysfs, "block"), 0o755); err != nil {
		t.Fatal(err)
	}
	r.cfg = Config{SysfsRoot: r.sysfs, ProcRoot: r.proc, SecretDir: r.secretDir, Exec: r.exec, RBDNBDPath: "/usr/bin/rbd-nbd"}
	r.exec.handler = r.defaultHandler
	t.Cleanup(func() {
		assertNoSecretInCalls(t, r.exec.Calls(), testKey)
		if entries, _ := os.ReadDir(r.secretDir); len(entries) > 0 {
			t.Errorf("keyring files left behind: %v", entries)
		}
	})
	return r
}

func (r *nbdRig) mapper(t *testing.T) Mapper {
	t.Helper()
	m, err := New(RBDNBD, r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// setMapped makes the fake list-mapped report m. Like the kernel, sysfs
// then shows each device as connected (rbd-nbd lists only those).
func (r *nbdRig) setMapped(m ...nbdMapped) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mapped = m
	for _, x := range m {
		dir := filepath.Join(r.sysfs, "block", filepath.Base(x.Device))
		if err := os.MkdirAll(dir, 0o755); err == nil {
			_ = os.WriteFile(filepath.Join(dir, "pid"), []byte(strconv.Itoa(x.PID)+"\n"), 0o644)
		}
	}
}

// defaultHandler answers list-mapped from r.mapped and maps to /dev/nbd0.
func (r *nbdRig) defaultHandler(c Command) (string, string, error) {
	switch c.Args[0] {
	case "list-mapped":
		r.mu.Lock()
		defer r.mu.Unlock()
		b, _ := json.Marshal(append([]nbdMapped{}, r.mapped...))
		return string(b), "", nil
	case "map":
		return "/dev/nbd0\n", "", nil
	default:
		return "", "", nil
	}
}

// connect makes /sys/block/<dev> look connected, optionally with a cookie.
func (r *nbdRig) connect(t *testing.T, dev, backend string, withBackend bool) {
	t.Helper()
	dir := filepath.Join(r.sysfs, "block", filepath.Base(dev))
	mustWrite(t, filepath.Join(dir, "pid"), "4242\n")
	mustWrite(t, filepath.Join(dir, "ro"), "0\n")
	if withBackend {
		mustWrite(t, filepath.Join(dir, "backend"), backend+"\n")
	}
}

// serve makes dev look connected to backend and served by process pid
// with command line argv, as the kernel and procfs show a live mapping.
func (r *nbdRig) serve(t *testing.T, dev, backend string, pid int, argv ...string) {
	t.Helper()
	r.connect(t, dev, backend, true)
	mustWrite(t, filepath.Join(r.sysfs, "block", filepath.Base(dev), "pid"), strconv.Itoa(pid)+"\n")
	mustWrite(t, filepath.Join(r.proc, strconv.Itoa(pid), "cmdline"), strings.Join(argv, "\x00")+"\x00")
}

// ownArgs is the command line of an rbd-nbd this mapper started for spec
// with cookie (runWithKey's shape; the keyring already removed).
func (r *nbdRig) ownArgs(sub, cookie, spec string) []string {
	return []string{"/usr/bin/rbd-nbd", sub, "--try-netlink", "--cookie", cookie, "--reattach-timeout", "300",
		"--id", "csi-rbd", "-m", "10.0.0.1:6789", "--keyring", filepath.Join(r.secretDir, "rbd-csi-keyring-1", "keyring"), spec}
}

func nbdImage() Image {
	return Image{
		Monitors: []string{"10.0.0.1:6789", "10.0.0.2:6789"}, User: "csi-rbd", Key: testKey,
		Pool: "kube", RadosNamespace: "ns1", Name: "img",
	}
}

// callsOf returns the commands whose first argument is sub.
func callsOf(calls []Command, sub string) []Command {
	var out []Command
	for _, c := range calls {
		if len(c.Args) > 0 && c.Args[0] == sub {
			out = append(out, c)
		}
	}
	return out
}

func TestNBDMapRunsRBDNBDWithKeyringNotKey(t *testing.T) {
	tests := []struct {
		name     string
		opts     MapOptions
		cephConf string
		wantMid  []string // arguments between the cookie and --id
	}{
		{name: "read-write, no options: the node's reattach timeout", wantMid: []string{"--reattach-timeout", "300"}},
		{name: "read-only with StorageClass options", opts: MapOptions{ReadOnly: true, Extra: "io-timeout=30,exclusive"},
			wantMid: []string{"--read-only", "--io-timeout", "30", "--exclusive", "--reattach-timeout", "300"}},
		{name: "StorageClass reattach timeout replaces the node's", opts: MapOptions{Extra: "reattach-timeout=45"},
			wantMid: []string{"--reattach-timeout", "45"}},
		{name: "extra ceph.conf", cephConf: "/etc/ceph/ceph.conf", wantMid: []string{"--reattach-timeout", "300"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rig := newNBDRig(t)
			rig.cfg.CephConf = tc.cephConf
			dev, err := rig.mapper(t).Map(ctxTimeout(t, 5*time.Second), nbdImage(), tc.opts)
			if err != nil {
				t.Fatalf("Map: %v", err)
			}
			maps := callsOf(rig.exec.Calls(), "map")
			if len(maps) != 1 {
				t.Fatalf("want one rbd-nbd map, got %v", rig.exec.Calls())
			}
			c := maps[0]
			cookie := argValue(c.Args, "--cookie")
			keyring := argValue(c.Args, "--keyring")
			want := append([]string{"map", "--try-netlink", "--cookie", cookie}, tc.wantMid...)
			want = append(want, "--id", "csi-rbd", "-m", "10.0.0.1:6789,10.0.0.2:6789", "--keyring", keyring)
			if tc.cephConf != "" {
				want = append(want, "-c", tc.cephConf)
			}
			want = append(want, "kube/ns1/img")
			if c.Path != "/usr/bin/rbd-nbd" || !slices.Equal(c.Args, want) {
				t.Errorf("rbd-nbd argv:\n got %q\nwant %q", c.Args, want)
			}
			if len(cookie) != 32 {
				t.Errorf("cookie %q is not 128 random bits in hex", cookie)
			}
			// The keyring existed while rbd-nbd ran, held the key, and is
			// gone now (checked in cleanup).
			rig.exec.mu.Lock()
			kr := rig.exec.keyrings
			rig.exec.mu.Unlock()
			if len(kr) != 1 || kr[0] != "[client.csi-rbd]\n\tkey = "+testKey+"\n" {
				t.Errorf("keyring seen by rbd-nbd = %q", kr)
			}
			if !strings.HasPrefix(keyring, rig.secretDir+"/") {
				t.Errorf("keyring %s is not under SecretDir %s", keyring, rig.secretDir)
			}
			want2 := nbdDevice(nbdImage(), "/dev/nbd0", cookie, tc.opts.ReadOnly)
			if fmt.Sprint(dev) != fmt.Sprint(want2) {
				t.Errorf("Map = %+v, want %+v", dev, want2)
			}
		})
	}
}

func TestNBDKeyringIsPrivate(t *testing.T) {
	rig := newNBDRig(t)
	var mode, dirMode os.FileMode
	rig.exec.handler = func(c Command) (string, string, error) {
		if c.Args[0] == "map" {
			kr := argValue(c.Args, "--keyring")
			if st, err := os.Stat(kr); err == nil {
				mode = st.Mode().Perm()
			}
			if st, err := os.Stat(filepath.Dir(kr)); err == nil {
				dirMode = st.Mode().Perm()
			}
		}
		return rig.defaultHandler(c)
	}
	if _, err := rig.mapper(t).Map(ctxTimeout(t, 5*time.Second), nbdImage(), MapOptions{}); err != nil {
		t.Fatal(err)
	}
	if mode != 0o600 || dirMode != 0o700 {
		t.Errorf("keyring mode %o in dir mode %o, want 600 in 700", mode, dirMode)
	}
}

func TestNBDMapReturnsExistingMapping(t *testing.T) {
	rig := newNBDRig(t)
	rig.setMapped(
		nbdMapped{PID: 10, Pool: "kube", Namespace: "", Image: "img", Device: "/dev/nbd1", Cookie: "other-ns"},
		nbdMapped{PID: 11, Pool: "kube", Namespace: "ns1", Image: "img", Snap: "snap1", Device: "/dev/nbd2", Cookie: "a-snapshot"},
		nbdMapped{PID: 12, Pool: "kube", Namespace: "ns1", Image: "img", Device: "/dev/nbd5", Cookie: "c00k1e"},
	)
	dev, err := rig.mapper(t).Map(ctxTimeout(t, 5*time.Second), nbdImage(), MapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if dev.Path != "/dev/nbd5" || dev.Attrs[AttrCookie] != "c00k1e" {
		t.Errorf("Map = %+v, want the existing /dev/nbd5 with its cookie", dev)
	}
	if maps := callsOf(rig.exec.Calls(), "map"); len(maps) != 0 {
		t.Errorf("Map of a mapped image ran rbd-nbd map: %v", maps)
	}
}

// rbd-nbd list-mapped names no cluster: the cookie carries the fsid, so a
// same-named image of another cluster is never taken for this one.
func TestNBDKeysMappingsByClusterFSIDInTheCookie(t *testing.T) {
	const ours, other = "6bc57004-69bf-4513-b1b7-209960b4bab4", "0d2a0c1e-0000-4000-8000-000000000001"
	random := strings.Repeat("ab", 16)
	tests := []struct {
		name, imageFSID, cookie string
		wantExisting            bool
	}{
		{"same cluster reuses it", ours, ours + "-" + random, true},
		{"same cluster, fsid in upper case", strings.ToUpper(ours), ours + "-" + random, true},
		{"other cluster maps anew", ours, other + "-" + random, false},
		{"cookie from before fsids reuses it (compatibility)", ours, random, true},
		{"fsid unknown reuses it (compatibility)", "", other + "-" + random, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rig := newNBDRig(t)
			rig.setMapped(nbdMapped{PID: 12, Pool: "kube", Namespace: "ns1", Image: "img", Device: "/dev/nbd5", Cookie: tc.cookie})
			img := nbdImage()
			img.ClusterFSID = tc.imageFSID
			dev, err := rig.mapper(t).Map(ctxTimeout(t, 5*time.Second), img, MapOptions{})
			if err != nil {
				t.Fatal(err)
			}
			maps := callsOf(rig.exec.Calls(), "map")
			if got := dev.Path == "/dev/nbd5" && len(maps) == 0; got != tc.wantExisting {
				t.Fatalf("Map = %s after %d rbd-nbd map calls; want the existing mapping: %t", dev.Path, len(maps), tc.wantExisting)
			}
			if !tc.wantExisting {
				cookie := argValue(maps[0].Args, "--cookie")
				if cookieCluster(cookie) != ours || dev.Attrs[AttrCookie] != cookie {
					t.Errorf("new mapping's cookie %q does not carry the cluster %s", cookie, ours)
				}
			}
		})
	}
}

func TestNBDReattachesAfterDaemonDied(t *testing.T) {
	prev := nbdDevice(nbdImage(), "/dev/nbd3", "cookie-3", false)
	tests := []struct {
		name        string
		connected   bool
		withBackend bool
		backend     string
		prev        Device
		wantCmd     string
		wantArgs    []string // prefix
	}{
		{name: "connected with our cookie: attach with cookie", connected: true, withBackend: true, backend: "cookie-3", prev: prev,
			wantCmd: "attach", wantArgs: []string{"attach", "--device", "/dev/nbd3", "--try-netlink", "--cookie", "cookie-3", "--reattach-timeout", "300", "--id"}},
		{name: "kernel without backend attribute: attach without cookie", connected: true, prev: prev,
			wantCmd: "attach", wantArgs: []string{"attach", "--device", "/dev/nbd3", "--try-netlink", "--reattach-timeout", "300", "--id"}},
		{name: "device now serves another backend: map anew", connected: true, withBackend: true, backend: "someone-else", prev: prev,
			wantCmd: "map"},
		{name: "device disconnected: map anew", prev: prev, wantCmd: "map"},
		{name: "previous device of another image: map anew", connected: true, withBackend: true, backend: "cookie-3",
			prev: nbdDevice(Image{Pool: "kube", Name: "other"}, "/dev/nbd3", "cookie-3", false), wantCmd: "map"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rig := newNBDRig(t)
			if tc.connected {
				rig.connect(t, "/dev/nbd3", tc.backend, tc.withBackend)
			}
			p := tc.prev
			dev, err := rig.mapper(t).Map(ctxTimeout(t, 5*time.Second), nbdImage(), MapOptions{Previous: &p})
			if err != nil {
				t.Fatalf("Map: %v", err)
			}
			calls := rig.exec.Calls()
			other := map[string]string{"attach": "map", "map": "attach"}[tc.wantCmd]
			if len(callsOf(calls, tc.wantCmd)) != 1 || len(callsOf(calls, other)) != 0 {
				t.Fatalf("want one %s and no %s, got %v", tc.wantCmd, other, calls)
			}
			if tc.wantCmd == "attach" {
				got := callsOf(calls, "attach")[0].Args
				if !slices.Equal(got[:len(tc.wantArgs)], tc.wantArgs) || got[len(got)-1] != "kube/ns1/img" {
					t.Errorf("attach argv %q, want prefix %q and spec last", got, tc.wantArgs)
				}
				if dev.Path != "/dev/nbd3" || dev.Attrs[AttrCookie] != "cookie-3" {
					t.Errorf("re-attach returned %+v, want /dev/nbd3 with the old cookie", dev)
				}
			}
		})
	}
}

func TestNBDUnmap(t *testing.T) {
	ours := nbdDevice(nbdImage(), "/dev/nbd4", "cookie-4", false)
	tests := []struct {
		name      string
		mapped    []nbdMapped
		connected bool
		backend   string
		stderr    string
		wantUnmap bool
		// wantList: rbd-nbd list-mapped had to be asked whose device it
		// is (not when the kernel shows our cookie, nor with no device
		// connected at all).
		wantList bool
		want     error
	}{
		{name: "listed for our image: unmapped", wantUnmap: true, wantList: true,
			mapped: []nbdMapped{{Pool: "kube", Namespace: "ns1", Image: "img", Device: "/dev/nbd4"}}},
		{name: "not listed, not connected: already gone"},
		{name: "listed for another image: device reused, left alone", wantList: true,
			mapped: []nbdMapped{{Pool: "kube", Image: "newcomer", Device: "/dev/nbd4"}}},
		{name: "kernel holds our cookie: unmapped without listing", connected: true, backend: "cookie-4", wantUnmap: true},
		{name: "kernel holds another cookie: left alone", connected: true, backend: "cookie-x", wantList: true},
		// Pacific's rbd-nbd unmap disconnects a device even while it is
		// open (make test-kernel); the opener check refuses first. Should
		// a release refuse by itself, its EBUSY still means busy.
		{name: "rbd-nbd itself refuses with EBUSY", wantUnmap: true, wantList: true, stderr: "rbd-nbd: failed to disconnect: (16) Device or resource busy", want: ErrDeviceBusy,
			mapped: []nbdMapped{{Pool: "kube", Namespace: "ns1", Image: "img", Device: "/dev/nbd4"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rig := newNBDRig(t)
			rig.setMapped(tc.mapped...)
			if tc.connected {
				rig.connect(t, "/dev/nbd4", tc.backend, true)
			}
			rig.exec.handler = func(c Command) (string, string, error) {
				if c.Args[0] == "unmap" && tc.stderr != "" {
					return "", tc.stderr, errors.New("exit status 1")
				}
				return rig.defaultHandler(c)
			}
			err := rig.mapper(t).Unmap(ctxTimeout(t, 5*time.Second), ours)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("Unmap: %v, want %v", err, tc.want)
			}
			unmaps := callsOf(rig.exec.Calls(), "unmap")
			if tc.wantUnmap != (len(unmaps) == 1) {
				t.Fatalf("unmap calls %v, want unmap=%v", unmaps, tc.wantUnmap)
			}
			if tc.wantUnmap && !slices.Equal(unmaps[0].Args, []string{"unmap", "/dev/nbd4"}) {
				t.Errorf("unmap argv %q", unmaps[0].Args)
			}
			if listed := len(callsOf(rig.exec.Calls(), "list-mapped")) > 0; listed != tc.wantList {
				t.Errorf("list-mapped run: %v, want %v", listed, tc.wantList)
			}
		})
	}
}

// A caller that crashed between Map and recording the device knows only
// the image; Unmap must find the mapping through rbd-nbd list-mapped.
func TestNBDUnmapOfImageOnlyDevice(t *testing.T) {
	imageOnly := Device{Mapper: RBDNBD, Attrs: map[string]string{AttrPool: "kube", AttrNamespace: "ns1", AttrImage: "img"}}
	tests := []struct {
		name      string
		mapped    []nbdMapped
		wantUnmap bool
	}{
		{"mapping listed: unmapped by its device", []nbdMapped{
			{Pool: "kube", Image: "other", Device: "/dev/nbd1"},
			{Pool: "kube", Namespace: "ns1", Image: "img", Device: "/dev/nbd4"},
		}, true},
		{"nothing listed: nothing to do", nil, false},
		{"only another namespace's image of that name: left alone", []nbdMapped{{Pool: "kube", Image: "img", Device: "/dev/nbd2"}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rig := newNBDRig(t)
			rig.setMapped(tc.mapped...)
			if err := rig.mapper(t).Unmap(ctxTimeout(t, 5*time.Second), imageOnly); err != nil {
				t.Fatalf("Unmap: %v", err)
			}
			unmaps := callsOf(rig.exec.Calls(), "unmap")
			if !tc.wantUnmap {
				if len(unmaps) != 0 {
					t.Fatalf("unmapped %v, want nothing", unmaps)
				}
				return
			}
			if len(unmaps) != 1 || !slices.Equal(unmaps[0].Args, []string{"unmap", "/dev/nbd4"}) {
				t.Fatalf("unmap calls %v, want one of /dev/nbd4", unmaps)
			}
		})
	}
}

func TestNBDMapErrorsAreClassified(t *testing.T) {
	tests := []struct {
		stderr string
		want   error
	}{
		{"rbd-nbd: failed to find unused device", ErrUnsupported},
		{"rbd-nbd: failed to open image: (2) No such file or directory", ErrImageNotFound},
		{"monclient: ... (13) Permission denied", ErrAccessDenied},
		{"rbd-nbd: failed to connect: (110) Connection timed out", ErrMapTimeout},
		{"rbd-nbd: something else", ErrMapFailed},
	}
	for _, tc := range tests {
		t.Run(tc.stderr, func(t *testing.T) {
			rig := newNBDRig(t)
			rig.exec.handler = func(c Command) (string, string, error) {
				if c.Args[0] == "map" {
					return "", tc.stderr, errors.New("exit status 1")
				}
				return rig.defaultHandler(c)
			}
			_, err := rig.mapper(t).Map(ctxTimeout(t, 5*time.Second), nbdImage(), MapOptions{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Map: %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.stderr) {
				t.Errorf("error %q does not quote rbd-nbd's message", err)
			}
		})
	}
}

func TestNBDMapHonoursDeadline(t *testing.T) {
	rig := newNBDRig(t)
	rig.exec.handler = func(c Command) (string, string, error) {
		if c.Args[0] == "map" {
			time.Sleep(300 * time.Millisecond) // a real executor is killed at the deadline
			return "", "", context.DeadlineExceeded
		}
		return rig.defaultHandler(c)
	}
	_, err := rig.mapper(t).Map(ctxTimeout(t, 100*time.Millisecond), nbdImage(), MapOptions{})
	if !errors.Is(err, ErrMapTimeout) {
		t.Fatalf("Map: %v, want ErrMapTimeout", err)
	}
}

func TestNBDRejectsKRBDOptions(t *testing.T) {
	rig := newNBDRig(t)
	_, err := rig.mapper(t).Map(ctxTimeout(t, time.Second), nbdImage(), MapOptions{Extra: "queue_depth=128"})
	if !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("Map: %v, want ErrInvalidOptions", err)
	}
	if len(rig.exec.Calls()) != 0 {
		t.Errorf("commands ran despite invalid options: %v", rig.exec.Calls())
	}
}

// Check answers from sysfs and /proc when the kernel's backend is the
// mapping's cookie and the process the kernel names is an rbd-nbd this
// mapper started with that cookie; anything less is asked of rbd-nbd
// list-mapped.
func TestNBDCheck(t *testing.T) {
	dev := nbdDevice(nbdImage(), "/dev/nbd6", "c6", false)
	ours := func(r *nbdRig) []string { return r.ownArgs("map", "c6", "kube/ns1/img") }
	listed := []nbdMapped{{PID: 0, Pool: "kube", Namespace: "ns1", Image: "img", Device: "/dev/nbd6"}}
	tests := []struct {
		name      string
		mapped    []nbdMapped
		connected bool
		daemon    func(r *nbdRig) []string // the command line of the process sysfs names, if any
		backend   string
		healthy   bool
		msg       string
		wantList  int
	}{
		{name: "served, told by the kernel and its daemon: rbd-nbd not asked", daemon: ours, backend: "c6", healthy: true},
		{name: "served by a re-attach this mapper started: rbd-nbd not asked", daemon: func(r *nbdRig) []string { return r.ownArgs("attach", "c6", "kube/ns1/img") }, backend: "c6", healthy: true},
		{name: "the pid is another program: rbd-nbd asked", daemon: func(r *nbdRig) []string { return append([]string{"/bin/sleep"}, ours(r)[1:]...) }, backend: "c6", mapped: listed, healthy: true, wantList: 1},
		{name: "an rbd-nbd this mapper did not start (keyring elsewhere): rbd-nbd asked", daemon: func(*nbdRig) []string {
			return []string{"rbd-nbd", "map", "--cookie", "c6", "--keyring", "/etc/ceph/keyring", "kube/ns1/img"}
		}, backend: "c6", mapped: listed, healthy: true, wantList: 1},
		{name: "a daemon given another cookie: rbd-nbd asked", daemon: func(r *nbdRig) []string { return r.ownArgs("map", "c7", "kube/ns1/img") }, backend: "c6", mapped: listed, healthy: true, wantList: 1},
		{name: "the kernel serves another cookie: rbd-nbd asked", daemon: ours, backend: "c7", mapped: listed, healthy: true, wantList: 1},
		{name: "the daemon named is gone: rbd-nbd asked, kernel waiting", connected: true, msg: "rbd-nbd process serving /dev/nbd6", wantList: 1},
		{name: "served, listed by rbd-nbd", healthy: true, mapped: listed, wantList: 1},
		{name: "gone entirely", msg: "no longer mapped"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rig := newNBDRig(t)
			rig.setMapped(tc.mapped...)
			if tc.connected {
				rig.connect(t, "/dev/nbd6", "c6", true)
			}
			if tc.daemon != nil {
				rig.serve(t, "/dev/nbd6", tc.backend, 4321, tc.daemon(rig)...)
			}
			healthy, msg := rig.mapper(t).Check(ctxTimeout(t, time.Second), dev)
			if healthy != tc.healthy || !strings.Contains(msg, tc.msg) {
				t.Errorf("Check = %v, %q; want %v, containing %q", healthy, msg, tc.healthy, tc.msg)
			}
			if got := len(callsOf(rig.exec.Calls(), "list-mapped")); got != tc.wantList {
				t.Errorf("rbd-nbd list-mapped ran %d times, want %d", got, tc.wantList)
			}
		})
	}
}

// A map looks for the image among the node's mappings first. When this
// mapper's own processes serve every connected device, sysfs and /proc
// tell which images they serve; any device they cannot vouch for sends
// the question to rbd-nbd list-mapped.
func TestNBDMapAsksRBDNBDOnlyAboutDevicesItCannotIdentify(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(t *testing.T, r *nbdRig)
		wantDev  string
		wantList int
		wantMap  int
	}{
		{name: "devices serving other images: mapped anew without listing", setup: func(t *testing.T, r *nbdRig) {
			r.serve(t, "/dev/nbd1", "c1", 101, r.ownArgs("map", "c1", "kube/ns1/other")...)
			r.serve(t, "/dev/nbd2", "c2", 102, r.ownArgs("map", "c2", "kube/img")...)
		}, wantDev: "/dev/nbd0", wantMap: 1},
		{name: "the image already served: its device returned without listing", setup: func(t *testing.T, r *nbdRig) {
			r.serve(t, "/dev/nbd1", "c1", 101, r.ownArgs("map", "c1", "kube/ns1/other")...)
			r.serve(t, "/dev/nbd4", "c4", 104, r.ownArgs("map", "c4", "kube/ns1/img")...)
		}, wantDev: "/dev/nbd4"},
		{name: "a device mapped by hand: rbd-nbd asked", setup: func(t *testing.T, r *nbdRig) {
			r.serve(t, "/dev/nbd1", "c1", 101, r.ownArgs("map", "c1", "kube/ns1/other")...)
			r.serve(t, "/dev/nbd3", "", 103, "rbd-nbd", "map", "kube/ns1/img")
			r.setMapped(nbdMapped{PID: 103, Pool: "kube", Namespace: "ns1", Image: "img", Device: "/dev/nbd3"})
		}, wantDev: "/dev/nbd3", wantList: 1},
		{name: "a pid the kernel names now runs another mapping: rbd-nbd asked", setup: func(t *testing.T, r *nbdRig) {
			r.serve(t, "/dev/nbd1", "c1", 101, r.ownArgs("map", "c9", "kube/ns1/img")...)
		}, wantDev: "/dev/nbd0", wantList: 1, wantMap: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rig := newNBDRig(t)
			tc.setup(t, rig)
			dev, err := rig.mapper(t).Map(ctxTimeout(t, time.Second), nbdImage(), MapOptions{})
			if err != nil {
				t.Fatal(err)
			}
			calls := rig.exec.Calls()
			if dev.Path != tc.wantDev || len(callsOf(calls, "list-mapped")) != tc.wantList || len(callsOf(calls, "map")) != tc.wantMap {
				t.Errorf("mapped at %s with %d list-mapped and %d map runs; want %s, %d and %d",
					dev.Path, len(callsOf(calls, "list-mapped")), len(callsOf(calls, "map")), tc.wantDev, tc.wantList, tc.wantMap)
			}
		})
	}
}

func TestOSExecutorKillsAtDeadline(t *testing.T) {
	start := time.Now()
	_, _, err := OSExecutor{}.Run(ctxTimeout(t, 200*time.Millisecond), Command{Path: "sleep", Args: []string{"10"}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run: %v, want DeadlineExceeded", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("Run took %v", time.Since(start))
	}
}

func TestOSExecutorDropsCephEnvironment(t *testing.T) {
	t.Setenv("CEPH_ARGS", "--keyring /elsewhere")
	out, _, err := OSExecutor{}.Run(ctxTimeout(t, 5*time.Second), Command{Path: "sh", Args: []string{"-c", "echo \"[$CEPH_ARGS][$MINE]\""}, Env: []string{"MINE=1"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != "[][1]" {
		t.Errorf("command saw %q, want CEPH_ARGS removed and MINE set", got)
	}
}

func TestNBDPassesMessengerPrefixesToLibrados(t *testing.T) {
	rig := newNBDRig(t)
	img := nbdImage()
	img.Monitors = []string{"v2:10.0.0.1:3300", "v1:[fd00::1]:6789", "mon-c"}
	img.Key = "\n" + testKey + "\n"
	if _, err := rig.mapper(t).Map(ctxTimeout(t, 5*time.Second), img, MapOptions{}); err != nil {
		t.Fatalf("Map: %v", err)
	}
	maps := callsOf(rig.exec.Calls(), "map")
	if len(maps) != 1 {
		t.Fatalf("want one rbd-nbd map, got %v", rig.exec.Calls())
	}
	if got := argValue(maps[0].Args, "-m"); got != "v2:10.0.0.1:3300,v1:[fd00::1]:6789,mon-c" {
		t.Errorf("rbd-nbd -m %q, want the addresses as given", got)
	}
	rig.exec.mu.Lock()
	kr := rig.exec.keyrings
	rig.exec.mu.Unlock()
	if len(kr) != 1 || kr[0] != "[client.csi-rbd]\n\tkey = "+testKey+"\n" {
		t.Errorf("keyring seen by rbd-nbd = %q, want the trimmed key", kr)
	}
}

// Reattach is the plugin's start-up pass: it serves a device whose rbd-nbd
// process died with the plugin's container again, and nothing else.
func TestNBDReattachServesOnlyOurDeadDevice(t *testing.T) {
	const ours, other = "6bc57004-69bf-4513-b1b7-209960b4bab4", "0d2a0c1e-0000-4000-8000-000000000001"
	cookie := ours + "-" + strings.Repeat("cd", 16)
	dev := nbdDevice(nbdImage(), "/dev/nbd3", cookie, false)
	tests := []struct {
		name       string
		imageFSID  string
		mapped     []nbdMapped
		connected  bool
		backend    string
		want       ReattachResult
		wantAttach bool
	}{
		{name: "dead process, device waiting: attached once", imageFSID: ours, connected: true, backend: cookie, want: Reattached, wantAttach: true},
		{name: "live process: left alone", imageFSID: ours, connected: true, backend: cookie, want: ReattachLive,
			mapped: []nbdMapped{{PID: 7, Pool: "kube", Namespace: "ns1", Image: "img", Device: "/dev/nbd3", Cookie: cookie}}},
		{name: "device of another cluster: left alone", imageFSID: other, connected: true, backend: cookie, want: ReattachOther},
		{name: "device now serves another backend: left alone", imageFSID: ours, connected: true, backend: "someone-else", want: ReattachOther},
		{name: "device served by a process for another image: left alone", imageFSID: ours, connected: true, backend: cookie, want: ReattachOther,
			mapped: []nbdMapped{{PID: 8, Pool: "kube", Image: "other", Device: "/dev/nbd3", Cookie: "x"}}},
		{name: "image served from another device: no second process", imageFSID: ours, connected: true, backend: cookie, want: ReattachOther,
			mapped: []nbdMapped{{PID: 9, Pool: "kube", Namespace: "ns1", Image: "img", Device: "/dev/nbd4", Cookie: cookie}}},
		{name: "wait expired, device disconnected: gone", imageFSID: ours, want: ReattachGone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rig := newNBDRig(t)
			rig.setMapped(tc.mapped...)
			if tc.connected {
				rig.connect(t, "/dev/nbd3", tc.backend, true)
			}
			img := nbdImage()
			img.ClusterFSID = tc.imageFSID
			got, err := rig.mapper(t).(Reattacher).Reattach(ctxTimeout(t, 5*time.Second), img, MapOptions{Extra: "io-timeout=30"}, dev)
			if err != nil || got != tc.want {
				t.Fatalf("Reattach = %v, %v; want %v", got, err, tc.want)
			}
			attaches := callsOf(rig.exec.Calls(), "attach")
			if len(callsOf(rig.exec.Calls(), "map")) != 0 || len(attaches) != map[bool]int{true: 1}[tc.wantAttach] {
				t.Fatalf("commands %v; want attach: %t, never map", rig.exec.Calls(), tc.wantAttach)
			}
			if tc.wantAttach {
				want := []string{"attach", "--device", "/dev/nbd3", "--try-netlink", "--cookie", cookie, "--io-timeout", "30", "--reattach-timeout", "300", "--id"}
				if a := attaches[0].Args; !slices.Equal(a[:len(want)], want) {
					t.Errorf("attach argv %q, want prefix %q", a, want)
				}
			}
		})
	}
}

func TestNBDReattachIsIdempotent(t *testing.T) {
	rig := newNBDRig(t)
	rig.connect(t, "/dev/nbd3", "c3", true)
	rig.exec.handler = func(c Command) (string, string, error) {
		if c.Args[0] == "attach" { // the new daemon shows up in list-mapped
			rig.setMapped(nbdMapped{PID: 20, Pool: "kube", Namespace: "ns1", Image: "img", Device: "/dev/nbd3", Cookie: "c3"})
		}
		return rig.defaultHandler(c)
	}
	m := rig.mapper(t).(Reattacher)
	dev := nbdDevice(nbdImage(), "/dev/nbd3", "c3", false)
	var got []ReattachResult
	for range 3 {
		res, err := m.Reattach(ctxTimeout(t, 5*time.Second), nbdImage(), MapOptions{}, dev)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, res)
	}
	if want := []ReattachResult{Reattached, ReattachLive, ReattachLive}; !slices.Equal(got, want) {
		t.Errorf("three Reattach calls = %v, want %v", got, want)
	}
	if n := len(callsOf(rig.exec.Calls(), "attach")); n != 1 {
		t.Errorf("%d rbd-nbd attach calls, want 1", n)
	}
}

func TestNBDReattachRefusesWhatIsNotAnNBDDevice(t *testing.T) {
	rig := newNBDRig(t)
	for _, dev := range []Device{
		{Path: "/dev/rbd0", Mapper: KRBD, Attrs: map[string]string{AttrPool: "kube", AttrImage: "img"}},
		{Path: "", Mapper: RBDNBD, Attrs: map[string]string{AttrPool: "kube", AttrImage: "img"}},
		{Path: "/dev/sda", Mapper: RBDNBD, Attrs: map[string]string{AttrPool: "kube", AttrImage: "img"}},
	} {
		if _, err := rig.mapper(t).(Reattacher).Reattach(ctxTimeout(t, time.Second), nbdImage(), MapOptions{}, dev); !errors.Is(err, ErrInvalidDevice) {
			t.Errorf("Reattach(%+v) = %v, want ErrInvalidDevice", dev, err)
		}
	}
	if calls := rig.exec.Calls(); len(calls) != 0 {
		t.Errorf("commands ran for invalid devices: %v", calls)
	}
}

func TestNBDReattachTimeoutIsBounded(t *testing.T) {
	tests := []struct {
		timeout time.Duration
		ok      bool
	}{
		{0, true}, {time.Second, true}, {time.Hour, true},
		{-time.Second, false}, {1500 * time.Millisecond, false}, {time.Hour + time.Second, false},
	}
	for _, tc := range tests {
		_, err := New(RBDNBD, Config{NBDReattachTimeout: tc.timeout})
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalidOptions)) {
			t.Errorf("New with reattach timeout %v: %v; want accepted: %t", tc.timeout, err, tc.ok)
		}
	}
}

// rbd-nbd list-mapped lists only connected devices (a pid file in sysfs);
// with none there is nothing to ask it, and a map runs rbd-nbd once.
func TestNBDListsMappingsOnlyWhenSomeDeviceIsConnected(t *testing.T) {
	for _, tc := range []struct {
		name          string
		connected     bool
		noSysfs       bool
		wantListCalls int
	}{
		{name: "no nbd device connected: no list-mapped", connected: false, wantListCalls: 0},
		{name: "another image's device connected: list-mapped asked", connected: true, wantListCalls: 1},
		{name: "sysfs unreadable: list-mapped asked", noSysfs: true, wantListCalls: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rig := newNBDRig(t)
			if tc.noSysfs {
				rig.cfg.SysfsRoot = filepath.Join(rig.sysfs, "absent")
			}
			if tc.connected {
				rig.setMapped(nbdMapped{PID: 77, Pool: "kube", Image: "other", Device: "/dev/nbd3"})
			}
			if _, err := rig.mapper(t).Map(ctxTimeout(t, 5*time.Second), nbdImage(), MapOptions{}); err != nil {
				t.Fatalf("Map: %v", err)
			}
			if got := len(callsOf(rig.exec.Calls(), "list-mapped")); got != tc.wantListCalls {
				t.Fatalf("%d list-mapped runs, want %d (calls %v)", got, tc.wantListCalls, rig.exec.Calls())
			}
			if got := len(callsOf(rig.exec.Calls(), "map")); got != 1 {
				t.Fatalf("%d map runs, want 1", got)
			}
		})
	}
}
