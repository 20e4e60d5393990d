package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// The full-pool/empty-pool comparison alternates empty, full, full, empty
// scaleRounds times, scaleSamples CreateVolume calls each step: one pass of
// 100 calls per step moved the ratio from 0.93x to 1.19x between two runs
// minutes apart, with the machine's drift landing on one side.
const (
	scaleRounds  = 5
	scaleSamples = 100
)

// scalePhases is `make bench-scale`: a pool filled with n driver-made
// volumes by a controller process of its own, then what must not grow with
// the pool: CreateVolume p50 there against an empty pool (alternated
// empty, full, full, empty, scaleRounds times), a full ListVolumes walk in
// pages of 500 by a just-restarted controller (cold) and again (warm),
// GetCapacity, the restart to ready, and the controller's RSS over the run.
func (b *bench) scalePhases(n int) error {
	empty := b.cfg.pool + "-empty"
	if err := b.createRBDPool(empty); err != nil {
		return err
	}
	secrets, err := b.listingSecretsDir()
	if err != nil {
		return err
	}
	defer os.RemoveAll(secrets)
	p, err := b.startController(b.cfg.driverBinary, "scale", "--secrets-dir="+secrets)
	if err != nil {
		return err
	}
	defer func() {
		if p != nil { // nil when a restart failed
			p.stop()
		}
	}()
	var rssFirst float64
	fmt.Printf("scale: filling pool %s with %d volumes at c=32 (pool %s stays empty)\n", b.cfg.pool, n, empty)
	first := min(2000, n)
	start := time.Now()
	for _, span := range [][2]int{{0, first}, {first, n}} {
		if _, err := measure(span[1]-span[0], 32, func(i int) error {
			_, err := p.client.CreateVolume(context.Background(), b.createReq(fmt.Sprintf("scale-%d", span[0]+i), 1<<30))
			return err
		}); err != nil {
			return fmt.Errorf("fill: %w", err)
		}
		if span[0] == 0 {
			rss, _ := p.rssMiB()
			b.sum.note("scale: controller RSS after %d CreateVolume calls: %.1f MiB", first, rss)
			rssFirst = rss
		}
	}
	fill := time.Since(start)
	rssFull, _ := p.rssMiB()
	b.sum.note("scale: %d CreateVolume calls at c=32 took %v (%.0f/s); controller RSS %.1f MiB, %+.2f MiB per 1,000 calls after the first %d", n, fill.Round(time.Millisecond), float64(n)/fill.Seconds(), rssFull, (rssFull-rssFirst)/float64(max(n-first, 1))*1000, first)

	var inFull, inEmpty result
	var steps []string
	for range scaleRounds {
		steps = append(steps, empty, b.cfg.pool, b.cfg.pool, empty)
	}
	for step, pool := range steps {
		r, err := measure(scaleSamples, 1, func(i int) error {
			req := b.createReq(fmt.Sprintf("scale-probe-%d-%d", step, i), 1<<30)
			req.Parameters["pool"] = pool
			_, err := p.client.CreateVolume(context.Background(), req)
			return err
		})
		if err != nil {
			return fmt.Errorf("probe creates in %s: %w", pool, err)
		}
		into := &inEmpty
		if pool == b.cfg.pool {
			into = &inFull
		}
		into.latencies = append(into.latencies, r.latencies...)
		into.total += r.total
	}
	ratio := float64(inFull.pct(0.5)) / float64(inEmpty.pct(0.5))
	b.sum.note("scale: CreateVolume p50 in the pool of %d volumes %s, in an empty pool %s: %.2fx (goal <= 1.1x)", n, ms(inFull.pct(0.5)), ms(inEmpty.pct(0.5)), ratio)
	b.sum.bound(fmt.Sprintf("Create p50 %d-vol pool", n), ms(inFull.pct(0.5)), ms(inEmpty.pct(0.5))+" empty", ratio, "<= 1.1x empty", ratio <= 1.1)

	p.stop()
	if p, err = b.startController(b.cfg.driverBinary, "scale", "--secrets-dir="+secrets); err != nil {
		return err
	}
	b.sum.note("scale: controller restart: exec to ready in %v", p.ready.Round(time.Millisecond))
	for _, walk := range []string{"cold (first after the restart)", "warm"} {
		start := time.Now()
		count, pages, err := walkVolumes(p.client)
		if err != nil {
			return fmt.Errorf("ListVolumes walk: %w", err)
		}
		b.sum.note("scale: ListVolumes walk %s: %d volumes in %d pages of 500 in %v", walk, count, pages, time.Since(start).Round(time.Millisecond))
	}
	for _, params := range []map[string]string{{"clusterID": "bench", "pool": b.cfg.pool}, nil} {
		start := time.Now()
		if _, err := p.client.GetCapacity(context.Background(), &csi.GetCapacityRequest{Parameters: params}); err != nil {
			return fmt.Errorf("GetCapacity: %w", err)
		}
		what := "of the pool"
		if params == nil {
			what = "without parameters (every RBD pool)"
		}
		b.sum.note("scale: GetCapacity %s: %v", what, time.Since(start).Round(time.Microsecond))
	}
	rss, _ := p.rssMiB()
	b.sum.note("scale: RSS of the restarted controller after the walks: %.1f MiB", rss)
	if b.cfg.scaleNode > 0 {
		return b.nodeScale(p, b.cfg.scaleNode)
	}
	return nil
}

