#!/usr/bin/env bash
# Set up (once) and run the whole test suite. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# Debian packages the tests need: SIPp (the carrier and agents' phones), Chromium and
# chromedriver (the browser tests).
. scripts/ensure-sipp.sh
. scripts/ensure-chromium.sh
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' >/dev/null
# the layers core <- rules <- campaigns <- dialer (.importlinter) hold before any test runs
.venv/bin/lint-imports --no-cache >/dev/null || { .venv/bin/lint-imports --no-cache; exit 1; }
exec .venv/bin/python -m pytest -q "$@"
