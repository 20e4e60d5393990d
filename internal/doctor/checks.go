package doctor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/cephadmin"
	"github.com/rbd-csi/rbd-csi/internal/metrics"
	"github.com/rbd-csi/rbd-csi/internal/node/mapper"
	"github.com/rbd-csi/rbd-csi/internal/params"
)

// dialTimeout bounds the TCP check of one monitor address.
const dialTimeout = 3 * time.Second

// checkMonitors asks the monitors for the monmap, then checks that each
// monitor in it accepts connections from here; false when none answered.
func checkMonitors(ctx context.Context, c *cephadmin.Client, r *Report) bool {
	mons, err := c.MonitorAddrs(ctx)
	if err != nil {
		r.add(Finding{Check: "monitors", Severity: Fail, Subject: strings.Join(c.Access.Cluster.Monitors, ","),
			Message: fmt.Sprintf("the monitors did not answer as client.%s: %v", c.Access.Admin.User, err),
			Fix: []string{
				"check the monitor addresses (ceph.conf mon host, or $CEPH_MON_HOST) and that this machine reaches them (ports 3300 and 6789)",
				"check the admin key (`ceph auth get-key client." + c.Access.Admin.User + "` on a monitor host)",
			}})
		return false
	}
	var down []string
	for _, m := range mons {
		dctx, cancel := context.WithTimeout(ctx, dialTimeout)
		if err := metrics.MonitorsReachable([]string{m})(dctx); err != nil {
			down = append(down, m)
		}
		cancel()
	}
	if len(down) > 0 {
		r.add(Finding{Check: "monitors", Severity: Warn, Subject: strings.Join(down, ","),
			Message: fmt.Sprintf("%d of %d monitors do not accept connections from here; clients that only know those will not connect", len(down), len(mons)),
			Fix:     []string{"start the monitor or open its ports to the nodes; `ceph mon stat` shows the quorum"}})
		return true
	}
	r.add(Finding{Check: "monitors", Severity: OK, Message: fmt.Sprintf("%d monitors answer: %s", len(mons), strings.Join(mons, ", "))})
	return true
}

func checkPool(ctx context.Context, c *cephadmin.Client, pool string, r *Report) bool {
	exists, err := c.PoolExists(ctx, pool)
	if err != nil {
		r.add(queryFailed("pool", pool, err))
		return false
	}
	if !exists {
		r.add(Finding{Check: "pool", Severity: Fail, Subject: pool, Message: "the pool does not exist: every CreateVolume naming it fails",
			Fix: []string{fmt.Sprintf("rbd-csi setup --pool %s (creates and initialises it)", pool), fmt.Sprintf("ceph osd pool create %s && rbd pool init %s", pool, pool)}})
		return false
	}
	apps, err := c.Applications(ctx, pool)
	if err != nil {
		r.add(queryFailed("pool-application", pool, err))
		return true
	}
	if !slices.Contains(apps, "rbd") {
		r.add(Finding{Check: "pool-application", Severity: Fail, Subject: pool,
			Message: fmt.Sprintf("the pool is not tagged for RBD (applications: %s): Ceph warns POOL_APP_NOT_ENABLED and the pool was never initialised for RBD", orNone(apps)),
			Fix:     []string{"rbd pool init " + pool}})
		return true
	}
	r.add(Finding{Check: "pool-application", Severity: OK, Subject: pool, Message: "pool exists with application rbd"})
	return true
}

