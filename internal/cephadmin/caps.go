package cephadmin

import (
	"fmt"
	"slices"
	"strings"
)

// Caps are a cephx user's capabilities by service ("mon", "osd", "mgr").
type Caps map[string]string

// RecommendedCaps are the least-privilege caps of a driver user of pool:
// RBD's own profiles, limited to the pool where they take a pool (the mgr
// runs the driver's trash purges and flattens).
func RecommendedCaps(pool string) Caps {
	return Caps{
		"mon": "profile rbd",
		"osd": "profile rbd pool=" + pool,
		"mgr": "profile rbd pool=" + pool,
	}
}

// Args are the caps as `ceph auth get-or-create` / `ceph auth caps` take
// them: service and grant pairs, services in a fixed order.
func (c Caps) Args() []string {
	var out []string
	for _, svc := range c.services() {
		out = append(out, svc, c[svc])
	}
	return out
}

func (c Caps) services() []string {
	var svcs []string
	for s := range c {
		svcs = append(svcs, s)
	}
	slices.Sort(svcs)
	return svcs
}

// Equal says whether both grant the same text per service (whitespace
// around grants ignored).
func (c Caps) Equal(o Caps) bool {
	return c.Diff(o) == nil
}

// Diff lists, per service in order, how have (c) differs from want: the
// old grant as "-svc 'old'", then the new as "+svc 'new'", as an operator
// reads a diff.
func (c Caps) Diff(want Caps) []string {
	svcs := append(c.services(), want.services()...)
	slices.Sort(svcs)
	svcs = slices.Compact(svcs)
	var out []string
	for _, svc := range svcs {
		if normGrants(c[svc]) == normGrants(want[svc]) {
			continue
		}
		if c[svc] != "" {
			out = append(out, fmt.Sprintf("-%s '%s'", svc, c[svc]))
		}
		if want[svc] != "" {
			out = append(out, fmt.Sprintf("+%s '%s'", svc, want[svc]))
		}
	}
	return out
}

func normGrants(s string) string {
	gs := grants(s)
	return strings.Join(gs, ", ")
}

// grants splits a cap string into its grants, each with single spaces.
func grants(s string) []string {
	var out []string
	for _, g := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' }) {
		if g = strings.Join(strings.Fields(g), " "); g != "" {
			out = append(out, g)
		}
	}
	return out
}

// Verdict is what caps let a driver user do with one pool.
type Verdict struct {
	// CreateAndMap: the monitors let the user in and the OSDs let it
	// create, write and map images in the pool: what the driver needs.
	CreateAndMap bool
	// MgrTasks: the mgr takes trash purges and flattens from the user;
	// without, they run in the driver (slower, and lost with a restart).
	MgrTasks bool
	// Missing names what is lacking, for the operator.
	Missing []string
}

// Judge reads the caps for pool. Both the `profile rbd` form and the
// seed-era form (mon 'allow r', osd 'allow class-read object_prefix
// rbd_children, allow rwx pool=POOL') are understood, as is `allow *`.
func (c Caps) Judge(pool string) Verdict {
	var v Verdict
	monOK := anyGrant(c["mon"], func(g grant) bool {
		return g.profile == "rbd" || g.profile == "rbd-read-only" || g.perms.has("r")
	})
	osdOK := anyGrant(c["osd"], func(g grant) bool {
		if !g.appliesTo(pool) {
			return false
		}
		return g.profile == "rbd" || g.perms.has("rwx")
	})
	v.MgrTasks = anyGrant(c["mgr"], func(g grant) bool {
		return (g.profile == "rbd" && g.appliesTo(pool)) || (g.profile == "" && g.pool == "" && g.perms.has("rw"))
	})
	if !monOK {
		v.Missing = append(v.Missing, "mon: no read access (want mon 'profile rbd')")
	}
	if !osdOK {
		v.Missing = append(v.Missing, fmt.Sprintf("osd: no read-write-execute access to pool %s (want osd 'profile rbd pool=%s')", pool, pool))
	}
	v.CreateAndMap = monOK && osdOK
	return v
}

// grant is one parsed grant ("allow rwx pool=kube", "profile rbd pool=kube").
type grant struct {
	profile      string
	perms        perms
	pool         string
	namespace    string
	objectPrefix bool
}

type perms string

// has says whether every letter of want is granted ("*" grants all).
func (p perms) has(want string) bool {
	if p == "*" {
		return true
	}
	for _, r := range want {
		if !strings.ContainsRune(string(p), r) {
			return false
		}
	}
	return true
}

// appliesTo says whether the grant covers the whole pool (any pool when it
// names none); a grant limited to an object prefix or a namespace does not.
func (g grant) appliesTo(pool string) bool {
	if g.objectPrefix || (g.namespace != "" && g.namespace != "*") {
		return false
	}
	return g.pool == "" || g.pool == pool
}

func anyGrant(s string, ok func(grant) bool) bool {
	for _, raw := range grants(s) {
		if ok(parseGrant(raw)) {
			return true
		}
	}
	return false
}

func parseGrant(s string) grant {
	var g grant
	words := strings.Fields(s)
	for i := 0; i < len(words); i++ {
		w := words[i]
		next := func() string {
			if i+1 < len(words) {
				i++
				return words[i]
			}
			return ""
		}
		switch {
		case w == "allow":
		case w == "profile":
			g.profile = next()
		case strings.HasPrefix(w, "pool="):
			g.pool = strings.TrimPrefix(w, "pool=")
		case w == "pool":
			g.pool = strings.TrimPrefix(next(), "=")
		case strings.HasPrefix(w, "namespace="):
			g.namespace = strings.TrimPrefix(w, "namespace=")
		case w == "object_prefix" || strings.HasPrefix(w, "object_prefix="):
			g.objectPrefix = true
			if w == "object_prefix" {
				next()
			}
		case w == "*" || strings.Trim(w, "rwx") == "":
			g.perms += perms(w)
		}
	}
	return g
}
