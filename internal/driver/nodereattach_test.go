package driver

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/rbd-csi/rbd-csi/internal/ceph/cephfake"
	"github.com/rbd-csi/rbd-csi/internal/node/mapper"
)

// reattachingMapper is a fakeMapper whose devices can lose their serving
// process (dead), as rbd-nbd's do when the plugin's container restarts.
type reattachingMapper struct {
	*fakeMapper
	mu      sync.Mutex
	dead    bool
	calls   []reattachCall
	release chan struct{} // when set, Reattach waits for it
}

type reattachCall struct {
	img  mapper.Image
	opts mapper.MapOptions
	dev  mapper.Device
}

func (r *reattachingMapper) Check(ctx context.Context, dev mapper.Device) (bool, string) {
	r.mu.Lock()
	dead := r.dead
	r.mu.Unlock()
	if dead {
		return false, "the process serving " + dev.Path + " is gone"
	}
	return r.fakeMapper.Check(ctx, dev)
}

func (r *reattachingMapper) Reattach(_ context.Context, img mapper.Image, opts mapper.MapOptions, dev mapper.Device) (mapper.ReattachResult, error) {
	if r.release != nil {
		<-r.release
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, reattachCall{img: img, opts: opts, dev: dev})
	if !r.dead {
		return mapper.ReattachLive, nil
	}
	r.dead = false
	return mapper.Reattached, nil
}

func (r *reattachingMapper) reattachCalls() []reattachCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]reattachCall(nil), r.calls...)
}

// reattachEnv has one volume staged (with map options, read-only) by a
// mapper that can re-attach, and a plugin restart to come.
func reattachEnv(t *testing.T) (*nodeEnv, *reattachingMapper) {
	t.Helper()
	e := newNodeEnv(t)
	rm := &reattachingMapper{fakeMapper: e.m}
	e.d = e.restart(t, rm, e.mnt)
	e.vc["mapOptions"] = "io-timeout=30"
	c := mountCap()
	c.AccessMode.Mode = csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
	e.stage(t, c)
	return e, rm
}

// withNodeCredential gives the restarted plugin a --secrets-dir holding a
// credential for cluster c1.
func withNodeCredential(t *testing.T, e *nodeEnv, user string) {
	t.Helper()
	e.opts.SecretsDir = secretsDirWith(t, user, testKey)
}

func mustWriteFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// runReattach restarts the plugin and runs its start-up pass to the end.
func runReattach(t *testing.T, e *nodeEnv, rm *reattachingMapper) {
	t.Helper()
	e.d = e.restart(t, rm, e.mnt)
	p := e.d.node.startReattach()
	p.done.Wait()
}

func TestStartupReattach(t *testing.T) {
	tests := []struct {
		name       string
		dead       bool
		credential bool
		wantCalls  int
		wantLog    []string
	}{
		{name: "dead device with a credential: re-attached once", dead: true, credential: true, wantCalls: 1,
			wantLog: []string{"device served again"}},
		{name: "live device: left alone, no credential needed", dead: false, credential: false, wantCalls: 0},
		{name: "live device with a credential: left alone", dead: false, credential: true, wantCalls: 0},
		{name: "dead device without a credential: one clear line, device untouched", dead: true, wantCalls: 0,
			wantLog: []string{"no credential for the volume's cluster", "--secrets-dir/<clusterID>/", "node.reattachCredentials", "is gone"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, rm := reattachEnv(t)
			if tc.credential {
				withNodeCredential(t, e, "admin")
			}
			rm.dead = tc.dead
			logs := captureLog(t)
			runReattach(t, e, rm)
			runReattach(t, e, rm) // a second restart changes nothing more

			calls := rm.reattachCalls()
			if len(calls) != tc.wantCalls {
				t.Fatalf("%d Reattach calls, want %d: %+v", len(calls), tc.wantCalls, calls)
			}
			out := logs.String()
			if len(tc.wantLog) > 0 {
				tc.wantLog = append(tc.wantLog, e.volID) // every line names its volume
			}
			for _, w := range tc.wantLog {
				if !strings.Contains(out, w) {
					t.Errorf("log lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, testKey) {
				t.Error("the key reached the log")
			}
			if n := strings.Count(out, "no credential for the volume's cluster"); tc.dead && !tc.credential && n != 2 {
				t.Errorf("%d no-credential lines over two restarts, want one per restart", n)
			}
			if tc.wantCalls == 0 {
				return
			}
			c := calls[0]
			st := e.state(t)
			if c.img.User != "admin" || c.img.Key != testKey || c.img.ClusterFSID != cephfake.FakeFSID || c.img.Spec() != e.spec() {
				t.Errorf("Reattach image %+v: want the node credential, the cluster's fsid and %s", c.img, e.spec())
			}
			if c.opts.Extra != "io-timeout=30" || !c.opts.ReadOnly || c.opts.Previous != nil {
				t.Errorf("Reattach options %+v: want the staged map options, read-only", c.opts)
			}
			if c.dev.Path != st.Device.Path {
				t.Errorf("Reattach device %s, want the recorded %s", c.dev.Path, st.Device.Path)
			}
		})
	}
}

// A node call for a volume waits while the start-up pass works on it.
func TestStartupReattachHoldsTheVolumeLock(t *testing.T) {
	e, rm := reattachEnv(t)
	withNodeCredential(t, e, "admin")
	rm.dead = true
	rm.release = make(chan struct{})
	e.d = e.restart(t, rm, e.mnt)
	p := e.d.node.startReattach()

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := e.d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: e.volID, StagingTargetPath: e.staging})
	if status.Code(err) != codes.Aborted {
		t.Errorf("NodeUnstageVolume during the pass = %v, want Aborted (waiting for the volume lock)", err)
	}
	close(rm.release)
	p.done.Wait()
	if _, err := e.d.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: e.volID, StagingTargetPath: e.staging}); err != nil {
		t.Errorf("NodeUnstageVolume after the pass: %v", err)
	}
	if n := len(rm.reattachCalls()); n != 1 {
		t.Errorf("%d Reattach calls, want 1", n)
	}
}

// Stage state files written before map options were recorded still load,
// and re-attach with the node's defaults.
func TestStageStateWithoutMapOptionsLoads(t *testing.T) {
	dir := t.TempDir()
	staging := filepath.Join(dir, "globalmount")
	old := `{"volumeID":"v1","image":{"clusterID":"c1","pool":"p","name":"i"},"mapper":"rbd-nbd",` +
		`"device":{"path":"/dev/nbd0","mapper":"rbd-nbd","attrs":{"cookie":"c","image":"i","pool":"p"}},` +
		`"block":false,"fsType":"ext4","accessMode":"SINGLE_NODE_WRITER","stagingPath":"` + staging + `","mounted":true}`
	mustWriteFile(t, stateFile(staging), old)
	st, err := loadState(staging)
	if err != nil || st == nil || st.MapOptions != "" || st.Device.Attrs[mapper.AttrCookie] != "c" {
		t.Fatalf("loadState of an old file = %+v, %v", st, err)
	}
}