func checkQuota(ctx context.Context, c *cephadmin.Client, pool string, warnAt float64, r *Report) {
	if warnAt <= 0 || warnAt > 1 {
		warnAt = 0.8
	}
	u, err := c.Usage(ctx, pool)
	if errors.Is(err, ceph.ErrUnavailable) || errors.Is(err, ceph.ErrNotFound) {
		// A pool created moments ago has no usage stats yet.
		r.add(Finding{Check: "pool-quota", Severity: Warn, Subject: pool, Message: "no usage figures for the pool yet: " + err.Error(),
			Fix: []string{"run rbd-csi doctor again in a minute"}})
		return
	}
	if err != nil {
		r.add(queryFailed("pool-quota", pool, err))
		return
	}
	if u.QuotaBytes == 0 {
		r.add(Finding{Check: "pool-quota", Severity: OK, Subject: pool, Message: fmt.Sprintf("no quota; %s stored, %s available", sizeOf(u.UsedBytes), sizeOf(u.MaxAvail))})
		return
	}
	share := float64(u.UsedBytes) / float64(u.QuotaBytes)
	msg := fmt.Sprintf("%s of the %s quota stored (%.0f%%)", sizeOf(u.UsedBytes), sizeOf(u.QuotaBytes), 100*share)
	fix := []string{fmt.Sprintf("raise the quota: ceph osd pool set-quota %s max_bytes %d", pool, 2*u.QuotaBytes), "or delete unused volumes (and their snapshots) in the pool"}
	switch {
	case share >= 1:
		r.add(Finding{Check: "pool-quota", Severity: Fail, Subject: pool, Message: msg + ": writes to every volume in the pool block", Fix: fix})
	case share >= warnAt:
		r.add(Finding{Check: "pool-quota", Severity: Warn, Subject: pool, Message: msg + ": nearly full", Fix: fix})
	default:
		r.add(Finding{Check: "pool-quota", Severity: OK, Subject: pool, Message: msg})
	}
}

func checkUser(ctx context.Context, c *cephadmin.Client, user, pool string, r *Report) {
	caps, found, err := c.UserCaps(ctx, user)
	if err != nil {
		r.add(queryFailed("user-caps", "client."+user, err))
		return
	}
	want := cephadmin.RecommendedCaps(orDefault(pool, params.DefaultPool))
	setCaps := cephadmin.Command(append([]string{"ceph", "auth", "caps", "client." + user}, want.Args()...)...)
	if !found {
		r.add(Finding{Check: "user-caps", Severity: Fail, Subject: "client." + user, Message: "no such cephx user",
			Fix: []string{fmt.Sprintf("rbd-csi setup --pool %s --user %s", orDefault(pool, params.DefaultPool), user)}})
		return
	}
	if pool == "" {
		return
	}
	v := caps.Judge(pool)
	switch {
	case !v.CreateAndMap:
		r.add(Finding{Check: "user-caps", Severity: Fail, Subject: "client." + user,
			Message: fmt.Sprintf("the user cannot create or map images in pool %s: %s", pool, strings.Join(v.Missing, "; ")),
			Fix:     []string{setCaps + " (replaces all its caps)"}})
	case !v.MgrTasks:
		r.add(Finding{Check: "user-caps", Severity: Warn, Subject: "client." + user,
			Message: fmt.Sprintf("the user can create and map images in pool %s, but the ceph-mgr refuses its trash purges and flattens (no mgr 'profile rbd pool=%s'); the driver runs them itself, slower", pool, pool),
			Fix:     []string{setCaps + " (replaces all its caps)"}})
	default:
		r.add(Finding{Check: "user-caps", Severity: OK, Subject: "client." + user, Message: "caps allow creating, mapping and mgr tasks in pool " + pool})
	}
}

