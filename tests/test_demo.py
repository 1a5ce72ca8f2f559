"""The README's main command works end to end on an empty data directory."""

from click.testing import CliRunner

from cli import main


def test_demo_runs_on_a_fresh_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DIALER_DATA_DIR", str(tmp_path))
    r = CliRunner().invoke(main, ["demo"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    out = r.output
    assert "national DNC registry (sample): 5 numbers, 2 junk line(s)" in out
    assert "911                BLOCKED" in out and "emergency: 911 is or reaches an emergency number" in out
    assert "list import 1: 26 rows, 24 imported, 2 rejected" in out
    assert "preview: dialable now" in out and "dry run, next 24 h" in out
    # a second run starts fresh again
    r2 = CliRunner().invoke(main, ["demo"], catch_exceptions=False)
    assert r2.exit_code == 0 and "list import 1:" in r2.output
