"""An account's numbers as its owner manages them (dialer.numbers: what uses each, the
safe remove) and the billing overview (billing.overview), through the library and the
CLI commands the account screens share with the terminal."""

import datetime as dt
import json
from decimal import Decimal

import pytest
from click.testing import CliRunner

from billing.overview import overview
from billing.standing import close, port_out
from campaigns.store import change_state, create_account, create_campaign
from core.errors import InputError, NotFound
from dialer import numbers, trunks

NOW = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def acct(store):
    create_account(store, "acme", NOW, "tester")
    create_account(store, "globex", NOW, "tester")
    numbers.add_number(store, "acme", "+1 212 555 0100", NOW, "tester", label="  main   line ")
    numbers.add_number(store, "acme", "+1 212 555 0101", NOW, "tester")
    numbers.add_number(store, "globex", "+1 303 555 0199", NOW, "tester")
    return "acme"


def _count(store):
    return (store.query_one("SELECT COUNT(*) AS n FROM account_numbers")["n"],
            store.query_one("SELECT COUNT(*) AS n FROM audit_log")["n"])


def test_remove_is_refused_while_something_needs_the_number(store, acct):
    camp = create_campaign(store, "spring", "acme", NOW, "tester", caller_id="+1 212 555 0100",
                           dial_mode="progressive")
    trunks.add_trunk(store, "acme", "carrier-a", "10.0.0.1", NOW, "tester", caller_id="+1 212 555 0100")
    view = numbers.numbers_view(store, "acme")
    main = next(n for n in view["numbers"] if n["number"] == "+12125550100")
    assert main["label"] == "main line" and main["campaigns"] == ["spring"] and main["trunks"] == ["carrier-a"]
    before = _count(store)
    with pytest.raises(InputError) as e:
        numbers.remove_number(store, "acme", "(212) 555-0100", NOW, "tester")
    assert str(e.value) == ("+12125550100 cannot be removed: campaign(s) spring call with it as their caller ID "
                            "(give them another, or finish them, first); trunk(s) carrier-a present it as their "
                            "caller ID; nothing was changed")
    with pytest.raises(NotFound, match="is not a number of account 'acme'"):
        numbers.remove_number(store, "acme", "+1 303 555 0199", NOW, "tester")  # globex's
    with pytest.raises(InputError, match="not a valid phone number"):
        numbers.remove_number(store, "acme", "555-CALL", NOW, "tester")
    assert _count(store) == before
    # a finished campaign no longer needs it; the trunk still does
    change_state(store, camp["id"], "finish", NOW, "tester")
    trunks.remove_trunk(store, "acme", "carrier-a", NOW, "tester")
    out = numbers.remove_number(store, "acme", "+1 212 555 0100", NOW, "tester")
    assert out["removed"] and out["number"] == "+12125550100"
    assert store.query_one("SELECT detail FROM audit_log WHERE action = 'number.remove'")["detail"]


def test_a_number_kept_for_port_out_stays(store, acct):
    close(store, "acme", NOW, "tester")
    with pytest.raises(InputError, match=r"kept until 2026-12-24 for a port-out"):
        numbers.remove_number(store, "acme", "+12125550101", NOW, "tester")
    view = numbers.numbers_view(store, "acme")
    assert [n["hold"]["keep_until"][:10] for n in view["numbers"]] == ["2026-12-24", "2026-12-24"]
    port_out(store, "+12125550101", "acme", NOW, "tester", to="Other Telco")
    view = numbers.numbers_view(store, "acme")
    assert [n["number"] for n in view["numbers"]] == ["+12125550100"]
    assert [(h["number"], h["ported_to"]) for h in view["holds"]] == [("+12125550100", None),
                                                                      ("+12125550101", "Other Telco")]


def test_label_is_checked(store, acct):
    with pytest.raises(InputError, match="at most 80 characters"):
        numbers.add_number(store, "acme", "+1 212 555 0102", NOW, "tester", label="x" * 81)


def test_billing_overview_lists_invoices_newest_first(store, acct):
    from billing.invoices import run
    run(store, "acme", "2026-10", NOW, "tester")
    run(store, "acme", "2026-11", NOW, "tester")
    out = overview(store, "acme", NOW)
    assert [(i["period"], i["status"]) for i in out["invoices"]] == [("2026-11", "draft"), ("2026-10", "issued")]
    assert out["floor"] == Decimal("100") and out["standing"]["state"] == "active"
    assert out["older"] == 0 and overview(store, "acme", NOW, last=1)["older"] == 1
    assert out["invoices"][0]["lines"][0]["description"].startswith("account fee")  # October: before the account


def _cli(db_path, *args):
    from cli import main
    return CliRunner().invoke(main, ["--db", str(db_path), *args], catch_exceptions=False)


def test_cli_number_add_list_remove_and_balance_overview(db_path, store, acct):
    create_campaign(store, "spring", "acme", NOW, "tester", caller_id="+1 212 555 0100", dial_mode="progressive")
    r = _cli(db_path, "number", "add", "212-555-0177", "--account", "acme", "--label", "spare")
    assert r.exit_code == 0 and r.output == "+12125550177 added to account acme\n"
    r = _cli(db_path, "number", "list", "--account", "acme")
    assert "+12125550100  main line  caller ID of campaign spring" in r.output and "+12125550177  spare" in r.output
    rows = [json.loads(line) for line in _cli(db_path, "number", "list", "--account", "acme", "--json").output.split("\n")
            if line]
    assert [(x["number"], x["campaigns"]) for x in rows][0] == ("+12125550100", ["spring"])
    r = _cli(db_path, "number", "remove", "+12125550100", "--account", "acme")
    assert r.exit_code == 1 and r.output.startswith("Error: +12125550100 cannot be removed: campaign(s) spring")
    r = _cli(db_path, "number", "remove", "212 555 0177", "--account", "acme")
    assert r.exit_code == 0 and r.output == "+12125550177 removed from account acme\n"
    r = _cli(db_path, "balance", "overview", "--account", "acme")
    assert r.exit_code == 0 and r.output.startswith("acme: balance $0.000000, floor $100.000000 (BELOW the floor)")
    assert "standing: active" in r.output
    out = json.loads(_cli(db_path, "balance", "overview", "--account", "acme", "--json").output)
    assert out["account"] == "acme" and out["invoices"] == []
