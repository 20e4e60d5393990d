package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/clusterconfig"
	"github.com/rbd-csi/rbd-csi/internal/params"
	"github.com/rbd-csi/rbd-csi/internal/volid"
)

// clusterFor resolves the cluster a StorageClass names. A legacy monitors
// list that matches a configured cluster uses that cluster's ID, which keeps
// volume IDs short and lets monitors change later.
func (d *shared) clusterFor(p params.Volume) (ceph.Cluster, error) {
	if p.ClusterID != "" {
		cl, err := d.opts.Clusters.Lookup(p.ClusterID)
		if err != nil {
			return ceph.Cluster{}, invalid("parameter clusterID: %v", err)
		}
		return cl, nil
	}
	if cl, ok := d.opts.Clusters.FindByMonitors(p.Monitors); ok {
		return cl, nil
	}
	return ceph.Cluster{Monitors: p.Monitors}, nil
}

// clusterForID resolves the cluster a volume ID names.
func (d *shared) clusterForID(id volid.ID) (ceph.Cluster, error) {
	if id.ClusterID == "" {
		return ceph.Cluster{Monitors: id.Monitors}, nil
	}
	cl, err := d.opts.Clusters.Lookup(id.ClusterID)
	if errors.Is(err, clusterconfig.ErrUnknownCluster) {
		// The volume exists somewhere we can no longer reach: refusing is
		// safer than reporting success and leaking the image.
		return ceph.Cluster{}, status.Errorf(codes.FailedPrecondition, "volume belongs to cluster %q, which the cluster config no longer lists: restore its entry", id.ClusterID)
	}
	return cl, err
}

// poolAccess is a pool the controller has worked with, and the credentials
// it used, for the calls that carry no secrets (GetCapacity, ListVolumes).
// Credentials stay in memory only.
type poolAccess struct {
	cluster ceph.Cluster
	pool    string
	creds   ceph.Credentials
	// discovered: found through --secrets-dir credentials rather than used
	// by a call; a pool those credentials may not read is skipped.
	discovered bool
}

func (a poolAccess) key() string { return a.cluster.Key() + "|" + a.pool }

type knownPools struct {
	mu    sync.Mutex
	pools map[string]poolAccess
}

func newKnownPools() *knownPools { return &knownPools{pools: map[string]poolAccess{}} }

func (k *knownPools) remember(cl ceph.Cluster, pool string, cr ceph.Credentials) {
	k.mu.Lock()
	defer k.mu.Unlock()
	a := poolAccess{cluster: cl, pool: pool, creds: cr}
	k.pools[a.key()] = a
}

// list returns the known pools in a stable order.
func (k *knownPools) list() []poolAccess {
	k.mu.Lock()
	defer k.mu.Unlock()
	keys := make([]string, 0, len(k.pools))
	for key := range k.pools {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	out := make([]poolAccess, 0, len(keys))
	for _, key := range keys {
		out = append(out, k.pools[key])
	}
	return out
}

func (k *knownPools) lookup(cl ceph.Cluster, pool string) (ceph.Credentials, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	a, ok := k.pools[poolAccess{cluster: cl, pool: pool}.key()]
	return a.creds, ok
}

// listingPools is what ListVolumes, ListSnapshots and GetCapacity without
// parameters cover: the pools this process has worked with and, for every
// configured cluster with credentials under --secrets-dir, its RBD pools.
// So a controller that has just started answers as one that has served
// creates. The order is stable (by cluster and pool) for pagination.
func (d *controllerService) listingPools(ctx context.Context) ([]poolAccess, error) {
	byKey := map[string]poolAccess{}
	if d.opts.SecretsDir != "" {
		for _, cl := range d.opts.Clusters.Clusters() {
			found, err := d.discoverPools(ctx, cl)
			if err != nil {
				return nil, err
			}
			for _, a := range found {
				byKey[a.key()] = a
			}
		}
	}
	for _, a := range d.usedPools.list() {
		byKey[a.key()] = a // credentials a call has shown work
	}
	out := make([]poolAccess, 0, len(byKey))
	for _, a := range byKey {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key() < out[j].key() })
	return out, nil
}

