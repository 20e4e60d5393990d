package kms

import (
	"context"
	"errors"
	"fmt"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/failpoint"
)

// Rotation re-wraps the DEK of every image of a pool (volumes and snapshot
// images) from the Old KEK to the New one. Each image takes three writes,
// so that a volume opens with one of the two KEKs at every point and a
// rerun finishes what a killed run left:
//
//  1. MetaDEKNext = the DEK wrapped with New (MetaDEK still with Old)
//  2. MetaDEK     = that same wrap
//  3. MetaDEKNext removed
//
// The DEK itself never changes: the data is not re-encrypted.
type Rotation struct {
	Backend  ceph.Backend
	Creds    ceph.Credentials
	Cluster  ceph.Cluster
	Pool     string
	Old, New KMS
	// Progress, when set, is told the outcome of each encrypted image.
	Progress func(image, outcome string)
}

// RotateResult counts what a rotation did.
type RotateResult struct {
	Rotated int      // re-wrapped by this run
	Done    int      // found under the new KEK already (an earlier run)
	Plain   int      // unencrypted images
	Failed  []string // "image: reason"; a rerun retries them
}

// ErrRotationIncomplete: some images could not be re-wrapped.
var ErrRotationIncomplete = errors.New("KEK rotation incomplete")

// maxListings bounds how often Run lists the pool again for images made
// while it ran.
const maxListings = 5

// Run rotates every image of the pool, then lists the pool again and
// rotates the images that appeared meanwhile (volumes and snapshots made
// while it ran), until a listing shows none (at most maxListings). A
// failure on one image is recorded and the others go on; the error then
// wraps ErrRotationIncomplete.
func (r Rotation) Run(ctx context.Context) (RotateResult, error) {
	var res RotateResult
	if r.Old.KEKID() == r.New.KEKID() {
		return res, fmt.Errorf("%w: the old and the new KEK are the same key (%s)", ErrConfig, r.New.KEKID())
	}
	seen := map[string]bool{}
	for listing := 0; listing < maxListings; listing++ {
		names, err := r.Backend.ListImages(ctx, r.Creds, r.Cluster, r.Pool)
		if err != nil {
			return res, fmt.Errorf("list the images of pool %s: %w", r.Pool, err)
		}
		fresh := 0
		for _, name := range names {
			if seen[name] {
				continue
			}
			seen[name] = true
			fresh++
			r.rotateOne(ctx, name, &res)
		}
		if fresh == 0 {
			break
		}
	}
	if len(res.Failed) > 0 {
		return res, fmt.Errorf("%w: %d of %d images failed; fix them and run it again", ErrRotationIncomplete, len(res.Failed), len(seen))
	}
	return res, nil
}

// rotateOne rotates one image and counts the outcome.
func (r Rotation) rotateOne(ctx context.Context, name string, res *RotateResult) {
	outcome, err := r.image(ctx, name)
	switch {
	case err != nil:
		res.Failed = append(res.Failed, name+": "+err.Error())
		outcome = "failed: " + err.Error()
	case outcome == outcomeRotated:
		res.Rotated++
	case outcome == outcomeDone:
		res.Done++
	case outcome == outcomePlain:
		res.Plain++
		return
	}
	if r.Progress != nil {
		r.Progress(name, outcome)
	}
}

const (
	outcomeRotated = "re-wrapped with the new KEK"
	outcomeDone    = "already under the new KEK"
	outcomePlain   = "not encrypted"
)

func (r Rotation) image(ctx context.Context, name string) (string, error) {
	ref := ceph.ImageRef{Cluster: r.Cluster, Pool: r.Pool, Name: name}
	info, err := r.Backend.StatImage(ctx, r.Creds, ref)
	if errors.Is(err, ceph.ErrNotFound) {
		return outcomePlain, nil // deleted since the listing
	}
	if err != nil {
		return "", err
	}
	cur, ok := info.Metadata[MetaDEK]
	if !ok {
		return outcomePlain, nil
	}
	w, err := Describe(cur)
	if err != nil {
		return "", err
	}
	if w.KEKID == r.New.KEKID() {
		// Step 3 of an earlier run, or a volume created under the new KEK.
		return outcomeDone, r.dropNext(ctx, ref, info.Metadata)
	}
	if w.KEKID != r.Old.KEKID() {
		return "", fmt.Errorf("%w: wrapped with KEK %s, neither the old (%s) nor the new (%s)", ErrWrongKEK, w.KEKID, r.Old.KEKID(), r.New.KEKID())
	}
	next, err := r.nextWrap(ctx, info.Metadata, w.Image)
	if err != nil {
		return "", err
	}
	if err := r.Backend.SetMetadata(ctx, r.Creds, ref, map[string]string{MetaDEKNext: next}); err != nil {
		return "", err
	}
	failpoint.Crash("rotate-after-next")
	if err := r.Backend.SetMetadata(ctx, r.Creds, ref, map[string]string{MetaDEK: next}); err != nil {
		return "", err
	}
	failpoint.Crash("rotate-after-switch")
	return outcomeRotated, r.dropNext(ctx, ref, map[string]string{MetaDEKNext: next})
}

// nextWrap is the DEK wrapped with the new KEK: the one an earlier run
// wrote under MetaDEKNext when it holds the same DEK, else a new wrap.
func (r Rotation) nextWrap(ctx context.Context, md map[string]string, image string) (string, error) {
	dek, err := r.Old.Unwrap(ctx, md[MetaDEK], image)
	if err != nil {
		return "", err
	}
	if prev, ok := md[MetaDEKNext]; ok {
		if d, err := r.New.Unwrap(ctx, prev, image); err == nil && d.Equal(dek) {
			return prev, nil
		}
	}
	return r.New.Wrap(ctx, dek, image)
}

func (r Rotation) dropNext(ctx context.Context, ref ceph.ImageRef, md map[string]string) error {
	if _, ok := md[MetaDEKNext]; !ok {
		return nil
	}
	return r.Backend.RemoveMetadata(ctx, r.Creds, ref, MetaDEKNext)
}
