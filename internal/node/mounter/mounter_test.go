package mounter

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
			if err := r.FormatAndMount(ctxT(t), dev, t.TempDir(), "ext4", nil, false); !errors.Is(err, ErrUnreadable) {
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

// A device whose SignatureRegions read as zeros must hold nothing blkid
// finds, or a stage told the image is blank would format over data. Each
// format is written to a file larger than both regions, the regions are
// zeroed, and blkid must find nothing; the untouched file must be found.
func TestBlkidFindsNothingOnceTheSignatureRegionsAreZero(t *testing.T) {
	if _, err := exec.LookPath("blkid"); err != nil {
		t.Skipf("blkid not installed (util-linux): %v", err)
	}
	const size = 320 << 20 // mkfs.xfs needs 300 MiB
	// Signatures written by hand where the tools that make them would
	// touch the host (cryptsetup creates device-mapper's control node even
	// on a kernel without device-mapper) or are not installed (mdadm):
	// blkid knows them by these bytes alone.
	at := func(off int64, sig string) func(t *testing.T, p string) {
		return func(t *testing.T, p string) {
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte(sig), off); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name   string
		write  func(t *testing.T, p string)
		fstype string
	}{
		{"ext4", nil, "ext4"},
		{"xfs", nil, "xfs"},
		{"a LUKS1 header at the start", at(0, "LUKS\xba\xbe\x00\x01"), ""},
		{"a LUKS2 second header 16 KiB in", at(16<<10, "SKUL\xba\xbe\x00\x02"), ""},
		{"an md 0.90 RAID superblock 64 KiB before the end", at(size&^(64<<10-1)-64<<10, "\xfc\x4e\x2b\xa9\x00\x00\x00\x00\x5a\x00\x00\x00"), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newImage(t, size, tc.fstype)
			if tc.write != nil {
				tc.write(t, p)
			}
			r := New(time.Minute)
			if found, err := r.Format(ctxT(t), p); err != nil || found == "" {
				t.Fatalf("blkid on the untouched file: %q, %v; want what was written", found, err)
			}
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, reg := range SignatureRegions(size) {
				if _, err := f.WriteAt(make([]byte, reg[1]), int64(reg[0])); err != nil {
					t.Fatal(err)
				}
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			if found, err := r.Format(ctxT(t), p); err != nil || found != "" {
				t.Fatalf("blkid with the signature regions zeroed: %q, %v; want nothing", found, err)
			}
		})
	}
}

func TestSignatureRegionsCoverBothEndsOrTheWholeDevice(t *testing.T) {
	tests := []struct {
		name string
		size uint64
		want [][2]uint64
	}{
		{"a small device is covered whole", 8 << 20, [][2]uint64{{0, 8 << 20}}},
		{"a device of exactly both regions is covered whole", 2 * signatureBytes, [][2]uint64{{0, 2 * signatureBytes}}},
		{"a large device has its start and its end", 1 << 30, [][2]uint64{{0, signatureBytes}, {1<<30 - signatureBytes, signatureBytes}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := SignatureRegions(tc.size); !slices.Equal(got, tc.want) {
				t.Fatalf("SignatureRegions(%d) = %v, want %v", tc.size, got, tc.want)
			}
		})
	}
}
