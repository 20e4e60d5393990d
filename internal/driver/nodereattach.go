package driver

import (
	"context"
	"errors"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/node/mapper"
)

// reattachVolumeTimeout bounds the start-up re-attach of one volume: the
// image read (itself bounded by --ceph-timeout) and the rbd-nbd attach.
const reattachVolumeTimeout = 2 * time.Minute

// reattachPass serves again, at plugin start-up, the devices whose
// serving processes died with the plugin's container (rbd-nbd): the
// kubelet does not restage a volume in use (docs/design.md, "rbd-nbd
// across a node plugin container restart").
type reattachPass struct {
	cancel context.CancelFunc
	done   sync.WaitGroup
}

// reattachCandidate is one recorded volume the pass looks at, with its
// node lock already held.
type reattachCandidate struct {
	st     *stageState
	unlock func()
}

// startReattach locks every recorded volume of a mapper that can re-attach,
// so that no node call for it runs before the pass has looked at it, then
// handles them in the background, one at a time.
func (d *nodeService) startReattach() *reattachPass {
	ctx, cancel := context.WithCancel(context.Background())
	p := &reattachPass{cancel: cancel}
	var todo []reattachCandidate
	for _, staging := range d.index.stagingPaths() {
		st, err := loadState(staging)
		if err != nil || st == nil || st.Device == nil {
			continue
		}
		if _, ok := d.mappers[st.Mapper].(mapper.Reattacher); !ok {
			continue
		}
		unlock, err := d.lockNodeVolume(ctx, st.VolumeID)
		if err != nil {
			continue
		}
		todo = append(todo, reattachCandidate{st: st, unlock: unlock})
	}
	p.done.Add(1)
	go func() {
		defer p.done.Done()
		for _, c := range todo {
			if ctx.Err() == nil {
				d.reattachVolume(ctx, c.st)
			}
			c.unlock()
		}
	}()
	return p
}

// stop ends the pass early (server shutdown) and waits for it.
func (p *reattachPass) stop() {
	p.cancel()
	p.done.Wait()
}

// reattachVolume re-attaches one volume's device when its process is gone
// and says in one log line what it found.
func (d *nodeService) reattachVolume(ctx context.Context, st *stageState) {
	ctx, cancel := context.WithTimeout(ctx, reattachVolumeTimeout)
	defer cancel()
	m := d.mappers[st.Mapper]
	dev := *st.Device
	healthy, state := m.Check(ctx, dev)
	if healthy {
		klog.V(2).InfoS("Start-up re-attach: device still served", "volume", st.VolumeID, "device", dev.Path)
		return
	}
	ref := d.stagedImage(st)
	creds, err := d.nodeCredentials(st.Image.ClusterID)
	if err != nil {
		klog.InfoS("Start-up re-attach: no credential for the volume's cluster, device left as it is", "volume", st.VolumeID, "device", dev.Path, "image", ref.String(), "cluster", st.Image.ClusterID, "state", state, "fix", err.Error())
		return
	}
	info, err := d.opts.Backend.ReadHeader(ctx, creds, ref)
	if err != nil {
		klog.ErrorS(err, "Start-up re-attach: cannot read the image; the next NodeStageVolume re-attaches it", "volume", st.VolumeID, "device", dev.Path, "image", ref.String())
		return
	}
	res, err := m.(mapper.Reattacher).Reattach(ctx, mapperImage(ref, creds, info), mapper.MapOptions{ReadOnly: st.ReadOnly, Extra: st.MapOptions}, dev)
	switch {
	case err != nil:
		klog.ErrorS(err, "Start-up re-attach failed; the next NodeStageVolume retries it", "volume", st.VolumeID, "device", dev.Path, "image", ref.String())
	case res == mapper.Reattached:
		klog.InfoS("Start-up re-attach: device served again, its queued I/O resumes", "volume", st.VolumeID, "device", dev.Path, "image", ref.String())
	case res == mapper.ReattachGone:
		klog.ErrorS(nil, "Start-up re-attach: device was disconnected before a new process could serve it (its reattach timeout expired, see --nbd-reattach-timeout); I/O on it has failed: restart the pods using the volume so that it is staged again",
			"volume", st.VolumeID, "device", dev.Path, "image", ref.String())
	default:
		klog.InfoS("Start-up re-attach: device left alone", "volume", st.VolumeID, "device", dev.Path, "image", ref.String(), "found", res.String())
	}
}

// stagedImage is the image a stage state names, with the cluster's current
// monitors when its clusterID is still configured.
func (d *nodeService) stagedImage(st *stageState) ceph.ImageRef {
	cl := ceph.Cluster{ID: st.Image.ClusterID, Monitors: st.Image.Monitors}
	if st.Image.ClusterID != "" {
		if conf, err := d.opts.Clusters.Lookup(st.Image.ClusterID); err == nil {
			cl.Monitors = conf.Monitors
		}
	}
	cl.RadosNamespace = st.Image.Namespace
	return ceph.ImageRef{Cluster: cl, Pool: st.Image.Pool, Name: st.Image.Name}
}

// errNoNodeCredential explains how to give the node plugin a credential of
// its own.
var errNoNodeCredential = errors.New("give the node plugin a credential for the cluster: userID and userKey files in --secrets-dir/<clusterID>/ (chart: node.reattachCredentials), a user with mon 'profile rbd' and osd 'profile rbd pool=<pool>'; until then only a NodeStageVolume within the reattach timeout re-attaches the device")

// nodeCredentials reads the node's own credential for a cluster from
// --secrets-dir, the controller's layout.
func (d *nodeService) nodeCredentials(clusterID string) (ceph.Credentials, error) {
	cr, err := dirCredentials(d.opts.SecretsDir, clusterID)
	if errors.Is(err, errNoDirSecret) {
		return ceph.Credentials{}, errNoNodeCredential
	}
	return cr, err
}
