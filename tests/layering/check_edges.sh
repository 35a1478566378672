#!/usr/bin/env bash
# Reads dependency edges "FROM TO" (Bazel labels, one per line) on stdin and
# prints every edge the layering forbids; exits 1 if there is any.
#
#   kernels/, optimizer/  may depend on runtime/ only through the base
#                         (runtime/core, runtime/comm)
#   runtime/, optimizer/, kernels/  must not depend on models/, tools/,
#                         bench/, examples/
#   models/               must not depend on tools/, bench/, examples/
# tests/ may depend on anything and are not checked.
set -uo pipefail
bad=0
while read -r from to; do
  [ -z "$from" ] && continue
  case "$from" in
    //kernels*|//optimizer*)
      case "$to" in
        //runtime/core*|//runtime/comm*) ;;
        //runtime*) echo "forbidden: $from -> $to (only runtime/core and runtime/comm)"; bad=1 ;;
      esac ;;
  esac
  case "$from" in
    //runtime*|//optimizer*|//kernels*)
      case "$to" in
        //models*|//tools*|//bench*|//examples*) echo "forbidden: $from -> $to (upward)"; bad=1 ;;
      esac ;;
    //models*)
      case "$to" in
        //tools*|//bench*|//examples*) echo "forbidden: $from -> $to (upward)"; bad=1 ;;
      esac ;;
  esac
done
exit "$bad"
