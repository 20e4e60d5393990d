package librbd

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/ceph/go-ceph/rados"
	"k8s.io/klog/v2"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

const (
	// directoryObject maps image names to IDs (omap "name_<name>" →
	// encoded ID) for the format 2 images of a pool or namespace.
	directoryObject = "rbd_directory"
	dirNamePrefix   = "name_"
	// directoryPage is how many directory entries one read returns.
	directoryPage = 1000
	// metadataReaders bounds the header reads MetadataByID keeps in flight.
	metadataReaders = 16
)

// ListImageIDs implements ceph.Backend. It reads the directory object
// cls_rbd's dir_list reads, one round trip per directoryPage images, where
// learning IDs through librbd would open every image.
func (b *Backend) ListImageIDs(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, pool string) ([]ceph.ImageEntry, error) {
	var out []ceph.ImageEntry
	ref := ceph.ImageRef{Cluster: cl, Pool: pool}
	err := b.onPool(ctx, "list image IDs of", ref, cr, func(_ *conn, io *rados.IOContext) error {
		var err error
		out, err = readDirectory(io, ref)
		return err
	})
	return out, err
}

// readDirectory lists the directory. Entries it cannot decode are left
// out, and said so in the log with their names, so that one damaged entry
// neither hides the rest nor goes unnoticed; a directory of nothing but
// damaged entries is an error.
func readDirectory(io *rados.IOContext, ref ceph.ImageRef) ([]ceph.ImageEntry, error) {
	vals, err := io.GetAllOmapValues(directoryObject, "", dirNamePrefix, directoryPage)
	if errors.Is(err, rados.ErrNotFound) {
		return nil, nil // no image was ever made here
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", directoryObject, err)
	}
	out, bad := decodeDirectory(vals)
	if len(bad) == 0 {
		return out, nil
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s of %s: no readable entry; the first unreadable: %w", directoryObject, ref, bad[0])
	}
	names := make([]string, 0, len(bad))
	for _, e := range bad {
		names = append(names, e.name)
	}
	klog.ErrorS(bad[0], "Left unreadable rbd_directory entries out of the listing: those images are not listed until the entries are repaired (rbd ls reads the same directory)",
		"pool", ref.String(), "entries", names)
	return out, nil
}

// badEntry is a directory entry whose value does not decode.
type badEntry struct {
	name string
	err  error
}

func (e badEntry) Error() string {
	return fmt.Sprintf("directory entry of image %q: %v", e.name, e.err)
}

// decodeDirectory turns directory omap values ("name_<image>" → encoded
// ID) into entries sorted by name, and the entries it could not decode,
// also sorted.
func decodeDirectory(vals map[string][]byte) ([]ceph.ImageEntry, []badEntry) {
	var out []ceph.ImageEntry
	var bad []badEntry
	for k, v := range vals {
		name := strings.TrimPrefix(k, dirNamePrefix)
		id, _, err := decodeString(v)
		if err != nil {
			bad = append(bad, badEntry{name: name, err: err})
			continue
		}
		out = append(out, ceph.ImageEntry{Name: name, ID: id})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	sort.Slice(bad, func(i, j int) bool { return bad[i].name < bad[j].name })
	return out, bad
}

// MetadataByID implements ceph.Backend: one omap read of each image's
// header object (where cls_rbd keeps image-meta as "metadata_<key>"),
// metadataReaders at a time, instead of an open, a read and a close each.
func (b *Backend) MetadataByID(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, pool, key string, ids []string) (map[string]string, error) {
	out := make(map[string]string, len(ids))
	ref := ceph.ImageRef{Cluster: cl, Pool: pool}
	err := b.onPool(ctx, "read image-meta "+key+" in", ref, cr, func(_ *conn, io *rados.IOContext) error {
		var mu sync.Mutex
		var firstErr error
		sem := make(chan struct{}, metadataReaders)
		var wg sync.WaitGroup
		stopped := func() bool { // a failed read or an ended call: start no more
			mu.Lock()
			defer mu.Unlock()
			return firstErr != nil || ctx.Err() != nil
		}
		cut := false
		for _, id := range ids {
			sem <- struct{}{}
			if cut = stopped(); cut {
				<-sem
				break
			}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				v, ok, err := readHeaderMetadata(io, id, key)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil && firstErr == nil:
					firstErr = err
				case ok:
					out[id] = v
				}
			}()
		}
		wg.Wait()
		if firstErr == nil && cut {
			firstErr = ctx.Err() // some images were never read
		}
		return firstErr
	})
	return out, err
}

func readHeaderMetadata(io *rados.IOContext, id, key string) (string, bool, error) {
	op := rados.CreateReadOp()
	defer op.Release()
	step := op.GetOmapValuesByKeys([]string{metadataPrefix + key})
	err := op.Operate(io, headerObject(id), rados.OperationNoFlag)
	if errors.Is(err, rados.ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("image-meta of image ID %s: %w", id, err)
	}
	kv, err := step.Next()
	if err != nil || kv == nil {
		return "", false, err
	}
	return string(kv.Value), true, nil
}
