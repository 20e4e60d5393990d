package kms

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

var (
	kekA = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	kekB = hex.EncodeToString([]byte("fedcba9876543210fedcba9876543210"))
)

func mustKEK(t *testing.T, s string) *SecretKEK {
	t.Helper()
	k, err := NewSecretKEK(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// secretsIn lists every form of key material of a test, for leak checks.
func secretsIn(dek DEK) []string {
	return []string{kekA, kekB, "0123456789abcdef", "fedcba9876543210", string(dek.Passphrase()), string(dek.b[:])}
}

func assertNoKeyMaterial(t *testing.T, dek DEK, texts ...string) {
	t.Helper()
	for _, text := range texts {
		for _, s := range secretsIn(dek) {
			if strings.Contains(text, s) {
				t.Errorf("key material in %q", text)
			}
		}
	}
}

func TestWrapUnwrapRoundTripGivesTheSameDEK(t *testing.T) {
	ctx := context.Background()
	k := mustKEK(t, kekA)
	dek, err := NewDEK()
	if err != nil {
		t.Fatal(err)
	}
	blob, err := k.Wrap(ctx, dek, "csi-vol-1")
	if err != nil {
		t.Fatal(err)
	}
	got, err := k.Unwrap(ctx, blob, "csi-vol-1")
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(dek) {
		t.Fatal("unwrapped DEK differs from the wrapped one")
	}
	assertNoKeyMaterial(t, dek, blob, fmt.Sprint(dek), fmt.Sprintf("%#v %v %+v", dek, k, k))
	if len(dek.Passphrase()) != 64 {
		t.Errorf("passphrase is %d bytes, want 64 hex digits", len(dek.Passphrase()))
	}
}

func TestNewDEKDrawsADifferentKeyEachTime(t *testing.T) {
	a, _ := NewDEK()
	b, _ := NewDEK()
	if a.Equal(b) || a.Equal(DEK{}) {
		t.Fatal("two DEKs are equal or zero")
	}
}

func TestUnwrapRefusals(t *testing.T) {
	ctx := context.Background()
	k := mustKEK(t, kekA)
	dek, _ := NewDEK()
	blob, _ := k.Wrap(ctx, dek, "csi-vol-1")
	var env envelope
	_ = json.Unmarshal([]byte(blob), &env)
	tamper := func(f func(*envelope)) string {
		e := env
		f(&e)
		out, _ := json.Marshal(e)
		return string(out)
	}
	sealed, _ := base64.StdEncoding.DecodeString(env.Sealed)
	sealed[3] ^= 1
	for _, tc := range []struct {
		name  string
		kek   string
		blob  string
		image string
		want  error
	}{
		{name: "another KEK is ErrWrongKEK", kek: kekB, blob: blob, image: "csi-vol-1", want: ErrWrongKEK},
		{name: "another image is ErrWrongVolume", kek: kekA, blob: blob, image: "csi-vol-2", want: ErrWrongVolume},
		{name: "a flipped ciphertext bit is ErrCorrupt", kek: kekA, blob: tamper(func(e *envelope) { e.Sealed = base64.StdEncoding.EncodeToString(sealed) }), image: "csi-vol-1", want: ErrCorrupt},
		{name: "a rebound image field is ErrCorrupt", kek: kekA, blob: tamper(func(e *envelope) { e.Image = "csi-vol-2" }), image: "csi-vol-2", want: ErrCorrupt},
		{name: "a forged KEK ID is ErrCorrupt", kek: kekB, blob: tamper(func(e *envelope) { e.KEKID = mustKEK(t, kekB).KEKID() }), image: "csi-vol-1", want: ErrCorrupt},
		{name: "another layout version is ErrCorrupt", kek: kekA, blob: tamper(func(e *envelope) { e.Version = 9 }), image: "csi-vol-1", want: ErrCorrupt},
		{name: "not JSON is ErrCorrupt", kek: kekA, blob: "garbage", image: "csi-vol-1", want: ErrCorrupt},
		{name: "a bad nonce is ErrCorrupt", kek: kekA, blob: tamper(func(e *envelope) { e.Nonce = "AAAA" }), image: "csi-vol-1", want: ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := mustKEK(t, tc.kek).Unwrap(ctx, tc.blob, tc.image)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			assertNoKeyMaterial(t, dek, err.Error())
		})
	}
}

func TestNewSecretKEKRefusesWhatIsNotA256BitKeyWithoutQuotingIt(t *testing.T) {
	for _, s := range []string{"", "short", "correct horse battery staple, a passphrase", base64.StdEncoding.EncodeToString(make([]byte, 16))} {
		_, err := NewSecretKEK(s)
		if !errors.Is(err, ErrBadKEK) {
			t.Fatalf("%q: err %v, want ErrBadKEK", s, err)
		}
		if s != "" && strings.Contains(err.Error(), s) {
			t.Errorf("error quotes the key: %v", err)
		}
	}
	if a, b := mustKEK(t, kekA+"\n"), mustKEK(t, kekA); a.KEKID() != b.KEKID() {
		t.Error("a trailing newline changed the KEK")
	}
}

func TestUnwrappedTakesTheRotationsNextWrapForTheNewKEK(t *testing.T) {
	ctx := context.Background()
	oldK, newK := mustKEK(t, kekA), mustKEK(t, kekB)
	dek, _ := NewDEK()
	oldBlob, _ := oldK.Wrap(ctx, dek, "img")
	newBlob, _ := newK.Wrap(ctx, dek, "img")
	for _, tc := range []struct {
		name string
		md   map[string]string
		k    KMS
		want error
	}{
		{name: "old KEK, before the rotation", md: map[string]string{MetaDEK: oldBlob}, k: oldK},
		{name: "old KEK, next written", md: map[string]string{MetaDEK: oldBlob, MetaDEKNext: newBlob}, k: oldK},
		{name: "new KEK, next written", md: map[string]string{MetaDEK: oldBlob, MetaDEKNext: newBlob}, k: newK},
		{name: "new KEK, switched", md: map[string]string{MetaDEK: newBlob, MetaDEKNext: newBlob}, k: newK},
		{name: "new KEK, done", md: map[string]string{MetaDEK: newBlob}, k: newK},
		{name: "new KEK before the rotation is ErrWrongKEK", md: map[string]string{MetaDEK: oldBlob}, k: newK, want: ErrWrongKEK},
		{name: "no wrap is ErrNoDEK", md: map[string]string{}, k: newK, want: ErrNoDEK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Unwrapped(ctx, tc.k, tc.md, "img")
			if !errors.Is(err, tc.want) || (tc.want == nil && !got.Equal(dek)) {
				t.Fatalf("err %v, want %v (or the DEK)", err, tc.want)
			}
		})
	}
}

