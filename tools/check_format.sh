#!/usr/bin/env bash
# Every C++ and CUDA source outside third_party/ must be as clang-format
# (the repository's .clang-format) writes it. Lists each file that is not,
# with the first lines of its diff, and exits 1. --fix formats them instead.
set -uo pipefail
cd "$(dirname "$0")/.."
fmt=$(command -v clang-format-14 || command -v clang-format) ||
  { echo "check_format: clang-format is missing (as root: apt-get install clang-format)"; exit 1; }
bad=0
while IFS= read -r f; do
  if [ "${1:-}" = --fix ]; then
    "$fmt" -i "$f"
  elif ! "$fmt" --dry-run -Werror "$f" > /dev/null 2>&1; then
    echo "not formatted: $f"
    diff <("$fmt" "$f") "$f" | head -n 8 | sed 's/^/    /'
    bad=$((bad + 1))
  fi
done < <(git ls-files '*.c' '*.cc' '*.h' '*.cu' '*.cuh' | grep -v '^third_party/')
if [ $bad -gt 0 ]; then
  echo "check_format: $bad file(s) differ from $($fmt --version | head -n 1); fix with tools/check_format.sh --fix"
  exit 1
fi
echo "check_format: every source file is formatted ($("$fmt" --version | head -n 1))"
