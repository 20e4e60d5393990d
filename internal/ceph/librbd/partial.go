package librbd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/ceph/go-ceph/rados"
	"github.com/ceph/go-ceph/rbd"
	"k8s.io/klog/v2"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// RemovePartialImage implements ceph.Backend.
//
// Two crashes leave pieces under an image name that librbd does not clean
// up by itself:
//   - A create cut short leaves the name in rbd_directory and/or the
//     rbd_id.<name> object, but no header: nothing opens it, and the next
//     create of the name fails with EEXIST. These pieces are removed here by
//     hand, the directory entry last, so that a crash in the middle leaves
//     the name for the retry to find.
//   - A removal cut short (librbd's rbd_remove first moves the image to the
//     trash with source REMOVING, then removes it) leaves a trash entry that
//     `rbd trash ls` and rbd_trash_list never show, with the image's data and
//     its reference on a clone parent's snapshot. finishRemovals completes
//     those; it runs first here and before every clone (see CloneImage),
//     the two paths a retry takes after such a crash.
func (b *Backend) RemovePartialImage(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef) error {
	return b.onPool(ctx, "remove partial image", ref, cr, func(_ *conn, io *rados.IOContext) error {
		// Age first: a caller waiting for another's create asks again and
		// again, and young pieces need no read of the whole trash.
		if err := checkAbandoned(io, ref.Name, b.opts.PartialGrace); err != nil {
			return err
		}
		if err := finishRemovals(io, ref.Name); err != nil {
			return err
		}
		return removePartial(io, ref.Name)
	})
}

func removePartial(io *rados.IOContext, name string) error {
	id, err := imageIDOf(io, name)
	if err != nil {
		return err
	}
	_, err = io.Stat(headerObject(id))
	if err == nil {
		// A whole image (for example a clone whose owner record was never
		// written): librbd removes its data, snapshots' references and all.
		return rbd.RemoveImage(io, name)
	}
	if !isErrno(err, syscall.ENOENT) {
		return fmt.Errorf("look for the header of %s: %w", name, err)
	}
	klog.InfoS("Removing the pieces of an image whose creation was interrupted", "image", name, "id", id)
	return forgetName(io, name, id)
}

// checkAbandoned answers ErrInProgress while the rbd_id object, the first
// thing librbd's create writes, is younger than grace. Its mtime comes from
// the writer's clock; skew only delays a clean-up. A name without the
// object is what forgetName leaves when cut short, so it is abandoned.
func checkAbandoned(io *rados.IOContext, name string, grace time.Duration) error {
	st, err := io.Stat(idObject(name))
	if isErrno(err, syscall.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look at %s: %w", idObject(name), err)
	}
	if age := time.Since(st.ModTime); age < grace {
		return fmt.Errorf("%w: image %s has no header yet or no owner record, and its name was taken %v ago; pieces younger than %v may be a create still running (in another controller, or one abandoned at its caller's deadline) and are left alone", ceph.ErrInProgress, name, age.Round(time.Second), grace)
	}
	return nil
}

// imageIDOf finds the ID a name stands for: the directory entry, else the
// rbd_id object (librbd releases differ in which of the two they write
// first).
func imageIDOf(io *rados.IOContext, name string) (string, error) {
	op := rados.CreateReadOp()
	defer op.Release()
	step := op.Exec("rbd", "dir_get_id", encodeStrings(name))
	err := op.Operate(io, "rbd_directory", rados.OperationNoFlag)
	if isErrno(err, syscall.ENOENT) {
		return readImageID(io, name)
	}
	if err != nil {
		return "", fmt.Errorf("look up %s in rbd_directory: %w", name, err)
	}
	out, err := step.Bytes()
	if err != nil {
		return "", fmt.Errorf("look up %s in rbd_directory: %w", name, err)
	}
	id, _, err := decodeString(out)
	if err != nil {
		return "", fmt.Errorf("rbd_directory entry of %s: %w", name, err)
	}
	return id, nil
}

