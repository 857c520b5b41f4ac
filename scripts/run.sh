#!/usr/bin/env bash
# Set up (if needed) and run the main job on the embedded default: no server,
# no cloud, no GPU, no network.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
SPEC=${1:-examples/mahjong-weak-teacher.yaml}
# Torch threads follow one rule (stratos/threads.py): STRATOS_THREADS, else OMP_NUM_THREADS, else the
# idle cores (cores minus the load, at least 1). Every core wins on an idle machine (two threads: a
# weak-teacher step 1.9x faster than one); on a busy one, two threads ran ~5x slower. Decided once
# here, with the load measured over half a second now: the 1-minute average still counts the install
# above (it gave the main job one thread on an idle machine). The run and what it starts use it.
STRATOS_THREADS=$(.venv/bin/python -c "from stratos.threads import live_thread_count; print(live_thread_count())")
export STRATOS_THREADS
echo "==> torch threads: $STRATOS_THREADS (STRATOS_THREADS; see stratos/threads.py)"
exec .venv/bin/stratos run "$SPEC"
