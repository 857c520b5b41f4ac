#!/usr/bin/env bash
# Set up (if needed) and run the main job on the embedded default: no server,
# no cloud, no GPU, no network.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
SPEC=${1:-examples/mahjong-weak-teacher.yaml}
# Every core to the run's torch work: on an idle 2-core machine two threads made a weak-teacher step
# 1.9x and a student step 1.6x faster than one. On a machine shared with other heavy jobs,
# OMP_NUM_THREADS=1 avoids threads fighting over cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
exec .venv/bin/stratos run "$SPEC"
