#!/usr/bin/env bash
# Set up (if needed) and run the main job on the embedded default: no server,
# no cloud, no GPU, no network.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
SPEC=${1:-examples/mahjong-weak-teacher.yaml}
# One torch thread per process: on a small shared CPU, two threads per process fight and run slower.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv/bin/stratos run "$SPEC"
