package driver

// Which cephx user a request's Secret is for, decided here for every RPC
// that takes secrets (docs/secrets.md):
//
//  1. A Secret that names its user (userID, with userKey or key) is that
//     user, whatever the request or the ID say.
//  2. A Secret holding only key (the in-tree kubernetes.io/rbd shape) is for
//     the first user the request names, strongest first: the StorageClass
//     parameter it carries (adminId in CreateVolume; userId in the volume
//     context of NodeStageVolume), then the user a version 2 volume or
//     snapshot ID records, then client.admin.
//
// An object made through a key-only Secret for a user other than admin
// records that user in its ID (volid version 2) and in its owner record (for
// listing), so DeleteVolume, ControllerExpandVolume and the snapshot calls,
// which get the same Secret but no StorageClass parameters, use it too; a
// snapshot made that way through a version 2 volume ID records it in turn.
// Everything else keeps version 1 IDs, as before.

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/params"
	"github.com/rbd-csi/rbd-csi/internal/volid"
)

// userHint is one place that may name the user of a key-only Secret.
type userHint struct {
	user string // "" when this place names none
	from string // where, as an operator would look for it
}

// parameterHint is a user a request parameter names; given says whether
// the request has the parameter at all.
func parameterHint(user string, given bool, from string) userHint {
	if !given {
		return userHint{}
	}
	return userHint{user: user, from: from}
}

// idHint is the user a volume or snapshot ID records (version 2).
func idHint(id volid.ID) userHint {
	return userHint{user: id.User, from: "the volume or snapshot ID (the StorageClass's adminId when it was created)"}
}

// identity is the outcome of the rule: the credentials, where their user
// came from, and the user to record in IDs of objects made with them.
type identity struct {
	creds   ceph.Credentials
	keyOnly bool   // the Secret does not name its user
	from    string // where the user came from; "" for the default
	record  string // user for version 2 IDs; "" keeps version 1
}

// resolveIdentity applies the rule to a request's secrets. Errors are
// InvalidArgument naming the Secret field to fix, never the key.
func resolveIdentity(secrets map[string]string, what string, hints ...userHint) (identity, error) {
	who := identity{keyOnly: !params.NamesUser(secrets)}
	legacy := ""
	for _, h := range hints {
		if who.keyOnly && h.user != "" {
			legacy, who.from = h.user, h.from
			break
		}
	}
	creds, err := params.Credentials(secrets, legacy)
	if err != nil {
		return identity{}, invalid("%s: %v", what, err)
	}
	who.creds = creds
	if who.keyOnly && creds.User != params.DefaultUser {
		who.record = creds.User
	}
	return who, nil
}

// explainAuth adds to an Unauthenticated answer where the refused user came
// from and what to change, so that an operator can tell a wrong key from a
// key that belongs to another user. Deferred by every handler that resolves
// an identity; *who is zero until it has.
func explainAuth(err *error, who *identity) {
	if *err == nil || who.creds.User == "" || status.Code(*err) != codes.Unauthenticated {
		return
	}
	user := who.creds.User
	var advice string
	switch {
	case !who.keyOnly:
		advice = fmt.Sprintf("client.%s is named by Secret field %s: fix %s (or %s) in the Secret", user, params.SecretUserID, params.SecretUserKey, params.SecretKey)
	case who.from == "":
		advice = fmt.Sprintf("the Secret holds only %s and nothing names its user, so client.%s was assumed: if the key belongs to another user, add %s: <user> to the Secret (volumes and snapshots whose IDs start with \"1/\" record no user and need this), or set the StorageClass parameter %s for new volumes", params.SecretKey, user, params.SecretUserID, params.KeyAdminID)
	default:
		advice = fmt.Sprintf("the Secret holds only %s, for client.%s named by %s: fix the key, or add %s: <user> to the Secret if the key belongs to another user", params.SecretKey, user, who.from, params.SecretUserID)
	}
	*err = status.Errorf(codes.Unauthenticated, "%s; %s", status.Convert(*err).Message(), advice)
}
