package kms

import (
	"context"
	"errors"
	"strings"
	"testing"
)

const kekC = "00000000000000000000000000000000000000000000000000000000000000ff"

// rotationSecrets are the Secrets of a rotation in progress: the new KEK
// (B) under encryptionKEK, the old one (A) under encryptionKEKPrevious.
func rotationSecrets() map[string]string {
	return map[string]string{DefaultSecretKey: kekB, PreviousSecretKey(DefaultSecretKey): kekA}
}

func TestKeyringWrapsWithTheCurrentKEKOnly(t *testing.T) {
	k, err := (&Config{}).Open("", rotationSecrets(), "node stage secrets")
	if err != nil {
		t.Fatal(err)
	}
	dek, _ := NewDEK()
	blob, err := k.Wrap(context.Background(), dek, "csi-vol-1")
	if err != nil {
		t.Fatal(err)
	}
	w, err := Describe(blob)
	if err != nil || w.KEKID != mustKEK(t, kekB).KEKID() || k.KEKID() != w.KEKID {
		t.Fatalf("wrapped with %q (KEKID %q), want the current KEK %q: %v", w.KEKID, k.KEKID(), mustKEK(t, kekB).KEKID(), err)
	}
}

func TestKeyringUnwraps(t *testing.T) {
	ctx := context.Background()
	k, err := (&Config{}).Open("", rotationSecrets(), "node stage secrets")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		wrapper string
		image   string
		want    error
	}{
		{name: "a wrap under the current KEK opens", wrapper: kekB, image: "csi-vol-1"},
		{name: "a wrap under the previous KEK opens", wrapper: kekA, image: "csi-vol-1"},
		{name: "a wrap under a third KEK is ErrWrongKEK", wrapper: kekC, image: "csi-vol-1", want: ErrWrongKEK},
		{name: "a wrap of another image under the previous KEK is ErrWrongVolume", wrapper: kekA, image: "csi-vol-2", want: ErrWrongVolume},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dek, _ := NewDEK()
			blob, _ := mustKEK(t, tc.wrapper).Wrap(ctx, dek, "csi-vol-1")
			got, err := k.Unwrap(ctx, blob, tc.image)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if err == nil && !got.Equal(dek) {
				t.Fatal("unwrapped another DEK")
			}
			if err != nil {
				assertNoKeyMaterial(t, dek, err.Error())
			}
			if errors.Is(err, ErrWrongKEK) {
				for _, kek := range []string{kekA, kekB, kekC} {
					if id := mustKEK(t, kek).KEKID(); !strings.Contains(err.Error(), id) {
						t.Errorf("%q does not name KEK %s", err, id)
					}
				}
			}
		})
	}
}

func TestOpenWithAPreviousKEK(t *testing.T) {
	for _, tc := range []struct {
		name    string
		secrets map[string]string
		want    error
		keyring bool
	}{
		{name: "a different previous KEK gives a keyring", secrets: rotationSecrets(), keyring: true},
		{name: "a previous KEK equal to the current one is the plain KEK", secrets: map[string]string{DefaultSecretKey: kekB, PreviousSecretKey(DefaultSecretKey): kekB}},
		{name: "a bad previous KEK is ErrBadKEK", secrets: map[string]string{DefaultSecretKey: kekB, PreviousSecretKey(DefaultSecretKey): "abc"}, want: ErrBadKEK},
		{name: "a previous KEK alone is ErrNoKEK", secrets: map[string]string{PreviousSecretKey(DefaultSecretKey): kekA}, want: ErrNoKEK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := (&Config{}).Open("", tc.secrets, "provisioner secrets")
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if err != nil {
				if tc.want == ErrBadKEK && !strings.Contains(err.Error(), PreviousSecretKey(DefaultSecretKey)) {
					t.Errorf("%q does not name the Secret key", err)
				}
				return
			}
			if _, isKeyring := k.(*Keyring); isKeyring != tc.keyring {
				t.Fatalf("keyring %v, want %v", isKeyring, tc.keyring)
			}
		})
	}
}

// The Secret key of the previous KEK follows an entry's secretKey.
func TestPreviousKEKOfAKMSEntryFollowsItsSecretKey(t *testing.T) {
	c, err := ParseConfig([]byte(`{"team-a": {"encryptionKMSType": "secret-kek", "secretKey": "teamAKEK"}}`))
	if err != nil {
		t.Fatal(err)
	}
	k, err := c.Open("team-a", map[string]string{"teamAKEK": kekB, "teamAKEKPrevious": kekA}, "node stage secrets")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := k.(*Keyring); !ok {
		t.Fatalf("got %T, want a keyring", k)
	}
}
