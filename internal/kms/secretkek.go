package kms

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
)

// wrapVersion is the layout of a wrapped DEK; a reader refuses others.
const wrapVersion = 1

// envelope is the JSON stored under MetaDEK. KEKID and Image are in the
// clear but authenticated (additional data), so a wrong KEK or a wrap moved
// to another image is told apart from a damaged one.
type envelope struct {
	Version int    `json:"v"`
	KEKID   string `json:"kek"`
	Image   string `json:"image"`
	Nonce   string `json:"nonce"`
	Sealed  string `json:"sealed"`
}

// SecretKEK is the KMS whose KEK is a 256-bit key from a Kubernetes Secret
// (AES-256-GCM).
type SecretKEK struct {
	aead cipher.AEAD
	id   string
}

// NewSecretKEK reads a KEK: 32 bytes, base64- or hex-encoded (`openssl rand
// -base64 32`); surrounding whitespace is ignored. Errors never quote it.
func NewSecretKEK(encoded string) (*SecretKEK, error) {
	key, err := decodeKEK(strings.TrimSpace(encoded))
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKEK, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKEK, err)
	}
	return &SecretKEK{aead: aead, id: fingerprint(key)}, nil
}

func decodeKEK(s string) ([]byte, error) {
	if len(s) == hex.EncodedLen(32) {
		if b, err := hex.DecodeString(s); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == 32 {
			return b, nil
		}
	}
	return nil, fmt.Errorf("%w: want 32 random bytes, base64- or hex-encoded (%d characters given; make one with `openssl rand -base64 32`)", ErrBadKEK, len(s))
}

// fingerprint identifies a KEK without revealing it: a domain-separated
// SHA-256, truncated.
func fingerprint(key []byte) string {
	sum := sha256.Sum256(append([]byte("rbd-csi kek fingerprint\x00"), key...))
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// KEKID implements KMS.
func (s *SecretKEK) KEKID() string { return s.id }

// String names the KEK by its fingerprint only.
func (s *SecretKEK) String() string { return "secret KEK " + s.id }

func additionalData(kekID, image string) []byte {
	return []byte(fmt.Sprintf("rbd-csi.dek/v%d\x00%s\x00%s", wrapVersion, kekID, image))
}

// Wrap implements KMS.
func (s *SecretKEK) Wrap(_ context.Context, dek DEK, image string) (string, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("draw a nonce: %w", err)
	}
	sealed := s.aead.Seal(nil, nonce, dek.b[:], additionalData(s.id, image))
	out, err := json.Marshal(envelope{
		Version: wrapVersion, KEKID: s.id, Image: image,
		Nonce: base64.StdEncoding.EncodeToString(nonce), Sealed: base64.StdEncoding.EncodeToString(sealed),
	})
	return string(out), err
}

// Unwrap implements KMS.
func (s *SecretKEK) Unwrap(_ context.Context, blob, image string) (DEK, error) {
	env, err := parseEnvelope(blob)
	if err != nil {
		return DEK{}, err
	}
	if env.KEKID != s.id {
		return DEK{}, fmt.Errorf("%w: the key of image %s is wrapped with KEK %s, the Secret holds KEK %s (during a KEK rotation the Secret keeps the old KEK under the KEK's key + %q until rotate-kek has re-wrapped every image)", ErrWrongKEK, image, env.KEKID, s.id, PreviousSuffix)
	}
	if env.Image != image {
		return DEK{}, fmt.Errorf("%w: image %s holds the wrapped key of image %q", ErrWrongVolume, image, env.Image)
	}
	nonce, err1 := base64.StdEncoding.DecodeString(env.Nonce)
	sealed, err2 := base64.StdEncoding.DecodeString(env.Sealed)
	if err1 != nil || err2 != nil || len(nonce) != s.aead.NonceSize() {
		return DEK{}, fmt.Errorf("%w: image %s: bad encoding", ErrCorrupt, image)
	}
	plain, err := s.aead.Open(nil, nonce, sealed, additionalData(s.id, image))
	if err != nil || len(plain) != 32 {
		return DEK{}, fmt.Errorf("%w: image %s: authentication failed", ErrCorrupt, image)
	}
	var d DEK
	copy(d.b[:], plain)
	clear(plain)
	return d, nil
}

func parseEnvelope(blob string) (envelope, error) {
	var env envelope
	if err := json.Unmarshal([]byte(blob), &env); err != nil {
		return envelope{}, fmt.Errorf("%w: not a wrapped key (%d bytes)", ErrCorrupt, len(blob))
	}
	if env.Version != wrapVersion {
		return envelope{}, fmt.Errorf("%w: layout version %d, this driver reads %d", ErrCorrupt, env.Version, wrapVersion)
	}
	return env, nil
}

// WrapInfo is what a wrapped DEK says about itself in the clear.
type WrapInfo struct {
	KEKID string // fingerprint of the KEK that wrapped it
	Image string // the image it is bound to
}

// Describe reads the clear part of a wrapped DEK (no key needed). It is
// authenticated only by a later Unwrap.
func Describe(blob string) (WrapInfo, error) {
	env, err := parseEnvelope(blob)
	if err != nil {
		return WrapInfo{}, err
	}
	return WrapInfo{KEKID: env.KEKID, Image: env.Image}, nil
}
