"""The README's main command works end to end on an empty data directory."""

import os
import pathlib
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from cli import main
from sip_harness import needs_sip


def test_demo_runs_on_a_fresh_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DIALER_DATA_DIR", str(tmp_path))
    r = CliRunner().invoke(main, ["demo", "--no-sip"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    out = r.output
    assert "national DNC registry (sample): 5 numbers, 2 junk line(s)" in out
    assert "911                BLOCKED" in out and "emergency: 911 is or reaches an emergency number" in out
    assert "list import 1: 26 rows, 24 imported, 2 rejected" in out
    assert "preview: dialable now" in out and "dry run, next 24 h" in out
    # it ends with the demo account's balance and the draft invoice of the current period
    period = re.search(r"== billing: (\d{4}-\d{2}) rated with the sample rate deck", out).group(1)
    assert "balance of account demo: $0.000000" in out
    assert f"invoice A1-{period} (DRAFT), demo {period} (UTC)" in out and "account fee, " in out
    assert out.rstrip().splitlines()[-1].strip().startswith("amount due")
    # a second run starts fresh again
    r2 = CliRunner().invoke(main, ["demo", "--no-sip"], catch_exceptions=False)
    assert r2.exit_code == 0 and "list import 1:" in r2.output


@needs_sip
def test_demo_dials_over_sip(tmp_path):
    """The whole product on one machine: the live campaign over SIPp carriers and SIPp
    agents, through the installed console command (its own process and reactor)."""
    env = dict(os.environ, DIALER_DATA_DIR=str(tmp_path))
    exe = pathlib.Path(sys.executable).with_name("dialer")
    r = subprocess.run([str(exe), "demo", "--seconds", "25", "--agents", "3"], env=env, capture_output=True,
                       text=True, timeout=240)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    if "live dialing skipped: no demo time zone" in out:
        pytest.skip("no demo zone inside calling hours now")
    assert "3 agents logged in over SIP" in out
    m = re.search(r"dials (\d+), live answers (\d+), connected to agents (\d+)", out)
    assert m and int(m.group(1)) > 0, out
    cdrs = int(re.search(r"CDRs written (\d+)", out).group(1))
    assert cdrs == int(m.group(1))  # every dial became a CDR
    assert "blocked by rule (never dialled): " in out and "dnc" in out.split("blocked by rule")[1]
    # the calls are rated into the draft invoice of the period
    charged = int(re.search(r"== billing: \S+ rated with the sample rate deck: (\d+) calls charged", out).group(1))
    assert charged > 0 and "(DRAFT)" in out and "telecom +1 United States and Canada" in out