func TestConfig(t *testing.T) {
	c, err := ParseConfig([]byte(`{"team-a": {"encryptionKMSType": "secret-kek", "secretKey": "teamAKEK"}, "plain": {"encryptionKMSType": "secret-kek"}}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		id      string
		secrets map[string]string
		want    error
	}{
		{name: "no ID reads encryptionKEK", id: "", secrets: map[string]string{"encryptionKEK": kekA}},
		{name: "an entry's secretKey is read", id: "team-a", secrets: map[string]string{"teamAKEK": kekA}},
		{name: "an entry without secretKey reads encryptionKEK", id: "plain", secrets: map[string]string{"encryptionKEK": kekA}},
		{name: "a missing Secret key is ErrNoKEK", id: "team-a", secrets: map[string]string{"encryptionKEK": kekA}, want: ErrNoKEK},
		{name: "an unknown ID is ErrConfig", id: "nope", secrets: map[string]string{"encryptionKEK": kekA}, want: ErrConfig},
		{name: "a bad KEK is ErrBadKEK", id: "", secrets: map[string]string{"encryptionKEK": "abc"}, want: ErrBadKEK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := c.Open(tc.id, tc.secrets, "provisioner secrets")
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if err == nil && k.KEKID() != mustKEK(t, kekA).KEKID() {
				t.Error("opened another KEK")
			}
		})
	}
	for _, bad := range []string{`[]`, `{"x": {"encryptionKMSType": "vault"}}`} {
		if _, err := ParseConfig([]byte(bad)); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err %v, want ErrConfig", bad, err)
		}
	}
}