// discoverPools lists the RBD pools of cl with the credentials under
// --secrets-dir/<clusterID>/, none when there are none.
func (d *controllerService) discoverPools(ctx context.Context, cl ceph.Cluster) ([]poolAccess, error) {
	cr, err := dirCredentials(d.opts.SecretsDir, cl.ID)
	if errors.Is(err, errNoDirSecret) {
		return nil, nil
	}
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	pools, err := d.opts.Backend.RBDPools(ctx, cr, cl)
	if err != nil {
		return nil, statusOf(err, fmt.Sprintf("list the RBD pools of cluster %q with the credentials in %s", cl.ID, filepath.Join(d.opts.SecretsDir, cl.ID)))
	}
	out := make([]poolAccess, len(pools))
	for i, p := range pools {
		out[i] = poolAccess{cluster: cl, pool: p, creds: cr, discovered: true}
	}
	return out, nil
}

// credsFor finds credentials for a call that carries none: a Secret mounted
// under --secrets-dir/<clusterID>/, else those last used for the pool.
func (d *controllerService) credsFor(cl ceph.Cluster, pool string) (ceph.Credentials, error) {
	cr, err := dirCredentials(d.opts.SecretsDir, cl.ID)
	if err == nil {
		return cr, nil
	}
	if !errors.Is(err, errNoDirSecret) {
		return ceph.Credentials{}, status.Error(codes.FailedPrecondition, err.Error())
	}
	if cr, ok := d.usedPools.lookup(cl, pool); ok {
		return cr, nil
	}
	return ceph.Credentials{}, status.Errorf(codes.FailedPrecondition, "no credentials for pool %q: mount a Secret with userID and userKey at %s/<clusterID>/ (--secrets-dir), or create a volume in the pool first", pool, d.opts.SecretsDir)
}

// errNoDirSecret: --secrets-dir holds no Secret for the cluster (the flag
// is unset, the cluster has no ID, or the files are missing).
var errNoDirSecret = errors.New("no Secret for the cluster under --secrets-dir")

// dirCredentials reads the Secret mounted for a cluster under secretsDir
// (userID and userKey in secretsDir/<clusterID>/), the one layout the
// controller and the node share. errNoDirSecret when there is none; other
// errors say why the Secret there is unusable, never quoting the key.
func dirCredentials(secretsDir, clusterID string) (ceph.Credentials, error) {
	if secretsDir == "" || clusterID == "" {
		return ceph.Credentials{}, errNoDirSecret
	}
	dir := filepath.Join(secretsDir, clusterID)
	user, err := os.ReadFile(filepath.Join(dir, params.SecretUserID))
	if errors.Is(err, os.ErrNotExist) {
		return ceph.Credentials{}, errNoDirSecret
	}
	if err != nil {
		return ceph.Credentials{}, fmt.Errorf("the Secret for cluster %q under --secrets-dir is unusable: %w", clusterID, err)
	}
	key, err := os.ReadFile(filepath.Join(dir, params.SecretUserKey))
	if err != nil {
		return ceph.Credentials{}, fmt.Errorf("the Secret for cluster %q under --secrets-dir has %s but no usable %s: %w", clusterID, params.SecretUserID, params.SecretUserKey, err)
	}
	return dirSecret(dir, user, key)
}

func dirSecret(dir string, user, key []byte) (ceph.Credentials, error) {
	cr, err := params.Credentials(map[string]string{
		params.SecretUserID:  strings.TrimSpace(string(user)),
		params.SecretUserKey: strings.TrimSpace(string(key)),
	}, "")
	if err != nil {
		return ceph.Credentials{}, fmt.Errorf("the Secret in %s is unusable: %w", dir, err)
	}
	return cr, nil
}
