"""The account's standing and life cycle: billing not enabled, pending until paid,
notice after an overdue invoice, suspension after 7 days, reactivation, closing, port-out
within 30 days, release after; the CLI's messages; nothing changed on a refusal."""

import datetime as dt
import json

import pytest
from click.testing import CliRunner

import cli
from billing import invoices as I
from billing import ledger, standing as S
from campaigns.store import add_number, create_account, create_campaign
from core import audit
from core.errors import NotFound, StateError
from core.store import Store
from billing_fixtures import dump

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 1, 15, tzinfo=UTC)
TABLES = ("account_standing", "account_standing_events", "number_holds", "account_numbers", "ledger_entries",
          "invoices", "audit_log")


def at(text):
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def acme(store):
    create_account(store, "acme", T0, "t")
    return store.query_one("SELECT * FROM accounts WHERE name = 'acme'")


def overdue_account(store):
    """Billing enabled, paid 50 in January, February's invoice (fee 100) issued: 50 due on 11 March."""
    S.enable(store, "acme", T0, "t")
    ledger.topup(store, "acme", "50", at("2026-01-31T12:00:00Z"), "t")
    I.build(store, "acme", "2026-01", at("2026-02-02T00:00:00Z"), "t")  # January: 1 day of fee (31 Jan)
    ledger.topup(store, "acme", "3.225807", at("2026-02-03T00:00:00Z"), "t")  # January's fee: 100/31, paid
    I.build(store, "acme", "2026-02", at("2026-03-02T00:00:00Z"), "t")


def test_an_account_without_billing_enabled_may_dial(store, acme):
    st = S.standing(store, acme["id"])
    assert (st.state, st.reason, st.since, st.may_dial, st.enabled) == ("active", None, None, True, False)
    assert S.evaluate(store, "acme", T0, "t")["transitions"] == []
    assert S.dial_problems(store, acme["id"]) == []


def test_service_starts_only_after_payment(store, acme):
    out = S.enable(store, "acme", T0, "t")
    assert (out["state"], out["reason"], out["may_dial"]) == ("pending", "no payment yet", False)
    assert S.enable(store, "acme", T0, "t")["changed"] is False
    assert S.dial_problems(store, acme["id"], T0) == ["account is pending: no payment yet"]
    ledger.topup(store, "acme", "500", at("2026-01-16T09:00:00Z"), "t")  # a payment evaluates at once
    st = S.standing(store, acme["id"], at("2026-01-16T10:00:00Z"))
    assert (st.state, st.reason, st.since) == ("active", "payment received", at("2026-01-16T09:00:00Z"))
    acts = [(e["action"], e["detail"].get("to")) for e in audit.entries(store, account_id=acme["id"])
            if e["action"].startswith("billing.")]
    assert ("billing.enable", "pending") in acts and ("billing.standing", "active") in acts
    # the account fee counts from the service's start: January from the 16th
    jan = I.build(store, "acme", "2026-01", at("2026-01-20T00:00:00Z"), "t")
    assert [li["quantity"] for li in jan["lines"] if li["kind"] == "account-fee"] == ["16/31"]


def test_a_pending_account_cannot_start_a_campaign(store, acme, tmp_path):
    from campaigns.store import set_greeting
    add_number(store, "acme", "+12125550000", T0, "t")
    create_campaign(store, "c", "acme", T0, "t", caller_id="+12125550000", dial_mode="preview")
    S.enable(store, "acme", T0, "t")
    with pytest.raises(Exception, match="cannot start: account is pending: no payment yet"):
        S.change_state(store, "c", "start", T0, "t")
    assert store.query_one("SELECT state FROM campaigns")["state"] == "draft"
    ledger.topup(store, "acme", "500", T0, "t")
    assert S.change_state(store, "c", "start", T0, "t")["state"] == "running"


