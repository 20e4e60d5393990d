package crypt_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/node/crypt"
	"github.com/rbd-csi/rbd-csi/internal/node/crypt/crypttest"
)

const pass = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

// device makes a fake block device: a file with content at offset at.
func device(t *testing.T, content []byte, at int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "rbd0")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(4 << 20); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(content, at); err != nil {
		t.Fatal(err)
	}
	return p
}

// assertPassphraseOnlyOnStdin fails when the passphrase is in any argument.
func assertPassphraseOnlyOnStdin(t *testing.T, k *crypttest.Kernel) {
	t.Helper()
	calls, _ := k.Calls()
	for _, c := range calls {
		if strings.Contains(c.String(), pass) {
			t.Errorf("passphrase in the arguments of %q", c.String())
		}
	}
}

func TestOpenFormatsAnEmptyImageOnceAndReopensIt(t *testing.T) {
	ctx := context.Background()
	k := crypttest.New(t)
	c := crypt.New(k.Config())
	dev := device(t, nil, 0)
	name := crypt.DeviceName("vol-1")
	path, err := c.Open(ctx, dev, name, []byte(pass), false)
	if err != nil {
		t.Fatal(err)
	}
	if path != c.Path(name) || k.Open(name) != dev || !k.Formatted(dev) {
		t.Fatalf("path %s, open over %q, formatted %v", path, k.Open(name), k.Formatted(dev))
	}
	// A plugin restarted mid-stage finds the device open and reuses it.
	if _, err := c.Open(ctx, dev, name, []byte(pass), false); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(ctx, name); err != nil || k.Open(name) != "" {
		t.Fatalf("close: %v, still open over %q", err, k.Open(name))
	}
	if err := c.Close(ctx, name); err != nil {
		t.Fatalf("closing a closed device: %v", err)
	}
	// Reopened: no second format.
	if _, err := c.Open(ctx, dev, name, []byte(pass), false); err != nil {
		t.Fatal(err)
	}
	calls, stdins := k.Calls()
	formats := 0
	for i, cmd := range calls {
		if cmd.Args[0] == "luksFormat" {
			formats++
		}
		if (cmd.Args[0] == "luksFormat" || cmd.Args[0] == "open") && string(stdins[i]) != pass {
			t.Errorf("%s did not get the passphrase on stdin", cmd)
		}
	}
	if formats != 1 {
		t.Errorf("%d formats, want 1", formats)
	}
	assertPassphraseOnlyOnStdin(t, k)
}

func TestOpenWithAnotherPassphraseFails(t *testing.T) {
	ctx := context.Background()
	k := crypttest.New(t)
	c := crypt.New(k.Config())
	dev := device(t, nil, 0)
	if _, err := c.Open(ctx, dev, "a", []byte(pass), false); err != nil {
		t.Fatal(err)
	}
	_ = c.Close(ctx, "a")
	if _, err := c.Open(ctx, dev, "a", []byte(strings.Repeat("f", 64)), false); err == nil {
		t.Fatal("opened with another passphrase")
	}
}

func TestOpenRefusesAnImageNeitherEmptyNorLUKSAndLeavesIt(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content []byte
		at      int64
		other   string
		want    error
		msg     string
	}{
		{name: "a filesystem", other: "ext4", want: crypt.ErrNotEmpty, msg: "holds ext4"},
		{name: "a partition table", other: "partition table gpt", want: crypt.ErrNotEmpty, msg: "partition table gpt"},
		{name: "data without a signature", content: []byte("precious"), at: 4096, want: crypt.ErrNotEmpty, msg: "offset 4096"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := crypttest.New(t)
			c := crypt.New(k.Config())
			dev := device(t, tc.content, tc.at)
			k.Other[dev] = tc.other
			_, err := c.Open(context.Background(), dev, "x", []byte(pass), false)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err %v, want %v mentioning %q", err, tc.want, tc.msg)
			}
			if k.Formatted(dev) {
				t.Fatal("formatted it")
			}
		})
	}
}

