package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rbd-csi/rbd-csi/e2e/harness"
)

// Scenario 4: 100 CreateVolume calls over 20 distinct names, all in
// parallel across two controller processes (as two replicas without leader
// election would run), mixed with the deletes of 20 other volumes. Exactly
// one image per distinct name must exist, every caller of a name must get
// the same volume ID (after retrying Aborted, as the provisioner would), and
// the deleted volumes must be gone.
func TestChaosDuplicateCreatesMixedWithDeletes(t *testing.T) {
	requireChaos(t)
	p := harness.NewPool(t, clusterID)
	a := harness.Start(t, p.Dir, controllerArgs(p, "chaos-dup"))
	dirB := filepath.Join(p.Dir, "b")
	if err := os.MkdirAll(dirB, 0o700); err != nil {
		t.Fatal(err)
	}
	b := harness.Start(t, dirB, controllerArgs(p, "chaos-dup"))
	fig := newFigure("duplicate-creates")
	defer fig.print(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	const calls, names = 100, 20
	victims := createVictims(ctx, t, p, a, names)
	ids := make([]string, calls)
	var aborted atomic.Int32
	errs := make(chan error, calls+len(victims))
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() {
			<-gate
			d := []*harness.Driver{a, b}[i%2]
			req := p.CreateReq(fmt.Sprintf("pvc-dup-%d", i%names))
			resp, err := d.Controller().CreateVolume(ctx, req)
			// Aborted (the other controller's image under the name did not
			// open in time) is retried, as the provisioner does.
			for status.Code(err) == codes.Aborted && ctx.Err() == nil {
				aborted.Add(1)
				time.Sleep(time.Second)
				resp, err = d.Controller().CreateVolume(ctx, req)
			}
			if err != nil {
				errs <- fmt.Errorf("create %d: %w", i, err)
				return
			}
			ids[i] = resp.Volume.VolumeId
		})
	}
	for i, id := range victims {
		wg.Go(func() {
			<-gate
			d := []*harness.Driver{b, a}[i%2]
			if _, err := d.Controller().DeleteVolume(ctx, p.DeleteReq(id)); err != nil {
				errs <- fmt.Errorf("delete victim %d: %w", i, err)
			}
		})
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	close(errs)
	fig.set("creates", calls)
	fig.set("distinct_names", names)
	fig.set("deletes", len(victims))
	fig.set("seconds", fmt.Sprintf("%.1f", time.Since(start).Seconds()))
	var failed []error
	for err := range errs {
		failed = append(failed, err)
	}
	fig.set("aborted_retries", aborted.Load())
	fig.zero(t, "failed_calls", len(failed), failed)

	perName := map[string]map[string]bool{}
	for i, id := range ids {
		if id == "" {
			continue // a failed call, counted above
		}
		name := fmt.Sprintf("pvc-dup-%d", i%names)
		if perName[name] == nil {
			perName[name] = map[string]bool{}
		}
		perName[name][id] = true
	}
	mismatches := 0
	for _, set := range perName {
		mismatches += len(set) - 1
	}
	fig.zero(t, "id_mismatches", mismatches)
	images := p.Images(t)
	fig.set("images", len(images))
	fig.zero(t, "images_minus_names", len(images)-names, images)
	fig.secretsInLog(t, []*harness.Driver{a, b}, p.Env.Admin.Key)
	for name := range perName {
		for id := range perName[name] {
			if _, err := a.Controller().DeleteVolume(ctx, p.DeleteReq(id)); err != nil {
				t.Errorf("clean-up %s: %v", name, err)
			}
		}
	}
}

// createVictims makes n volumes for the deletes to race with the creates.
func createVictims(ctx context.Context, t *testing.T, p *harness.Pool, d *harness.Driver, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		resp, err := d.Controller().CreateVolume(ctx, p.CreateReq(fmt.Sprintf("victim-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = resp.Volume.VolumeId
	}
	return ids
}
