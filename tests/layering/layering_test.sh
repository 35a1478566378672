#!/usr/bin/env bash
# The layering rule (DESIGN.md, "Layers"), checked on the real build graph with
# `bazel query`. Runs unsandboxed (tag "local") against the source tree, with
# its own output base so it does not wait for the outer Bazel server.
set -uo pipefail
check="$TEST_SRCDIR/$TEST_WORKSPACE/tests/layering/check_edges.sh"

# 1. The checker itself must catch forbidden edges (a check that cannot fail
#    is no check).
if printf '%s\n' "//kernels/cpu:adam //runtime/zero:engine" | bash "$check" >/dev/null; then
  echo "FAIL: checker accepted kernels -> runtime/zero"; exit 1
fi
if printf '%s\n' "//runtime/core:memory //models:gpt" | bash "$check" >/dev/null; then
  echo "FAIL: checker accepted runtime -> models"; exit 1
fi
if ! printf '%s\n' "//optimizer:adamw //runtime/core:dtype" "//tools:demo //runtime/grid:grid" |
    bash "$check" >/dev/null; then
  echo "FAIL: checker rejected allowed edges"; exit 1
fi

# 2. The real graph. Find the workspace from a source file's real path.
ws="$(dirname "$(readlink -f "$TEST_SRCDIR/$TEST_WORKSPACE/WORKSPACE")")"
cd "$ws" || exit 1
roots=()
for d in runtime optimizer kernels models; do
  [ -d "$d" ] && roots+=("//$d/...")
done
expr="$(IFS=+; echo "${roots[*]}")"
# Outside the workspace and the outer output base (a nested output base under
# the execroot would be visible through the bazel-* symlinks).
out_base="/tmp/trireme_layering_$(id -u)_$(echo "$ws" | md5sum | cut -c1-8)"
errs="${TEST_TMPDIR:-/tmp}/query.err"
edges="$(env -u TEST_TMPDIR bazel --output_base="$out_base" --batch query --noshow_progress \
  "let libs = kind('cc_library|cc_binary', $expr) in deps(\$libs, 1)" \
  --output=graph --nograph:factored 2>"$errs" |
  sed -n 's/^ *"\([^"]*\)" -> "\([^"]*\)".*/\1 \2/p')"
if [ -z "$edges" ]; then
  echo "FAIL: bazel query returned no edges"; cat "$errs"; exit 1
fi
echo "checked $(echo "$edges" | wc -l) dependency edges under ${roots[*]}"
if ! echo "$edges" | bash "$check"; then
  echo "FAIL: layering violated"; exit 1
fi
echo "1 passed, 0 failed"
