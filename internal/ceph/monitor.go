package ceph

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Messenger protocols a monitor address can pin.
const (
	MsgrV1 = "v1"
	MsgrV2 = "v2"
)

// maxHostLen is the longest DNS name.
const maxHostLen = 253

// MonitorAddr is a parsed monitor address.
type MonitorAddr struct {
	// Msgr is MsgrV1 or MsgrV2 when the address pins the messenger protocol
	// with a "v1:" or "v2:" prefix (monitors on a port other than 6789 need
	// "v1:", or librados tries msgr2 there and never falls back), else "".
	Msgr string
	// Host is a DNS name, an IPv4 address or an IPv6 address without
	// brackets.
	Host string
	// Port is "" when absent (clients then use 3300 for msgr2, 6789 for msgr1).
	Port string
}

// ParseMonitor parses "[v1:|v2:]ADDR", where ADDR is "host", "host:port",
// "[v6]" or "[v6]:port" and host is a DNS name or an IPv4 address. Nothing
// else gets through: the address ends up in the kernel's sysfs add string,
// where any whitespace byte would start a new token, and in command
// arguments.
func ParseMonitor(m string) (MonitorAddr, error) {
	var a MonitorAddr
	addr := m
	for _, p := range []string{MsgrV1, MsgrV2} {
		if rest, ok := strings.CutPrefix(m, p+":"); ok {
			a.Msgr, addr = p, rest
		}
	}
	if a.Msgr != "" && (addr == "" || strings.HasPrefix(addr, MsgrV1+":") || strings.HasPrefix(addr, MsgrV2+":")) {
		return MonitorAddr{}, fmt.Errorf("monitor %q: one v1: or v2: prefix, then host:port", m)
	}
	host, port, err := splitHostPort(m, addr)
	if err != nil {
		return MonitorAddr{}, err
	}
	a.Host, a.Port = host, port
	return a, nil
}

// ValidateMonitor checks one monitor address (see ParseMonitor).
func ValidateMonitor(m string) error {
	_, err := ParseMonitor(m)
	return err
}

// splitHostPort splits addr, which is m without its protocol prefix.
func splitHostPort(m, addr string) (host, port string, err error) {
	hasPort := false
	switch {
	case strings.HasPrefix(addr, "["):
		h, rest, closed := strings.Cut(addr[1:], "]")
		if ip := net.ParseIP(h); !closed || ip == nil || ip.To4() != nil {
			return "", "", fmt.Errorf("monitor %q: want an IPv6 address inside [ ], as [addr]:port", m)
		}
		if rest != "" {
			if port, hasPort = strings.CutPrefix(rest, ":"); !hasPort {
				return "", "", fmt.Errorf("monitor %q: junk after ']'", m)
			}
		}
		host = h
	case strings.Count(addr, ":") > 1:
		return "", "", fmt.Errorf("monitor %q: write an IPv6 address in brackets, as [addr]:port", m)
	default:
		host, port, hasPort = strings.Cut(addr, ":")
		if !isHostName(host) {
			return "", "", fmt.Errorf("monitor %q is not host:port (host: a DNS name or IPv4 address; IPv6 as [addr]:port)", m)
		}
	}
	if hasPort && !isPort(port) {
		return "", "", fmt.Errorf("monitor %q has a bad port: want 1 to 65535", m)
	}
	return host, port, nil
}

// isPort accepts decimal 1 to 65535, digits only (no sign, no empty).
func isPort(p string) bool {
	if p == "" || len(p) > 5 || strings.ContainsFunc(p, func(r rune) bool { return r < '0' || r > '9' }) {
		return false
	}
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

// isHostName accepts DNS names and IPv4 literals: letters, digits, '.' and
// '-', neither first nor last being '.' or '-'.
func isHostName(h string) bool {
	if h == "" || len(h) > maxHostLen {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		alnum := (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
		if !alnum && ((c != '.' && c != '-') || i == 0 || i == len(h)-1) {
			return false
		}
	}
	return true
}