// checkKernels compares what the cluster requires of kernel clients with
// the nodes' kernels: the CRUSH tunables profile, straw2 buckets and
// require_min_compat_client, one finding each so each names its own fix.
func checkKernels(ctx context.Context, c *cephadmin.Client, kernels []nodeKernel, r *Report) {
	t, err := c.CrushTunables(ctx)
	if err != nil {
		r.add(queryFailed("crush-tunables", "", err))
		return
	}
	if len(kernels) == 0 {
		r.add(Finding{Check: "crush-tunables", Severity: Warn, Message: fmt.Sprintf("tunables profile %s in force; no node kernels given to compare with", t.Profile),
			Fix: []string{"give the nodes' kernels: --kubectl (reads kubectl get nodes) or --kernels 5.10,6.1"}})
		return
	}
	oldest := kernels[0]
	tunablesFinding(t.Profile, kernels, r)
	if t.HasStraw2 != 0 {
		if late := below(kernels, mapper.Straw2Since); len(late) > 0 {
			r.add(Finding{Check: "crush-straw2", Severity: Fail, Subject: strings.Join(late, ", "),
				Message: fmt.Sprintf("the CRUSH map has straw2 buckets, which krbd understands from kernel %s: krbd maps on these nodes fail", mapper.Straw2Since),
				Fix:     []string{fmt.Sprintf("upgrade the kernel to %s or later", mapper.Straw2Since), "StorageClass parameter mounter: rbd-nbd (userspace librbd)"}})
		}
	}
	rel, err := c.RequireMinCompatClient(ctx)
	if err != nil {
		r.add(queryFailed("min-compat-client", "", err))
		return
	}
	since, known := mapper.MinCompatClientSince(rel)
	switch {
	case rel == "":
	case !known:
		r.add(Finding{Check: "min-compat-client", Severity: Warn, Subject: oldest.label(),
			Message: fmt.Sprintf("require_min_compat_client is %s; which kernels satisfy it is not known here", rel),
			Fix:     []string{"map a test image on the oldest node (rbd map) before relying on krbd", "StorageClass parameter mounter: rbd-nbd"}})
	default:
		if late := below(kernels, since); len(late) > 0 {
			r.add(Finding{Check: "min-compat-client", Severity: Fail, Subject: strings.Join(late, ", "),
				Message: fmt.Sprintf("require_min_compat_client is %s: the monitors refuse kernel clients older than %s", rel, since),
				Fix: []string{fmt.Sprintf("upgrade the kernel to %s or later", since), "StorageClass parameter mounter: rbd-nbd",
					"lower it with `ceph osd set-require-min-compat-client <release>` (refused while the cluster uses features of the newer release, e.g. pg-upmap)"}})
		}
	}
}

func tunablesFinding(profile string, kernels []nodeKernel, r *Report) {
	since, known := mapper.TunablesSince(profile)
	if !known {
		r.add(Finding{Check: "crush-tunables", Severity: Warn, Subject: kernels[0].label(),
			Message: fmt.Sprintf("tunables profile %q is not one this table knows: cannot tell which kernels map with it", profile),
			Fix:     []string{"ceph osd crush show-tunables; set a named profile with `ceph osd crush tunables <profile>`"}})
		return
	}
	late := below(kernels, since)
	if len(late) == 0 {
		r.add(Finding{Check: "crush-tunables", Severity: OK,
			Message: fmt.Sprintf("tunables profile %s in force: kernels from %s map; oldest node kernel %s", profile, since, kernels[0].Kernel)})
		return
	}
	fix := []string{}
	if target := mapper.NewestTunablesFor(kernels[0].v); target != "" {
		fix = append(fix, fmt.Sprintf("ceph osd crush tunables %s (cost: the cluster rebalances, moving a large share of the data; hours of extra I/O on a big cluster, and the placement of the newer profile is lost)", target))
	}
	fix = append(fix, fmt.Sprintf("upgrade the kernel of these nodes to %s or later", since), "StorageClass parameter mounter: rbd-nbd (userspace librbd does not depend on the kernel)")
	r.add(Finding{Check: "crush-tunables", Severity: Fail, Subject: strings.Join(late, ", "),
		Message: fmt.Sprintf("CRUSH tunables profile %s in force needs kernel %s or later: krbd maps on these nodes fail (libceph: feature set mismatch)", profile, since),
		Fix:     fix})
}

// krbdUsers says whether volumes with mounter m are mapped by krbd.
func krbdUsers(m, nodeDefault string) bool {
	if m == "" {
		m = orDefault(nodeDefault, "krbd")
	}
	return m == "krbd"
}

