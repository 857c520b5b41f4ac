#!/usr/bin/env bash
# Create the SkyPilot venv Stratos provisions servers with (only when asked: nothing in the default
# install needs it). SkyPilot 0.14.1 pins click<8.2 and uvicorn<0.36, which conflict with Prefect 3.8
# (click 8.5, uvicorn 0.54), so it gets a venv of its own, like vLLM; Stratos runs its CLI and
# stratos/sky_helpers/*.py with this venv's python and never imports it.
#
#   bash scripts/setup-sky.sh                 # -> ~/.stratos/sky-venv (the default Stratos looks in)
#   STRATOS_SKY=/opt/sky bash scripts/setup-sky.sh
#
# Idempotent: a stamp with the pinned version skips the install. Measured on the 2-core build
# machine (2026-12-01): 63 s with the cores shared with one other job, 111 s with load average 3.7;
# the venv is 460 MB. tests/test_provision_sky.py needs it and is skipped without it.
set -euo pipefail

SKY_VERSION=0.14.1
PY=${PYTHON:-python3.11}
VENV=${STRATOS_SKY:-$HOME/.stratos/sky-venv}
VENV=${VENV%/bin}  # STRATOS_SKY may name the venv or its bin/ folder

if ! command -v "$PY" >/dev/null 2>&1; then
  echo "error: $PY not found; set PYTHON=/path/to/python3 (3.9-3.12) for the SkyPilot venv" >&2
  exit 1
fi
stamp=$VENV/.stratos-sky-installed
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$SKY_VERSION" ]; then
  echo "SkyPilot $SKY_VERSION already installed in $VENV"
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV with $PY"
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
echo "==> installing skypilot==$SKY_VERSION"
# The base package plans and launches through the cloud-neutral code; a cloud's own SDK comes with
# its extra (e.g. `skypilot[lambda,runpod]`), added with SKY_EXTRAS="lambda,runpod".
spec="skypilot==$SKY_VERSION"
if [ -n "${SKY_EXTRAS:-}" ]; then
  spec="skypilot[$SKY_EXTRAS]==$SKY_VERSION"
fi
"$VENV/bin/python" -m pip install -q "$spec"
"$VENV/bin/python" -m pip check
"$VENV/bin/python" -c "import sky; print('SkyPilot', sky.__version__, 'in', '$VENV')"
echo "$SKY_VERSION" > "$stamp"
echo "point Stratos at it with: export STRATOS_SKY=$VENV/bin   (or keep the default path)"
