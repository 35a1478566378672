#!/usr/bin/env bash
# Runs a GPU test binary (see gpu_test in tools/cuda.bzl).
exec "$@"