func checkStorageClasses(scs []StorageClass, kernels []nodeKernel, nodeMapper string, r *Report) {
	for _, sc := range scs {
		v, err := params.ParseVolume(sc.Parameters)
		if err != nil {
			r.add(Finding{Check: "storageclass", Severity: Fail, Subject: sc.Name, Message: "every CreateVolume fails: " + err.Error(),
				Fix: []string{"recreate the StorageClass with the parameter corrected (StorageClass parameters cannot be edited)"}})
			continue
		}
		if !krbdUsers(v.Mounter, nodeMapper) || len(kernels) == 0 {
			continue
		}
		missing, _ := mapper.KernelUnsupportedFeatures(kernels[0].v, v.Features)
		if missing == 0 {
			r.add(Finding{Check: "storageclass-features", Severity: OK, Subject: sc.Name, Message: fmt.Sprintf("imageFeatures %s map with krbd on every node", v.Features)})
			continue
		}
		r.add(Finding{Check: "storageclass-features", Severity: Fail, Subject: sc.Name,
			Message: fmt.Sprintf("imageFeatures %s: krbd on %s cannot map %s; its volumes provision, then their pods stay ContainerCreating", v.Features, strings.Join(lacking(kernels, v.Features), ", "), strings.Join(missing.Names(), ", ")),
			Fix: []string{"recreate the StorageClass with imageFeatures: layering (add only what every node's kernel supports)",
				"StorageClass parameter mounter: rbd-nbd", "upgrade the node kernels"}})
	}
}

// lacking lists the nodes whose krbd cannot map an image with features.
func lacking(kernels []nodeKernel, features ceph.Features) []string {
	var out []string
	for _, k := range kernels {
		if m, _ := mapper.KernelUnsupportedFeatures(k.v, features); m != 0 {
			out = append(out, k.label())
		}
	}
	return out
}

// maxImageFindings bounds the per-image findings of one pool; the rest are
// counted in one more.
const maxImageFindings = 20

func checkImages(ctx context.Context, c *cephadmin.Client, pool string, kernels []nodeKernel, nodeMapper string, r *Report) {
	if len(kernels) == 0 || !krbdUsers("", nodeMapper) {
		return
	}
	images, err := c.ImageFeatures(ctx, pool)
	if err != nil {
		r.add(queryFailed("image-features", pool, err))
		return
	}
	var names []string
	for n := range images {
		names = append(names, n)
	}
	slices.Sort(names)
	bad := 0
	for _, n := range names {
		missing, _ := mapper.KernelUnsupportedFeatures(kernels[0].v, images[n])
		if missing == 0 {
			continue
		}
		bad++
		if bad > maxImageFindings {
			continue
		}
		spec := ceph.ImageRef{Cluster: c.Access.Cluster, Pool: pool, Name: n}.String()
		var fix []string
		if cmd, ok := mapper.FeatureDisableCommand(spec, missing); ok {
			fix = append(fix, cmd)
		}
		fix = append(fix, "a StorageClass with parameter mounter: rbd-nbd for such volumes", "upgrade the node kernels")
		r.add(Finding{Check: "image-features", Severity: Fail, Subject: spec,
			Message: fmt.Sprintf("image has %s: krbd on %s cannot map it", strings.Join(missing.Names(), ", "), strings.Join(lacking(kernels, images[n]), ", ")), Fix: fix})
	}
	if bad > maxImageFindings {
		r.add(Finding{Check: "image-features", Severity: Fail, Subject: pool, Message: fmt.Sprintf("%d more images krbd cannot map (not listed)", bad-maxImageFindings),
			Fix: []string{"rbd info on each; rbd feature disable as above"}})
	}
	if bad == 0 {
		r.add(Finding{Check: "image-features", Severity: OK, Subject: pool, Message: fmt.Sprintf("all %d images map with krbd on every node", len(names))})
	}
}

func queryFailed(check, subject string, err error) Finding {
	return Finding{Check: check, Severity: Fail, Subject: subject, Message: "could not ask the cluster: " + err.Error(),
		Fix: []string{"check the admin user's caps (mon 'allow *' or at least read) and the cluster's health (ceph -s)"}}
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// sizeOf prints a size in binary units.
func sizeOf(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
