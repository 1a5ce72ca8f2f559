"""The billing commands: JSON shapes, exit codes, one clear error, nothing changed on error."""

import json
from decimal import Decimal

import pytest
from click.testing import CliRunner

from cli import main
from core.store import Store
from billing_fixtures import BILLING_TABLES, add_cdr, dump, write_deck


@pytest.fixture
def run(db_path):
    def _run(*args, input=None):
        return CliRunner().invoke(main, ["--db", str(db_path), *args], input=input, catch_exceptions=False)
    return _run


@pytest.fixture
def acme(run, db_path, tmp_path):
    assert run("account", "create", "acme").exit_code == 0
    deck = write_deck(tmp_path / "deck.csv", ["44,UK,0.01,1,1,,,", "1,US,0.002,6,6,,,"])
    r = run("rates", "import", str(deck), "--deck", "carrier-a", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["scope"] == "default" and out["rows"] == 2 and out["deck"] == "carrier-a"
    s = Store(db_path)
    acc = s.query_one("SELECT id FROM accounts WHERE name = 'acme'")["id"]
    add_cdr(s, "c1", acc, "+442071234567", "2026-03-10T10:00:00Z", talk_s=31)
    add_cdr(s, "c2", acc, "+12125550100", "2026-03-10T11:00:00Z", talk_s=61)
    add_cdr(s, "c3", acc, "+33123456789", "2026-03-10T12:00:00Z", talk_s=10)
    s.close()
    return acc


def test_bill_run_json_and_text(run, acme):
    r = run("bill", "run", "--account", "acme", "--period", "2026-03", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert (out["charged"], out["refused"], out["free"]) == (2, 1, 0)
    # money in JSON is exact decimal text, never a float
    assert out["total"] == "0.063767" and out["service"] == "0.056400" and out["telecom"] == "0.007367"
    assert out["deck"] == {"deck_id": 1, "deck": "carrier-a", "scope": "default"}
    # the period is long over: its invoice is issued (the account was made after it: no fee days)
    inv = out["invoice"]
    assert inv["status"] == "issued" and inv["charges"] == "0.063767" and inv["amount_due"] == "0.063767"
    assert [li["kind"] for li in inv["lines"]] == ["service", "telecom", "telecom"]
    assert out["refused_examples"] == [{"call_id": "c3", "reason": "no rate for +33123456789 at "
                                                                   "2026-03-10T12:00:00.000Z in deck carrier-a"}]
    r = run("bill", "run", "--account", "acme", "--period", "2026-03")
    assert r.exit_code == 0
    # an issued period changes nothing: nothing is rated into it, its unrated CDR is counted
    assert "0 charged" in r.output and "1 CDRs of the period are unrated: the invoice was issued before" in r.output
    assert "invoice" in run("bill", "--help").output and "invoice" in run("bill", "run", "--help").output


def test_balance_show_topup_floor(run, acme):
    run("bill", "run", "--account", "acme", "--period", "2026-03")
    r = run("balance", "topup", "150", "--account", "acme", "--reference", "wire 42", "--json")
    assert r.exit_code == 0
    out = json.loads(r.output)
    assert out["kind"] == "payment" and out["amount"] == "150.000000" and out["balance"] == "149.936233"
    r = run("balance", "floor", "149.95", "--account", "acme", "--json")
    assert json.loads(r.output) == {"account": "acme", "floor": "149.950000", "changed": True}
    r = run("balance", "show", "--account", "acme", "--json")
    out = json.loads(r.output)
    assert out["balance"] == "149.936233" and out["floor"] == "149.950000" and out["below_floor"] is True
    assert out["above_floor"] == "-0.013767"
    assert out["by_kind"]["charge"] == {"entries": 2, "amount": "-0.063767"}
    text = run("balance", "show", "--account", "acme").output
    assert "BELOW the floor by $0.013767" in text and "payment" in text


def test_what_if_rate_stores_nothing(run, acme, db_path, tmp_path):
    f = tmp_path / "cdrs.csv"
    f.write_text("call_id,destination,started_at,answered_at,ended_at\n"
                 "w1,+442071234567,2026-03-10T10:00:00Z,2026-03-10T10:00:05Z,2026-03-10T10:00:36Z\n"
                 "w2,+442071234567,2026-03-10T10:00:00Z,2026-03-10T10:01:05Z,2026-03-10T10:00:36Z\n")
    s = Store(db_path)
    before = dump(s, *BILLING_TABLES)
    r = run("rate", str(f), "--account", "acme", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["stored"] is False and [c["total"] for c in out["cdrs"]] == ["0.023967"]
    assert out["refused"][0]["line"] == 3 and "before it was answered" in out["refused"][0]["reason"]
    text = run("rate", str(f), "--account", "acme").output
    assert "line 3" in text and "refused" in text and "(nothing stored)" in text
    assert dump(s, *BILLING_TABLES) == before
    s.close()


def test_bill_plan_and_rerate(run, acme):
    run("bill", "run", "--account", "acme", "--period", "2026-03")
    r = run("bill", "plan", "--account", "acme", "--json")
    out = json.loads(r.output)
    assert out["price_per_minute"] == "0.018800" and out["increment"] == "60/60" and out["floor"] == "100.000000"
    r = run("bill", "plan", "--account", "acme", "--increment", "1/1", "--reason", "per-second deal", "--json")
    assert json.loads(r.output)["changed"] == ["increment"]
    r = run("bill", "rerate", "--account", "acme", "--period", "2026-03", "--json")
    out = json.loads(r.output)
    # service 31 s: 0.018800 -> 0.009714; 61 s: 0.037600 -> 0.019114
    assert out["rerated"] == 2 and Decimal(out["net"]) == Decimal("0.018800") - Decimal("0.009714") \
        + Decimal("0.037600") - Decimal("0.019114")
    r = run("balance", "show", "--account", "acme", "--json")
    assert json.loads(r.output)["by_kind"]["reversal"]["entries"] == 2


def test_rates_show(run, acme):
    r = run("rates", "show", "--account", "acme", "--json")
    out = json.loads(r.output)
    assert out["default"]["name"] == "carrier-a" and out["own"] is None and out["rates_with"] == "default"
    assert "acme's calls are rated with: default" in run("rates", "show", "--account", "acme").output


@pytest.mark.parametrize("args,message", [
    (("bill", "run", "--account", "acme", "--period", "2026-3"), "Error: period '2026-3' is not a month (YYYY-MM, 2000-01 to 2099-12)"),
    (("bill", "run", "--account", "ghost", "--period", "2026-03"),
     "Error: no account named 'ghost' (create it with: dialer account create NAME)"),
    (("balance", "topup", "ten", "--account", "acme"),
     "Error: payment amount 'ten' is not a number (write a plain decimal such as 0.0188)"),
    (("balance", "floor", "1e9", "--account", "acme"),
     "Error: balance floor '1e9' is not a number (write a plain decimal such as 0.0188)"),
    (("bill", "plan", "--account", "acme", "--time-zone", "Mars/Base"),
     "Error: time zone 'Mars/Base' is not an IANA time zone (e.g. America/New_York, UTC)"),
    (("bill", "rerate", "--account", "acme"), "Error: rerate needs a period (YYYY-MM) or call ids, not both"),
    (("balance", "floor", "-5", "--account", "acme"), "Error: balance floor '-5' is negative"),
    (("balance", "topup", "-5", "--account", "acme"), "Error: payment amount '-5' is negative"),
])
def test_errors_are_one_line_and_change_nothing(run, acme, db_path, args, message):
    s = Store(db_path)
    before = dump(s, *BILLING_TABLES)
    r = run(*args)
    assert r.exit_code == 1 and r.output.strip() == message
    assert dump(s, *BILLING_TABLES) == before
    s.close()


def test_a_bad_deck_names_its_lines_and_the_deck_in_force_stays(run, acme, db_path, tmp_path):
    bad = write_deck(tmp_path / "bad.csv", ["44,UK,0.01,1,1,,,", "44,UK,0.02,1,1,,,", "1,US,-0.002,6,6,,,", "junk"])
    s = Store(db_path)
    before = dump(s, *BILLING_TABLES)
    r = run("rates", "import", str(bad), "--deck", "bad")
    assert r.exit_code == 1
    assert r.output.splitlines() == [
        f"Error: rate deck {bad}: 3 problem(s); nothing was imported and the deck in force stays in force:",
        "  line 3: duplicate prefix 44 (line 2 has it with the same effective_from: always)",
        "  line 4: rate '-0.002' is negative",
        "  line 5: 1 cells where the header has 8 (a junk line?)"]
    assert "Traceback" not in r.output
    assert dump(s, *BILLING_TABLES) == before
    s.close()
    r = run("rates", "show", "--json")
    assert json.loads(r.output)["default"]["name"] == "carrier-a"


def test_an_accounts_own_deck(run, acme, tmp_path):
    own = write_deck(tmp_path / "own.csv", ["44,UK special,0.005,1,1,,,", "33,France,0.01,1,1,,,"])
    r = run("rates", "import", str(own), "--deck", "acme-special", "--account", "acme", "--json")
    assert json.loads(r.output)["scope"] == "acme"
    r = run("bill", "run", "--account", "acme", "--period", "2026-03", "--json")
    out = json.loads(r.output)
    # its own deck rates it alone: the US call has no rate there now
    assert out["deck"]["scope"] == "own" and out["charged"] == 2 and out["refused"] == 1
    assert out["refused_examples"][0]["call_id"] == "c2"
