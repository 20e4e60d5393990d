package attach

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/ceph/cephfake"
)

var (
	rwo = Claim{Mode: "SINGLE_NODE_WRITER"}
	rox = Claim{Mode: "MULTI_NODE_READER_ONLY", Shared: true, ReadOnly: true}
	rwx = Claim{Mode: "MULTI_NODE_MULTI_WRITER", Shared: true}
)

func recordWith(claims map[string]Claim) Record {
	return Record{Version: 7, Claims: claims}
}

func TestAddDecidesWhoMayHoldTheVolume(t *testing.T) {
	tests := []struct {
		name    string
		held    map[string]Claim
		node    string
		want    Claim
		err     error
		changed bool
	}{
		{"first single-node claim is granted", nil, "a", rwo, nil, true},
		{"same node and mode again is granted unchanged", map[string]Claim{"a": rwo}, "a", rwo, nil, false},
		{"same node with another mode is incompatible", map[string]Claim{"a": rwo}, "a", rox, ErrIncompatible, false},
		{"second node of a single-node volume is refused", map[string]Claim{"a": rwo}, "b", rwo, ErrHeld, false},
		{"shared claim next to a single-node one is refused", map[string]Claim{"a": rwo}, "b", rox, ErrHeld, false},
		{"single-node claim next to shared ones is refused", map[string]Claim{"a": rox}, "b", rwo, ErrHeld, false},
		{"readers share", map[string]Claim{"a": rox, "b": rox}, "c", rox, nil, true},
		{"multi-writers share", map[string]Claim{"a": rwx}, "b", rwx, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := recordWith(tt.held)
			next, got, changed, err := r.Add(tt.node, tt.want)
			if !errors.Is(err, tt.err) || changed != tt.changed {
				t.Fatalf("Add = changed %v, %v; want changed %v, %v", changed, err, tt.changed, tt.err)
			}
			if err != nil {
				return
			}
			if changed && (next.Version != r.Version+1 || got.Generation != next.Version || next.Claims[tt.node] != got) {
				t.Errorf("granted claim %+v in record v%d, want generation %d stored", got, next.Version, r.Version+1)
			}
			if _, ok := r.Claims[tt.node]; changed && ok {
				t.Error("Add changed the record it was called on")
			}
		})
	}
}

func TestHeldErrorNamesTheHolder(t *testing.T) {
	_, _, _, err := recordWith(map[string]Claim{"node-a": rwo}).Add("node-b", rwo)
	var held *HeldError
	if !errors.As(err, &held) || held.Holder != "node-a" || !strings.Contains(err.Error(), `"node-a"`) {
		t.Fatalf("err = %v, want a HeldError naming node-a", err)
	}
}

func TestRemoveDropsOnlyThatNode(t *testing.T) {
	r := recordWith(map[string]Claim{"a": rox, "b": rox})
	next, changed := r.Remove("a")
	if !changed || next.Version != 8 || len(next.Claims) != 1 || len(r.Claims) != 2 {
		t.Fatalf("Remove(a) = %+v changed %v", next, changed)
	}
	if _, changed := next.Remove("a"); changed {
		t.Error("removing a missing claim changed the record")
	}
}

func TestCheckAcceptsOnlyTheCurrentClaimOfTheNode(t *testing.T) {
	r := recordWith(map[string]Claim{"a": {Mode: rwo.Mode, Generation: 5}})
	tests := []struct {
		name string
		node string
		gen  uint64
		ok   bool
	}{
		{"current claim", "a", 5, true},
		{"older attachment of the same node", "a", 4, false},
		{"another node", "b", 5, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := r.Check(tt.node, tt.gen)
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrNotAttached)) {
				t.Fatalf("Check(%s, %d) = %v, want ok=%v", tt.node, tt.gen, err, tt.ok)
			}
		})
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	r := recordWith(map[string]Claim{"a": {Mode: rwo.Mode, Generation: 7}})
	data := r.Encode()
	if !strings.HasPrefix(string(data), "rbd-csi-attach 7\n") {
		t.Fatalf("stored form %q lacks the version header", data)
	}
	got, err := Decode(data)
	if err != nil || got.Version != 7 || got.Claims["a"] != r.Claims["a"] {
		t.Fatalf("Decode = %+v, %v", got, err)
	}
}

func TestDecodeRefusesDamagedRecords(t *testing.T) {
	for _, data := range []string{"", "rbd-csi-attach x\n{}", "other 1\n{}", "rbd-csi-attach 1\n{", "rbd-csi-attach 1"} {
		if _, err := Decode([]byte(data)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Decode(%q) = %v, want ErrCorrupt", data, err)
		}
	}
}