func TestOpenReadOnlyOfAnEmptyImageIsNotFormatted(t *testing.T) {
	k := crypttest.New(t)
	dev := device(t, nil, 0)
	_, err := crypt.New(k.Config()).Open(context.Background(), dev, "x", []byte(pass), true)
	if !errors.Is(err, crypt.ErrNotFormatted) || k.Formatted(dev) {
		t.Fatalf("err %v, formatted %v", err, k.Formatted(dev))
	}
}

func TestOpenClosesAStaleDeviceOverAnotherImage(t *testing.T) {
	ctx := context.Background()
	k := crypttest.New(t)
	c := crypt.New(k.Config())
	old, cur := device(t, nil, 0), device(t, nil, 0)
	if _, err := c.Open(ctx, old, "v", []byte(pass), false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Open(ctx, cur, "v", []byte(pass), false); err != nil {
		t.Fatal(err)
	}
	if k.Open("v") != cur {
		t.Fatalf("open over %q, want %q", k.Open("v"), cur)
	}
}

func TestCloseRetriesABriefHolderAndReportsALastingOneAsBusy(t *testing.T) {
	ctx := context.Background()
	k := crypttest.New(t)
	c := crypt.New(k.Config())
	dev := device(t, nil, 0)
	if _, err := c.Open(ctx, dev, "v", []byte(pass), false); err != nil {
		t.Fatal(err)
	}
	k.Busy["v"] = 2 // udev probing for a moment
	if err := c.Close(ctx, "v"); err != nil || k.Open("v") != "" {
		t.Fatalf("close after a brief holder: %v, open over %q", err, k.Open("v"))
	}
	if _, err := c.Open(ctx, dev, "v", []byte(pass), false); err != nil {
		t.Fatal(err)
	}
	k.Busy["v"] = -1
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := c.Close(short, "v"); !errors.Is(err, crypt.ErrBusy) || k.Open("v") != dev {
		t.Fatalf("close while held: %v, want ErrBusy with the device still open", err)
	}
}

func TestCheckNamesTheMissingKernelFeature(t *testing.T) {
	for _, tc := range []struct {
		name    string
		noDM    bool
		noCrypt bool
		want    string
	}{
		{name: "no device-mapper", noDM: true, noCrypt: true, want: "device-mapper (CONFIG_BLK_DEV_DM"},
		{name: "no dm-crypt", noCrypt: true, want: "dm-crypt (CONFIG_DM_CRYPT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := crypttest.New(t)
			if tc.noCrypt {
				k.RemoveDMCrypt(t, tc.noDM)
			}
			err := crypt.New(k.Config()).Check(context.Background())
			if !errors.Is(err, crypt.ErrNoDMCrypt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want ErrNoDMCrypt naming %q", err, tc.want)
			}
		})
	}
	k := crypttest.New(t)
	if err := crypt.New(k.Config()).Check(context.Background()); err != nil {
		t.Fatalf("a node with dm-crypt: %v", err)
	}
}

// TestCheckOnThisHost asks the real kernel: where it has no device-mapper
// (the development machine's), Check must say so.
func TestCheckOnThisHost(t *testing.T) {
	if _, err := os.Stat("/dev/mapper/control"); err == nil {
		t.Skip("this host has device-mapper: the refusal cannot be shown here")
	}
	err := crypt.New(crypt.Config{}).Check(context.Background())
	if !errors.Is(err, crypt.ErrNoDMCrypt) || !strings.Contains(err.Error(), "device-mapper") {
		t.Fatalf("err %v, want ErrNoDMCrypt naming device-mapper", err)
	}
}

func TestDeviceNameIsStableAndAValidDMName(t *testing.T) {
	a, b := crypt.DeviceName("0001-0009-c1-0000000000000002-csi-vol-x"), crypt.DeviceName("0001-0009-c1-0000000000000002-csi-vol-x")
	if a != b || a == crypt.DeviceName("other") || len(a) > 127 || strings.ContainsAny(a, "/ ") {
		t.Fatalf("names %q %q", a, b)
	}
}
