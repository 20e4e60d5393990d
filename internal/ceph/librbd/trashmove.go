package librbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"

	"github.com/ceph/go-ceph/rados"
	"k8s.io/klog/v2"
)

// librbd moves an image to the trash in steps (pacific's Trash::move):
// add a trash entry in state MOVING, remove the rbd_id.<name> object,
// remove the name from rbd_directory, then set the entry to NORMAL. A
// process killed in between leaves an entry that every later removal
// refuses (EUCLEAN, "image not fully moved to trash"), a name listed in
// the directory that no longer opens, and a ceph-mgr purge task that
// retries forever. finishTrashMove completes those steps for the entry;
// each one is idempotent, so it is safe on an entry that is fine.
func finishTrashMove(io *rados.IOContext, name, id string) error {
	if err := forgetName(io, name, id); err != nil {
		return err
	}
	// ESTALE: the entry is not MOVING (already NORMAL, or being removed).
	err := clsExec(io, "rbd_trash", "trash_state_set", append(encodeStrings(id), trashStateNormal, trashStateMoving))
	if err != nil && !isErrno(err, syscall.ESTALE) && !isErrno(err, syscall.ENOENT) {
		return fmt.Errorf("mark trash entry %s of %s as fully moved: %w", id, name, err)
	}
	return nil
}

// finishTrashMovesOf completes the move of every trash entry named name
// that a crash left MOVING and returns the IDs of all the entries a trash
// move made under the name (not those of rbd_remove, see finishRemovals).
func finishTrashMovesOf(io *rados.IOContext, name string) ([]string, error) {
	recs, err := trashRecords(io)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, r := range recs {
		if r.name != name || r.source == trashSourceRemoving {
			continue
		}
		if r.state == trashStateMoving {
			if err := finishTrashMove(io, name, r.id); err != nil {
				return nil, err
			}
		}
		klog.V(2).InfoS("Found the image in the trash, moved there by an earlier attempt", "image", name, "id", r.id)
		ids = append(ids, r.id)
	}
	return ids, nil
}

// cls_rbd's TrashImageState values, encoded as one byte.
const (
	trashStateNormal byte = 0
	trashStateMoving byte = 1
)

// clsExec runs one cls method as a write operation on oid.
func clsExec(io *rados.IOContext, oid, method string, in []byte) error {
	op := rados.CreateWriteOp()
	defer op.Release()
	op.Exec("rbd", method, in)
	return op.Operate(io, oid, rados.OperationNoFlag)
}

// encodeStrings encodes strings the way Ceph's encode(std::string) does:
// a little-endian u32 length, then the bytes.
func encodeStrings(ss ...string) []byte {
	var out []byte
	for _, s := range ss {
		out = binary.LittleEndian.AppendUint32(out, uint32(len(s)))
		out = append(out, s...)
	}
	return out
}

func isErrno(err error, e syscall.Errno) bool {
	return err != nil && (syscall.Errno(errno(err)) == e || errors.Is(err, e))
}
