package params

import (
	"errors"
	"maps"
	"strings"
	"testing"
)

func TestParseEncryption(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      map[string]string
		want    Encryption
		wantErr string
	}{
		{name: "absent is unencrypted", in: sc()},
		{name: "false is unencrypted", in: sc(KeyEncrypted, "false")},
		{name: "true is encrypted with the default KMS", in: sc(KeyEncrypted, "true"), want: Encryption{Enabled: true}},
		{name: "a KMS ID is kept", in: sc(KeyEncrypted, "true", KeyEncryptKMS, "team-a"), want: Encryption{Enabled: true, KMSID: "team-a"}},
		{name: "yes is refused naming the values", in: sc(KeyEncrypted, "yes"), wantErr: `encrypted="yes": use "true" or "false"`},
		{name: "a KMS ID without encrypted is refused", in: sc(KeyEncryptKMS, "team-a"), wantErr: `needs encrypted: "true"`},
		{name: "a KMS ID with a slash is refused", in: sc(KeyEncrypted, "true", KeyEncryptKMS, "a/b"), wantErr: `encryptionKMSID="a/b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := ParseVolume(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("err %v, want ErrInvalid containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || v.Encryption != tc.want {
				t.Fatalf("got %+v, %v; want %+v", v.Encryption, err, tc.want)
			}
			// The volume context carries it to the node unchanged.
			back, err := ParseEncryption(tc.want.Context())
			if err != nil || back != tc.want {
				t.Fatalf("volume context round trip: %+v, %v", back, err)
			}
		})
	}
}

func TestEncryptionContextIsEmptyForPlainVolumes(t *testing.T) {
	if vc := (Encryption{}).Context(); len(vc) != 0 {
		t.Fatalf("context %v", vc)
	}
	if vc := (Encryption{Enabled: true}).Context(); !maps.Equal(vc, map[string]string{KeyEncrypted: "true"}) {
		t.Fatalf("context %v", vc)
	}
}
