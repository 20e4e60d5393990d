// Package setup wires a Ceph cluster in for the driver in one step: it
// creates or checks the pool (initialised for RBD), an optional quota and a
// cephx user with least-privilege caps for that pool, and renders the
// Kubernetes objects that use them. It is idempotent: every step first
// reads what is there and changes only what differs, so a second run
// changes nothing. An existing user whose caps differ is left alone unless
// the operator asks for the change.
package setup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/cephadmin"
)

// Options say what to set up.
type Options struct {
	Pool string
	User string
	// Quota in bytes when QuotaSet; 0 then removes a quota.
	Quota    uint64
	QuotaSet bool
	// UpdateCaps replaces the caps of an existing user that differ from
	// the recommended ones.
	UpdateCaps bool
	// DryRun reads the cluster but changes nothing: Apply returns the
	// commands that would run.
	DryRun bool
}

// Validate checks the names before anything is sent to the cluster.
func (o Options) Validate() error {
	if err := ceph.ValidatePoolName(o.Pool); err != nil {
		return fmt.Errorf("--pool: %w", err)
	}
	if err := ceph.ValidateUser(o.User); err != nil {
		return fmt.Errorf("--user: %w", err)
	}
	if o.User == "admin" {
		return errors.New("--user admin: give the driver a user of its own, limited to the pool (e.g. --user kube)")
	}
	return nil
}

// Step is one change: the command an operator would type, and whether it
// ran (false in a dry run).
type Step struct {
	Command string
	Ran     bool
}

// Result is what Apply found and did.
type Result struct {
	Steps []Step
	// Notes are what was checked and left as it was, for the operator.
	Notes []string
	// CapsDiff is set when the user's caps differ from the recommended
	// ones: "-svc 'old'" / "+svc 'new'" lines.
	CapsDiff []string
}

// Changed says whether anything was (or in a dry run would be) changed.
func (r Result) Changed() bool { return len(r.Steps) > 0 }

// ErrPoolInUse: the pool belongs to another application.
var ErrPoolInUse = errors.New("pool is used by another application")

// Apply brings the cluster to what o asks for.
func Apply(ctx context.Context, c *cephadmin.Client, o Options) (Result, error) {
	if err := o.Validate(); err != nil {
		return Result{}, err
	}
	a := applier{c: c, o: o}
	for _, step := range []func(context.Context) error{a.pool, a.quota, a.user} {
		if err := step(ctx); err != nil {
			return a.r, err
		}
	}
	return a.r, nil
}

type applier struct {
	c *cephadmin.Client
	o Options
	r Result
	// created: the pool did not exist (a dry run cannot ask it anything)
	created bool
}

// do records a change and, unless in a dry run, makes it.
func (a *applier) do(ctx context.Context, words []string, run func(context.Context) error) error {
	cmd := cephadmin.Command(words...)
	if a.o.DryRun {
		a.r.Steps = append(a.r.Steps, Step{Command: cmd})
		return nil
	}
	if err := run(ctx); err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	a.r.Steps = append(a.r.Steps, Step{Command: cmd, Ran: true})
	return nil
}

func (a *applier) mon(cmd map[string]any) func(context.Context) error {
	return func(ctx context.Context) error { return a.c.Mon(ctx, cmd, nil) }
}

func (a *applier) pool(ctx context.Context) error {
	pool := a.o.Pool
	exists, err := a.c.PoolExists(ctx, pool)
	if err != nil {
		return err
	}
	if !exists {
		a.created = true
		if err := a.do(ctx, []string{"ceph", "osd", "pool", "create", pool}, a.mon(map[string]any{"prefix": "osd pool create", "pool": pool})); err != nil {
			return err
		}
		return a.do(ctx, []string{"rbd", "pool", "init", pool}, func(ctx context.Context) error { return a.c.InitPool(ctx, pool) })
	}
	apps, err := a.c.Applications(ctx, pool)
	if err != nil {
		return err
	}
	if slices.Contains(apps, "rbd") {
		a.r.Notes = append(a.r.Notes, fmt.Sprintf("pool %s exists, initialised for rbd", pool))
		return nil
	}
	if len(apps) > 0 {
		return fmt.Errorf("%w: pool %s is tagged for %s, not rbd; choose another --pool (sharing a pool between applications is not supported)", ErrPoolInUse, pool, strings.Join(apps, ", "))
	}
	return a.do(ctx, []string{"rbd", "pool", "init", pool}, func(ctx context.Context) error { return a.c.InitPool(ctx, pool) })
}

func (a *applier) quota(ctx context.Context) error {
	if !a.o.QuotaSet {
		return nil
	}
	if !a.created {
		cur, err := a.c.Quota(ctx, a.o.Pool)
		if err != nil {
			return err
		}
		if cur == a.o.Quota {
			a.r.Notes = append(a.r.Notes, fmt.Sprintf("pool %s quota already max_bytes %d", a.o.Pool, cur))
			return nil
		}
	}
	val := strconv.FormatUint(a.o.Quota, 10)
	return a.do(ctx, []string{"ceph", "osd", "pool", "set-quota", a.o.Pool, "max_bytes", val},
		a.mon(map[string]any{"prefix": "osd pool set-quota", "pool": a.o.Pool, "field": "max_bytes", "val": val}))
}

func (a *applier) user(ctx context.Context) error {
	entity := "client." + a.o.User
	want := cephadmin.RecommendedCaps(a.o.Pool)
	have, found, err := a.c.UserCaps(ctx, a.o.User)
	if err != nil {
		return err
	}
	if !found {
		// The reply carries the new key: it is dropped (Mon with nil out).
		return a.do(ctx, append([]string{"ceph", "auth", "get-or-create", entity}, want.Args()...),
			a.mon(map[string]any{"prefix": "auth get-or-create", "entity": entity, "caps": want.Args()}))
	}
	if have.Equal(want) {
		a.r.Notes = append(a.r.Notes, fmt.Sprintf("user %s exists with the recommended caps", entity))
		return nil
	}
	a.r.CapsDiff = have.Diff(want)
	if !a.o.UpdateCaps {
		v := have.Judge(a.o.Pool)
		verdict := "they let it create and map images in the pool"
		if !v.CreateAndMap {
			verdict = "they do NOT let it create or map images in the pool: " + strings.Join(v.Missing, "; ")
		}
		a.r.Notes = append(a.r.Notes, fmt.Sprintf("user %s exists with other caps (%s); left alone: rerun with --update-caps to set the recommended ones", entity, verdict))
		return nil
	}
	return a.do(ctx, append([]string{"ceph", "auth", "caps", entity}, want.Args()...),
		a.mon(map[string]any{"prefix": "auth caps", "entity": entity, "caps": want.Args()}))
}
