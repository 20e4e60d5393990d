package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/ceph/cephtest"
	"github.com/rbd-csi/rbd-csi/internal/ceph/librbd"
	"github.com/rbd-csi/rbd-csi/internal/failpoint"
	"github.com/rbd-csi/rbd-csi/internal/kms"
)

const (
	rotateOldKEK = "b2xkLWtlay1vZi10aGUtcm90YXRpb24tdGVzdC0zMmI="
	rotateNewKEK = "bmV3LWtlay1vZi10aGUtcm90YXRpb24tdGVzdC0zMmI="
	// rotateChildEnv makes the test binary run rotate-kek and nothing else.
	rotateChildEnv = "RBDCSI_TEST_ROTATE_ARGS"
)

// TestRotateKEKChild is the rotate-kek process the crash test kills: it
// only runs when the parent test starts the test binary with rotateChildEnv.
func TestRotateKEKChild(t *testing.T) {
	args := os.Getenv(rotateChildEnv)
	if args == "" {
		t.Skip("runs only as the child of TestRotateKEKKilledMidwayAndResumed")
	}
	var list []string
	if err := json.Unmarshal([]byte(args), &list); err != nil {
		t.Fatal(err)
	}
	os.Exit(rotateKEK(list, strings.NewReader(rotateNewKEK), os.Stdout, os.Stderr))
}

// rotateNamespace makes a RADOS namespace of its own, so that the rotation
// sees only this test's images whatever else runs on the cluster.
func rotateNamespace(t *testing.T, env cephtest.Env, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rbd", "--conf", env.Conf, "namespace", "create", env.Pool+"/"+name).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "File exists") {
		t.Fatalf("rbd namespace create: %v: %s", err, out)
	}
}

func TestRotateKEKKilledMidwayAndResumed(t *testing.T) {
	env := cephtest.FromEnv(t)
	if env.Conf == "" {
		t.Skip("no ceph.conf (CEPH_CONF) for the rbd CLI")
	}
	for _, point := range []string{"rotate-after-next", "rotate-after-switch"} {
		t.Run(point, func(t *testing.T) {
			ns := "rotate-" + strings.ReplaceAll(point, "-", "") + "-" + time.Now().Format("150405.000")
			ns = strings.ReplaceAll(ns, ".", "")
			rotateNamespace(t, env, ns)
			ctx := context.Background()
			b := librbd.New(librbd.Options{OpTimeout: 30 * time.Second})
			t.Cleanup(b.Close)
			cl := env.Cluster("")
			cl.RadosNamespace = ns
			oldK, _ := kms.NewSecretKEK(rotateOldKEK)
			newK, _ := kms.NewSecretKEK(rotateNewKEK)
			deks := map[string]kms.DEK{}
			for _, name := range []string{"vol-a", "vol-b"} {
				dek, _ := kms.NewDEK()
				blob, _ := oldK.Wrap(ctx, dek, name)
				ref := ceph.ImageRef{Cluster: cl, Pool: env.Pool, Name: name}
				if err := b.CreateImage(ctx, env.Admin, ref, ceph.ImageSpec{Size: 4 << 20, Features: ceph.FeatureLayering, Metadata: map[string]string{kms.MetaDEK: blob}}); err != nil {
					t.Fatal(err)
				}
				deks[name] = dek
			}
			opens := func(name string, k kms.KMS) bool {
				info, err := b.StatImage(ctx, env.Admin, ceph.ImageRef{Cluster: cl, Pool: env.Pool, Name: name})
				if err != nil {
					t.Fatal(err)
				}
				d, err := kms.Unwrapped(ctx, k, info.Metadata, name)
				return err == nil && d.Equal(deks[name])
			}
			dir := t.TempDir()
			oldFile := filepath.Join(dir, "old")
			if err := os.WriteFile(oldFile, []byte(rotateOldKEK+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			args := []string{"--pool", env.Pool, "--rados-namespace", ns, "--old-kek-file", oldFile, "--new-kek-file", "-"}

			// Killed at the failpoint, in the first image.
			cmd := exec.Command(os.Args[0], "-test.run=^TestRotateKEKChild$")
			encoded, _ := json.Marshal(args)
			cmd.Env = append(os.Environ(), rotateChildEnv+"="+string(encoded), failpoint.EnvVar+"="+point)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("rotate-kek was not killed at %s: %v\n%s", point, err, out.String())
			}
			if !opens("vol-a", newK) {
				t.Fatal("midway, vol-a does not open with the new KEK")
			}
			if point == "rotate-after-next" && !opens("vol-a", oldK) {
				t.Fatal("midway, before the switch, vol-a does not open with the old KEK")
			}
			if !opens("vol-b", oldK) {
				t.Fatal("vol-b, not reached yet, does not open with the old KEK")
			}
			// Resumed: every image ends under the new KEK only.
			var stdout, stderr bytes.Buffer
			if rc := rotateKEK(args, strings.NewReader(rotateNewKEK), &stdout, &stderr); rc != exitOK {
				t.Fatalf("resumed run: exit %d: %s %s", rc, stdout.String(), stderr.String())
			}
			for _, name := range []string{"vol-a", "vol-b"} {
				if !opens(name, newK) || opens(name, oldK) {
					t.Errorf("%s after the resumed run: opens with new %v, old %v; want the new only", name, opens(name, newK), opens(name, oldK))
				}
			}
			for _, text := range []string{out.String(), stdout.String(), stderr.String()} {
				for _, secret := range []string{rotateOldKEK, rotateNewKEK, string(deks["vol-a"].Passphrase())} {
					if strings.Contains(text, secret) {
						t.Errorf("key material in the output: %s", text)
					}
				}
			}
			t.Logf("resumed run:\n%s", stdout.String())
		})
	}
}