def test_notice_after_overdue_then_suspension_after_seven_days(store, acme):
    overdue_account(store)
    assert I.show(store, "acme", "2026-02")["amount_due"] == 50
    # before the due date: still active
    assert S.evaluate(store, "acme", at("2026-03-10T23:59:59Z"), "t")["state"] == "active"
    out = S.evaluate(store, "acme", at("2026-03-11T08:00:00Z"), "t")
    assert out["state"] == "notice" and out["may_dial"] is True
    assert out["reason"] == "invoice A1-2026-02 overdue: 50.000000 unpaid"
    assert out["since"] == "2026-03-11T08:00:00.000Z" and out["notice_until"] == "2026-03-18T08:00:00.000Z"
    # a second evaluation the same day changes nothing
    assert S.evaluate(store, "acme", at("2026-03-12T08:00:00Z"), "t")["transitions"] == []
    # read before an evaluation stores it, the notice past its deadline already reads as suspended
    st = S.standing(store, acme["id"], at("2026-03-18T08:00:00Z"))
    assert (st.state, st.may_dial, st.since) == ("suspended", False, at("2026-03-18T08:00:00Z"))
    assert S.standing(store, acme["id"], at("2026-03-18T07:59:59Z")).state == "notice"
    out = S.evaluate(store, "acme", at("2026-03-19T00:00:00Z"), "t")
    assert out["state"] == "suspended" and out["since"] == "2026-03-18T08:00:00.000Z"
    assert out["reason"].startswith("not paid after a 7-day notice (invoice A1-2026-02 overdue")
    events = store.query("SELECT from_state, to_state, at, effective_at FROM account_standing_events ORDER BY id")
    assert [(e["from_state"], e["to_state"]) for e in events] == [
        (None, "pending"), ("pending", "active"), ("active", "notice"), ("notice", "suspended")]
    assert events[-1]["at"] == "2026-03-19T00:00:00.000Z" and events[-1]["effective_at"] == "2026-03-18T08:00:00.000Z"
    assert S.dial_problems(store, acme["id"], at("2026-03-19T00:00:00Z"))[0].startswith("account is suspended")
    assert audit.verify(store)["ok"]


def test_a_part_payment_keeps_the_notice_and_the_rest_reactivates(store, acme):
    overdue_account(store)
    S.evaluate(store, "acme", at("2026-03-11T08:00:00Z"), "t")
    ledger.topup(store, "acme", "20", at("2026-03-12T00:00:00Z"), "t")
    st = S.standing(store, acme["id"], at("2026-03-12T00:00:01Z"))
    assert st.state == "notice"
    assert S.show(store, "acme", at("2026-03-12T00:00:01Z"))["overdue"] == 30
    ledger.topup(store, "acme", "30", at("2026-03-13T00:00:00Z"), "t")
    st = S.standing(store, acme["id"], at("2026-03-13T00:00:01Z"))
    assert (st.state, st.reason, st.may_dial) == ("active", "overdue amount paid", True)


def test_reactivation_after_suspension(store, acme):
    overdue_account(store)
    S.evaluate(store, "acme", at("2026-03-11T08:00:00Z"), "t")
    S.evaluate(store, "acme", at("2026-03-20T00:00:00Z"), "t")
    assert S.standing(store, acme["id"], at("2026-03-20T00:00:00Z")).state == "suspended"
    ledger.topup(store, "acme", "50", at("2026-03-21T00:00:00Z"), "t")
    st = S.standing(store, acme["id"], at("2026-03-21T00:00:00Z"))
    assert (st.state, st.since, st.may_dial) == ("active", at("2026-03-21T00:00:00Z"), True)


def test_decide_is_pure():
    now = at("2026-03-11T00:00:00Z")
    row = {"state": "active", "reason": None, "notice_until": None}
    assert S.decide(S.Facts(row, None, 0), now) is None
    tr = S.decide(S.Facts(row, None, 5, "X"), now)
    assert (tr.to, tr.effective_at, tr.notice_until) == ("notice", now, now + dt.timedelta(days=7))
    notice = {"state": "notice", "reason": "r", "notice_until": "2026-03-18T00:00:00.000Z"}
    assert S.decide(S.Facts(notice, None, 5, "X"), at("2026-03-17T23:59:59Z")) is None
    assert S.decide(S.Facts(notice, None, 5, "X"), at("2026-03-18T00:00:00Z")).to == "suspended"
    assert S.decide(S.Facts(notice, None, 0), now).to == "active"
    assert S.decide(S.Facts({"state": "pending"}, None), now) is None
    assert S.decide(S.Facts({"state": "pending"}, now), now).to == "active"
    assert S.decide(S.Facts({"state": "closed"}, now, 5), now) is None
    assert S.decide(S.Facts(None, None, 5), now) is None


# ------------------------------------------------------------------------- closing, numbers

