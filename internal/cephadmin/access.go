// Package cephadmin is what the operator commands (rbd-csi setup, rbd-csi
// doctor) need of a cluster as its administrator: admin access read from
// ceph.conf and a keyring or from the environment (never from the command
// line), typed monitor queries and commands, and cephx caps understood.
// Every call goes through the driver's own connection code (package
// librbd), each bounded by a timeout.
package cephadmin

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// Environment variables that give admin access; the same names the test
// cluster's env file (e2e/ceph/up.sh) exports.
const (
	EnvMonHost  = "CEPH_MON_HOST"  // monitors, as mon_host takes them
	EnvAdminKey = "CEPH_ADMIN_KEY" // the admin user's cephx key
	EnvAdminID  = "CEPH_ADMIN_ID"  // the admin user, default "admin"
	EnvConf     = "CEPH_CONF"      // ceph.conf path
	EnvKeyring  = "CEPH_KEYRING"   // keyring path
)

// Default paths, as the ceph CLI has them.
const (
	DefaultConf    = "/etc/ceph/ceph.conf"
	DefaultKeyring = "/etc/ceph/ceph.client.%s.keyring"
)

// Access is an admin identity on one cluster. Admin.Key is secret.
type Access struct {
	Cluster ceph.Cluster
	Admin   ceph.Credentials
	// From says where the access came from, for messages (never the key).
	From string
}

// AccessOptions name the files; empty fields fall back to the environment
// and then to the ceph CLI's defaults.
type AccessOptions struct {
	Conf, Keyring string
}

// ErrNoAccess: no usable admin access was found.
var ErrNoAccess = errors.New("no admin access to a Ceph cluster")

// LoadAccess finds admin access: CEPH_MON_HOST and CEPH_ADMIN_KEY when both
// are set, else ceph.conf's mon host and the keyring's key.
func LoadAccess(o AccessOptions, getenv func(string) string) (Access, error) {
	user := getenv(EnvAdminID)
	if user == "" {
		user = "admin"
	}
	if err := ceph.ValidateUser(user); err != nil {
		return Access{}, fmt.Errorf("%s: %w", EnvAdminID, err)
	}
	mon, key := getenv(EnvMonHost), getenv(EnvAdminKey)
	if mon != "" && key != "" && o.Conf == "" && o.Keyring == "" {
		return Access{
			Cluster: ceph.Cluster{Monitors: []string{mon}},
			Admin:   ceph.Credentials{User: user, Key: strings.TrimSpace(key)},
			From:    fmt.Sprintf("$%s and $%s (client.%s)", EnvMonHost, EnvAdminKey, user),
		}, nil
	}
	return accessFromFiles(o, user, getenv)
}

func accessFromFiles(o AccessOptions, user string, getenv func(string) string) (Access, error) {
	conf := firstOf(o.Conf, getenv(EnvConf), DefaultConf)
	settings, err := readConf(conf)
	if err != nil {
		return Access{}, fmt.Errorf("%w: %v; give --ceph-conf and --keyring, or set $%s and $%s", ErrNoAccess, err, EnvMonHost, EnvAdminKey)
	}
	mon := settings["mon_host"]
	if mon == "" {
		return Access{}, fmt.Errorf("%w: %s sets no mon host in [global]", ErrNoAccess, conf)
	}
	keyring := firstOf(o.Keyring, getenv(EnvKeyring), settings["keyring"], fmt.Sprintf(DefaultKeyring, user))
	keyring = strings.NewReplacer("$cluster", "ceph", "$name", "client."+user).Replace(keyring)
	key, err := readKeyring(keyring, "client."+user)
	if err != nil {
		return Access{}, fmt.Errorf("%w: %v", ErrNoAccess, err)
	}
	return Access{
		Cluster: ceph.Cluster{Monitors: []string{mon}},
		Admin:   ceph.Credentials{User: user, Key: key},
		From:    fmt.Sprintf("%s and %s (client.%s)", conf, keyring, user),
	}, nil
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// readConf returns the [global] and [client] settings of a ceph.conf, keys
// normalised to underscores ("mon host" = "mon_host" = "mon-host").
func readConf(path string) (map[string]string, error) {
	out := map[string]string{}
	err := eachIniLine(path, func(section, k, v string) {
		if section == "global" || section == "client" {
			out[k] = v
		}
	})
	return out, err
}

// readKeyring returns the key of entity from a keyring file.
func readKeyring(path, entity string) (string, error) {
	var key string
	err := eachIniLine(path, func(section, k, v string) {
		if section == entity && k == "key" {
			key = v
		}
	})
	if err != nil {
		return "", err
	}
	if key == "" {
		return "", fmt.Errorf("keyring %s holds no key for %s", path, entity)
	}
	return key, nil
}

func eachIniLine(path string, fn func(section, k, v string)) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read %w", err)
	}
	defer f.Close()
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = strings.TrimSpace(line[1 : len(line)-1])
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		k = strings.NewReplacer(" ", "_", "-", "_").Replace(strings.TrimSpace(k))
		fn(section, k, strings.TrimSpace(v))
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}
