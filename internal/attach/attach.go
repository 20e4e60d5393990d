// Package attach owns the attachment record of a volume: which nodes it is
// published to (ControllerPublishVolume), and the rule deciding whether
// another node may take it. The record lives in Ceph beside the image
// (ceph.AttachBackend) and is replaced only by compare-and-swap, so two
// controllers, or a retry racing the call it repeats, can never both grant
// a single-node volume to different nodes.
//
// Stored form: a header line "rbd-csi-attach <version>\n" followed by JSON.
// Every write increases the version; the compare-and-swap compares the
// header, so a write based on an old read always fails. The record is kept
// (with no claims) when the last node detaches, so versions never repeat
// while the volume exists; DeleteVolume removes it.
package attach

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Errors the driver turns into gRPC codes (internal/driver/errors.go).
var (
	// ErrHeld: another node holds the volume in a mode that excludes a
	// second one (HeldError says which).
	ErrHeld = errors.New("attached to another node")
	// ErrIncompatible: the node holds the volume already, with another
	// access mode.
	ErrIncompatible = errors.New("published with another capability")
	// ErrAttached: the volume is still published somewhere.
	ErrAttached = errors.New("still attached")
	// ErrNotAttached: the record does not give the volume to this node (a
	// stale attachment).
	ErrNotAttached = errors.New("not attached to this node")
	// ErrUnknownNode: the node ID is not one a node plugin reports.
	ErrUnknownNode = errors.New("unknown node ID")
	// ErrCorrupt: the stored record cannot be read.
	ErrCorrupt = errors.New("unreadable attachment record")
	// ErrContended: the record kept changing under the update.
	ErrContended = errors.New("attachment record changed too often to update")
)

// Publish context keys ControllerPublishVolume hands to NodeStageVolume.
const (
	// ContextNode names the node the claim was made for.
	ContextNode = "rbd-csi/attached-node"
	// ContextGeneration is the record version at which the claim was made.
	ContextGeneration = "rbd-csi/attach-generation"
)

// Claim is one node's attachment.
type Claim struct {
	// Mode is the CSI access mode name, compared for idempotency.
	Mode string `json:"mode"`
	// Shared claims (multi-node modes) coexist with other shared claims;
	// any other claim excludes every other node.
	Shared bool `json:"shared"`
	// ReadOnly claims cannot write: no need to fence them.
	ReadOnly   bool      `json:"readOnly"`
	Generation uint64    `json:"generation"`
	Since      time.Time `json:"since"`
}

// Record is the decoded attachment record of one volume.
type Record struct {
	Version uint64           `json:"-"`
	Claims  map[string]Claim `json:"claims"` // by node ID
}

const magic = "rbd-csi-attach "

// Encode is the stored form of r.
func (r Record) Encode() []byte {
	body, _ := json.Marshal(r) // a map of plain structs always encodes
	return append(r.header(), body...)
}

func (r Record) header() []byte {
	return []byte(magic + strconv.FormatUint(r.Version, 10) + "\n")
}

// Decode reads a stored record.
func Decode(data []byte) (Record, error) {
	head, body, ok := bytes.Cut(data, []byte("\n"))
	v, err := strconv.ParseUint(strings.TrimPrefix(string(head), magic), 10, 64)
	if !ok || !bytes.HasPrefix(head, []byte(magic)) || err != nil {
		return Record{}, fmt.Errorf("%w: bad header %q", ErrCorrupt, head)
	}
	r := Record{Version: v}
	if err := json.Unmarshal(body, &r); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if r.Claims == nil {
		r.Claims = map[string]Claim{}
	}
	return r, nil
}

// HeldError names the node holding a volume another node asked for.
type HeldError struct {
	Holder string
	Claim  Claim
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("%v: node %q holds it %s since %s", ErrHeld, e.Holder, e.Claim.Mode, e.Claim.Since.UTC().Format(time.RFC3339))
}

// Unwrap makes errors.Is(err, ErrHeld) true.
func (e *HeldError) Unwrap() error { return ErrHeld }

// Add grants node the claim c, or returns the claim it already has. It
// returns the record to store and whether it differs from r; the new
// claim's Generation is the new record's version.
func (r Record) Add(node string, c Claim) (Record, Claim, bool, error) {
	if have, ok := r.Claims[node]; ok {
		if have.Mode != c.Mode {
			return r, have, false, fmt.Errorf("%w: node %q holds it %s, asked for %s", ErrIncompatible, node, have.Mode, c.Mode)
		}
		return r, have, false, nil
	}
	for _, other := range slices.Sorted(maps.Keys(r.Claims)) {
		if held := r.Claims[other]; !held.Shared || !c.Shared {
			return r, Claim{}, false, &HeldError{Holder: other, Claim: held}
		}
	}
	next := r.clone()
	next.Version++
	c.Generation = next.Version
	next.Claims[node] = c
	return next, c, true, nil
}

// Remove drops node's claim; the bool says whether there was one.
func (r Record) Remove(node string) (Record, bool) {
	if _, ok := r.Claims[node]; !ok {
		return r, false
	}
	next := r.clone()
	next.Version++
	delete(next.Claims, node)
	return next, true
}

// Check reports whether the record gives the volume to node at generation.
func (r Record) Check(node string, generation uint64) error {
	c, ok := r.Claims[node]
	if ok && c.Generation == generation {
		return nil
	}
	holders := slices.Sorted(maps.Keys(r.Claims))
	if ok {
		return fmt.Errorf("%w: node %q was attached again (generation %d, this stage carries %d)", ErrNotAttached, node, c.Generation, generation)
	}
	return fmt.Errorf("%w: the volume is attached to %q, not %q (generation %d)", ErrNotAttached, holders, node, generation)
}

// Nodes lists the nodes holding claims, sorted.
func (r Record) Nodes() []string { return slices.Sorted(maps.Keys(r.Claims)) }

func (r Record) clone() Record {
	c := Record{Version: r.Version, Claims: maps.Clone(r.Claims)}
	if c.Claims == nil {
		c.Claims = map[string]Claim{}
	}
	return c
}

// ValidateNodeID accepts the node IDs node plugins report: Kubernetes node
// names, which are DNS subdomains (RFC 1123: at most 253 characters of
// lower-case letters, digits, '-' and '.', starting and ending with a letter
// or digit). Anything else cannot name a node of this driver.
func ValidateNodeID(id string) error {
	ok := id != "" && len(id) <= 253
	for i, r := range id {
		alnum := (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9')
		inner := r == '-' || r == '.'
		if !alnum && (!inner || i == 0 || i == len(id)-1) {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("%w %q: node plugins report their Kubernetes node name (--nodeid), a DNS subdomain", ErrUnknownNode, id)
	}
	return nil
}
