package params

import (
	"sort"
	"strings"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// Secret keys. ceph-csi Secrets carry userID and userKey; in-tree
// kubernetes.io/rbd Secrets carry only key, the user coming from the
// StorageClass (adminId / userId).
const (
	SecretUserID  = "userID"
	SecretUserKey = "userKey"
	SecretKey     = "key"
)

// Credentials reads a CSI secrets map. legacyUser is the user an in-tree
// Secret (only "key") belongs to. Errors name the missing or bad fields,
// never the key, nor a userID that is not a valid user name (a Secret with
// userID and userKey swapped would otherwise leak the key). The key is
// returned without surrounding whitespace (Secrets made from files often end
// in a newline).
func Credentials(secrets map[string]string, legacyUser string) (ceph.Credentials, error) {
	if len(secrets) == 0 {
		return ceph.Credentials{}, invalidf("no secrets given: the StorageClass must name a Secret (csi.storage.k8s.io/provisioner-secret-name, node-stage-secret-name, controller-expand-secret-name) holding %s and %s, or an in-tree Secret with %s", SecretUserID, SecretUserKey, SecretKey)
	}
	user, hasUser := secrets[SecretUserID]
	key, hasUserKey := secrets[SecretUserKey]
	legacyKey, hasLegacyKey := secrets[SecretKey]
	userFrom := "secret field " + SecretUserID
	switch {
	case hasUser && !hasUserKey && !hasLegacyKey:
		if ceph.ValidateUser(user) != nil {
			return ceph.Credentials{}, invalidf("secret has %s but no %s: add the cephx key, and check that %s holds the user name (without \"client.\")", SecretUserID, SecretUserKey, SecretUserID)
		}
		return ceph.Credentials{}, invalidf("secret has %s but no %s: add the cephx key of client.%s", SecretUserID, SecretUserKey, user)
	case !hasUser && hasUserKey:
		return ceph.Credentials{}, invalidf("secret has %s but no %s: add the cephx user name (without \"client.\")", SecretUserKey, SecretUserID)
	case hasUser && hasUserKey:
	case hasLegacyKey:
		user, key = legacyUser, legacyKey
		userFrom = "StorageClass parameter " + KeyAdminID + "/" + KeyUserID
		if hasUser {
			user, userFrom = secrets[SecretUserID], "secret field "+SecretUserID
		}
		if user == "" {
			user = DefaultUser
		}
	default:
		return ceph.Credentials{}, invalidf("secret has neither %s+%s nor %s (present keys: %s)", SecretUserID, SecretUserKey, SecretKey, keyList(secrets))
	}
	if ceph.ValidateUser(user) != nil {
		// Not echoed: it may be the key put in the wrong field.
		return ceph.Credentials{}, invalidf("%s is not a cephx user name (%d bytes): give the ID without \"client.\", 1 to 64 letters, digits, '.', '_' or '-'", userFrom, len(user))
	}
	key = strings.TrimSpace(key)
	if err := ceph.ValidateKey(key); err != nil {
		return ceph.Credentials{}, invalidf("secret key for client.%s: %w", user, err)
	}
	return ceph.Credentials{User: user, Key: key}, nil
}

// NamesUser reports whether a secrets map names its own cephx user
// (userID), which Credentials then uses whatever legacyUser says.
func NamesUser(secrets map[string]string) bool {
	_, ok := secrets[SecretUserID]
	return ok
}

func keyList(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}
