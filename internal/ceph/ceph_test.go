package ceph

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

const secretKey = "AQD1Zm9vYmFyc2VjcmV0a2V5MDEyMzQ1Njc4OQ=="

func TestCredentialsNeverPrintTheKey(t *testing.T) {
	c := Credentials{User: "kube", Key: secretKey}
	type holder struct{ Creds Credentials }
	outputs := map[string]string{
		"String()":            c.String(),
		"GoString()":          c.GoString(),
		"%v":                  fmt.Sprintf("%v", c),
		"%+v":                 fmt.Sprintf("%+v", c),
		"%#v":                 fmt.Sprintf("%#v", c),
		"%s":                  fmt.Sprintf("%s", c),
		"%q":                  fmt.Sprintf("%q", c),
		"%v of a pointer":     fmt.Sprintf("%v", &c),
		"%+v of a pointer":    fmt.Sprintf("%+v", &c),
		"%#v of a pointer":    fmt.Sprintf("%#v", &c),
		"%v of a slice":       fmt.Sprintf("%v", []Credentials{c}),
		"%+v of a map":        fmt.Sprintf("%+v", map[string]Credentials{"a": c}),
		"%+v inside a struct": fmt.Sprintf("%+v", holder{c}),
		"%#v inside a struct": fmt.Sprintf("%#v", holder{c}),
		"Error wrapping %v":   fmt.Errorf("using %v", c).Error(),
	}
	for how, out := range outputs {
		if strings.Contains(out, secretKey) {
			t.Errorf("%s prints the key: %s", how, out)
		}
		if !strings.Contains(out, "client.kube") {
			t.Errorf("%s = %q: want the user named", how, out)
		}
	}
}

func TestImageRefStringIsTheRBDImageSpec(t *testing.T) {
	tests := []struct {
		ref  ImageRef
		want string
	}{
		{ImageRef{Pool: "kube", Name: "img"}, "kube/img"},
		{ImageRef{Cluster: Cluster{ID: "c1", RadosNamespace: "ns"}, Pool: "kube", Name: "img"}, "kube/ns/img"},
	}
	for _, tc := range tests {
		if got := tc.ref.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.ref, got, tc.want)
		}
	}
}

func TestClusterKeyDistinguishesIDMonitorsAndNamespace(t *testing.T) {
	clusters := []Cluster{
		{ID: "c1", Monitors: []string{"a:1"}},
		{ID: "c2", Monitors: []string{"a:1"}},
		{ID: "c1", Monitors: []string{"b:1"}},
		{ID: "c1", Monitors: []string{"a:1"}, RadosNamespace: "ns"},
		{Monitors: []string{"a:1", "b:1"}},
	}
	seen := map[string]int{}
	for i, c := range clusters {
		if j, dup := seen[c.Key()]; dup {
			t.Errorf("clusters %d and %d share the key %q", j, i, c.Key())
		}
		seen[c.Key()] = i
	}
}

func TestOpErrorNamesTheOperationAndUnwrapsToTheSentinel(t *testing.T) {
	var err error = &OpError{Op: "create image", Target: "kube/img", Err: ErrExists}
	if !errors.Is(err, ErrExists) || errors.Is(err, ErrNotFound) {
		t.Errorf("errors.Is does not see exactly the wrapped sentinel in %v", err)
	}
	if got, want := err.Error(), "create image kube/img: already exists"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
