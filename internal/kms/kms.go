// Package kms keeps the data-encryption keys (DEKs) of encrypted volumes.
// Each volume has its own random 256-bit DEK, stored only wrapped by a
// key-encryption key (KEK) in the image's metadata. A KMS wraps and unwraps;
// the one backend here takes the KEK from a Kubernetes Secret, so it needs
// no external service. Vault, KMIP or a cloud KMS would be further
// implementations of KMS. No error or String method of this package ever
// contains key material.
package kms

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
)

// Image metadata keys (rbd image-meta) holding wrapped DEKs. MetaDEKNext
// exists only while a KEK rotation is between its steps (Rotate).
const (
	MetaDEK     = "rbd-csi.dek"
	MetaDEKNext = "rbd-csi.dek.next"
)

// Errors, matched with errors.Is.
var (
	// ErrNoKEK: the secrets hold no KEK under the key the KMS entry names.
	ErrNoKEK = errors.New("no key-encryption key")
	// ErrBadKEK: the KEK given is not a 256-bit key.
	ErrBadKEK = errors.New("invalid key-encryption key")
	// ErrWrongKEK: the DEK was wrapped with another KEK.
	ErrWrongKEK = errors.New("wrapped with another key-encryption key")
	// ErrWrongVolume: the wrapped DEK belongs to another volume.
	ErrWrongVolume = errors.New("wrapped key belongs to another volume")
	// ErrCorrupt: the wrapped DEK is malformed or was altered.
	ErrCorrupt = errors.New("wrapped key is corrupt or was tampered with")
	// ErrNoDEK: an encrypted volume's image has no wrapped DEK.
	ErrNoDEK = errors.New("no wrapped data-encryption key")
	// ErrConfig: the KMS configuration or the encryptionKMSID is invalid.
	ErrConfig = errors.New("invalid KMS configuration")
)

// KMS wraps and unwraps DEKs. image binds a wrap to one volume: unwrapping
// it for another image fails with ErrWrongVolume.
type KMS interface {
	// KEKID identifies the KEK (a fingerprint, never the key).
	KEKID() string
	// Wrap seals dek for image.
	Wrap(ctx context.Context, dek DEK, image string) (string, error)
	// Unwrap opens a blob Wrap made for image.
	Unwrap(ctx context.Context, blob, image string) (DEK, error)
}

// DEK is a volume's data-encryption key. Printing it shows nothing.
type DEK struct{ b [32]byte }

// NewDEK draws a random DEK from crypto/rand.
func NewDEK() (DEK, error) {
	var d DEK
	if _, err := rand.Read(d.b[:]); err != nil {
		return DEK{}, fmt.Errorf("draw a data-encryption key: %w", err)
	}
	return d, nil
}

// Passphrase is what LUKS gets as the volume's passphrase: the DEK in hex.
// It goes to cryptsetup on stdin only.
func (d DEK) Passphrase() []byte {
	out := make([]byte, hex.EncodedLen(len(d.b)))
	hex.Encode(out, d.b[:])
	return out
}

// Equal reports whether two DEKs are the same key.
func (d DEK) Equal(o DEK) bool { return d.b == o.b }

// String redacts the key.
func (DEK) String() string { return "DEK(redacted)" }

// GoString redacts the key for %#v.
func (d DEK) GoString() string { return d.String() }

// Unwrapped returns the DEK of an image's metadata: the current wrap, or
// the one a rotation wrote under MetaDEKNext when the current one is under
// another KEK (a rotation between its steps: either KEK opens the volume).
func Unwrapped(ctx context.Context, k KMS, md map[string]string, image string) (DEK, error) {
	cur, ok := md[MetaDEK]
	if !ok {
		return DEK{}, fmt.Errorf("image %s: %w (image-meta %s)", image, ErrNoDEK, MetaDEK)
	}
	dek, err := k.Unwrap(ctx, cur, image)
	if !errors.Is(err, ErrWrongKEK) {
		return dek, err
	}
	if next, ok := md[MetaDEKNext]; ok {
		if d, nextErr := k.Unwrap(ctx, next, image); nextErr == nil {
			return d, nil
		}
	}
	return DEK{}, err
}
