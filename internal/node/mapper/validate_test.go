package mapper

import (
	"errors"
	"strings"
	"testing"

	"github.com/rbd-csi/rbd-csi/internal/clusterconfig"
)

// monitorCorpus mixes addresses either validator might get wrong.
var monitorCorpus = []string{
	"10.0.0.1", "10.0.0.1:6789", "10.0.0.1:3300", "mon1", "mon-a.rook-ceph.svc", "mon-a.rook-ceph.svc:6789",
	"[::1]", "[::1]:6789", "[2001:db8::1]:3300", "1:65535",
	"v1:10.0.0.1:6789", "v2:mon-a:3300", "v1:[::1]:6789", "v2:[::1]:3300", "v1:mon1", "v2:[fd00::1]",
	"", ":6789", "10.0.0.1:", "10.0.0.1:0", "10.0.0.1:65536", "10.0.0.1:-1", "10.0.0.1:+1", "10.0.0.1:0x10",
	"10.0.0.1:6789:1", "::1", "2001:db8::1:6789", "[::1", "[::1]6789", "[::1]:", "[::1]:x", "[1.2.3.4]:6789",
	"[::ffff:1.2.3.4]", "[fe80::1%eth0]", "[]", "a b", "a\tb", "a\nb", "mon\r", "mon\x00", "a\u00a0b", "mön",
	"-mon", "mon-", ".mon", "mon.", "a,b", "a/b", "a=b", "a;b", "a_b", "$(id)",
	"v1:", "v2:", "v3:1.2.3.4:6789", "V1:1.2.3.4:6789", "v1:v2:1.2.3.4:3300", "v2:v1:1.2.3.4:6789", "v1:a b",
	"[v2:1.2.3.4:3300,v1:1.2.3.4:6789]", "v1:1.2.3.4:6789/0", "v1:1.2.3.4:", "v2:[::1]:",
	strings.Repeat("a", 253), strings.Repeat("a", 254), "v1:" + strings.Repeat("a", 254),
}

// The node must map whatever address the controller side accepted, and
// refuse what it refused: a StorageClass must not create volumes that no
// node can map.
func TestParseMonitorAgreesWithClusterConfig(t *testing.T) {
	for _, m := range monitorCorpus {
		_, err := parseMonitor(m)
		want := clusterconfig.ValidateMonitor(m)
		if (err == nil) != (want == nil) {
			t.Errorf("parseMonitor(%q) = %v, clusterconfig.ValidateMonitor = %v", m, err, want)
		}
		if err != nil && !errors.Is(err, ErrInvalidImage) {
			t.Errorf("parseMonitor(%q) = %v, want ErrInvalidImage", m, err)
		}
	}
}

func TestParseMonitorSplitsPrefixHostAndPort(t *testing.T) {
	for in, want := range map[string]monitorAddr{
		"10.0.0.1":            {host: "10.0.0.1"},
		"mon-a:3300":          {host: "mon-a", port: "3300"},
		"v1:10.0.0.1:6789":    {msgr: msgrV1, host: "10.0.0.1", port: "6789"},
		"v2:[2001:db8::1]:33": {msgr: msgrV2, host: "2001:db8::1", port: "33"},
		"v2:mon-b":            {msgr: msgrV2, host: "mon-b"},
		"[::1]":               {host: "::1"},
	} {
		got, err := parseMonitor(in)
		if err != nil || got != want {
			t.Errorf("parseMonitor(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
}

func TestValidateKeyAcceptsOnlyPaddedBase64(t *testing.T) {
	half := len(testKey) / 2
	bad := map[string]string{
		"line feed inside":         testKey[:half] + "\n" + testKey[half:],
		"carriage return inside":   testKey[:half] + "\r" + testKey[half:],
		"CRLF inside":              testKey[:half] + "\r\n" + testKey[half:],
		"space inside":             testKey[:half] + " " + testKey[half:],
		"trailing newline":         testKey + "\n", // checkImage trims; validateKey alone does not
		"URL-safe alphabet":        strings.NewReplacer("+", "-", "/", "_").Replace(makeKey([]byte{0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb})),
		"padding in the middle":    testKey[:8] + "=" + testKey[9:],
		"three padding characters": strings.TrimRight(testKey, "=") + "===",
		"missing padding":          strings.TrimRight(testKey, "="),
		"NUL byte":                 testKey[:half] + "\x00" + testKey[half+1:],
		"non-ASCII":                testKey[:half] + "é" + testKey[half+2:],
		"comma option":             testKey + ",ro",
		"too long":                 strings.Repeat("A", maxKeyLen+4),
		"empty":                    "",
	}
	for name, k := range bad {
		t.Run(name, func(t *testing.T) {
			err := validateKey(k)
			if !errors.Is(err, ErrInvalidImage) {
				t.Fatalf("validateKey accepted it: %v", err)
			}
			if k != "" && strings.Contains(err.Error(), strings.TrimSpace(k)) {
				t.Errorf("error %q echoes the key", err)
			}
			if strings.Contains(err.Error(), testKey[:half]) {
				t.Errorf("error %q echoes part of the key", err)
			}
		})
	}
	if err := validateKey(testKey); err != nil {
		t.Errorf("validateKey(good key) = %v", err)
	}
	if err := validateKey(makeKey(make([]byte, 32))); err != nil {
		t.Errorf("validateKey(AES-256 sized key) = %v", err)
	}
}

func TestCheckImageTrimsSurroundingWhitespaceFromTheKey(t *testing.T) {
	img := Image{Monitors: []string{"10.0.0.1"}, User: "admin", Key: " \t" + testKey + "\r\n", Pool: "kube", Name: "img"}
	got, err := checkImage(img)
	if err != nil || got.Key != testKey {
		t.Fatalf("checkImage = %q, %v; want the trimmed key", got.Key, err)
	}
	img.Key = testKey[:4] + "\n" + testKey[4:] + "\n"
	if _, err := checkImage(img); !errors.Is(err, ErrInvalidImage) || !strings.Contains(err.Error(), "line break") {
		t.Errorf("checkImage with an embedded newline = %v, want ErrInvalidImage naming the line break", err)
	}
}
