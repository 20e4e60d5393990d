package cephadmin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// Backend is the part of the driver's Ceph backend (librbd.Backend) the
// admin commands use; tests may give a fake.
type Backend interface {
	MonCommand(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, cmd map[string]any) ([]byte, error)
	PoolInit(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, pool string) error
	ListImages(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, pool string) ([]string, error)
	StatImage(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef) (ceph.ImageInfo, error)
	PoolUsage(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, pool string) (ceph.PoolUsage, error)
}

// Client runs admin queries and commands, each bounded by Timeout.
type Client struct {
	B       Backend
	Access  Access
	Timeout time.Duration
}

func (c *Client) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	t := c.Timeout
	if t <= 0 {
		t = 30 * time.Second
	}
	return context.WithTimeout(ctx, t)
}

// Mon sends one monitor command and decodes its JSON reply into out (nil:
// the reply is ignored).
func (c *Client) Mon(ctx context.Context, cmd map[string]any, out any) error {
	ctx, cancel := c.bound(ctx)
	defer cancel()
	if _, ok := cmd["format"]; !ok && out != nil {
		cmd["format"] = "json"
	}
	res, err := c.B.MonCommand(ctx, c.Access.Admin, c.Access.Cluster, cmd)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(res, out); err != nil {
		return fmt.Errorf("%s: unexpected reply: %w", cmd["prefix"], err)
	}
	return nil
}

// Pools lists the cluster's pool names.
func (c *Client) Pools(ctx context.Context) ([]string, error) {
	var pools []string
	err := c.Mon(ctx, map[string]any{"prefix": "osd pool ls"}, &pools)
	return pools, err
}

// PoolExists says whether pool exists.
func (c *Client) PoolExists(ctx context.Context, pool string) (bool, error) {
	pools, err := c.Pools(ctx)
	return slices.Contains(pools, pool), err
}

// Applications lists the applications enabled on pool, sorted.
func (c *Client) Applications(ctx context.Context, pool string) ([]string, error) {
	var apps map[string]json.RawMessage
	if err := c.Mon(ctx, map[string]any{"prefix": "osd pool application get", "pool": pool}, &apps); err != nil {
		return nil, err
	}
	var out []string
	for a := range apps {
		out = append(out, a)
	}
	slices.Sort(out)
	return out, nil
}

// Quota is the pool's byte quota, 0 for none. It comes from the osdmap
// (`osd pool ls detail`): `osd pool get-quota` needs the pool's usage
// stats, which a pool just created does not have yet.
func (c *Client) Quota(ctx context.Context, pool string) (uint64, error) {
	var pools []struct {
		Name     string `json:"pool_name"`
		MaxBytes uint64 `json:"quota_max_bytes"`
	}
	if err := c.Mon(ctx, map[string]any{"prefix": "osd pool ls", "detail": "detail"}, &pools); err != nil {
		return 0, err
	}
	for _, p := range pools {
		if p.Name == pool {
			return p.MaxBytes, nil
		}
	}
	return 0, fmt.Errorf("pool %s: %w", pool, ceph.ErrNotFound)
}

// Usage is the pool's capacity as the driver sees it.
func (c *Client) Usage(ctx context.Context, pool string) (ceph.PoolUsage, error) {
	ctx, cancel := c.bound(ctx)
	defer cancel()
	return c.B.PoolUsage(ctx, c.Access.Admin, c.Access.Cluster, pool)
}

// InitPool runs `rbd pool init`'s equivalent.
func (c *Client) InitPool(ctx context.Context, pool string) error {
	ctx, cancel := c.bound(ctx)
	defer cancel()
	return c.B.PoolInit(ctx, c.Access.Admin, c.Access.Cluster, pool)
}

