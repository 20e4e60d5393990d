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

// validateKey checks the cephx secret's shape without ever echoing it. A
// malformed key must be stopped here: Ceph tools print the value of a key
// they cannot parse into their logs.
func validateKey(k string) error {
	if k == "" {
		return fmt.Errorf("%w: cephx key is empty", ErrInvalidImage)
	}
	// Anything much longer than a real key is a copy-paste accident (or an
	// injection attempt: a comma or newline would add krbd options or
	// keyring lines, which base64 cannot contain).
	if len(k) > 256 {
		return fmt.Errorf("%w: cephx key is implausibly long (%d bytes)", ErrInvalidImage, len(k))
	}
	raw, err := base64.StdEncoding.DecodeString(k)
	if err != nil {
		return fmt.Errorf("%w: cephx key is not valid base64 (check the secret for stray whitespace or newlines)", ErrInvalidImage)
	}
	if !isCephxKey(raw) {
		return fmt.Errorf("%w: cephx key is malformed (not an encoded cephx secret; copy it from `ceph auth get-key client.USER`)", ErrInvalidImage)
	}
	return nil
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
		if _, _, err := splitMonitor(m); err != nil {
			return err
		}
	}
	return nil
}

// splitMonitor splits "host", "host:port", "[v6]" or "[v6]:port". port is
// "" when absent (the clients then use 6789).
func splitMonitor(m string) (host, port string, err error) {
	bad := func(why string) error {
		return fmt.Errorf("%w: monitor address %q: %s (want host:port, IPv6 as [addr]:port)", ErrInvalidImage, m, why)
	}
	if m == "" {
		return "", "", bad("empty")
	}
	host, port = m, ""
	switch {
	case strings.HasPrefix(m, "["):
		end := strings.Index(m, "]")
		if end < 0 {
			return "", "", bad("unterminated [")
		}
		h, rest := m[1:end], m[end+1:]
		if ip := net.ParseIP(h); ip == nil || ip.To4() != nil {
			return "", "", bad("not an IPv6 address inside []")
		}
		if rest != "" && !strings.HasPrefix(rest, ":") {
			return "", "", bad("junk after ]")
		}
		p := strings.TrimPrefix(rest, ":")
		return h, p, checkPort(p, bad)
	case strings.Count(m, ":") == 1:
		host, port, err = net.SplitHostPort(m)
		if err != nil {
			return "", "", bad(err.Error())
		}
	case strings.Count(m, ":") > 1:
		return "", "", bad("IPv6 addresses must be in brackets")
	}
	if !hostRe.MatchString(host) {
		return "", "", bad("invalid host")
	}
	return host, port, checkPort(port, bad)
}

func checkPort(p string, bad func(string) error) error {
	if p == "" {
		return nil
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return bad("invalid port")
	}
	return nil
}
