#!/bin/bash
# What `make fuzz` runs: every fuzz target of the module (func FuzzXxx in a
# _test.go file), one after the other, each for FUZZTIME (default 10s).
#
# A finding fails the run: go test prints it and keeps the input under the
# package's testdata/fuzz/<target>/, so that plain `go test` replays it from
# then on. A run that fails WITHOUT writing an input there is Go's fuzzing
# coordinator tripping over its own -fuzztime deadline on a busy machine
# ("context deadline exceeded"; golang/go#75804, fixed in Go 1.27): that
# target is run once more, and fails the run only if it fails again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
FUZZTIME=${FUZZTIME:-10s}
TAGS=${GO_TAGS:-pacific}

# inputs DIR: how many saved failing inputs DIR holds
inputs() { find "$1" -type f 2>/dev/null | wc -l; }

# fuzz_once PKG FN: 0 passed, 1 finding written, 2 failed without a finding
fuzz_once() {
  local pkg=$1 fn=$2 dir=$1/testdata/fuzz/$2 before
  before=$(inputs "$dir")
  if go test -tags "$TAGS" -run '^$' -fuzz "^$fn\$" -fuzztime "$FUZZTIME" "$pkg" 2>&1 | tail -n 20; then
    return 0
  fi
  [ "$(inputs "$dir")" -gt "$before" ] && return 1
  return 2
}

total=0
findings=()
while IFS= read -r file; do
  pkg=./$(dirname "$file")
  for fn in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
    total=$((total + 1))
    echo "==== fuzz $pkg $fn ($FUZZTIME)"
    rc=0
    fuzz_once "$pkg" "$fn" || rc=$?
    if [ "$rc" -eq 2 ]; then
      echo "==== $fn failed without a failing input (Go fuzz coordinator deadline race): once more"
      rc=0
      fuzz_once "$pkg" "$fn" || rc=$?
    fi
    [ "$rc" -eq 0 ] || findings+=("$pkg $fn ($([ "$rc" -eq 1 ] && echo "input saved in $pkg/testdata/fuzz/$fn" || echo "failed twice without an input"))")
  done
done < <(grep -rl --include='*_test.go' '^func Fuzz' cmd internal e2e | sort)

echo "fuzz summary: $total fuzz targets run for $FUZZTIME each, ${#findings[@]} failed"
for f in "${findings[@]}"; do echo "  FAILED: $f"; done
[ "$total" -gt 0 ] || { echo "fuzz: no fuzz targets found" >&2; exit 1; }
[ "${#findings[@]}" -eq 0 ]
