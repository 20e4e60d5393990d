package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ceph/go-ceph/rbd"
	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// clockTicks is Linux's USER_HZ, the unit of /proc/<pid>/stat times.
const clockTicks = 100

// controllerProcess is the driver binary running as a process of its own
// (a controller, or a node plugin), so that its CPU and memory are its
// alone.
type controllerProcess struct {
	cmd    *exec.Cmd
	conn   *grpc.ClientConn
	client csi.ControllerClient
	node   csi.NodeClient
	dir    string
	ready  time.Duration // from exec to the first answered call
}

// startController runs binary --mode controller against the bench's
// cluster and waits until it answers.
func (b *bench) startController(binary, instance string, extraArgs ...string) (*controllerProcess, error) {
	return b.startDriverProcess(binary, append([]string{"--mode", "controller", "--instance-id", instance}, extraArgs...))
}

// startDriverProcess runs binary with args against the bench's cluster
// and waits until it answers.
func (b *bench) startDriverProcess(binary string, args []string) (*controllerProcess, error) {
	dir, err := os.MkdirTemp("", "rbd-csi-bench-ctl")
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "clusters.json")
	mons := `"` + strings.Join(strings.Split(b.cfg.monitors, ","), `","`) + `"`
	if err := os.WriteFile(conf, []byte(`[{"clusterID":"bench","monitors":[`+mons+`]}]`), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "controller.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	sock := filepath.Join(dir, "csi.sock")
	p := &controllerProcess{dir: dir}
	p.cmd = exec.Command(binary, append([]string{"--endpoint", "unix://" + sock, "--cluster-config", conf}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	start := time.Now()
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	// Wait for the socket before dialling: a failed dial would make gRPC
	// back off for a second and hide the real start-up time.
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Since(start) > 30*time.Second {
			p.stop()
			return nil, fmt.Errorf("controller made no socket within 30s (log %s)", logf.Name())
		}
		time.Sleep(2 * time.Millisecond)
	}
	if p.conn, err = grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		p.stop()
		return nil, err
	}
	p.client, p.node = csi.NewControllerClient(p.conn), csi.NewNodeClient(p.conn)
	id := csi.NewIdentityClient(p.conn)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := id.Probe(ctx, &csi.ProbeRequest{})
		cancel()
		if err == nil {
			break
		}
		if time.Since(start) > 30*time.Second {
			p.stop()
			return nil, fmt.Errorf("controller did not answer within 30s (log %s): %w", logf.Name(), err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	p.ready = time.Since(start)
	return p, nil
}

func (p *controllerProcess) stop() {
	if p.conn != nil {
		p.conn.Close()
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	os.RemoveAll(p.dir)
}

// cpu is the user+system CPU the process has used.
func (p *controllerProcess) cpu() (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces) start at state.
	fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("short /proc stat: %q", raw)
	}
	utime, err1 := strconv.ParseUint(fields[11], 10, 64)
	stime, err2 := strconv.ParseUint(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad /proc stat times: %q", raw)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// rssMiB is the process's resident set size.
func (p *controllerProcess) rssMiB() (float64, error) {
	m, err := p.memory()
	return m["VmRSS"], err
}

// memory reads the process's VmRSS, RssAnon (its own memory) and RssFile
// (mapped files: the binary and the shared Ceph libraries, shared with
// every process that maps them) in MiB.
func (p *controllerProcess) memory() (map[string]float64, error) {
	return processMemory(p.cmd.Process.Pid)
}

// processMemory reads pid's VmRSS, RssAnon and RssFile in MiB.
func processMemory(pid int) (map[string]float64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, l := range strings.Split(string(raw), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok || (k != "VmRSS" && k != "RssAnon" && k != "RssFile") {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		if err != nil {
			return nil, fmt.Errorf("/proc/%d/status %s: %w", pid, k, err)
		}
		out[k] = kb / 1024
	}
	if _, ok := out["VmRSS"]; !ok {
		return nil, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return out, nil
}

// residentFiles sums pid's resident pages per mapped file (MiB, by base
// name), from /proc/PID/smaps: which files make up RssFile.
func residentFiles(pid int) (map[string]float64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	file := ""
	for _, l := range strings.Split(string(raw), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":"):
			// a mapping's header: "start-end perms offset dev inode [path]"
			file = ""
			if len(f) >= 6 && strings.HasPrefix(f[5], "/") {
				file = filepath.Base(f[5])
			}
		case len(f) == 3 && f[0] == "Rss:" && file != "":
			kb, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/%d/smaps: %q: %w", pid, l, err)
			}
			out[file] += kb / 1024
		}
	}
	return out, nil
}

// largest renders the n largest entries of m, largest first.
func largest(m map[string]float64, n int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] })
	var parts []string
	for _, k := range keys[:min(n, len(keys))] {
		parts = append(parts, fmt.Sprintf("%s %.1f", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// selfCPU is the CPU this process has used, all threads (librados' and
// librbd's included).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// releaseAfter is the driver's default --release-memory-after.
const releaseAfter = 5 * time.Second

// footprint measures the controller's CPU per CreateVolume+DeleteVolume
// pair (background purge scheduling included: the CPU is read once the
// trash has drained) against the CPU raw go-ceph spends in this process on
// rbd.CreateImage+rbd.RemoveImage of the same images, alternated raw,
// driver, driver, raw; then the controller's RSS after its 2*pairs calls.
func (b *bench) footprint(binary string, pairs, conc int, sum *summary) error {
	p, err := b.startController(binary, fmt.Sprintf("benchfp%d", time.Now().UnixNano()%1e9))
	if err != nil {
		return err
	}
	defer p.stop()
	idle, err := p.memory()
	if err != nil {
		return err
	}
	fmt.Printf("footprint: controller process %d ready %v after exec, RSS %.1f MiB (anonymous %.1f MiB, mapped files %.1f MiB)\n", p.cmd.Process.Pid, p.ready.Round(time.Millisecond), idle["VmRSS"], idle["RssAnon"], idle["RssFile"])
	half := pairs / 2
	var drvCPU, rawCPU time.Duration
	var lastCall time.Time
	for step, isDriver := range []bool{false, true, true, false} {
		tag := fmt.Sprintf("bench-fp%d-", step)
		if isDriver {
			before, err := p.cpu()
			if err != nil {
				return err
			}
			if err := b.driverPairs(p.client, tag, half, conc); err != nil {
				return err
			}
			b.waitTrashDrainedOf("csi-", 5*time.Minute)
			after, err := p.cpu()
			if err != nil {
				return err
			}
			drvCPU += after - before
			lastCall = time.Now()
			continue
		}
		before := selfCPU()
		if err := b.rawPairs(tag, half, conc); err != nil {
			return err
		}
		rawCPU += selfCPU() - before
	}
	// The controller hands freed memory back once it has been idle for
	// --release-memory-after (5 s by default), within twice that.
	time.Sleep(time.Until(lastCall.Add(2*releaseAfter + time.Second)))
	mem, err := p.memory()
	if err != nil {
		return err
	}
	rss := mem["VmRSS"]
	n := 2 * half
	drvPer, rawPer := drvCPU/time.Duration(n), rawCPU/time.Duration(n)
	limit := max(2*time.Millisecond, rawPer*3/2)
	fmt.Printf("CPU per Create+Delete pair (c=%d, %d pairs): driver process %v | raw go-ceph in-process %v | ratio %.2f\n", conc, n, ms(drvPer), ms(rawPer), float64(drvPer)/float64(rawPer))
	fmt.Printf("controller RSS after %d calls at c=%d, idle %v: %.1f MiB (anonymous %.1f MiB, mapped files %.1f MiB: the binary and the Ceph libraries)\n", 2*n, conc, 2*releaseAfter, rss, mem["RssAnon"], mem["RssFile"])
	if files, err := residentFiles(p.cmd.Process.Pid); err == nil {
		fmt.Printf("controller's resident mapped files (MiB): %s\n", largest(files, 6))
	}
	sum.bound(fmt.Sprintf("CPU/pair c=%d", conc), ms(drvPer), ms(rawPer), float64(drvPer)/float64(rawPer), "<= max(2ms,1.5x raw)", drvPer <= limit)
	raw, err := b.rawRSS(n)
	if err != nil {
		return err
	}
	fmt.Printf("raw go-ceph process RSS after %d rbd.CreateImage+rbd.RemoveImage calls at c=%d: %.1f MiB (anonymous %.1f MiB, mapped files %.1f MiB)\n", 2*n, conc, raw["VmRSS"], raw["RssAnon"], raw["RssFile"])
	sum.bound(fmt.Sprintf("RSS after %d calls", 2*n), fmt.Sprintf("%.1f MiB", rss), fmt.Sprintf("%.1f MiB", raw["VmRSS"]), rss/raw["VmRSS"], "<= 40 MiB", rss <= 40)
	sum.bound("  of which anonymous", fmt.Sprintf("%.1f MiB", mem["RssAnon"]), fmt.Sprintf("%.1f MiB", raw["RssAnon"]), mem["RssAnon"]/raw["RssAnon"], "-", true)
	sum.bound("  mapped files", fmt.Sprintf("%.1f MiB", mem["RssFile"]), fmt.Sprintf("%.1f MiB", raw["RssFile"]), mem["RssFile"]/raw["RssFile"], "-", true)
	sum.bound("controller exec to ready", ms(p.ready), "-", math.NaN(), "-", true)
	return nil
}

func (b *bench) driverPairs(c csi.ControllerClient, tag string, n, conc int) error {
	ids := make([]string, n)
	if _, err := measure(n, conc, func(i int) error {
		r, err := c.CreateVolume(context.Background(), b.createReq(fmt.Sprintf("%s%d", tag, i), 1<<30))
		if err == nil {
			ids[i] = r.Volume.VolumeId
		}
		return err
	}); err != nil {
		return fmt.Errorf("footprint create: %w", err)
	}
	if _, err := measure(n, conc, func(i int) error {
		_, err := c.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: ids[i], Secrets: b.secrets()})
		return err
	}); err != nil {
		return fmt.Errorf("footprint delete: %w", err)
	}
	return nil
}

func (b *bench) rawPairs(tag string, n, conc int) error {
	names := names(tag, n)
	if _, err := measure(n, conc, func(i int) error { return b.rawImage(names[i]) }); err != nil {
		return fmt.Errorf("footprint raw create: %w", err)
	}
	if _, err := measure(n, conc, func(i int) error { return rbd.RemoveImage(b.io, names[i]) }); err != nil {
		return fmt.Errorf("footprint raw remove: %w", err)
	}
	return nil
}

// rawRSS runs pairs rbd.CreateImage+rbd.RemoveImage pairs at c=16 in a
// process of its own, this binary started again with -raw-rss-child: the
// least a go-ceph client doing the controller's work keeps resident (the
// Ceph libraries' pages, a librados connection's threads and buffers),
// measured in the same run as the driver's RSS.
func (b *bench) rawRSS(pairs int) (map[string]float64, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, "-raw-rss-child", strconv.Itoa(pairs))
	cmd.Stderr = os.Stderr // why it failed, if it does
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("raw go-ceph process: %w", err)
	}
	var mem map[string]float64
	if err := json.Unmarshal(out, &mem); err != nil || mem["VmRSS"] == 0 {
		return nil, fmt.Errorf("raw go-ceph process printed %q: %v", out, err)
	}
	return mem, nil
}

// rawRSSChild is the process rawRSS starts: it prints its memory (MiB, as
// JSON) after the pairs.
func rawRSSChild(c config, pairs int) error {
	b, closePool, err := openPool(c)
	if err != nil {
		return err
	}
	defer closePool()
	if err := b.rawPairs(fmt.Sprintf("bench-rss%d-", os.Getpid()), pairs, 16); err != nil {
		return err
	}
	mem, err := processMemory(os.Getpid())
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(mem)
}
