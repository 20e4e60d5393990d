package harness

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/kms"
	"github.com/rbd-csi/rbd-csi/internal/node/crypt"
)

// NewKEK is a random key-encryption key, as an operator makes one
// (`openssl rand -base64 32`).
func NewKEK(t testing.TB) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// CryptDevices lists the LUKS devices the driver opened ("/dev/mapper/
// rbd-csi-*") that are still open.
func CryptDevices() []string {
	paths, _ := filepath.Glob("/dev/mapper/rbd-csi-*")
	out := make([]string, 0, len(paths))
	for _, p := range paths {
		out = append(out, "LUKS device "+p+" still open")
	}
	return out
}

// HasDMCrypt reports whether this node can open LUKS, by the driver's own
// check (which loads dm_crypt when it is a module not loaded yet, as a
// guest kernel may have it). Device-mapper's control node alone proves
// nothing: cryptsetup creates it even on a kernel without device-mapper.
func HasDMCrypt() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return crypt.New(crypt.Config{Timeout: 30 * time.Second}).Check(ctx) == nil
}

// Metadata is the image's rbd image-meta.
func (p *Pool) Metadata(t testing.TB, image string) map[string]string {
	t.Helper()
	ref := ceph.ImageRef{Cluster: p.Cluster(), Pool: p.Env.Pool, Name: image}
	info, err := p.Backend.StatImage(context.Background(), p.Env.Admin, ref)
	if err != nil {
		t.Fatal(err)
	}
	return info.Metadata
}

// DEK unwraps the image's data-encryption key with kek.
func (p *Pool) DEK(t testing.TB, image, kek string) kms.DEK {
	t.Helper()
	k, err := kms.NewSecretKEK(kek)
	if err != nil {
		t.Fatal(err)
	}
	dek, err := kms.Unwrapped(context.Background(), k, p.Metadata(t, image), image)
	if err != nil {
		t.Fatalf("unwrap the key of %s: %v", image, err)
	}
	return dek
}

// KeyForms are the ways a KEK or a DEK could show in a log or a file: as
// given, the hex and base64 of its bytes, and (a DEK) the LUKS passphrase.
func KeyForms(t testing.TB, keks []string, deks []kms.DEK) []string {
	t.Helper()
	var forms []string
	for _, k := range keks {
		raw, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			t.Fatalf("a test KEK is not base64 (%d characters)", len(k))
		}
		forms = append(forms, k, hex.EncodeToString(raw), strings.ToUpper(hex.EncodeToString(raw)))
	}
	for _, d := range deks {
		pass := d.Passphrase()
		raw, _ := hex.DecodeString(string(pass))
		forms = append(forms, string(pass), strings.ToUpper(string(pass)), base64.StdEncoding.EncodeToString(raw))
	}
	return forms
}
