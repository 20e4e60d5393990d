// Package cephadminfake is an in-memory cephadmin.Backend for unit tests:
// it answers the monitor commands setup and doctor send as a Ceph 16
// monitor does (same JSON shapes, ENOENT as ceph.ErrNotFound), so their
// logic is tested without a cluster. The real cluster tests use librbd.
package cephadminfake

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/cephadmin"
)

// Pool is one pool's state.
type Pool struct {
	Apps   []string
	Quota  uint64
	Used   uint64
	Images map[string]ceph.Features
}

// Cluster is the fake cluster's state; tests set it up and read it back.
type Cluster struct {
	mu          sync.Mutex
	FSID        string
	Monitors    []string // v1 addresses ("10.0.0.1:6789")
	Pools       map[string]*Pool
	Users       map[string]cephadmin.Caps // by entity ("client.kube")
	Tunables    string
	Straw2      bool
	MinCompat   string
	Unreachable bool
	Commands    []string // prefixes of the commands that changed something
}

var _ cephadmin.Backend = (*Cluster)(nil)

// New is a healthy Pacific-like cluster with no pools and no users.
func New() *Cluster {
	return &Cluster{
		FSID: "00000000-0000-4000-8000-000000000001", Monitors: []string{"10.0.0.1:6789"},
		Pools: map[string]*Pool{}, Users: map[string]cephadmin.Caps{},
		Tunables: "jewel", Straw2: true, MinCompat: "luminous",
	}
}

func str(cmd map[string]any, k string) string { s, _ := cmd[k].(string); return s }

// MonCommand implements cephadmin.Backend.
func (c *Cluster) MonCommand(ctx context.Context, _ ceph.Credentials, _ ceph.Cluster, cmd map[string]any) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.Unreachable {
		return nil, fmt.Errorf("%w: no monitor answered", ceph.ErrTimeout)
	}
	prefix := str(cmd, "prefix")
	pool := c.Pools[str(cmd, "pool")]
	switch prefix {
	case "osd pool ls":
		type detail struct {
			Name  string `json:"pool_name"`
			Quota uint64 `json:"quota_max_bytes"`
		}
		var names []string
		var details []detail
		for n, p := range c.Pools {
			names = append(names, n)
			details = append(details, detail{n, p.Quota})
		}
		slices.Sort(names)
		if str(cmd, "detail") != "" {
			return json.Marshal(details)
		}
		return json.Marshal(names)
	case "osd pool create":
		if pool == nil {
			c.Pools[str(cmd, "pool")] = &Pool{Images: map[string]ceph.Features{}}
		}
	case "osd pool application get", "osd pool set-quota":
		if pool == nil {
			return nil, fmt.Errorf("%w: pool %s", ceph.ErrNotFound, str(cmd, "pool"))
		}
		if prefix == "osd pool set-quota" {
			fmt.Sscan(str(cmd, "val"), &pool.Quota)
			break
		}
		apps := map[string]any{}
		for _, a := range pool.Apps {
			apps[a] = map[string]string{}
		}
		return json.Marshal(apps)
	case "auth get", "auth get-key":
		caps, ok := c.Users[str(cmd, "entity")]
		if !ok {
			return nil, fmt.Errorf("%w: %s", ceph.ErrNotFound, str(cmd, "entity"))
		}
		if prefix == "auth get-key" {
			return json.Marshal(map[string]string{"key": "AQBfake" + str(cmd, "entity")})
		}
		return json.Marshal([]map[string]any{{"entity": str(cmd, "entity"), "key": "AQBfake", "caps": caps}})
	case "auth get-or-create", "auth caps":
		args, _ := cmd["caps"].([]string)
		caps := cephadmin.Caps{}
		for i := 0; i+1 < len(args); i += 2 {
			caps[args[i]] = args[i+1]
		}
		c.Users[str(cmd, "entity")] = caps
	case "osd crush show-tunables":
		straw2 := 0
		if c.Straw2 {
			straw2 = 1
		}
		return json.Marshal(map[string]any{"profile": c.Tunables, "has_v4_buckets": straw2})
	case "osd dump":
		return json.Marshal(map[string]any{"require_min_compat_client": c.MinCompat})
	case "mon dump":
		var mons []any
		for _, m := range c.Monitors {
			mons = append(mons, map[string]any{"public_addrs": map[string]any{"addrvec": []any{map[string]string{"type": "v1", "addr": m}}}})
		}
		return json.Marshal(map[string]any{"mons": mons})
	case "fsid":
		return json.Marshal(map[string]string{"fsid": c.FSID})
	default:
		return nil, fmt.Errorf("%w: fake monitor does not know %q", ceph.ErrInvalid, prefix)
	}
	c.Commands = append(c.Commands, prefix)
	return []byte("{}"), nil
}

// PoolInit implements cephadmin.Backend.
func (c *Cluster) PoolInit(ctx context.Context, _ ceph.Credentials, _ ceph.Cluster, pool string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.Pools[pool]
	if !ok {
		return fmt.Errorf("%w: pool %s", ceph.ErrNotFound, pool)
	}
	if !slices.Contains(p.Apps, "rbd") {
		p.Apps = append(p.Apps, "rbd")
	}
	c.Commands = append(c.Commands, "rbd pool init")
	return nil
}

// ListImages implements cephadmin.Backend.
func (c *Cluster) ListImages(ctx context.Context, _ ceph.Credentials, _ ceph.Cluster, pool string) ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for n := range c.Pools[pool].Images {
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

// StatImage implements cephadmin.Backend.
func (c *Cluster) StatImage(ctx context.Context, _ ceph.Credentials, ref ceph.ImageRef) (ceph.ImageInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.Pools[ref.Pool].Images[ref.Name]
	if !ok {
		return ceph.ImageInfo{}, ceph.ErrNotFound
	}
	return ceph.ImageInfo{Name: ref.Name, Features: f}, nil
}

// PoolUsage implements cephadmin.Backend.
func (c *Cluster) PoolUsage(ctx context.Context, _ ceph.Credentials, _ ceph.Cluster, pool string) (ceph.PoolUsage, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.Pools[pool]
	if !ok {
		return ceph.PoolUsage{}, ceph.ErrNotFound
	}
	return ceph.PoolUsage{UsedBytes: p.Used, MaxAvail: 1 << 40, QuotaBytes: p.Quota}, nil
}

// Client is an admin client of the fake.
func (c *Cluster) Client() *cephadmin.Client {
	return &cephadmin.Client{B: c, Access: cephadmin.Access{Cluster: ceph.Cluster{Monitors: c.Monitors}, Admin: ceph.Credentials{User: "admin", Key: "AQBadmin"}}}
}
