package params

import "regexp"

// Encryption keys: StorageClass parameters that CreateVolume copies into the
// volume context, where NodeStageVolume reads them.
const (
	KeyEncrypted   = "encrypted"
	KeyEncryptKMS  = "encryptionKMSID"
	encryptedValue = "true"
)

// Encryption says whether a volume is encrypted (LUKS2 on the node, its
// key kept by the KMS that KMSID names; "" is the built-in Secret-KEK one).
type Encryption struct {
	Enabled bool
	KMSID   string
}

var kmsIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ParseEncryption reads the encryption keys of StorageClass parameters or
// of a volume context.
func ParseEncryption(in map[string]string) (Encryption, error) {
	var e Encryption
	switch v, ok := in[KeyEncrypted]; {
	case !ok || v == "false":
	case v == encryptedValue:
		e.Enabled = true
	default:
		return Encryption{}, invalidf("parameter %s=%q: use \"true\" or \"false\"", KeyEncrypted, v)
	}
	id, ok := in[KeyEncryptKMS]
	if !ok {
		return e, nil
	}
	if !e.Enabled {
		return Encryption{}, invalidf("parameter %s=%q needs %s: \"true\"", KeyEncryptKMS, id, KeyEncrypted)
	}
	if !kmsIDPattern.MatchString(id) {
		return Encryption{}, invalidf("parameter %s=%q: 1 to 63 letters, digits, '.', '_' or '-', naming an entry of the KMS configuration", KeyEncryptKMS, id)
	}
	e.KMSID = id
	return e, nil
}

// Context is what the volume context carries for e (nil when unencrypted).
func (e Encryption) Context() map[string]string {
	if !e.Enabled {
		return nil
	}
	vc := map[string]string{KeyEncrypted: encryptedValue}
	if e.KMSID != "" {
		vc[KeyEncryptKMS] = e.KMSID
	}
	return vc
}
