package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/ceph/librbd"
	"github.com/rbd-csi/rbd-csi/internal/cephadmin"
	"github.com/rbd-csi/rbd-csi/internal/kms"
)

// rotateFlags are rotate-kek's flags.
type rotateFlags struct {
	conf, keyring    string
	timeout          time.Duration
	pool, namespace  string
	oldFile, newFile string
}

func runRotateKEK(args []string, stdout, stderr io.Writer) int {
	return rotateKEK(args, os.Stdin, stdout, stderr)
}

func rotateKEK(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rbd-csi rotate-kek", flag.ContinueOnError)
	var f rotateFlags
	fs.StringVar(&f.conf, "ceph-conf", "", "ceph.conf with the monitors (mon host)")
	fs.StringVar(&f.keyring, "keyring", "", "keyring with the admin user's key")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "upper bound of each Ceph call and of connecting")
	fs.StringVar(&f.pool, "pool", "", "RBD pool whose encrypted volumes and snapshots get the new KEK (required)")
	fs.StringVar(&f.namespace, "rados-namespace", "", "RADOS namespace of the images, as the cluster config's rbd.radosNamespace")
	fs.StringVar(&f.oldFile, "old-kek-file", "", `file holding the current KEK ("-": stdin) (required)`)
	fs.StringVar(&f.newFile, "new-kek-file", "", `file holding the new KEK ("-": stdin) (required)`)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: rbd-csi rotate-kek --pool POOL --old-kek-file FILE --new-kek-file FILE [flags]

Re-wraps the data-encryption key of every encrypted image of the pool
(volumes and snapshot images) from the old key-encryption key to the new
one; the data is not re-encrypted. Each image is rewritten in three steps
(new wrap beside the old, switch, drop the spare), so a volume opens with
one of the two KEKs at every moment and a run that was killed is finished
by running it again; the pool is listed again after each pass, for the
images made meanwhile. Put the new KEK under encryptionKEK and the old one
under encryptionKEKPrevious in the StorageClass's Secrets before the run
(nodes then open volumes under either), and remove encryptionKEKPrevious
once it reports every image done (docs/secrets.md). Keys are read from
files or stdin, never from the command line. Exit status 1 when an image
could not be re-wrapped.

`+accessHelp+`
Flags:
`)
		fs.PrintDefaults()
	}
	if rc := parseSub(fs, args, stderr); rc >= 0 {
		return rc
	}
	oldK, newK, err := f.keys(stdin)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	acc, err := cephadmin.LoadAccess(cephadmin.AccessOptions{Conf: f.conf, Keyring: f.keyring}, os.Getenv)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitError
	}
	b := librbd.New(librbd.Options{OpTimeout: f.timeout})
	defer b.Close()
	ctx, stop := signalContext()
	defer stop()
	cl := acc.Cluster
	cl.RadosNamespace = f.namespace
	r := kms.Rotation{Backend: b, Creds: acc.Admin, Cluster: cl, Pool: f.pool, Old: oldK, New: newK,
		Progress: func(image, outcome string) { fmt.Fprintf(stdout, "%s: %s\n", image, outcome) }}
	res, err := r.Run(ctx)
	fmt.Fprintf(stdout, "pool %s: %d re-wrapped, %d already under KEK %s, %d not encrypted, %d failed\n", f.pool, res.Rotated, res.Done, newK.KEKID(), res.Plain, len(res.Failed))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitError
	}
	return exitOK
}

// keys reads the two KEKs; errors name the flag, never the content.
func (f rotateFlags) keys(stdin io.Reader) (oldK, newK *kms.SecretKEK, err error) {
	switch {
	case f.pool == "":
		return nil, nil, errors.New("--pool is required")
	case f.oldFile == "" || f.newFile == "":
		return nil, nil, errors.New("--old-kek-file and --new-kek-file are required")
	case f.oldFile == "-" && f.newFile == "-":
		return nil, nil, errors.New("--old-kek-file and --new-kek-file cannot both be stdin")
	}
	if oldK, err = readKEK(f.oldFile, "--old-kek-file", stdin); err != nil {
		return nil, nil, err
	}
	if newK, err = readKEK(f.newFile, "--new-kek-file", stdin); err != nil {
		return nil, nil, err
	}
	return oldK, newK, nil
}

func readKEK(path, flagName string, stdin io.Reader) (*kms.SecretKEK, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(io.LimitReader(stdin, 4096))
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flagName, err)
	}
	k, err := kms.NewSecretKEK(string(data))
	clear(data)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", flagName, path, err)
	}
	return k, nil
}
