#!/usr/bin/env bash
# Builds (via Bazel) and runs the embedding example; it exits non-zero unless
# the loss fell below its threshold.
set -uo pipefail
out="$("$1" 2>&1)"
code=$?
echo "$out"
if [ "$code" -ne 0 ]; then echo "0 passed, 1 failed"; exit 1; fi
grep -q "final loss" <<< "$out" || { echo "no final loss printed"; exit 1; }
echo "1 passed, 0 failed"
