#!/usr/bin/env bash
# Set up (if needed) and run the main job on the embedded default: no server,
# no cloud, no GPU, no network.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
SPEC=${1:-examples/plan.yaml}
exec .venv/bin/stratos plan "$SPEC"