// forgetName removes the name -> id records of an image: the rbd_id object
// (only while it still names id: a newer image may have taken the name)
// and then the directory entry. Both steps are idempotent.
func forgetName(io *rados.IOContext, name, id string) error {
	if cur, err := readImageID(io, name); err == nil && cur == id {
		if err := io.Delete(idObject(name)); err != nil && !isErrno(err, syscall.ENOENT) {
			return fmt.Errorf("remove %s: %w", idObject(name), err)
		}
	}
	if err := clsExec(io, "rbd_directory", "dir_remove_image", encodeStrings(name, id)); err != nil && !isErrno(err, syscall.ENOENT) {
		return fmt.Errorf("remove %s from rbd_directory: %w", name, err)
	}
	return nil
}

// finishRemovals completes the removals of images named name that were cut
// short inside rbd_remove (trash entries with source REMOVING).
func finishRemovals(io *rados.IOContext, name string) error {
	entries, err := trashRecords(io)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.name != name || e.source != trashSourceRemoving {
			continue
		}
		if e.state == trashStateMoving {
			if err := finishTrashMove(io, name, e.id); err != nil {
				return err
			}
		}
		err := rbd.TrashRemove(io, e.id, true)
		if err != nil && !isErrno(err, syscall.ENOENT) {
			return fmt.Errorf("finish the interrupted removal of %s (trash entry %s): %w", name, e.id, err)
		}
		klog.InfoS("Finished the removal of an image that a crash interrupted", "image", name, "id", e.id)
	}
	return nil
}

// trashRecord is one rbd_trash entry as cls_rbd stores it.
type trashRecord struct {
	id      string
	name    string
	source  byte
	state   byte
	deleted time.Time
}

// cls_rbd's TrashImageSource value for an image rbd_remove is removing.
const trashSourceRemoving byte = 3

// trashRecords reads every rbd_trash entry from the omap, including those
// rbd_trash_list hides.
func trashRecords(io *rados.IOContext) ([]trashRecord, error) {
	vals, err := io.GetAllOmapValues("rbd_trash", "", trashKeyPrefix, 512)
	if isErrno(err, syscall.ENOENT) {
		return nil, nil // a pool whose trash was never used
	}
	if err != nil {
		return nil, fmt.Errorf("read rbd_trash: %w", err)
	}
	out := make([]trashRecord, 0, len(vals))
	for key, val := range vals {
		rec, err := decodeTrashRecord(val)
		if err != nil {
			return nil, fmt.Errorf("rbd_trash entry %s: %w", key, err)
		}
		rec.id = key[len(trashKeyPrefix):]
		out = append(out, rec)
	}
	return out, nil
}

const trashKeyPrefix = "id_"

// decodeTrashRecord decodes cls::rbd::TrashImageSpec: a versioned struct
// (u8 version, u8 compat, u32 length) holding the source (u8), the name
// (string), the deletion and deferment times (utime, 8 bytes each) and,
// from version 2, the state (u8).
func decodeTrashRecord(b []byte) (trashRecord, error) {
	if len(b) < 6 {
		return trashRecord{}, errors.New("truncated header")
	}
	version, length := b[0], int(binary.LittleEndian.Uint32(b[2:6]))
	body := b[6:]
	if length > len(body) {
		return trashRecord{}, fmt.Errorf("length %d beyond the %d bytes held", length, len(body))
	}
	body = body[:length]
	if len(body) < 1 {
		return trashRecord{}, errors.New("no source")
	}
	rec := trashRecord{source: body[0]}
	name, rest, err := decodeString(body[1:])
	if err != nil {
		return trashRecord{}, fmt.Errorf("name: %w", err)
	}
	rec.name = name
	if len(rest) < 16 {
		return trashRecord{}, errors.New("truncated times")
	}
	rec.deleted = time.Unix(int64(binary.LittleEndian.Uint32(rest[:4])), int64(binary.LittleEndian.Uint32(rest[4:8])))
	rest = rest[16:]
	if version >= 2 && len(rest) >= 1 {
		rec.state = rest[0]
	}
	return rec, nil
}

// decodeString decodes a Ceph-encoded string (u32 length, bytes) and
// returns what follows it.
func decodeString(b []byte) (string, []byte, error) {
	if len(b) < 4 {
		return "", nil, errors.New("truncated length")
	}
	l := binary.LittleEndian.Uint32(b[:4])
	if uint64(l) > uint64(len(b)-4) {
		return "", nil, fmt.Errorf("length %d beyond the %d bytes held", l, len(b)-4)
	}
	return string(b[4 : 4+l]), b[4+l:], nil
}
