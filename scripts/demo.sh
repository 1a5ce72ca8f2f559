#!/usr/bin/env bash
# Set up (once) and run the main job on the embedded default: `dialer demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
. scripts/ensure-sipp.sh
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e . >/dev/null
export DIALER_DATA_DIR=${DIALER_DATA_DIR:-$PWD/data}
exec .venv/bin/dialer demo "$@"
