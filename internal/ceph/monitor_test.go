package ceph

import (
	"strings"
	"testing"
)

func TestValidateMonitorAcceptsHostPortShapes(t *testing.T) {
	for _, m := range []string{
		"10.0.0.1", "10.0.0.1:6789", "10.0.0.1:3300", "mon1", "mon-a.rook-ceph.svc", "mon-a.rook-ceph.svc:6789",
		"[::1]", "[::1]:6789", "[2001:db8::1]:3300", "1:65535",
		"v1:10.0.0.1:6789", "v2:mon-a:3300", "v1:[::1]:6789",
	} {
		if err := ValidateMonitor(m); err != nil {
			t.Errorf("ValidateMonitor(%q) = %v", m, err)
		}
	}
}

func TestValidateMonitorRejectsAnythingThatCouldSplitATokenOrArgument(t *testing.T) {
	for _, m := range []string{
		"", ":6789", "10.0.0.1:", "10.0.0.1:0", "10.0.0.1:65536", "10.0.0.1:-1", "10.0.0.1:+1", "10.0.0.1:0x10", "10.0.0.1:6789:1",
		"::1", "2001:db8::1:6789", "[::1", "[::1]6789", "[::1]:", "[::1]:x", "[1.2.3.4]:6789", "[::ffff:1.2.3.4]", "[fe80::1%eth0]", "[]",
		"a b", "a\tb", "a\nb", "mon\r", "mon\v1", "mon\f", "mon\x00", "a\u00a0b", "mön",
		"-mon", "mon-", ".mon", "mon.", "a,b", "a/b", "a=b", "a;b", "a_b", "$(id)",
		"v1:", "v3:1.2.3.4:6789", "v1:v2:1.2.3.4:3300", "v1:a b", "[v2:1.2.3.4:3300,v1:1.2.3.4:6789]", "v1:1.2.3.4:6789/0",
		strings.Repeat("a", 254),
	} {
		if err := ValidateMonitor(m); err == nil {
			t.Errorf("ValidateMonitor(%q) accepted", m)
		} else if !strings.Contains(err.Error(), "monitor") {
			t.Errorf("ValidateMonitor(%q) error %q does not say what is wrong", m, err)
		}
	}
}

func TestParseMonitorSplitsPrefixHostAndPort(t *testing.T) {
	for in, want := range map[string]MonitorAddr{
		"10.0.0.1":            {Host: "10.0.0.1"},
		"mon-a:3300":          {Host: "mon-a", Port: "3300"},
		"v1:10.0.0.1:6789":    {Msgr: MsgrV1, Host: "10.0.0.1", Port: "6789"},
		"v2:[2001:db8::1]:33": {Msgr: MsgrV2, Host: "2001:db8::1", Port: "33"},
		"v2:mon-b":            {Msgr: MsgrV2, Host: "mon-b"},
		"[::1]":               {Host: "::1"},
	} {
		got, err := ParseMonitor(in)
		if err != nil || got != want {
			t.Errorf("ParseMonitor(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
}