def test_close_port_out_within_30_days_and_release_after(store, acme):
    add_number(store, "acme", "+12125550000", T0, "t")
    add_number(store, "acme", "+12125550001", T0, "t")
    add_number(store, "acme", "+12125550002", T0, "t")
    closed = S.close(store, "acme", at("2026-03-01T00:00:00Z"), "t", reason="moving")
    assert closed["state"] == "closed" and closed["reason"] == "closed by the customer: moving"
    assert closed["numbers_until"] == "2026-03-31T00:00:00.000Z" and closed["records_until"] == "2027-03-01T00:00:00.000Z"
    assert closed["numbers_kept"] == ["+12125550000", "+12125550001", "+12125550002"]
    assert S.standing(store, acme["id"]).may_dial is False
    out = S.port_out(store, "(212) 555-0000", "acme", at("2026-03-30T23:59:59Z"), "t", to="Carrier B")
    assert out == {"account": "acme", "number": "+12125550000", "ported_at": "2026-03-30T23:59:59.000Z",
                   "ported_to": "Carrier B"}
    assert [e["detail"] for e in audit.entries(store, action_prefix="number.port-out")] == [
        {"number": "+12125550000", "to": "Carrier B"}]
    before = dump(store, *TABLES)
    with pytest.raises(StateError, match="already ported out on 2026-03-30 to Carrier B"):
        S.port_out(store, "+12125550000", "acme", at("2026-03-30T23:59:59Z"), "t")
    with pytest.raises(NotFound, match="is not a number of account 'acme'"):
        S.port_out(store, "+12125559999", "acme", at("2026-03-05T00:00:00Z"), "t")
    with pytest.raises(StateError, match="kept until 2026-03-31"):
        S.port_out(store, "+12125550001", "acme", at("2026-03-31T00:00:00Z"), "t")
    assert dump(store, *TABLES) == before
    # released after the 30 days, nothing before
    assert S.release_due(store, at("2026-03-30T23:59:59Z"), "t")["released"] == []
    rel = S.release_due(store, at("2026-03-31T00:00:00Z"), "t")["released"]
    assert [r["number"] for r in rel] == ["+12125550001", "+12125550002"]
    assert store.query("SELECT number FROM account_numbers") == []
    with pytest.raises(StateError, match="was released on 2026-03-31"):
        S.port_out(store, "+12125550001", "acme", at("2026-03-31T00:00:00Z"), "t")
    holds = S.show(store, "acme", at("2026-04-01T00:00:00Z"))["numbers_held"]
    assert [(h["number"], h["ported_to"], h["released_at"] is not None) for h in holds] == [
        ("+12125550000", "Carrier B", False), ("+12125550001", None, True), ("+12125550002", None, True)]
    with pytest.raises(StateError, match="already closed"):
        S.close(store, "acme", at("2026-04-01T00:00:00Z"), "t")


def test_port_out_of_an_open_account_is_refused(store, acme):
    add_number(store, "acme", "+12125550000", T0, "t")
    before = dump(store, *TABLES)
    with pytest.raises(StateError, match="only after account 'acme' is closed"):
        S.port_out(store, "+12125550000", "acme", T0, "t")
    assert dump(store, *TABLES) == before


def test_termination_only_after_suspension_and_records_are_kept(store, acme):
    from billing_fixtures import add_cdr
    add_cdr(store, "c1", acme["id"], "+12125550100", "2026-02-10T10:00:00Z", talk_s=30)
    overdue_account(store)
    before = dump(store, *TABLES)
    with pytest.raises(StateError, match="is active, not suspended"):
        S.close(store, "acme", at("2026-03-01T00:00:00Z"), "t", terminated=True)
    assert dump(store, *TABLES) == before
    S.evaluate(store, "acme", at("2026-03-11T00:00:00Z"), "t")
    out = S.close(store, "acme", at("2026-03-20T00:00:00Z"), "t", terminated=True)
    assert out["reason"] == "terminated after suspension"
    row = store.query_one("SELECT closed_by FROM account_standing")
    assert row["closed_by"] == "operator"
    # records stay: the CDR, the ledger and the invoices
    assert store.query_one("SELECT COUNT(*) AS n FROM cdrs")["n"] == 1
    assert I.show(store, "acme", "2026-02")["status"] == "issued"
    # a closed account pays no fee after its closing: closed at 00:00 on the 20th, 1..19 March count
    mar = I.build(store, "acme", "2026-03", at("2026-04-05T00:00:00Z"), "t")
    assert [li["quantity"] for li in mar["lines"] if li["kind"] == "account-fee"] == ["19/31"]


# ------------------------------------------------------------------------- CLI

@pytest.fixture
def run(db_path, monkeypatch):
    clock = {"now": at("2026-03-01T00:00:00Z")}
    monkeypatch.setattr(cli.App, "now", lambda self: clock["now"])

    def _run(*args):
        return CliRunner().invoke(cli.main, ["--db", str(db_path), *args], catch_exceptions=False)
    _run.clock = clock
    return _run


