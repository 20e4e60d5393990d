package librbd

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"syscall"
	"time"

	"github.com/ceph/go-ceph/rados"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// attachObjectPrefix names the RADOS object holding an image's attachment
// record, in the image's pool and namespace: `rados -p POOL get
// rbd-csi.attach.IMAGE -` prints it.
const attachObjectPrefix = "rbd-csi.attach."

// maxAttachRecord bounds a record read; one claim takes about 150 bytes.
const maxAttachRecord = 256 << 10

// maxErrno: librados reports a cmpext mismatch at offset n as
// -(MAX_ERRNO + n), at or beyond every real errno.
const maxErrno = 4095

// ReadAttachRecord implements ceph.AttachBackend.
func (b *Backend) ReadAttachRecord(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef) ([]byte, error) {
	var out []byte
	err := b.onPool(ctx, "read attachment record of", ref, cr, func(_ *conn, io *rados.IOContext) error {
		buf := make([]byte, maxAttachRecord)
		n, err := io.Read(attachObjectPrefix+ref.Name, buf, 0)
		if err != nil {
			return err
		}
		if n == len(buf) {
			return fmt.Errorf("attachment record is larger than %d bytes: %w", maxAttachRecord, ceph.ErrInvalid)
		}
		if n == 0 {
			// Read of a missing object can answer 0 bytes on some releases.
			return rados.ErrNotFound
		}
		out = buf[:n]
		return nil
	})
	return out, err
}

// SwapAttachRecord implements ceph.AttachBackend with one RADOS write
// operation: an exclusive create, or a compare-extent of prev followed by
// the write or removal. The OSD applies the steps of an operation
// atomically, so two controllers can never both replace the same record.
func (b *Backend) SwapAttachRecord(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef, prev, next []byte) error {
	return b.onPool(ctx, "write attachment record of", ref, cr, func(_ *conn, io *rados.IOContext) error {
		op := rados.CreateWriteOp()
		defer op.Release()
		if prev == nil {
			op.Create(rados.CreateExclusive)
		} else {
			op.CmpExt(prev, 0)
		}
		if next == nil {
			op.Remove()
		} else {
			op.WriteFull(next)
		}
		err := op.Operate(io, attachObjectPrefix+ref.Name, rados.OperationNoFlag)
		if prev != nil && err != nil && (errno(err) >= maxErrno || isErrno(err, syscall.ENOENT)) {
			return fmt.Errorf("%w: %v", ceph.ErrConflict, err)
		}
		return err
	})
}

// Blocklist implements ceph.AttachBackend. Its operation name makes each
// fenced client one "blocklist_client" operation in the metrics.
//
// The monitor answers once the entry is in a committed OSD map, but the
// OSDs learn of that map later: until then they still take the fenced
// client's writes (`make chaos` saw one land 0.1 s after the fence
// returned, on a loaded machine). So the call returns only once this
// connection holds that map: every later operation on it carries the new
// epoch, and an OSD behind it catches up before serving that operation;
// the attach record's update, which follows every fence, therefore makes
// the OSD holding it refuse the fenced client before the detach returns.
// Another OSD applies the entry when the map reaches it or when the new
// node's first request does, whichever comes first: the model of librbd's
// own lock break.
func (b *Backend) Blocklist(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, addr string, expiry time.Duration) error {
	req, err := json.Marshal(map[string]any{"prefix": "osd blocklist", "blocklistop": "add", "addr": addr,
		// A whole number would encode as a JSON integer, which the monitor
		// refuses for this float field.
		"expire": json.RawMessage(strconv.FormatFloat(expiry.Seconds(), 'f', 1, 64))})
	if err != nil {
		return fmt.Errorf("encode blocklist command: %w", err)
	}
	return b.run(ctx, "blocklist client", addr, cl, cr, func(c *conn) error {
		_, status, err := c.rc.MonCommand(req)
		if err != nil {
			return fmt.Errorf("%w (%s)", err, status)
		}
		if err := c.rc.WaitForLatestOSDMap(); err != nil {
			return fmt.Errorf("blocklisted, but waiting for the OSD map that holds the entry: %w", err)
		}
		return nil
	})
}