// UserCaps returns the caps of client.user; found is false when there is no
// such user. The key the monitors send along is dropped here.
func (c *Client) UserCaps(ctx context.Context, user string) (caps Caps, found bool, err error) {
	var entries []struct {
		Entity string            `json:"entity"`
		Caps   map[string]string `json:"caps"`
	}
	err = c.Mon(ctx, map[string]any{"prefix": "auth get", "entity": "client." + user}, &entries)
	if errors.Is(err, ceph.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	for _, e := range entries {
		if e.Entity == "client."+user {
			return Caps(e.Caps), true, nil
		}
	}
	return nil, false, nil
}

// UserKey returns the cephx key of client.user. Secret: only for a Secret
// the operator asked for.
func (c *Client) UserKey(ctx context.Context, user string) (string, error) {
	var k struct {
		Key string `json:"key"`
	}
	if err := c.Mon(ctx, map[string]any{"prefix": "auth get-key", "entity": "client." + user}, &k); err != nil {
		return "", err
	}
	if k.Key == "" {
		return "", fmt.Errorf("auth get-key client.%s: empty reply", user)
	}
	return k.Key, nil
}

// Tunables is what `ceph osd crush show-tunables` reports that matters to
// kernel clients.
type Tunables struct {
	Profile         string `json:"profile"`
	MinimumRequired string `json:"minimum_required_version"`
	HasStraw2       int    `json:"has_v4_buckets"`
}

// CrushTunables reads the tunables in force.
func (c *Client) CrushTunables(ctx context.Context) (Tunables, error) {
	var t Tunables
	err := c.Mon(ctx, map[string]any{"prefix": "osd crush show-tunables"}, &t)
	return t, err
}

// RequireMinCompatClient is the osdmap's require_min_compat_client.
func (c *Client) RequireMinCompatClient(ctx context.Context) (string, error) {
	var d struct {
		Release string `json:"require_min_compat_client"`
	}
	err := c.Mon(ctx, map[string]any{"prefix": "osd dump"}, &d)
	return d.Release, err
}

// MonitorAddrs lists the monitors from the monmap as the driver's cluster
// config takes them: the v1 address of each (the kernel client speaks
// msgr1 by default), prefixed so no client guesses the protocol from the
// port; a monitor with only a v2 address is listed as v2:.
func (c *Client) MonitorAddrs(ctx context.Context) ([]string, error) {
	var mm struct {
		Mons []struct {
			PublicAddrs struct {
				Addrvec []struct {
					Type string `json:"type"`
					Addr string `json:"addr"`
				} `json:"addrvec"`
			} `json:"public_addrs"`
		} `json:"mons"`
	}
	if err := c.Mon(ctx, map[string]any{"prefix": "mon dump"}, &mm); err != nil {
		return nil, err
	}
	var out []string
	for _, m := range mm.Mons {
		best := ""
		for _, a := range m.PublicAddrs.Addrvec {
			if a.Type == "v1" || best == "" {
				best = a.Type + ":" + a.Addr
			}
		}
		if best != "" {
			out = append(out, best)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("mon dump lists no monitor address")
	}
	return out, nil
}

// ImageFeatures returns the features of every image in pool, by name.
// Images that vanish while being listed are skipped.
func (c *Client) ImageFeatures(ctx context.Context, pool string) (map[string]ceph.Features, error) {
	lctx, cancel := c.bound(ctx)
	names, err := c.B.ListImages(lctx, c.Access.Admin, c.Access.Cluster, pool)
	cancel()
	if err != nil {
		return nil, err
	}
	out := make(map[string]ceph.Features, len(names))
	for _, n := range names {
		sctx, cancel := c.bound(ctx)
		info, err := c.B.StatImage(sctx, c.Access.Admin, ceph.ImageRef{Cluster: c.Access.Cluster, Pool: pool, Name: n})
		cancel()
		if errors.Is(err, ceph.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[n] = info.Features
	}
	return out, nil
}

// Command is one change, in the form `ceph` takes it on its command line,
// for --dry-run and for the record of what was done.
func Command(words ...string) string {
	q := make([]string, len(words))
	for i, w := range words {
		if w == "" || strings.ContainsAny(w, " ,*'\"$;&|") {
			w = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
		}
		q[i] = w
	}
	return strings.Join(q, " ")
}

// FSID is the cluster's fsid.
func (c *Client) FSID(ctx context.Context) (string, error) {
	var f struct {
		FSID string `json:"fsid"`
	}
	if err := c.Mon(ctx, map[string]any{"prefix": "fsid"}, &f); err != nil {
		return "", err
	}
	if f.FSID == "" {
		return "", errors.New("fsid: empty reply")
	}
	return f.FSID, nil
}
