#!/bin/bash
# //tools:plan as a user runs it: the Llama-70B example (top configurations,
# the explanation, JSON and SVG), --explain, --fewest_gpus on a smaller
# model, and bad input named with exit status 2.
set -euo pipefail
plan="$1"
out="${TEST_TMPDIR:-/tmp}/plan"
mkdir -p "$out"
fail() { echo "FAIL: $*"; exit 1; }

"$plan" --model=llama-70b --seq=4096 --global_batch=1024 --gpus=64 --gpus_per_node=8 \
  --hardware=h100-80gb --top=3 --json="$out/plan.json" --svg="$out/plan.svg" >"$out/top.txt"
cat "$out/top.txt"
grep -q "^1 .*dp[0-9]*\.tp[0-9]*\.pp" "$out/top.txt" || fail "no ranked configuration"
grep -q "^3 " "$out/top.txt" || fail "fewer than --top=3 configurations"
grep -q "the top configuration, explained" "$out/top.txt" || fail "top not explained"
grep -q "verdict: fits" "$out/top.txt" || fail "no memory verdict"
python3 - "$out/plan.json" "$out/plan.svg" <<'PY'
import json, sys
import xml.dom.minidom
j = json.load(open(sys.argv[1]))
assert len(j["best"]) == 3, j["best"]
configs = {c["config"]: c for c in j["configurations"]}
assert j["enumerated"] > 1000 and j["pruned_by_lower_bound"] > 0, j["enumerated"]
for name in j["best"]:
    c = configs[name]
    assert c["fits"] and c["memory"]["peak_bytes"] <= 0.9 * 80e9, c
times = [configs[n]["time"]["total_s"] for n in j["best"]]
assert times == sorted(times), times
svg = xml.dom.minidom.parse(sys.argv[2])
assert len(svg.getElementsByTagName("circle")) >= 3
print("json and svg: ok")
PY

best=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['best'][0])" "$out/plan.json")
"$plan" --model=llama-70b --seq=4096 --global_batch=1024 --gpus=64 --hardware=h100-80gb \
  --explain="$best" >"$out/explain.txt"
cat "$out/explain.txt"
grep -q "//:train --dp=" "$out/explain.txt" || fail "--explain prints no //:train flags"
grep -q "exposed TP" "$out/explain.txt" || fail "--explain prints no breakdown"

"$plan" --model=llama-7b --global_batch=256 --gpus=8 --hardware=a100-80gb --fewest_gpus \
  --top=1 >"$out/fewest.txt"
grep -q "^Serving: " "$out/fewest.txt" || fail "no serving answer"
grep -q "^Training: .* is the fewest" "$out/fewest.txt" || fail "no training answer"

expect_bad() {
  local want="$1"; shift
  set +e
  "$plan" "$@" >"$out/bad.txt" 2>&1
  local rc=$?
  set -e
  cat "$out/bad.txt"
  [[ $rc == 2 ]] || fail "exit $rc for $*"
  grep -q -- "$want" "$out/bad.txt" || fail "'$want' not in the message for $*"
}
expect_bad "global_batch is required" --model=llama-7b --gpus=8
expect_bad "no preset 'llama-9b'" --model=llama-9b --gpus=8 --global_batch=8
expect_bad "not a flag of plan" --model=llama-7b --gpus=8 --global_batch=8 --dp=2
expect_bad "does not split" --model=llama-7b --gpus=8 --global_batch=12 \
  --explain=dp8.tp1.pp1.v1.z1.mb1.rc0.sp0
set +e
"$plan" --model=llama-7b --gpus=8 --global_batch=8 --hardware=tpu-v9 >"$out/bad.txt" 2>&1
rc=$?
set -e
[[ $rc == 1 ]] && grep -q "hardware 'tpu-v9'" "$out/bad.txt" || fail "unknown hardware: exit $rc"
echo PASS
