#!/bin/bash
# Summarises `go test -v` output (or test binaries run with -test.v): prints
# "N passed, N failed, N skipped", then the failing tests, failed packages
# and each skipped test with its reason. Used by run-tests.sh (make test)
# and kernel/test-kernel.sh (make test-kernel).
#
# usage: test-summary.sh LOG...
set -euo pipefail
# go test -v prints "--- PASS|FAIL|SKIP: Name (time)", indented for subtests.
# A test's log lines ("    file.go:NN: text") are streamed after its
# "=== RUN|CONT|NAME Name" line, so the skip reason (t.Skip's message) is the
# last log line of the skipped test; older Go printed it right after the
# "--- SKIP" line instead, which is honoured too.
awk '
  function indent(s) { match(s, /^[ \t]*/); return RLENGTH }
  function trim(s) { sub(/^[ \t]+/, "", s); return s }
  function name_of(s) { s = trim(s); sub(/^--- [A-Z]+: /, "", s); sub(/ \([0-9.]+s\)$/, "", s); return s }
  /^=== (RUN|CONT|NAME) / { cur = $3; after_skip = 0; next }
  /^[ \t]+[^ \t]+\.go:[0-9]+: / {
    if (after_skip && indent($0) > skip_indent) reason[skip] = trim($0)
    else if (cur != "") last[cur] = trim($0)
    next
  }
  { after_skip = 0 }
  /^[ \t]*--- PASS: / { pass++ }
  /^[ \t]*--- FAIL: / { fails[++fail] = name_of($0) }
  /^[ \t]*--- SKIP: / {
    n = name_of($0); skips[++skip] = n
    if (n in last) reason[skip] = last[n]
    skip_indent = indent($0); after_skip = 1
  }
  /^FAIL[ \t]+[^ \t]+/ { pkgs[++npkg] = $2 }
  END {
    printf "%d passed, %d failed, %d skipped\n", pass, fail, skip
    if (fail) { print "failed tests:"; for (i = 1; i <= fail; i++) print "  " fails[i] }
    if (npkg) { print "failed packages:"; for (i = 1; i <= npkg; i++) print "  " pkgs[i] }
    if (skip) {
      print "skipped tests:"
      for (i = 1; i <= skip; i++) print "  " skips[i] ": " (i in reason ? reason[i] : "(no reason given)")
    }
  }' "$@"