func TestValidateNodeID(t *testing.T) {
	for _, id := range []string{"node-1", "ip-10-0-0-1.eu-west-1.compute.internal", "a", "5f0c1f4e-8d7b-4b4a-9c55-6e2d9a3b1c00"} {
		if err := ValidateNodeID(id); err != nil {
			t.Errorf("ValidateNodeID(%q) = %v, want nil", id, err)
		}
	}
	for _, id := range []string{"", "Node1", "fake_node", "-a", "a-", strings.Repeat("a", 254), "a b"} {
		if err := ValidateNodeID(id); !errors.Is(err, ErrUnknownNode) {
			t.Errorf("ValidateNodeID(%q) = %v, want ErrUnknownNode", id, err)
		}
	}
}

const key = "AQBdc1tlAAAAABAAl4m3cMfXTsXX0bO8Z2ZMXA=="

func testStore() (Store, ceph.ImageRef, *cephfake.Backend) {
	fake := cephfake.New("admin", key, "kube")
	ref := ceph.ImageRef{Cluster: ceph.Cluster{ID: "c"}, Pool: "kube", Name: "img"}
	return Store{Backend: fake, Creds: ceph.Credentials{User: "admin", Key: key}}, ref, fake
}

func claim(s Store, ref ceph.ImageRef, node string, c Claim) error {
	_, err := s.Update(context.Background(), ref, func(r Record) (Record, bool, error) {
		next, _, changed, err := r.Add(node, c)
		return next, changed, err
	})
	return err
}

func TestConcurrentClaimsOfASingleNodeVolumeGrantExactlyOne(t *testing.T) {
	s, ref, _ := testStore()
	const nodes = 12
	errs := make([]error, nodes)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() { errs[i] = claim(s, ref, fmt.Sprintf("node-%d", i), rwo) })
	}
	wg.Wait()
	granted := 0
	for i, err := range errs {
		switch {
		case err == nil:
			granted++
		case !errors.Is(err, ErrHeld):
			t.Errorf("node-%d: %v, want granted or ErrHeld", i, err)
		}
	}
	if granted != 1 {
		t.Fatalf("%d of %d nodes were granted the volume, want exactly 1", granted, nodes)
	}
}

func TestConcurrentSharedClaimsAreAllKept(t *testing.T) {
	s, ref, _ := testStore()
	const nodes = 12
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() {
			if err := claim(s, ref, fmt.Sprintf("node-%d", i), rox); err != nil {
				t.Errorf("node-%d: %v", i, err)
			}
		})
	}
	wg.Wait()
	r, _, err := s.Load(context.Background(), ref)
	if err != nil || len(r.Claims) != nodes {
		t.Fatalf("record holds %d claims (%v), want %d: a concurrent update was lost", len(r.Claims), err, nodes)
	}
}

func TestDropRefusesAnAttachedVolumeAndRemovesAnIdleRecord(t *testing.T) {
	s, ref, fake := testStore()
	ctx := context.Background()
	if err := s.Drop(ctx, ref); err != nil {
		t.Fatalf("Drop of no record: %v", err)
	}
	if err := claim(s, ref, "a", rwo); err != nil {
		t.Fatal(err)
	}
	if err := s.Drop(ctx, ref); !errors.Is(err, ErrAttached) || !strings.Contains(err.Error(), `"a"`) {
		t.Fatalf("Drop of an attached volume = %v, want ErrAttached naming a", err)
	}
	if _, err := s.Update(ctx, ref, func(r Record) (Record, bool, error) { n, c := r.Remove("a"); return n, c, nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Drop(ctx, ref); err != nil || fake.AttachRecord(ref) != nil {
		t.Fatalf("Drop of an idle record = %v, record left %q", err, fake.AttachRecord(ref))
	}
}

func TestUpdateGivesUpOnARecordThatKeepsChanging(t *testing.T) {
	s, ref, fake := testStore()
	if err := claim(s, ref, "a", rox); err != nil {
		t.Fatal(err)
	}
	fake.Fail = func(op string, _ ceph.ImageRef) error {
		if op == "swap-attach" {
			return ceph.ErrConflict
		}
		return nil
	}
	if err := claim(s, ref, "b", rox); !errors.Is(err, ErrContended) {
		t.Fatalf("claim under endless conflicts = %v, want ErrContended", err)
	}
}
