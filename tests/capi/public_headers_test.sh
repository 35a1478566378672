#!/bin/bash
# The public headers' check ran at build time (//include/trireme:public_headers
# fails the build if a header does not compile alone or leaks an internal/ or
# SIMD header); this prints what each opened and checks every one was tried.
set -euo pipefail
report="$1" expected="$2"
cat "$report"
n=$(wc -l < "$report")
[[ "$n" -eq "$expected" ]] || { echo "FAIL: $n headers checked, $expected listed"; exit 1; }
if grep -E '/internal/|kernels/cpu/simd\.h' "$report"; then echo "FAIL: a leak"; exit 1; fi
echo "PASS: $n public headers compile alone, none opens an internal/ or SIMD header"
