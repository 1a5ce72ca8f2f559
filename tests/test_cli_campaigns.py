"""CLI for accounts, campaigns, lists and leads: JSON output, errors, the whole path."""

import json
import wave

import pytest
from click.testing import CliRunner

from cli import main


@pytest.fixture
def run(db_path):
    def _run(*args):
        return CliRunner().invoke(main, ["--db", str(db_path), *args], catch_exceptions=False)
    return _run


def lines(out):
    return [json.loads(x) for x in out.strip().splitlines()]


def test_campaign_path_end_to_end(run, tmp_path):
    g = tmp_path / "g.wav"
    with wave.open(str(g), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(b"\0" * 32000)
    reg = tmp_path / "reg.txt"
    reg.write_text("212,5550199\n")
    assert run("dnc", "import", str(reg), "--source", "national", "--as-of", "2026-11-20").exit_code == 0
    r = run("account", "create", "acme", "--connection", "adsl", "--lines", "5")
    assert r.exit_code == 1 and "at most 3" in r.output
    assert run("account", "create", "acme", "--connection", "adsl").exit_code == 0
    assert run("number", "add", "212 555 9999", "--account", "acme").exit_code == 0
    assert [n["number"] for n in lines(run("number", "list", "--account", "acme", "--json").output)] == ["+12125559999"]
    r = run("campaign", "create", "spring", "--account", "acme", "--caller-id", "212-555-9999",
            "--greeting", str(g), "--retry", "busy=10m/2", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["dial_mode"] == "predictive"
    f = tmp_path / "list.csv"
    f.write_text("Mobile,Who\n212-555-0100,A\n212-555-0199,B\n555-CALL,C\n212-555-0100,D\n")
    r = run("list", "import", str(f), "--campaign", "spring", "--map", "phone=Mobile,name=Who", "--json")
    out = json.loads(r.output)
    assert (out["imported"], out["rejected"], out["duplicates"]) == (2, 1, 1)
    assert out["preview"]["never"] == 1
    r = run("list", "errors", str(out["import_id"]), "--json")
    assert [(e["row"], e["reason"]) for e in lines(r.output)] == [
        (4, "letters are not allowed in a phone number"), (5, "duplicate in this list")]
    r = run("list", "errors", str(out["import_id"]), "--csv")
    assert r.output.splitlines()[0] == "row,column,value,reason"
    r = run("list", "errors", "999")
    assert r.exit_code == 1 and r.output.strip() == "Error: no import 999"
    assert json.loads(run("campaign", "start", "spring", "--json").output)["state"] == "running"
    r = run("campaign", "start", "spring")
    assert r.exit_code == 1 and "cannot start" in r.output
    listed = lines(run("campaign", "list", "--json").output)
    assert listed[0]["name"] == "spring" and listed[0]["leads"] == 2
    r = run("campaign", "dry-run", "spring", "--from", "2026-11-24T12:00Z", "--to", "2026-11-24T15:00Z", "--json")
    hours = json.loads(r.output)["hours"]
    # 07:00, 08:00, 09:00 in New York: the one dialable lead opens at 08:00
    assert [h["dialable"] for h in hours] == [0, 1, 1]
    assert hours[0]["blocked"] == {"hours": 2, "dnc": 1}
    r = run("campaign", "dry-run", "spring", "--from", "2026-11-24T15:00Z", "--to", "2026-11-24T12:00Z")
    assert r.exit_code == 1 and "--to must be after --from" in r.output
    shown = lines(run("lead", "show", "212-555-0100", "--json").output)[0]
    r = run("lead", "outcome", str(shown["id"]), "busy", "--json")
    assert json.loads(r.output)["status"] == "retry"
    r = run("lead", "callback", str(shown["id"]), "2030-01-05 10:00", "--agent", "alice", "--json")
    assert json.loads(r.output)["callback_at"] == "2030-01-05T15:00:00Z"
    hist = lines(run("lead", "history", "212-555-0100", "--json").output)[0]
    assert [(e["event"], e["detail"].get("outcome")) for e in hist["events"]] == [("outcome", "busy"),
                                                                                  ("callback", None)]
    assert hist["events"][0]["detail"]["manual"] is True  # no call id: not a call attempt
    r = run("lead", "show", "212-555-0000")
    assert r.exit_code == 1 and "no lead" in r.output
    assert json.loads(run("campaign", "pause", "spring", "--json").output)["state"] == "paused"


def test_bad_list_files(run, tmp_path):
    run("account", "create", "acme")
    run("campaign", "create", "c", "--account", "acme")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    r = run("list", "import", str(empty), "--campaign", "c")
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "empty" in r.output
    r = run("list", "import", str(tmp_path / "nope.csv"), "--campaign", "c")
    assert r.exit_code == 1 and r.output.startswith("Error: ")
    junk = tmp_path / "junk.xlsx"
    junk.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 20)
    r = run("list", "import", str(junk), "--campaign", "c")
    assert r.exit_code == 1 and "binary" in r.output
    assert run("campaign", "show", "c", "--json").exit_code == 0
