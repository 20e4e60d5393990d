package mapper

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// maxNameLen keeps names usable as single path components (255 bytes on
// every Linux filesystem) with room for suffixes such as ".lock".
const maxNameLen = 200

var fsidRe = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

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
	if err := validateNames(img); err != nil {
		return err
	}
	if err := ceph.ValidateUser(img.User); err != nil {
		return fmt.Errorf("%w: cephx %v", ErrInvalidImage, err)
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

// validateNames checks the pool by Ceph's one rule for pool names, and the
// namespace and image name as safe sysfs tokens, arguments and paths.
func validateNames(img Image) error {
	if err := ceph.ValidatePoolName(img.Pool); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidImage, err)
	}
	if err := validateName("rados namespace", img.RadosNamespace, true); err != nil {
		return err
	}
	return validateName("image name", img.Name, false)
}

// validateName accepts Ceph namespace and image names that are safe as a
// sysfs token, a command argument and a single path component.
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

// validateKey checks the cephx secret (already trimmed, see checkImage)
// by ceph.ValidateKey's rule.
func validateKey(k string) error {
	if err := ceph.ValidateKey(k); err != nil {
		return fmt.Errorf("%w: cephx key %v", ErrInvalidImage, err)
	}
	return nil
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

// parseMonitor is ceph.ParseMonitor with this package's error kind.
func parseMonitor(m string) (ceph.MonitorAddr, error) {
	a, err := ceph.ParseMonitor(m)
	if err != nil {
		return ceph.MonitorAddr{}, fmt.Errorf("%w: %v", ErrInvalidImage, err)
	}
	return a, nil
}
