"""The CLI contract: JSON shapes, exit codes, one clear error line, nothing changed on error."""

import json

import pytest
from click.testing import CliRunner

from cli import main

AT = "2026-11-24T17:00:00Z"  # Tuesday 12:00 in New York


@pytest.fixture
def run(db_path):
    def _run(*args, input=None):
        r = CliRunner().invoke(main, ["--db", str(db_path), *args], input=input,
                               catch_exceptions=False)
        return r
    return _run


def lines(out):
    return [json.loads(x) for x in out.strip().splitlines()]


def test_check_json_contract_and_exit_code(run, tmp_path):
    r = run("check", "212-555-0100", "911", "1-800-222-1222", "abc", "--at", AT, "--json")
    assert r.exit_code == 0
    rows = lines(r.output)
    assert [x["input"] for x in rows] == ["212-555-0100", "911", "1-800-222-1222", "abc"]
    for x in rows:
        assert {"input", "number", "allowed", "reasons", "zones", "window", "ruleset"} <= set(x)
        for reason in x["reasons"]:
            assert set(reason) == {"rule", "category", "detail"}
    ny, e, tf, bad = rows
    assert ny["number"] == "+12125550100" and ny["zones"] == ["America/New_York"]
    assert ny["window"][0]["windows"] == ["08:00-21:00"]
    # no registry imported yet: blocked with that reason, and only that
    assert [x["rule"] for x in ny["reasons"]] == ["US-DNC-NAT-MISSING"]
    assert ny["ruleset"] == "US@1"
    assert e["reasons"][0]["category"] == "emergency" and e["number"] is None
    assert {"toll_free", "timezone_unknown", "lifeline"} <= {x["category"] for x in tf["reasons"]}
    assert bad["reasons"][0]["category"] == "invalid"


def test_check_text_output(run):
    r = run("check", "+1 305 555 0100", "--at", "2026-11-25T01:30:00Z")
    assert r.exit_code == 0
    assert "BLOCKED" in r.output and "US-FL-HOURS" in r.output and "20:30" in r.output


def test_usage_errors_are_one_line(run):
    r = run("check", "2125550100", "--at", "yesterday")
    assert r.exit_code != 0
    assert r.output.strip() == "Error: --at 'yesterday' is not an ISO 8601 time (e.g. 2026-11-27T18:30:00Z)"
    r = run("check")
    assert r.exit_code == 2
    r = run("check", "2125550100", "--campaign", "nope")
    assert r.exit_code == 1 and r.output.strip() == "Error: no campaign named 'nope'"


