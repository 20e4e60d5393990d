// Package clusterconfig reads the driver's cluster config: a JSON list of
// Ceph clusters in the format ceph-csi uses for its config.json, so an
// existing ConfigMap can be reused as it is.
package clusterconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// Entry is one cluster as written in the file.
type Entry struct {
	ClusterID string   `json:"clusterID"`
	Monitors  []string `json:"monitors"`
	RBD       struct {
		RadosNamespace string `json:"radosNamespace"`
	} `json:"rbd"`
}

// Config is the parsed file, indexed by cluster ID.
type Config struct {
	byID map[string]ceph.Cluster
}

// ErrUnknownCluster is returned by Lookup for an ID the file does not list.
var ErrUnknownCluster = errors.New("unknown clusterID")

// Load reads and validates the file at path. An empty path is an empty config.
func Load(path string) (*Config, error) {
	if path == "" {
		return &Config{byID: map[string]ceph.Cluster{}}, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read cluster config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("cluster config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse validates the JSON text of a cluster config.
func Parse(data []byte) (*Config, error) {
	var entries []Entry
	if err := json.Unmarshal(data, &entries); err != nil {
		return nil, fmt.Errorf("want a JSON list of {\"clusterID\": ..., \"monitors\": [...]}: %w", err)
	}
	cfg := &Config{byID: make(map[string]ceph.Cluster, len(entries))}
	for i, e := range entries {
		if err := e.validate(); err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		if _, dup := cfg.byID[e.ClusterID]; dup {
			return nil, fmt.Errorf("entry %d: clusterID %q listed twice", i, e.ClusterID)
		}
		cfg.byID[e.ClusterID] = ceph.Cluster{
			ID:             e.ClusterID,
			Monitors:       e.Monitors,
			RadosNamespace: e.RBD.RadosNamespace,
		}
	}
	return cfg, nil
}

func (e Entry) validate() error {
	if err := ValidateClusterID(e.ClusterID); err != nil {
		return err
	}
	if len(e.Monitors) == 0 {
		return fmt.Errorf("cluster %q has no monitors", e.ClusterID)
	}
	for _, m := range e.Monitors {
		if err := ceph.ValidateMonitor(m); err != nil {
			return fmt.Errorf("cluster %q: %w", e.ClusterID, err)
		}
	}
	if ns := e.RBD.RadosNamespace; ns != "" && !ceph.IsPlainName(ns) {
		return fmt.Errorf("cluster %q: radosNamespace %q may only hold letters, digits, '.', '_' and '-'", e.ClusterID, ns)
	}
	return nil
}

// Lookup returns the cluster with the given ID.
func (c *Config) Lookup(id string) (ceph.Cluster, error) {
	cl, ok := c.byID[id]
	if !ok {
		return ceph.Cluster{}, fmt.Errorf("%w %q: add it to the cluster config (--cluster-config)", ErrUnknownCluster, id)
	}
	return cl, nil
}

// FindByMonitors returns the configured cluster whose monitor list equals
// mons (order ignored), so that a legacy StorageClass naming monitors gets
// the short, stable clusterID in its volume IDs when one is configured.
// Entries with a radosNamespace are skipped: the in-tree plugin knew no
// namespaces, so its volumes belong in the pool's default one. When several
// entries match, the lowest clusterID wins, so the choice never changes
// between calls.
func (c *Config) FindByMonitors(mons []string) (ceph.Cluster, bool) {
	want := strings.Join(sortedCopy(mons), ",")
	for _, cl := range c.Clusters() {
		if cl.RadosNamespace == "" && strings.Join(sortedCopy(cl.Monitors), ",") == want {
			return cl, true
		}
	}
	return ceph.Cluster{}, false
}

// Clusters lists every configured cluster, ordered by ID.
func (c *Config) Clusters() []ceph.Cluster {
	out := make([]ceph.Cluster, 0, len(c.byID))
	for _, cl := range c.byID {
		out = append(out, cl)
	}
	slices.SortFunc(out, func(a, b ceph.Cluster) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// ValidateClusterID accepts what fits in a volume ID unambiguously and is
// safe as a path component (the driver looks up --secrets-dir/<clusterID>).
func ValidateClusterID(id string) error {
	if id == "" {
		return errors.New("clusterID is empty")
	}
	if len(id) > 36 || !ceph.IsPlainName(id) || id == "." || id == ".." {
		return fmt.Errorf("clusterID %q: at most 36 characters of letters, digits, '.', '_' and '-', and not \".\" or \"..\"", id)
	}
	return nil
}

// ParseMonitors splits the legacy in-tree "monitors" parameter
// ("10.0.0.1:6789,10.0.0.2:6789").
func ParseMonitors(s string) ([]string, error) {
	var mons []string
	for _, m := range strings.Split(s, ",") {
		m = strings.TrimSpace(m)
		if m == "" {
			continue
		}
		if err := ceph.ValidateMonitor(m); err != nil {
			return nil, err
		}
		mons = append(mons, m)
	}
	if len(mons) == 0 {
		return nil, errors.New("no monitor addresses given")
	}
	return mons, nil
}

func sortedCopy(in []string) []string {
	out := slices.Clone(in)
	slices.Sort(out)
	return out
}
