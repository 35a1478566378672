#!/usr/bin/env bash
# Runs the collective suite on the mpi backend with 4 processes.
set -euo pipefail
bin="$1"
exec mpirun -np 4 --oversubscribe --bind-to none --mca btl self,vader \
  "$bin" --gtest_brief=1
