package kms

import (
	"context"
	"errors"
	"fmt"
)

// PreviousSuffix names the Secret key of the KEK being retired during a
// rotation: the KEK's own Secret key plus this suffix
// (encryptionKEKPrevious). Kubernetes Secret keys allow it.
const PreviousSuffix = "Previous"

// PreviousSecretKey is the Secret key of the KEK being retired for a KEK
// held under secretKey.
func PreviousSecretKey(secretKey string) string { return secretKey + PreviousSuffix }

// Keyring is the KMS of a rotation in progress: it wraps with Current only,
// and unwraps with Current or Previous. With it in the Secrets, every
// volume opens whether rotate-kek has re-wrapped it yet or not, and volumes
// made meanwhile are wrapped with the new KEK from the start.
type Keyring struct {
	Current, Previous KMS
}

// KEKID implements KMS: the current KEK's.
func (k *Keyring) KEKID() string { return k.Current.KEKID() }

// Wrap implements KMS with the current KEK.
func (k *Keyring) Wrap(ctx context.Context, dek DEK, image string) (string, error) {
	return k.Current.Wrap(ctx, dek, image)
}

// Unwrap implements KMS: the current KEK, then the previous one when the
// wrap is under another KEK.
func (k *Keyring) Unwrap(ctx context.Context, blob, image string) (DEK, error) {
	dek, err := k.Current.Unwrap(ctx, blob, image)
	if !errors.Is(err, ErrWrongKEK) {
		return dek, err
	}
	dek, err = k.Previous.Unwrap(ctx, blob, image)
	if !errors.Is(err, ErrWrongKEK) {
		return dek, err
	}
	w, _ := Describe(blob) // it parsed in Unwrap
	return DEK{}, fmt.Errorf("%w: the key of image %s is wrapped with KEK %s, the Secret holds KEK %s and, as the previous one, %s", ErrWrongKEK, image, w.KEKID, k.Current.KEKID(), k.Previous.KEKID())
}
