#!/usr/bin/env bash
# The benchmark's --json output parses, and every row's totals equal the sums
# of its categories.
set -euo pipefail
out="${TEST_TMPDIR:-/tmp}/footprint.json"
"$1" --json --model=tiny,7.5b --dp=1,2,64 --mode=auto --svg="${TEST_TMPDIR:-/tmp}/chart.svg" \
  >"$out"
python3 - "$out" "${TEST_TMPDIR:-/tmp}/chart.svg" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
assert len(rows) == 2 * 4 * 3, len(rows)
modes = {r["mode"] for r in rows}
assert modes == {"real", "simulated"}, modes
for r in rows:
    cats = r["categories"]
    assert set(cats) == {"param", "grad", "master", "optim", "activation", "comm", "workspace"}
    cur = sum(c["current"] for c in cats.values())
    assert cur == r["total"]["current"], (r, cur)
    states = sum(cats[k]["current"] for k in ("param", "grad", "master", "optim"))
    assert states == r["model_states"], r
    assert r["total"]["peak"] >= max(c["peak"] for c in cats.values())
    assert 1.0 <= r["ratio"] < 1.01, r
svg = open(sys.argv[2]).read()
assert svg.startswith("<svg") and "polyline" in svg and "stage 3" in svg
print("1 passed, 0 failed")
PY
