#!/usr/bin/env bash
# Set up (once) and run the whole test suite. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# Debian packages the tests need (Chromium comes with the web issue).
# SIPp (Debian package sip-tester) is the carrier and the agents' phones in the SIP tests.
if ! command -v sipp >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=""
    elif command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        SUDO="none"
    fi
    if [ "$SUDO" = "none" ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "warning: sipp is missing and cannot be installed here (needs root or sudo, and apt-get); the SIP tests will be skipped" >&2
    else
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sip-tester >/dev/null
    fi
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' >/dev/null
exec .venv/bin/python -m pytest -q "$@"
