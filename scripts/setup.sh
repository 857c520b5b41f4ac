#!/usr/bin/env bash
# Create .venv and install Stratos with its pinned stack. Idempotent: a stamp
# keyed on pyproject.toml skips the install when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "error: $PY not found; Stratos needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $PY"
  "$PY" -m venv .venv
fi

stamp=.venv/.stratos-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, from the CPU wheel: installed later as a dependency it would
# drag in CUDA packages.
echo "==> installing torch 2.13.0 (CPU wheel)"
.venv/bin/python -m pip install -q "torch==2.13.0"
echo "==> installing stratos and its pinned dependencies"
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/python -m pip check
echo "$want" > "$stamp"