// walkVolumes lists every volume in pages of 500.
func walkVolumes(c csi.ControllerClient) (count, pages int, err error) {
	token := ""
	for {
		r, err := c.ListVolumes(context.Background(), &csi.ListVolumesRequest{MaxEntries: 500, StartingToken: token})
		if err != nil {
			return count, pages, err
		}
		count += len(r.Entries)
		pages++
		if token = r.NextToken; token == "" {
			return count, pages, nil
		}
	}
}

// createRBDPool creates a replicated pool with the rbd application.
func (b *bench) createRBDPool(name string) error {
	for _, cmd := range []map[string]any{
		{"prefix": "osd pool create", "pool": name, "pg_num": 8},
		{"prefix": "osd pool application enable", "pool": name, "app": "rbd", "yes_i_really_mean_it": true},
	} {
		req, _ := json.Marshal(cmd)
		if _, st, err := b.conn.MonCommand(req); err != nil {
			return fmt.Errorf("%s %s: %v (%s)", cmd["prefix"], name, err, st)
		}
	}
	return nil
}

// listingSecretsDir writes the admin credentials where --secrets-dir
// looks for cluster "bench", as the chart mounts them.
func (b *bench) listingSecretsDir() (string, error) {
	dir, err := os.MkdirTemp("", "rbd-csi-bench-listing")
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Join(dir, "bench"), 0o700); err != nil {
		return "", err
	}
	keys := make([]string, 0, 2)
	for k := range b.secrets() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := os.WriteFile(filepath.Join(dir, "bench", k), []byte(b.secrets()[k]), 0o600); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// nodeScale stages and publishes n fuse volumes through a node plugin
// process of its own, then times what grows with a node's volume count:
// the plugin's restart to ready and a NodeGetVolumeStats sweep.
func (b *bench) nodeScale(ctl *controllerProcess, n int) error {
	if os.Geteuid() != 0 {
		b.sum.note("scale: node phase skipped: it mounts filesystems, run as root")
		return nil
	}
	work, err := os.MkdirTemp("", "rbd-csi-bench-nodescale")
	if err != nil {
		return err
	}
	stranded := false // a volume left staged: its mounts are under work
	defer func() {
		if !stranded {
			os.RemoveAll(work)
		}
	}()
	args := []string{"--mode", "node", "--nodeid", "bench", "--mapper", "fuse", "--state-dir", filepath.Join(work, "state"), "--keyring-dir", filepath.Join(work, "keyrings")}
	p, err := b.startDriverProcess(b.cfg.driverBinary, args)
	if err != nil {
		return err
	}
	defer func() {
		if p != nil { // nil when the restart failed
			p.stop()
		}
	}()
	vols := make([]driverVolume, n)
	// Every volume must be unstaged before the cluster goes: an rbd-fuse
	// left behind without its cluster hangs whatever stats its file
	// (losetup -a, for one).
	defer func() {
		for _, v := range vols {
			if v.vol == nil {
				continue
			}
			if p == nil {
				fmt.Fprintf(os.Stderr, "bench: volume %s left staged at %s: the node plugin did not restart; unmount it and kill its rbd-fuse before stopping the cluster\n", v.vol.VolumeId, v.staging)
				stranded = true
				continue
			}
			if err := b.unstageWithRetries(p.node, v); err != nil {
				fmt.Fprintf(os.Stderr, "bench: volume %s left staged at %s: %v; unmount it and kill its rbd-fuse before stopping the cluster\n", v.vol.VolumeId, v.staging, err)
				stranded = true
				continue
			}
			_, _ = ctl.client.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: v.vol.VolumeId, Secrets: b.secrets()})
		}
	}()
	start := time.Now()
	for i := range vols {
		resp, err := ctl.client.CreateVolume(context.Background(), b.createReqWith(fmt.Sprintf("scale-node-%d", i), 1<<30, "fuse"))
		if err != nil {
			return fmt.Errorf("create: %w", err)
		}
		name := fmt.Sprintf("v%d", i)
		vols[i] = driverVolume{vol: resp.Volume, staging: filepath.Join(work, name+"-staging"), target: filepath.Join(work, name+"-pod")}
		if err := os.MkdirAll(vols[i].staging, 0o750); err != nil {
			return err
		}
		if err := stagePublishWith(p.node, vols[i], b.secrets()); err != nil {
			return fmt.Errorf("stage and publish volume %d: %w", i, err)
		}
	}
	b.sum.note("scale: %d fuse volumes created, staged and published through a node plugin process in %v", n, time.Since(start).Round(time.Millisecond))
	p.stop()
	if p, err = b.startDriverProcess(b.cfg.driverBinary, args); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	b.sum.note("scale: node plugin restart with %d volumes staged: exec to ready in %v", n, p.ready.Round(time.Millisecond))
	start = time.Now()
	for _, v := range vols {
		if _, err := p.node.NodeGetVolumeStats(context.Background(), &csi.NodeGetVolumeStatsRequest{VolumeId: v.vol.VolumeId, VolumePath: v.target}); err != nil {
			return fmt.Errorf("NodeGetVolumeStats: %w", err)
		}
	}
	took := time.Since(start)
	b.sum.note("scale: NodeGetVolumeStats sweep over %d volumes: %v (%v per volume)", n, took.Round(time.Millisecond), (took / time.Duration(n)).Round(time.Microsecond))
	return nil
}

// unstageWithRetries unpublishes and unstages v, trying again when a call
// fails (a busy machine makes rbd-fuse slow to let go).
func (b *bench) unstageWithRetries(node csi.NodeClient, v driverVolume) error {
	var err error
	for range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		_, err = node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: v.vol.VolumeId, TargetPath: v.target})
		if err == nil {
			_, err = node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: v.vol.VolumeId, StagingTargetPath: v.staging})
		}
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(time.Second)
	}
	return err
}
