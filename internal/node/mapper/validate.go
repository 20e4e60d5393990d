package mapper

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxNameLen keeps names usable as single path components (255 bytes on
// every Linux filesystem) with room for suffixes such as ".lock".
const maxNameLen = 200

var (
	userRe = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	fsidRe = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	// hostRe covers DNS names and IPv4 literals; IPv6 goes through net.ParseIP.
	hostRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)
)

// checkImage returns img with its key trimmed of surrounding whitespace (a
// Secret created from a file often ends in a newline) after validating it.
// Map uses the returned Image, so only the trimmed key goes anywhere.
func checkImage(img Image) (Image, error) {
	img.Key = strings.TrimSpace(img.Key)
	return img, validateImage(img)
}

// validateImage checks everything the mappers put into sysfs strings,
// command arguments and paths, so that no field can inject a token, an
// argument or a path component. Messages never contain the key.
func validateImage(img Image) error {
	if err := validateName("pool", img.Pool, false); err != nil {
		return err
	}
	if err := validateName("rados namespace", img.RadosNamespace, true); err != nil {
		return err
	}
	if err := validateName("image name", img.Name, false); err != nil {
		return err
	}
	if err := validateUser(img.User); err != nil {
		return err
	}
	if err := validateKey(img.Key); err != nil {
		return err
	}
	if err := validateMonitors(img.Monitors); err != nil {
		return err
	}
	if img.ClusterFSID != "" && !fsidRe.MatchString(img.ClusterFSID) {
		return fmt.Errorf("%w: cluster fsid %q is not a UUID", ErrInvalidImage, img.ClusterFSID)
	}
	return nil
}

