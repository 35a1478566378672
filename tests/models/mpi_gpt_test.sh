#!/usr/bin/env bash
# The (2, 2, 2) GPT under mpirun with 8 processes, on the cpu and the
# cpu_async device.
set -euo pipefail
for device in cpu cpu_async; do
  echo "== device $device"
  TRIREME_TEST_DEVICE=$device mpirun -np 8 --oversubscribe --bind-to none --mca btl self,vader \
    -x TRIREME_TEST_DEVICE "$1"
done
