#!/usr/bin/env python3
"""Per-testsuite counts from the JUnit report(s) of e2e-storage.test.

usage: junit-table.py [--focus REGEX] [--skip 'REGEX|REASON']... JUNIT.xml...

Prints a Markdown table (testsuite, passed, failed, skipped, why skipped),
the failed specs, and `N passed, N failed, N skipped`. Skipped counts the
specs skipped at run time, with their reason, and those the run's --skip
left out (each --skip names the regex given to ginkgo and its reason)
among those the run's --focus selected; specs outside it are not counted.
"""
import collections
import re
import sys
import xml.etree.ElementTree as ET

# a pattern may carry tags of its own: "[Testpattern: Dynamic PV (xfs)] [Slow]"
SUITE = re.compile(r"\[Testpattern: [^\]]*\](?: \[[^\]]*\])* (\S+) ")


def suite_of(name):
    """The testsuite of a spec; None for the suite's setup and teardown."""
    m = SUITE.search(name)
    return m.group(1) if m else None


def reason_of(message):
    """The skip reason without ginkgo's prefix, short and on one line."""
    text = " ".join(message.split())
    text = re.sub(r"^skipped - ", "", text)
    return text[:110]


def main(argv):
    skips, paths, focus = [], [], re.compile("")
    while argv:
        arg = argv.pop(0)
        if arg == "--focus" and argv:
            focus = re.compile(argv.pop(0))
        elif arg == "--skip" and argv:
            regex, _, reason = argv.pop(0).partition("|")
            skips.append((re.compile(regex), reason))
        else:
            paths.append(arg)
    rows = collections.OrderedDict()
    failed_specs = []
    for path in paths:
        for case in ET.parse(path).iter("testcase"):
            name = case.get("name", "")
            suite = suite_of(name)
            failed = case.find("failure") is not None or case.find("error") is not None
            if suite is None and not failed:
                continue  # setup and teardown count only when they fail
            row = rows.setdefault(suite or "(suite setup)", {"passed": 0, "failed": 0, "skipped": 0, "why": collections.Counter()})
            skipped = case.find("skipped")
            if failed:
                row["failed"] += 1
                failed_specs.append(name)
            elif skipped is not None:
                message = skipped.get("message", "")
                if message.strip() == "skipped":
                    text = re.sub(r"^\[It\] ", "", name)
                    reasons = [r for rx, r in skips if focus.search(text) and rx.search(text)]
                    if not reasons:
                        continue  # left out by the focus
                    message = reasons[0]
                row["skipped"] += 1
                row["why"][reason_of(message)] += 1
            elif case.get("status", "passed") == "passed":
                row["passed"] += 1
    rows = {k: v for k, v in rows.items() if v["passed"] or v["failed"] or v["skipped"]}
    print("| testsuite | passed | failed | skipped | why skipped |")
    print("| --- | ---: | ---: | ---: | --- |")
    total = collections.Counter()
    for suite in sorted(rows):
        row = rows[suite]
        why = "; ".join(f"{r} ({n})" if n > 1 else r for r, n in row["why"].most_common())
        print(f"| {suite} | {row['passed']} | {row['failed']} | {row['skipped']} | {why} |")
        for key in ("passed", "failed", "skipped"):
            total[key] += row[key]
    for name in failed_specs:
        print(f"failed: {name}")
    print(f"{total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
