#!/usr/bin/env bash
# One prepared GPU check: everything only a GPU can show, in one go (under 8
# minutes on one GPU), into DIR/gpu_check.json and DIR/summary.txt.
#
#   bash bench/gpu_check.sh [--dry-run] [--out DIR] [--skip NAME ...] [--overwrite]
#
# --dry-run: the same steps on the CPU at tiny sizes (CI). The work is done by
# bench/gpu_check.py (python3 -m bench.gpu_check --help lists every flag).
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || exit 2
export GPU_CHECK_CALLER_DIR="$PWD"   # a relative --out is relative to where you are
cd "$here" || exit 2
exec "${PYTHON:-python3}" -m bench.gpu_check "$@"