// validateName accepts Ceph pool, namespace and image names that are safe
// as a sysfs token, a command argument and a single path component.
func validateName(what, s string, mayBeEmpty bool) error {
	if s == "" {
		if mayBeEmpty {
			return nil
		}
		return fmt.Errorf("%w: %s is empty", ErrInvalidImage, what)
	}
	if len(s) > maxNameLen {
		return fmt.Errorf("%w: %s is longer than %d bytes", ErrInvalidImage, what, maxNameLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s %q is not valid UTF-8", ErrInvalidImage, what, s)
	}
	if s == "." || s == ".." || strings.HasPrefix(s, "-") {
		return fmt.Errorf("%w: %s %q is not allowed (no \".\", \"..\" or leading \"-\")", ErrInvalidImage, what, s)
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune(`/@,\=`, r) {
			return fmt.Errorf("%w: %s %q contains %q; whitespace, control characters and / @ , \\ = are not allowed", ErrInvalidImage, what, s, r)
		}
	}
	return nil
}

func validateUser(u string) error {
	if u == "" {
		return fmt.Errorf("%w: cephx user is empty", ErrInvalidImage)
	}
	if strings.HasPrefix(u, "client.") {
		return fmt.Errorf("%w: cephx user %q must be given without the \"client.\" prefix", ErrInvalidImage, u)
	}
	if len(u) > maxNameLen || !userRe.MatchString(u) {
		return fmt.Errorf("%w: cephx user %q may only contain letters, digits, '_', '.' and '-'", ErrInvalidImage, u)
	}
	return nil
}

// maxKeyLen bounds a cephx key: a real one is 40 bytes (AES-128) or 56
// (AES-256); anything much longer is a copy-paste accident.
const maxKeyLen = 256

// validateKey checks the cephx secret's shape without ever echoing it. The
// key must already be trimmed (see checkImage). Only the base64 alphabet is
// accepted: Go's base64 decoder skips '\r' and '\n', so decoding alone would
// let a line break through into a keyring file or the kernel's add string.
// A malformed key must be stopped here: Ceph tools print the value of a key
// they cannot parse into their logs.
func validateKey(k string) error {
	if k == "" {
		return fmt.Errorf("%w: cephx key is empty", ErrInvalidImage)
	}
	if len(k) > maxKeyLen {
		return fmt.Errorf("%w: cephx key is implausibly long (%d bytes, at most %d)", ErrInvalidImage, len(k), maxKeyLen)
	}
	if err := checkBase64Shape(k); err != nil {
		return fmt.Errorf("%w: cephx key %v; copy it from `ceph auth get-key client.USER`", ErrInvalidImage, err)
	}
	raw, err := base64.StdEncoding.DecodeString(k)
	if err != nil {
		return fmt.Errorf("%w: cephx key is not valid base64", ErrInvalidImage)
	}
	if !isCephxKey(raw) {
		return fmt.Errorf("%w: cephx key is malformed (not an encoded cephx secret; copy it from `ceph auth get-key client.USER`)", ErrInvalidImage)
	}
	return nil
}

// checkBase64Shape accepts padded standard base64: A-Z a-z 0-9 + / with at
// most two '=' at the end and a length divisible by 4. Errors describe the
// offending byte by class and offset only, never by value.
func checkBase64Shape(k string) error {
	body := strings.TrimRight(k, "=")
	if pad := len(k) - len(body); pad > 2 {
		return fmt.Errorf("has %d padding '=' (at most 2)", pad)
	}
	for i := 0; i < len(body); i++ {
		if !isBase64Char(body[i]) {
			return fmt.Errorf("contains %s at byte %d (only A-Z a-z 0-9 + / and trailing = are allowed)", describeByte(body[i]), i)
		}
	}
	if len(k)%4 != 0 {
		return fmt.Errorf("is %d bytes long, not a multiple of 4 (truncated?)", len(k))
	}
	return nil
}

func isBase64Char(c byte) bool {
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/'
}

// describeByte names a non-base64 byte's class.
func describeByte(c byte) string {
	switch {
	case c == '\n' || c == '\r':
		return "a line break"
	case c == ' ' || c == '\t':
		return "whitespace"
	case c == '=':
		return "a '=' before the end"
	case c < 0x20 || c == 0x7f:
		return "a control character"
	case c >= 0x80:
		return "a non-ASCII byte"
	default:
		return "a character outside the base64 alphabet"
	}
}

// isCephxKey checks Ceph's CryptoKey encoding: le16 type, 8-byte creation
// time, le16 secret length, secret.
func isCephxKey(raw []byte) bool {
	const header = 2 + 8 + 2
	if len(raw) <= header {
		return false
	}
	typ := binary.LittleEndian.Uint16(raw[0:2])
	n := int(binary.LittleEndian.Uint16(raw[10:12]))
	// 1 is AES (every release); 2 is the newer AES-256 type.
	return (typ == 1 || typ == 2) && n == len(raw)-header
}

func validateMonitors(mons []string) error {
	if len(mons) == 0 {
		return fmt.Errorf("%w: no monitor addresses", ErrInvalidImage)
	}
	for _, m := range mons {
		if _, err := parseMonitor(m); err != nil {
			return err
		}
	}
	return nil
}

// Messenger protocols a monitor address can pin.
const (
	msgrV1 = "v1"
	msgrV2 = "v2"
)

// maxHostLen is the longest DNS name.
const maxHostLen = 253

// monitorAddr is a parsed monitor address.
type monitorAddr struct {
	// msgr is msgrV1 or msgrV2 when the address pins the messenger
	// protocol with a "v1:" or "v2:" prefix, else "" (the client picks:
	// librados msgr2 first, the kernel msgr1 unless ms_mode is set).
	msgr string
	// host is a DNS name, an IPv4 address or an IPv6 address without
	// brackets.
	host string
	// port is "" when absent (the clients then use 3300 for msgr2 and 6789
	// for msgr1).
	port string
}

// parseMonitor parses "[v1:|v2:]ADDR", where ADDR is "host", "host:port",
// "[v6]" or "[v6]:port" and host is a DNS name or an IPv4 address. It
// accepts exactly what clusterconfig.ValidateMonitor accepts, so that every
// address a StorageClass can name is mappable.
func parseMonitor(m string) (monitorAddr, error) {
	bad := func(why string) error {
		return fmt.Errorf("%w: monitor address %q: %s (want [v1:|v2:]host:port, IPv6 as [addr]:port)", ErrInvalidImage, m, why)
	}
	var a monitorAddr
	addr := m
	for _, p := range []string{msgrV1, msgrV2} {
		if rest, ok := strings.CutPrefix(m, p+":"); ok {
			a.msgr, addr = p, rest
		}
	}
	if a.msgr != "" && (strings.HasPrefix(addr, msgrV1+":") || strings.HasPrefix(addr, msgrV2+":")) {
		return monitorAddr{}, bad("more than one v1:/v2: prefix")
	}
	host, port, why := splitHostPort(addr)
	if why != "" {
		return monitorAddr{}, bad(why)
	}
	a.host, a.port = host, port
	return a, nil
}

// splitHostPort splits "host", "host:port", "[v6]" or "[v6]:port" and
// returns why it is malformed when it is.
func splitHostPort(s string) (host, port, bad string) {
	hasPort := false
	switch {
	case s == "":
		return "", "", "empty"
	case strings.HasPrefix(s, "["):
		h, rest, closed := strings.Cut(s[1:], "]")
		if !closed {
			return "", "", "unterminated ["
		}
		if ip := net.ParseIP(h); ip == nil || ip.To4() != nil {
			return "", "", "not an IPv6 address inside []"
		}
		if rest != "" {
			if port, hasPort = strings.CutPrefix(rest, ":"); !hasPort {
				return "", "", "junk after ]"
			}
		}
		host = h
	case strings.Count(s, ":") > 1:
		return "", "", "IPv6 addresses must be in brackets"
	default:
		host, port, hasPort = strings.Cut(s, ":")
		if len(host) > maxHostLen || !hostRe.MatchString(host) {
			return "", "", "invalid host"
		}
	}
	if hasPort && !isPort(port) {
		return "", "", "invalid port (want 1 to 65535)"
	}
	return host, port, ""
}

// isPort accepts decimal 1 to 65535, digits only (no sign, no empty).
func isPort(p string) bool {
	if p == "" || len(p) > 5 || strings.ContainsFunc(p, func(r rune) bool { return r < '0' || r > '9' }) {
		return false
	}
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}
