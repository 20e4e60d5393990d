package librbd

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/ceph/go-ceph/rbd"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// MonCommand sends one monitor command (the JSON form `ceph` sends, e.g.
// {"prefix": "osd pool ls", "format": "json"}) on a pooled connection,
// bounded by ctx like every other call, and returns the reply body. A
// refusal carries the monitor's status text, which names what was wrong.
func (b *Backend) MonCommand(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, cmd map[string]any) ([]byte, error) {
	req, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("encode monitor command: %w", err)
	}
	prefix, _ := cmd["prefix"].(string)
	var out []byte
	err = b.run(ctx, "monitor command", prefix, cl, cr, func(c *conn) error {
		res, status, err := c.rc.MonCommand(req)
		if err != nil {
			if status != "" {
				return fmt.Errorf("%w (%s)", err, status)
			}
			return err
		}
		out = res
		return nil
	})
	return out, err
}

// PoolInit does what `rbd pool init` does: tags the pool with the rbd
// application and checks that RBD can use it.
func (b *Backend) PoolInit(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, pool string) error {
	return b.run(ctx, "initialise pool", pool, cl, cr, func(c *conn) error {
		io, err := c.rc.OpenIOContext(pool)
		if err != nil {
			return err
		}
		defer io.Destroy()
		return c.withPoolCheck(pool, func() error { return rbd.PoolInit(io, false) })
	})
}
