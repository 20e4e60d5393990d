package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/ceph/go-ceph/rbd"
)

// ioPhase is one throughput measurement: a fio job (or dd without fio).
type ioPhase struct {
	name  string
	rw    string // fio --rw
	bs    string
	share int // the phase moves io-mib/share MiB
}

var ioPhases = []ioPhase{
	{"seq-write", "write", "1M", 1},
	{"seq-read", "read", "1M", 1},
	{"rand-write-4k", "randwrite", "4k", 4},
	{"rand-read-4k", "randread", "4k", 4},
}

// throughputPhases moves io-mib through an ext4 file on a volume the
// driver published and on one attached by hand, with each node mapper,
// and prints MiB/s with the driver/by-hand ratio; then each mapper's
// figures against the first mapper's. Emulated guests make the absolute
// numbers meaningless: the ratios are what counts.
func (b *bench) throughputPhases() error {
	if b.cfg.ioMiB == 0 {
		return nil
	}
	tool := "fio"
	if _, err := exec.LookPath("fio"); err != nil {
		tool = "dd (no fio: random phases skipped)"
	}
	fmt.Printf("throughput: %d MiB per sequential phase, %d MiB per random phase, through ext4 with O_DIRECT, tool %s\n", b.cfg.ioMiB, b.cfg.ioMiB/4, tool)
	byMapper := map[string]map[string]float64{}
	for _, m := range b.cfg.nodeMappers {
		drv, err := b.driverThroughput(m)
		if err != nil {
			return fmt.Errorf("throughput through the driver with %s: %w", m, err)
		}
		hand, err := b.handThroughput(m)
		if err != nil {
			return fmt.Errorf("throughput by hand with %s: %w", m, err)
		}
		for _, p := range ioPhases {
			if d, ok := drv[p.name]; ok {
				fmt.Printf("%-13s %-8s driver %8.2f MiB/s | by hand %8.2f MiB/s | ratio %.2f\n", p.name, m, d, hand[p.name], d/hand[p.name])
			}
		}
		byMapper[m] = drv
	}
	base := b.cfg.nodeMappers[0]
	for _, m := range b.cfg.nodeMappers[1:] {
		for _, p := range ioPhases {
			if d, ok := byMapper[m][p.name]; ok {
				fmt.Printf("%-13s %s/%s (driver) ratio %.2f\n", p.name, m, base, d/byMapper[base][p.name])
			}
		}
	}
	return nil
}

func (b *bench) driverThroughput(mapper string) (map[string]float64, error) {
	work, err := os.MkdirTemp("", "rbd-csi-bench-io")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	v, err := b.createVolume("bench-io-"+mapper, work, mapper)
	if err != nil {
		return nil, err
	}
	if err := b.stagePublish(v); err != nil {
		return nil, err
	}
	res, ioErr := runIOPhases(v.target, b.cfg.ioMiB)
	if err := b.unpublishUnstage(v); err != nil {
		return nil, err
	}
	if err := b.deleteVolume(v); err != nil {
		return nil, err
	}
	return res, ioErr
}

func (b *bench) handThroughput(mapper string) (map[string]float64, error) {
	work, err := os.MkdirTemp("", "rbd-csi-bench-io-raw")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	// rbd-fuse without librbd's cache, as the driver runs it (nodePhases)
	conf, err := b.confFile(work, "ceph.conf", mapper == "fuse")
	if err != nil {
		return nil, err
	}
	keyring, err := b.keyringFile(work)
	if err != nil {
		return nil, err
	}
	name := "bench-io-raw-" + mapper
	err = b.rawImage(name)
	if err != nil {
		return nil, err
	}
	h := handAttach{mapper: mapper, dir: filepath.Join(work, name), conf: conf, keyring: keyring, pool: b.cfg.pool, image: name}
	if err := h.up(); err != nil {
		_ = h.down()
		return nil, err
	}
	res, ioErr := runIOPhases(h.target(), b.cfg.ioMiB)
	if err := h.down(); err != nil {
		return nil, err
	}
	return res, errors.Join(ioErr, rbd.RemoveImage(b.io, name))
}

// runIOPhases runs every phase on one file in dir and returns MiB/s by
// phase name.
func runIOPhases(dir string, mib int) (map[string]float64, error) {
	file := filepath.Join(dir, "bench-io.dat")
	defer os.Remove(file)
	_, err := exec.LookPath("fio")
	useFio := err == nil
	out := map[string]float64{}
	for _, p := range ioPhases {
		size := mib / p.share
		var rate float64
		var err error
		switch {
		case useFio:
			rate, err = fioRate(file, p, size)
		case p.rw == "write" || p.rw == "read":
			rate, err = ddRate(file, p.rw, size)
		default:
			continue
		}
		if err != nil {
			return out, fmt.Errorf("%s: %w", p.name, err)
		}
		out[p.name] = rate
	}
	return out, nil
}

func fioRate(file string, p ioPhase, mib int) (float64, error) {
	out, err := cmd("fio", "--name="+p.name, "--filename="+file, "--rw="+p.rw, "--bs="+p.bs,
		"--size="+strconv.Itoa(mib)+"M", "--direct=1", "--ioengine=libaio", "--iodepth=8", "--end_fsync=1",
		"--output-format=json")
	if err != nil {
		return 0, err
	}
	var res struct {
		Jobs []struct {
			Read struct {
				BwBytes float64 `json:"bw_bytes"`
			} `json:"read"`
			Write struct {
				BwBytes float64 `json:"bw_bytes"`
			} `json:"write"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Jobs) != 1 {
		return 0, fmt.Errorf("unexpected fio output (%v): %.200s", err, out)
	}
	bw := res.Jobs[0].Write.BwBytes + res.Jobs[0].Read.BwBytes
	return bw / (1 << 20), nil
}

func ddRate(file, rw string, mib int) (float64, error) {
	args := []string{"if=/dev/zero", "of=" + file, "bs=1M", "count=" + strconv.Itoa(mib), "oflag=direct", "conv=fsync"}
	if rw == "read" {
		args = []string{"if=" + file, "of=/dev/null", "bs=1M", "iflag=direct"}
	}
	t := time.Now()
	if _, err := cmd("dd", append(args, "status=none")...); err != nil {
		return 0, err
	}
	return float64(mib) / time.Since(t).Seconds(), nil
}
