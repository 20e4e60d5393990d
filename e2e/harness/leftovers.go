package harness

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// Leftovers lists what a node test left behind under root: mounts (by
// mount point or source), loop devices whose backing file lives there, and
// rbd-fuse or rbd-nbd processes whose arguments name it. A clean test leaves
// none.
func Leftovers(root string) []string {
	root = filepath.Clean(root) + "/"
	var out []string
	out = append(out, mountsUnder(root)...)
	out = append(out, loopsUnder(root)...)
	out = append(out, mapperProcsUnder(root)...)
	return out
}

func mountsUnder(root string) []string {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return []string{"cannot read /proc/self/mounts: " + err.Error()}
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 {
			continue
		}
		src, mnt := unescape(fields[0]), unescape(fields[1])
		if strings.HasPrefix(mnt, root) || strings.HasPrefix(src, root) {
			out = append(out, "mount "+src+" on "+mnt+" ("+fields[2]+")")
		}
	}
	return out
}

// unescape undoes the octal escapes of /proc/mounts (\040 for space, ...).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			n := (int(s[i+1]-'0') << 6) | (int(s[i+2]-'0') << 3) | int(s[i+3]-'0')
			b.WriteByte(byte(n))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func loopsUnder(root string) []string {
	out, err := exec.Command("losetup", "-n", "-l", "-O", "NAME,BACK-FILE").Output()
	if err != nil {
		return nil
	}
	var found []string
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) >= 2 && strings.HasPrefix(fields[1], root) {
			found = append(found, "loop device "+fields[0]+" on "+fields[1])
		}
	}
	return found
}

func mapperProcsUnder(root string) []string {
	var found []string
	for _, p := range mapperProcs("rbd-fuse", "rbd-nbd") {
		if strings.Contains(strings.Join(p.args, " "), root) {
			found = append(found, "process "+p.pid+": "+strings.Join(p.args, " "))
		}
	}
	return found
}

type proc struct {
	pid  string // /proc/PID
	args []string
}

// mapperProcs lists the running processes whose program is one of names.
func mapperProcs(names ...string) []proc {
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var found []proc
	for _, c := range cmdlines {
		data, err := os.ReadFile(c)
		if err != nil || len(data) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
		if slices.Contains(names, filepath.Base(args[0])) {
			found = append(found, proc{pid: filepath.Dir(c), args: args})
		}
	}
	return found
}