def test_dnc_add_check_remove_company_and_wildcards(run):
    # the company list is an account's: none yet, one clear error
    r = run("dnc", "add", "212-555-0100", "--reason", "asked on a call")
    assert r.exit_code == 1 and r.output.strip() == "Error: no account yet: create one with: dialer account create NAME"
    assert run("account", "create", "acme").exit_code == 0
    r = run("dnc", "add", "212-555-0100", "305*", "--reason", "asked on a call", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["added"] == 2
    r = run("dnc", "check", "2125550100", "3055550199", "2125550101", "--json")
    a, b, c = lines(r.output)
    assert a["listed"] and [x["rule"] for x in a["reasons"] if x["rule"].startswith("DNC")] == ["DNC-COMPANY"]
    assert b["listed"] and any(x["rule"] == "DNC-COMPANY-PREFIX" for x in b["reasons"])
    assert not c["listed"]
    r = run("dnc", "remove", "2125550100")
    assert r.exit_code == 1 and "--reason" in r.output
    r = run("dnc", "remove", "2125550100", "--reason", "added by mistake", "--json")
    assert json.loads(r.output)["removed"] == 1
    r = run("dnc", "check", "2125550100", "--json")
    assert not lines(r.output)[0]["listed"]
    r = run("dnc", "add", "12345", "--json")
    assert r.exit_code == 1 and r.output.startswith("Error: '12345' is not a valid phone number")


def test_dnc_import_company_counts_junk(run, tmp_path):
    f = tmp_path / "optouts.csv"
    f.write_text("phone\n212-555-0100\n(212) 555-0101\nnot a number\n\n+44 20 7946 0000\n12\n")
    assert run("account", "create", "acme").exit_code == 0
    r = run("dnc", "import", str(f), "--source", "company", "--json")
    out = json.loads(r.output)
    assert r.exit_code == 0
    assert (out["numbers"], out["junk"]) == (3, 2)
    assert [j["line"] for j in out["junk_examples"]] == [4, 7]
    empty = tmp_path / "empty.txt"
    empty.write_text("junk\nmore junk\n")
    r = run("dnc", "import", str(empty), "--source", "company")
    assert r.exit_code == 1 and "no numbers found" in r.output
    r = run("dnc", "import", str(tmp_path / "missing.txt"), "--source", "company")
    assert r.exit_code == 1 and r.output.startswith("Error: file not found")


def test_campaign_dnc_hours_waiver_and_caller_id(run):
    assert run("account", "create", "acme").exit_code == 0
    assert run("number", "add", "+1 212 555 9999", "--account", "acme").exit_code == 0
    r = run("campaign", "create", "spring", "--account", "acme", "--caller-id", "212-555-9999",
            "--hours", "mon-fri=09:00-17:00;sat=;sun=")
    assert r.exit_code == 0, r.output
    r = run("dnc", "add", "2125550123", "--campaign", "spring")
    assert r.exit_code == 0
    r = run("check", "2125550123", "2125550100", "--campaign", "spring", "--at", AT, "--json")
    a, b = lines(r.output)
    assert "DNC-CAMPAIGN" in [x["rule"] for x in a["reasons"]]
    assert [x["rule"] for x in b["reasons"]] == ["US-DNC-NAT-MISSING"]
    # the campaign's hours narrow the window: 08:30 is legal federally but not for this campaign
    r = run("check", "2125550100", "--campaign", "spring", "--at", "2026-11-24T13:30:00Z", "--json")
    assert "hours" in [x["category"] for x in lines(r.output)[0]["reasons"]]
    r = run("dnc", "waive", "--campaign", "spring", "--reason", "EBR customers only; counsel approved")
    assert r.exit_code == 0
    r = run("check", "2125550100", "--campaign", "spring", "--at", AT, "--json")
    assert lines(r.output)[0]["allowed"] is True
    # a caller ID that is not the account's own number blocks every call of the campaign
    r = run("campaign", "create", "spoof", "--account", "acme", "--caller-id", "+1 415 555 0000")
    r = run("dnc", "waive", "--campaign", "spoof", "--reason", "test")
    r = run("check", "2125550100", "--campaign", "spoof", "--at", AT, "--json")
    v = lines(r.output)[0]
    assert [x["category"] for x in v["reasons"]] == ["caller_id"]


def test_rules_show_edit_set_history_verify(run, tmp_path):
    r = run("rules", "show", "US", "--json")
    data = json.loads(r.output)["data"]
    assert data["states"]["FL"]["hours"]["windows"] == {"daily": ["08:00-20:00"]}
    bad = tmp_path / "bad.json"
    text = json.dumps(data, indent=2).replace('"13:30-21:00"', '"13:30-21:99"')
    bad.write_text(text)
    r = run("rules", "edit", "US", str(bad), "--reason", "try")
    assert r.exit_code == 1
    line_no = next(i for i, ln in enumerate(text.splitlines(), 1) if "21:99" in ln)
    assert f"line {line_no}, field states.PA.hours.windows.sun[0]" in r.output
    assert json.loads(run("rules", "show", "US", "--json").output)["version"] == 1
    r = run("rules", "edit", "US", "-", "--reason", "PA Sunday from noon", input=text.replace("13:30-21:99", "12:00-21:00"))
    assert r.exit_code == 0 and "version 2" in r.output
    r = run("rules", "set", "US", "rules.curfew", "1", "--reason", "x")
    assert r.exit_code == 1 and "unknown rule 'curfew'" in r.output
    r = run("rules", "set", "US", "states.FL.frequency.max_calls", "2", "--reason", "stricter", "--json")
    assert json.loads(r.output)["version"] == 3
    r = run("rules", "history", "US", "--json")
    assert [h["version"] for h in lines(r.output)] == [1, 2, 3]
    r = run("rules", "verify", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["ok"] is True


def test_lifeline_import(run, tmp_path):
    f = tmp_path / "lifeline.csv"
    f.write_text("number,category,name\n+1 212 555 0111,hospital,Mercy Hospital ER\nnonsense,fire,Bad row\n")
    r = run("rules", "lifeline-import", str(f), "--json")
    out = json.loads(r.output)
    assert out["added"] == 1 and out["rejected"][0]["line"] == 3
    r = run("check", "2125550111", "--at", AT, "--json")
    assert "lifeline" in [x["category"] for x in lines(r.output)[0]["reasons"]]


def test_screen_a_list(run, tmp_path):
    f = tmp_path / "list.csv"
    f.write_text("name;phone;state\nA;212-555-0100;NY\nB;212-555-0101;\nC;212-555-0102;\nD;911;\nE;305-555-0100;FL\n")
    r = run("dnc", "waive", "--campaign", "x", "--reason", "y")  # no such campaign: error, nothing changes
    assert r.exit_code == 1
    r = run("screen", str(f), "--at", AT, "--json")
    out = json.loads(r.output)
    assert out["leads"] == 5 and out["allowed"] == 0
    assert out["blocked_by_category"] == {"dnc": 4, "emergency": 1}
    assert out["multiline_groups"] == 1 and out["multiline_leads"] == 3
    nophone = tmp_path / "nophone.csv"
    nophone.write_text("name,email\nA,a@b\n")
    r = run("screen", str(nophone))
    assert r.exit_code == 1 and "no phone column" in r.output
