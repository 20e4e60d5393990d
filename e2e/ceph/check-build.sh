#!/bin/bash
# What `make build` checks first: the cgo build of go-ceph needs Go, a C
# compiler and the librados/librbd development headers. Prints one line
# naming what is missing and the command that installs it, instead of the
# compiler's stack of cgo errors; exits 1 then, 0 when all is there.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CC=${CC:-gcc}

if ! command -v go >/dev/null; then
  echo "build: Go $(sed -n 's/^go //p' "$HERE/../../go.mod") or newer is needed and was not found on PATH or in /usr/local/go/bin" >&2
  exit 1
fi
missing=()
if ! command -v "$CC" >/dev/null; then
  missing+=("a C compiler ($CC)")
else
  # the compiler's own include path decides, not a guess at /usr/include
  has_header() { printf '#include <%s>\n' "$@" | timeout 60 "$CC" -E -x c - >/dev/null 2>&1; }
  has_header stdlib.h || missing+=("the C library headers (libc6-dev)")
  has_header rados/librados.h rbd/librbd.h || missing+=("the librados/librbd headers (librados-dev, librbd-dev)")
fi
[ ${#missing[@]} -eq 0 ] && exit 0
list=$(printf '%s, ' "${missing[@]}")
echo "build: missing ${list%, }; install them with: sudo bash $HERE/install.sh (or: make deps)" >&2
exit 1
