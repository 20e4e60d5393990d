package controller

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/rbd-csi/rbd-csi/e2e/harness"
)

// TestRestartedControllerListsAndMeasuresAtOnce restarts the controller
// with the listing credentials mounted as the chart mounts them
// (--secrets-dir/<clusterID>/userID, userKey) and checks that ListVolumes
// and GetCapacity answer correctly before any CreateVolume has shown the
// new process credentials.
func TestRestartedControllerListsAndMeasuresAtOnce(t *testing.T) {
	f := newFixture(t)
	secrets := filepath.Join(f.Dir, "listing")
	if err := os.MkdirAll(filepath.Join(secrets, clusterID), 0o700); err != nil {
		t.Fatal(err)
	}
	for k, v := range f.Secrets() {
		if err := os.WriteFile(filepath.Join(secrets, clusterID, k), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	instance := "restartlist"
	d := harness.Start(t, f.Dir, append(f.args(instance), "--secrets-dir="+secrets))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var ids []string
	for _, name := range []string{"pvc-restart-a", "pvc-restart-b"} {
		resp, err := d.Controller().CreateVolume(ctx, f.CreateReq(name))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, resp.Volume.VolumeId)
	}
	t.Cleanup(func() {
		for _, id := range ids {
			_, _ = d.Controller().DeleteVolume(context.Background(), f.DeleteReq(id))
		}
	})

	d.Restart()
	lv, err := d.Controller().ListVolumes(ctx, &csi.ListVolumesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, e := range lv.GetEntries() {
		listed = append(listed, e.GetVolume().GetVolumeId())
	}
	for _, id := range ids {
		if !slices.Contains(listed, id) {
			t.Errorf("ListVolumes right after a restart = %v, lacks %s", listed, id)
		}
	}
	for _, params := range []map[string]string{{"clusterID": clusterID, "pool": f.Env.Pool}, nil} {
		c, err := d.Controller().GetCapacity(ctx, &csi.GetCapacityRequest{Parameters: params})
		if err != nil || c.GetAvailableCapacity() <= 0 {
			t.Errorf("GetCapacity(%v) right after a restart = %v, %v; want a positive capacity", params, c, err)
		}
	}
}