def test_cli_life_cycle(run, db_path):
    assert run("account", "create", "acme").exit_code == 0
    assert run("number", "add", "+12125550000", "--account", "acme").exit_code == 0
    r = run("bill", "enable", "--account", "acme")
    assert r.exit_code == 0 and "acme: pending (no payment yet)" in r.output and "may NOT dial" in r.output
    r = run("bill", "prepay", "--account", "acme", "--from", "2026-03", "--json")
    out = json.loads(r.output)
    assert out["amount"] == "1200.000000" and out["standing"] == "active"
    r = run("account", "standing", "--account", "acme", "--json")
    assert json.loads(r.output)["state"] == "active"
    run.clock["now"] = at("2026-03-15T00:00:00Z")
    r = run("bill", "run", "--account", "acme", "--period", "2026-03")
    assert r.exit_code == 0 and "invoice A1-2026-03 (DRAFT)" in r.output and "prepaid" in r.output
    r = run("invoice", "show", "--account", "acme")
    assert "A1-2026-03" in r.output and "draft" in r.output
    r = run("invoice", "export", "--account", "acme", "--period", "2026-03", "--format", "csv")
    assert r.output.startswith("invoice,period,status,seq,kind")
    r = run("account", "close", "--account", "acme", "--reason", "moving")
    assert r.exit_code == 0 and "closed (closed by the customer: moving)" in r.output
    assert "numbers kept: +12125550000" in r.output
    r = run("number", "port-out", "+12125550000", "--account", "acme", "--to", "Carrier B")
    assert r.exit_code == 0 and r.output.strip() == "+12125550000 ported out of account acme on 2026-03-15 to Carrier B"
    r = run("account", "standing", "--account", "acme")
    assert "ported out 2026-03-15 to Carrier B" in r.output and "active -> closed" in r.output


@pytest.mark.parametrize("args, message", [
    (("bill", "run", "--account", "nobody", "--period", "2026-03"), "no account named 'nobody'"),
    (("bill", "run", "--account", "acme", "--period", "2026-13"), "period '2026-13' is not a month"),
    (("invoice", "show", "--account", "acme", "--period", "2026-02"), "has no invoice for 2026-02"),
    (("invoice", "export", "--account", "acme", "--period", "26-02"), "period '26-02' is not a month"),
    (("number", "port-out", "+12125559999", "--account", "acme"), "is not a number of account 'acme'"),
    (("number", "port-out", "+12125550000", "--account", "acme"), "only after account 'acme' is closed"),
    (("account", "close", "--account", "acme", "--terminate"), "not suspended"),
    (("bill", "prepay", "--account", "acme", "--from", "2026"), "period '2026' is not a month"),
    (("bill", "enable", "--account", "nobody"), "no account named 'nobody'"),
])
def test_cli_errors_are_one_line_and_change_nothing(run, db_path, args, message):
    assert run("account", "create", "acme").exit_code == 0
    assert run("number", "add", "+12125550000", "--account", "acme").exit_code == 0
    s = Store(db_path)
    before = dump(s, *TABLES)
    r = run(*args)
    assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert dump(s, *TABLES) == before
    s.close()


def test_cli_port_out_after_30_days_is_refused(run, db_path):
    run("account", "create", "acme")
    run("number", "add", "+12125550000", "--account", "acme")
    run("account", "close", "--account", "acme")
    run.clock["now"] = at("2026-03-31T00:00:00Z")
    s = Store(db_path)
    before = dump(s, *TABLES)
    r = run("number", "port-out", "+12125550000", "--account", "acme")
    assert r.exit_code != 0 and "kept until 2026-03-31" in r.output and "no longer be ported out" in r.output
    assert dump(s, *TABLES) == before
    r = run("bill", "evaluate", "--json")
    assert [x["number"] for x in json.loads(r.output)["released"]] == ["+12125550000"]
    s.close()


def test_cli_campaign_start_refused_while_suspended(run, db_path):
    run("account", "create", "acme")
    run("number", "add", "+12125550000", "--account", "acme")
    run("campaign", "create", "c", "--account", "acme", "--caller-id", "+12125550000", "--mode", "preview")
    run("bill", "enable", "--account", "acme")
    r = run("campaign", "start", "c", "--account", "acme")
    assert r.exit_code != 0 and "cannot start: account is pending: no payment yet" in r.output
    run("balance", "topup", "100", "--account", "acme")
    r = run("campaign", "start", "c", "--account", "acme")
    assert r.exit_code == 0, r.output
