package librbd

import (
	"fmt"
	"sync"
	"syscall"
)

// Pool validation, once per pool and connection instead of once per image.
//
// Before every image it creates or clones, librbd checks that the pool
// the image's data goes to suits RBD (self-managed snapshots; overwrites,
// for an erasure-coded data pool) by reading the pool's rbd_info object.
// Once a check has passed, rbd_info holds validatedMarker and every later
// check only reads it again: one of the five RADOS operations of a create,
// confirming what was known. So connections run with rbd_validate_pool
// off, and a connection reads a pool's rbd_info itself the first time it
// creates there. A pool whose marker it does not find (never checked, or
// rbd_info unreadable with this user's caps) has its creates made with
// librbd's check on, as before, until the marker is seen.
//
// rbd_validate_pool is a setting of the whole connection, read by librbd
// at the start of each create: it is on while any create that needs the
// check runs. Creates in validated pools that start meanwhile repeat the
// read, which costs them the operation and changes nothing else.

// validatedMarker is what rbd_info holds once librbd validated the pool.
const validatedMarker = "overwrite validated"

// poolChecks is what a connection knows of its pools' validation.
type poolChecks struct {
	pools map[string]poolCheck // under conn.mu

	mu       sync.Mutex
	checking int // creates running that need librbd's check
}

// poolCheck is what a connection knows of a pool's validation.
type poolCheck int

const (
	poolUnknown   poolCheck = iota // rbd_info not read yet, or no marker in it
	poolValidated                  // the marker was read
	poolOpaque                     // rbd_info cannot be read: librbd checks every create
)

// withPoolCheck runs create, a librbd call that checks pool (a create or
// clone whose data goes there, or a pool init), with librbd's check on
// unless the pool is known to have passed it.
func (c *conn) withPoolCheck(pool string, create func() error) error {
	check, err := c.poolCheckResolved(pool)
	if err != nil {
		return err
	}
	if check == poolValidated {
		return create()
	}
	if err := c.checkPools(true); err != nil {
		return err
	}
	defer func() { _ = c.checkPools(false) }()
	return create()
}

// poolCheckResolved returns what is known of pool's validation, reading
// its rbd_info while it has shown no marker.
func (c *conn) poolCheckResolved(pool string) (poolCheck, error) {
	if check := c.poolCheckOf(pool); check != poolUnknown {
		return check, nil
	}
	check, err := c.readPoolCheck(pool)
	if err != nil {
		return check, err
	}
	c.setPoolCheck(pool, check)
	return check, nil
}

func (c *conn) poolCheckOf(pool string) poolCheck {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checks.pools[pool]
}

func (c *conn) setPoolCheck(pool string, check poolCheck) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.checks.pools == nil {
		c.checks.pools = map[string]poolCheck{}
	}
	c.checks.pools[pool] = check
}

// readPoolCheck reads pool's rbd_info, which lives in the pool's default
// namespace whatever namespace the cluster's images are in. A read this
// user may not make leaves the check to librbd for good; any other
// failure is the create's.
func (c *conn) readPoolCheck(pool string) (poolCheck, error) {
	io, err := c.rc.OpenIOContext(pool)
	if err != nil {
		return poolUnknown, fmt.Errorf("open pool %s: %w", pool, err)
	}
	defer io.Destroy()
	buf := make([]byte, 2*len(validatedMarker))
	n, err := io.Read(poolInfoObject, buf, 0)
	switch {
	case isErrno(err, syscall.ENOENT):
		return poolUnknown, nil
	case isErrno(err, syscall.EPERM), isErrno(err, syscall.EACCES):
		return poolOpaque, nil
	case err != nil:
		return poolUnknown, fmt.Errorf("read rbd_info of pool %s: %w", pool, err)
	case string(buf[:n]) == validatedMarker:
		return poolValidated, nil
	}
	return poolUnknown, nil
}

// checkPools turns librbd's pool check on for one more create (on) or
// off for one fewer; the connection's setting is on while any is counted.
func (c *conn) checkPools(on bool) error {
	c.checks.mu.Lock()
	defer c.checks.mu.Unlock()
	switch {
	case on:
		c.checks.checking++
		if c.checks.checking > 1 {
			return nil
		}
	case c.checks.checking == 0:
		return nil
	default:
		c.checks.checking--
		if c.checks.checking > 0 {
			return nil
		}
	}
	value := "false"
	if on {
		value = "true"
	}
	if err := c.rc.SetConfigOption("rbd_validate_pool", value); err != nil {
		if on {
			c.checks.checking--
		}
		return fmt.Errorf("set rbd_validate_pool=%s: %w", value, err)
	}
	return nil
}
