package ceph

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
)

// maxNameLen bounds pool and user names: short enough for a path component
// with suffixes, long enough for any name seen in practice.
const maxNameLen = 64

// maxKeyLen bounds a cephx key: a real one is 40 bytes (AES-128) or 56
// (AES-256); anything much longer is a copy-paste accident.
const maxKeyLen = 256

// ValidatePoolName accepts pool names that cannot be mistaken for paths,
// options or sysfs tokens by any tool the name may reach.
func ValidatePoolName(p string) error {
	if p == "" || len(p) > maxNameLen {
		return fmt.Errorf("pool name %q must be 1 to %d characters", p, maxNameLen)
	}
	if !IsPlainName(p) || p[0] == '-' {
		return fmt.Errorf("pool name %q may only hold letters, digits, '.', '_' and '-' and must not start with '-'", p)
	}
	return nil
}

// ValidateUser checks a cephx user ID (without "client.").
func ValidateUser(u string) error {
	if strings.HasPrefix(u, "client.") {
		return fmt.Errorf("user %q: give the ID without the \"client.\" prefix", u)
	}
	if u == "" || len(u) > maxNameLen || !IsPlainName(u) || u[0] == '-' {
		return fmt.Errorf("user %q may only hold letters, digits, '.', '_' and '-' (1 to %d)", u, maxNameLen)
	}
	return nil
}

// ValidateKey checks the shape of a cephx key, already trimmed, without
// ever echoing it: Ceph tools print a key they cannot parse into their
// logs, and a line break or comma would reach keyring files and the
// kernel's map string (Go's base64 decoder skips '\r' and '\n').
func ValidateKey(k string) error {
	if k == "" {
		return fmt.Errorf("is empty")
	}
	if len(k) > maxKeyLen {
		return fmt.Errorf("is implausibly long for a cephx key (%d bytes, at most %d)", len(k), maxKeyLen)
	}
	if err := checkBase64Shape(k); err != nil {
		return fmt.Errorf("is not base64: it %v (a cephx key looks like the output of `ceph auth get-key client.NAME`)", err)
	}
	raw, err := base64.StdEncoding.DecodeString(k)
	if err != nil {
		return fmt.Errorf("is not base64 (a cephx key looks like the output of `ceph auth get-key client.NAME`)")
	}
	if len(raw) < 16 {
		return fmt.Errorf("is too short to be a cephx key (%d bytes decoded)", len(raw))
	}
	if !isCephxKey(raw) {
		return fmt.Errorf("is malformed: not an encoded cephx secret (copy it from `ceph auth get-key client.NAME`)")
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

// IsPlainName reports whether s is non-empty and holds only letters,
// digits, '.', '_' and '-': the one character set for names the driver
// passes to Ceph tools, sysfs and paths.
func IsPlainName(s string) bool {
	return s != "" && !strings.ContainsFunc(s, func(r rune) bool { return !IsPlainRune(r) })
}

// IsPlainRune reports whether r may appear in a plain name.
func IsPlainRune(r rune) bool {
	return r == '.' || r == '_' || r == '-' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
}
