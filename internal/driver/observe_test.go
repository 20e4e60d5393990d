package driver

import (
	"bytes"
	"context"
	"flag"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
)

// recorder is an RPCObserver keeping what it was told.
type recorder struct {
	mu    sync.Mutex
	calls []string
}

func (r *recorder) ObserveRPC(method, code string, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, method+" "+code)
}

// captureLog sends klog's output to a buffer for the rest of the test.
func captureLog(t *testing.T) *bytes.Buffer {
	t.Helper()
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("logtostderr", "false")
	_ = fs.Set("alsologtostderr", "false")
	_ = fs.Set("stderrthreshold", "FATAL")
	var buf bytes.Buffer
	klog.SetOutput(&buf)
	t.Cleanup(func() {
		klog.Flush()
		_ = fs.Set("logtostderr", "true")
	})
	return &buf
}

func TestEveryRPCIsObservedAndLoggedOnceWithIDVolumeCodeAndDuration(t *testing.T) {
	d, _ := newTestDriver(t)
	rec := &recorder{}
	d.opts.Observer = rec
	logs := captureLog(t)

	cases := []struct {
		name     string
		method   string
		req      any
		handler  grpc.UnaryHandler
		wantCode codes.Code
		wantLog  []string
	}{
		{
			name: "success names the volume", method: "/csi.v1.Controller/DeleteVolume",
			req:      &csi.DeleteVolumeRequest{VolumeId: "1/c1/3/csi-vol-x", Secrets: secrets()},
			handler:  func(context.Context, any) (any, error) { return &csi.DeleteVolumeResponse{}, nil },
			wantCode: codes.OK, wantLog: []string{`"RPC done"`, `method="/csi.v1.Controller/DeleteVolume"`, `code="OK"`, `volume="1/c1/3/csi-vol-x"`, "duration="},
		},
		{
			name: "create logs the name and the new volume", method: "/csi.v1.Controller/CreateVolume",
			req: &csi.CreateVolumeRequest{Name: "pvc-1", Secrets: secrets()},
			handler: func(context.Context, any) (any, error) {
				return &csi.CreateVolumeResponse{Volume: &csi.Volume{VolumeId: "1/c1/3/csi-vol-new"}}, nil
			},
			wantCode: codes.OK, wantLog: []string{`name="pvc-1"`, `volume="1/c1/3/csi-vol-new"`},
		},
		{
			name: "failure logs code and message", method: "/csi.v1.Node/NodeStageVolume",
			req: &csi.NodeStageVolumeRequest{VolumeId: "1/c1/3/csi-vol-y", Secrets: secrets()},
			handler: func(context.Context, any) (any, error) {
				return nil, status.Error(codes.Unavailable, "cluster c1 unreachable")
			},
			wantCode: codes.Unavailable, wantLog: []string{`"RPC failed"`, `code="Unavailable"`, `error="cluster c1 unreachable"`},
		},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			logs.Reset()
			_, err := d.interceptRPC(context.Background(), c.req, &grpc.UnaryServerInfo{FullMethod: c.method}, c.handler)
			if status.Code(err) != c.wantCode {
				t.Fatalf("code %v, want %v", status.Code(err), c.wantCode)
			}
			klog.Flush()
			out := logs.String()
			if n := strings.Count(out, "\n"); n != 1 {
				t.Fatalf("%d log lines at the default level, want 1:\n%s", n, out)
			}
			for _, want := range append(c.wantLog, "id=") {
				if !strings.Contains(out, want) {
					t.Errorf("log line lacks %s:\n%s", want, out)
				}
			}
			if strings.Contains(out, testKey) {
				t.Fatal("the log line holds the key")
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if got, want := rec.calls[i], c.method+" "+c.wantCode.String(); got != want {
				t.Errorf("observer told %q, want %q", got, want)
			}
		})
	}
}

func TestMappedVolumesCountsStagedVolumesByMapper(t *testing.T) {
	e := newNodeEnv(t)
	if got := e.d.MappedVolumes(); len(got) != 0 {
		t.Fatalf("before staging: %v", got)
	}
	e.stage(t, fsCap("ext4", csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER))
	if got := e.d.MappedVolumes(); got["fake"] != 1 || len(got) != 1 {
		t.Fatalf("after staging: %v, want fake:1", got)
	}
	// A restarted plugin counts from the state on disk.
	restarted := e.restart(t, e.m, e.mnt)
	if got := restarted.MappedVolumes(); got["fake"] != 1 {
		t.Fatalf("after a restart: %v, want fake:1", got)
	}
	if _, err := restarted.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: e.volID, StagingTargetPath: e.staging}); err != nil {
		t.Fatal(err)
	}
	if got := restarted.MappedVolumes(); len(got) != 0 {
		t.Fatalf("after unstaging: %v", got)
	}
}

func TestQueueLengthsCountQueuedWorkAndAreZeroOnANode(t *testing.T) {
	e := newNodeEnv(t)
	opts := e.opts
	opts.Mode = ModeNode
	opts.Node.Mappers = e.d.node.mappers
	nodeDriver, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	node := services(nodeDriver)
	opts.Mode = ModeController
	ctrlDriver, err := New(opts) // not served: its purger does not run, so jobs stay queued
	if err != nil {
		t.Fatal(err)
	}
	ctrl := services(ctrlDriver)
	for _, id := range []string{"a", "b", "a"} {
		ctrl.purger.enqueue(purgeJob{pool: testPool, id: id})
	}
	ctrl.flattener.running["kube/img-a"] = true // as a local flatten under way
	cases := []struct {
		name string
		got  func() int
		want int
	}{
		{"node mode purges nothing", node.PurgeQueueLength, 0},
		{"node mode flattens nothing", node.FlattenQueueLength, 0},
		{"controller counts distinct queued purges", ctrl.PurgeQueueLength, 2},
		{"controller counts running flattens", ctrl.FlattenQueueLength, 1},
	}
	for _, c := range cases {
		if got := c.got(); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
}
