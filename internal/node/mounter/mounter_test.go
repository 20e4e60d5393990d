package mounter

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// newImage makes a file of size bytes, formatted with fstype unless empty.
// The ext tools work on plain files, so no loop device or root is needed.
func newImage(t *testing.T, size int64, fstype string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	if fstype != "" {
		if _, err := exec.LookPath("mkfs." + fstype); err != nil {
			t.Skipf("mkfs.%s not installed (e2fsprogs/xfsprogs): %v", fstype, err)
		}
		args := append(append([]string{}, mkfsArgs[fstype]...), p)
		if out, err := exec.Command("mkfs."+fstype, args...).CombinedOutput(); err != nil {
			t.Fatalf("mkfs.%s: %v: %s", fstype, err, out)
		}
	}
	return p
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestFormatNamesTheFilesystemOrNothing(t *testing.T) {
	tests := []struct {
		name, fstype, want string
	}{
		{"blank device", "", ""},
		{"ext4", "ext4", "ext4"},
	}
	r := New(time.Minute)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := r.Format(ctxT(t), newImage(t, 64<<20, tc.fstype))
			if err != nil || got != tc.want {
				t.Fatalf("Format = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestFormatNeverCallsAnUnreadableDeviceEmpty: blkid exits 2 ("nothing
// found") for paths it cannot read as well; Format must not pass that on
// as a blank device, which FormatAndMount would format.
func TestFormatNeverCallsAnUnreadableDeviceEmpty(t *testing.T) {
	if _, err := exec.LookPath("blkid"); err != nil {
		t.Skipf("blkid not installed (util-linux): %v", err)
	}
	tests := map[string]string{
		"missing device":            filepath.Join(t.TempDir(), "gone"),
		"a directory, not a device": t.TempDir(),
	}
	r := New(time.Minute)
	for name, dev := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := r.Format(ctxT(t), dev)
			if !errors.Is(err, ErrUnreadable) {
				t.Fatalf("Format(%s) = %q, %v; want ErrUnreadable", dev, got, err)
			}
			if err := r.FormatAndMount(ctxT(t), dev, t.TempDir(), "ext4", nil); !errors.Is(err, ErrUnreadable) {
				t.Fatalf("FormatAndMount(%s) = %v; want ErrUnreadable before any mkfs", dev, err)
			}
		})
	}
}

func TestReadStartReadsSmallDevicesWhole(t *testing.T) {
	p := filepath.Join(t.TempDir(), "small")
	if err := os.WriteFile(p, []byte("tiny"), 0o600); err != nil {
		t.Fatal(err)
	}
	head, err := ReadStart(ctxT(t), p, probeBytes)
	if err != nil || string(head) != "tiny" {
		t.Fatalf("ReadStart of a 4-byte device = %q, %v; want all of it", head, err)
	}
}

func TestSmallerThanDeviceSeesGrowthAndGrowExtOfflineFillsIt(t *testing.T) {
	r := New(time.Minute)
	for _, fs := range []string{"ext4", "xfs"} {
		t.Run(fs, func(t *testing.T) {
			img := newImage(t, 320<<20, fs) // mkfs.xfs wants 300 MiB
			if grow, err := r.smallerThanDevice(ctxT(t), img, fs); err != nil || grow {
				t.Fatalf("fresh filesystem: grow=%v, %v; want false", grow, err)
			}
			if err := os.Truncate(img, 512<<20); err != nil {
				t.Fatal(err)
			}
			if grow, err := r.smallerThanDevice(ctxT(t), img, fs); err != nil || !grow {
				t.Fatalf("after the device grew: grow=%v, %v; want true", grow, err)
			}
			if fs != "ext4" {
				return // xfs grows only mounted
			}
			if err := r.growExtOffline(ctxT(t), img); err != nil {
				t.Fatalf("grow: %v", err)
			}
			if grow, err := r.smallerThanDevice(ctxT(t), img, fs); err != nil || grow {
				t.Fatalf("after growing: grow=%v, %v; want false", grow, err)
			}
		})
	}
}

func TestSmallerThanDeviceRefusesAnUnformattedDevice(t *testing.T) {
	r := New(time.Minute)
	if _, err := r.smallerThanDevice(ctxT(t), newImage(t, 8<<20, ""), "ext4"); err == nil {
		t.Fatal("a blank device passed for ext4")
	}
}

func TestParseXFSSize(t *testing.T) {
	sb := func(magic string, bs uint32, blocks uint64) []byte {
		b := make([]byte, 512)
		copy(b, magic)
		binary.BigEndian.PutUint32(b[4:], bs)
		binary.BigEndian.PutUint64(b[8:], blocks)
		return b
	}
	tests := []struct {
		name    string
		sb      []byte
		want    int64
		wantErr bool
	}{
		{"4 KiB blocks", sb("XFSB", 4096, 1000), 4096 * 1000, false},
		{"not xfs", sb("EXT4", 4096, 1000), 0, true},
		{"impossible block size", sb("XFSB", 3, 1000), 0, true},
		{"no blocks", sb("XFSB", 4096, 0), 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseXFSSize(tc.sb)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("parseXFSSize = %d, %v; want %d (error %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseExtSizeReadsTheSuperblockOrRefusesIt(t *testing.T) {
	sb := func(logSize, lo, incompat, hi uint32, magic uint16) []byte {
		b := make([]byte, extSuperblockSize)
		binary.LittleEndian.PutUint32(b[extBlocksCountLo:], lo)
		binary.LittleEndian.PutUint32(b[extLogBlockSize:], logSize)
		binary.LittleEndian.PutUint16(b[extMagic:], magic)
		binary.LittleEndian.PutUint32(b[extFeatureIncompat:], incompat)
		binary.LittleEndian.PutUint32(b[extBlocksCountHi:], hi)
		return b
	}
	tests := []struct {
		name    string
		sb      []byte
		want    int64
		wantErr bool
	}{
		{"4 KiB blocks", sb(2, 1000, 0, 0, extMagicValue), 1000 * 4096, false},
		{"high count ignored without the 64bit feature", sb(2, 1000, 0, 7, extMagicValue), 1000 * 4096, false},
		{"high count used with the 64bit feature", sb(2, 1, extIncompat64Bit, 1, extMagicValue), (1<<32 + 1) * 4096, false},
		{"not an ext filesystem", sb(2, 1000, 0, 0, 0x1234), 0, true},
		{"impossible block size", sb(40, 1000, 0, 0, extMagicValue), 0, true},
		{"no blocks", sb(2, 0, 0, 0, extMagicValue), 0, true},
		{"short read", make([]byte, 100), 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseExtSize(tc.sb)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("parseExtSize = %d, %v; want %d (error %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}
