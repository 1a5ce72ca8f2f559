"""Invoices: periods in the account's time zone (month ends, DST), lines and proration,
drafts and the issue (once, immutable), interest, annual prepayment, exports."""

import csv
import datetime as dt
import io
import json
import sqlite3
from decimal import Decimal

import pytest

from billing import invoices as I
from billing import ledger, standing as S
from billing.decks import import_deck
from billing.plans import set_plan
from campaigns.store import add_user, create_account
from core.errors import InputError, NotFound, StateError
from billing_fixtures import add_cdr, dump, write_deck

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 1, 15, tzinfo=UTC)


def at(text):
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def acme(store, tmp_path):
    create_account(store, "acme", T0, "t")
    import_deck(store, write_deck(tmp_path / "d.csv", ["44,UK,0.0123,1,1,,,", "1,US,0.002,6,6,,,"]), "d", T0, "t")
    return store.query_one("SELECT * FROM accounts WHERE name = 'acme'")


def lines(inv, kind=None):
    return [li for li in inv["lines"] if kind is None or li["kind"] == kind]


# ------------------------------------------------------------------------- periods

@pytest.mark.parametrize("zone, period, start, end, hours", [
    ("America/New_York", "2026-03", "2026-03-01T05:00:00+00:00", "2026-04-01T04:00:00+00:00", 743),
    ("America/New_York", "2026-11", "2026-11-01T04:00:00+00:00", "2026-12-01T05:00:00+00:00", 721),
    ("Europe/Berlin", "2026-03", "2026-02-28T23:00:00+00:00", "2026-03-31T22:00:00+00:00", 743),
    ("Europe/Berlin", "2026-10", "2026-09-30T22:00:00+00:00", "2026-10-31T23:00:00+00:00", 745),
    ("UTC", "2026-02", "2026-02-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00", 672),
])
def test_a_period_is_the_local_calendar_month_even_in_dst_months(zone, period, start, end, hours):
    s, e = I.bounds(period, zone)
    assert (s, e) == (at(start), at(end))
    assert (e - s) == dt.timedelta(hours=hours)
    days = I.local_days(period, zone)
    # the days tile the month: each starts where the one before ended, no gap, no overlap
    assert days[0][1] == s and days[-1][2] == e
    assert all(a[2] == b[1] for a, b in zip(days, days[1:]))
    lengths = {d.isoformat(): (b - a) for d, a, b in days}
    odd = {k: v for k, v in lengths.items() if v != dt.timedelta(hours=24)}
    assert len(odd) == (0 if zone == "UTC" else 1)
    if odd:
        assert list(odd.values())[0] == dt.timedelta(hours=23 if hours % 24 == 23 else 25)


def test_consecutive_periods_meet_exactly():
    for zone in ("America/New_York", "Europe/Berlin", "Australia/Sydney", "UTC"):
        ends = [I.bounds(f"2026-{m:02d}", zone) for m in range(1, 13)]
        assert all(a[1] == b[0] for a, b in zip(ends, ends[1:])), zone


def test_calls_at_the_month_end_go_to_the_right_invoice(store, acme):
    set_plan(store, "acme", T0, "t", time_zone="America/New_York")
    a = acme["id"]
    # 23:59:59.999 on 31 March in New York (EDT, UTC-4) is March's; midnight is April's
    add_cdr(store, "last", a, "+12125550100", "2026-04-01T03:59:59.999Z", talk_s=30)
    add_cdr(store, "first", a, "+12125550100", "2026-04-01T04:00:00.000Z", talk_s=30)
    # 1 March 00:00 in New York is 05:00 UTC (EST): 04:59:59 UTC is still February's
    add_cdr(store, "feb", a, "+12125550100", "2026-03-01T04:59:59.000Z", talk_s=30)
    now = at("2026-03-20T12:00:00Z")
    mar = I.run(store, "acme", "2026-03", now, "t")["invoice"]
    apr = I.run(store, "acme", "2026-04", now, "t")["invoice"]
    feb = I.run(store, "acme", "2026-02", now, "t")["invoice"]
    assert [li["detail"]["calls"] for li in lines(mar, "service")] == [1]
    assert [li["detail"]["calls"] for li in lines(apr, "service")] == [1]
    assert [li["detail"]["calls"] for li in lines(feb, "service")] == [1]
    assert mar["from"] == "2026-03-01T05:00:00.000Z" and mar["to"] == "2026-04-01T04:00:00.000Z"
    assert {"first", "last", "feb"} == {r["call_id"] for r in store.query(
        "SELECT call_id FROM ledger_entries WHERE kind = 'charge'")}


def test_bad_period_and_unknown_account_are_refused_with_nothing_changed(store, acme):
    before = dump(store, "invoices", "ledger_entries", "audit_log")
    for bad in ("2026-13", "2026-3", "march", "", "1999-12"):
        with pytest.raises(InputError, match="is not a month"):
            I.run(store, "acme", bad, T0, "t")
    with pytest.raises(NotFound, match="no account named 'nobody'"):
        I.run(store, "nobody", "2026-01", T0, "t")
    with pytest.raises(NotFound, match="has no invoice for 2026-01"):
        I.show(store, "acme", "2026-01")
    assert dump(store, "invoices", "ledger_entries", "audit_log") == before


# ------------------------------------------------------------------------- lines

def test_fee_and_users_are_prorated_by_local_days(store, acme):
    # account made 15 January: 17 of 31 January days; a user added 10 April: 21 of 30 April days
    jan = I.build(store, "acme", "2026-01", at("2026-01-20T00:00:00Z"), "t")
    fee = lines(jan, "account-fee")[0]
    assert fee["quantity"] == "17/31" and fee["amount"] == Decimal("54.838710")  # 100 x 17/31 = 54.8387096.. up
    add_user(store, "acme", "ann", "agent", at("2026-04-10T15:00:00Z"), "t")
    add_user(store, "acme", "bob", "agent", at("2026-04-30T23:00:00Z"), "t")
    apr = I.build(store, "acme", "2026-04", at("2026-04-30T23:30:00Z"), "t")
    users = lines(apr, "users")[0]
    assert users["quantity"] == "22/30" and users["amount"] == Decimal("64.533334")  # 88 x 22/30 = 64.5333.. up
    assert users["detail"]["users"] == [{"user": "ann", "days": 21}, {"user": "bob", "days": 1}]
    assert lines(apr, "account-fee")[0]["amount"] == Decimal("100.000000")


def test_telecom_is_itemised_per_destination(store, acme):
    a = acme["id"]
    add_cdr(store, "u1", a, "+442071234567", "2026-02-10T10:00:00Z", talk_s=31)
    add_cdr(store, "u2", a, "+442071234568", "2026-02-10T11:00:00Z", talk_s=29)
    add_cdr(store, "us", a, "+12125550100", "2026-02-10T12:00:00Z", talk_s=61)
    inv = I.run(store, "acme", "2026-02", at("2026-02-20T00:00:00Z"), "t")["invoice"]
    tel = {li["prefix"]: li for li in lines(inv, "telecom")}
    assert set(tel) == {"44", "1"}
    assert tel["44"]["destination"] == "UK" and tel["44"]["amount"] == Decimal("0.006355") + Decimal("0.005945")
    assert tel["44"]["quantity"] == "1:00" and tel["1"]["quantity"] == "1:06"
    service = lines(inv, "service")[0]
    assert service["amount"] == Decimal("0.018800") * 4 and service["quantity"] == "4:00"
    total = sum(li["amount"] for li in inv["lines"])
    assert inv["charges"] == total and inv["status"] == "draft"


# ------------------------------------------------------------------------- draft, issue, immutable

def test_a_draft_is_refreshed_then_issued_once(store, acme):
    a = acme["id"]
    add_cdr(store, "c1", a, "+12125550100", "2026-02-10T10:00:00Z", talk_s=61)
    d1 = I.run(store, "acme", "2026-02", at("2026-02-20T00:00:00Z"), "t")["invoice"]
    add_cdr(store, "c2", a, "+12125550100", "2026-02-27T10:00:00Z", talk_s=61)
    d2 = I.run(store, "acme", "2026-02", at("2026-02-28T00:00:00Z"), "t")["invoice"]
    assert d1["status"] == d2["status"] == "draft" and d1["invoice"] == d2["invoice"] == f"A{a}-2026-02"
    assert lines(d2, "service")[0]["detail"]["calls"] == 2
    assert store.query_one("SELECT COUNT(*) AS n FROM ledger_entries WHERE kind = 'fee'")["n"] == 0
    # the period ended, but a call in progress at midnight may still bring its CDR: still a draft for a day
    assert I.run(store, "acme", "2026-02", at("2026-03-01T23:59:59Z"), "t")["invoice"]["status"] == "draft"
    issued = I.run(store, "acme", "2026-02", at("2026-03-02T00:00:00Z"), "t")["invoice"]
    assert issued["status"] == "issued" and issued["issued_at"] == "2026-03-02T00:00:00.000Z"
    fees = store.query("SELECT amount_micros, at FROM ledger_entries WHERE kind = 'fee' ORDER BY id")
    assert fees == [{"amount_micros": -100_000_000, "at": "2026-02-01T00:00:00.000Z"}]
    assert lines(issued, "account-fee")[0]["entry_id"] is not None
    bal = ledger.balance(store, "acme")["balance"]
    assert issued["closing_balance"] == bal == -issued["amount_due"]
    # re-running an issued period changes nothing, even with a late CDR of the period
    add_cdr(store, "late", a, "+12125550100", "2026-02-28T23:00:00Z", talk_s=61)
    before = dump(store, "invoices", "invoice_lines", "ledger_entries", "ledger_batches")
    again = I.run(store, "acme", "2026-02", at("2026-03-05T00:00:00Z"), "t")
    assert again["charged"] == 0 and again["unrated_after_issue"] == 1
    assert again["invoice"]["changed"] is False and again["invoice"]["lines"] == issued["lines"]
    assert I.build(store, "acme", "2026-02", at("2026-03-06T00:00:00Z"), "t")["changed"] is False
    assert dump(store, "invoices", "invoice_lines", "ledger_entries", "ledger_batches") == before


def test_an_issued_invoice_is_immutable_in_the_database(store, acme):
    I.build(store, "acme", "2026-02", at("2026-03-03T00:00:00Z"), "t")
    inv_id = store.query_one("SELECT id FROM invoices")["id"]
    for sql in ("UPDATE invoices SET due_micros = 0", "DELETE FROM invoices",
                "UPDATE invoice_lines SET amount_micros = 0", "DELETE FROM invoice_lines",
                f"INSERT INTO invoice_lines (invoice_id, seq, kind, description, amount_micros) "
                f"VALUES ({inv_id}, 99, 'credit', 'x', -1)"):
        with pytest.raises(sqlite3.DatabaseError, match="issued invoice is immutable"):
            store.execute(sql)


def test_two_stores_issue_once(store, acme, db_path):
    from core.store import Store
    other = Store(db_path)
    try:
        I.build(store, "acme", "2026-02", at("2026-03-03T00:00:00Z"), "t")
        assert I.build(other, "acme", "2026-02", at("2026-03-03T00:00:01Z"), "t")["changed"] is False
    finally:
        other.close()
    assert store.query_one("SELECT COUNT(*) AS n FROM ledger_entries WHERE kind = 'fee'")["n"] == 1


def test_a_correction_after_the_issue_shows_on_the_next_invoice(store, acme, tmp_path):
    a = acme["id"]
    add_cdr(store, "c1", a, "+442071234567", "2026-02-10T10:00:00Z", talk_s=31)
    feb = I.run(store, "acme", "2026-02", at("2026-03-03T00:00:00Z"), "t")["invoice"]
    import_deck(store, write_deck(tmp_path / "e.csv", ["44,UK,0.0321,1,1,,,", "1,US,0.002,6,6,,,"]), "e",
                at("2026-03-04T00:00:00Z"), "t")
    ledger.rerate(store, "acme", at("2026-03-04T00:00:00Z"), "t", period="2026-02")
    mar = I.build(store, "acme", "2026-03", at("2026-03-10T00:00:00Z"), "t")
    corr = lines(mar, "correction")
    assert len(corr) == 1 and corr[0]["amount"] == Decimal("0.016585") - Decimal("0.006355")
    assert mar["opening_balance"] == feb["closing_balance"]
    assert I.show(store, "acme", "2026-02") == {k: v for k, v in feb.items() if k != "changed"}


# ------------------------------------------------------------------------- interest

def test_interest_is_simple_daily_and_stops_when_paid(store, acme):
    # February: the account fee makes the balance -100; due 11 March 00:00 UTC
    feb = I.build(store, "acme", "2026-02", at("2026-03-02T00:00:00Z"), "t")
    assert feb["amount_due"] == Decimal("100") and feb["due_at"] == "2026-03-11T00:00:00.000Z"
    # paid 40 on 21 March: 11..20 March overdue 100 (10 days), 21..31 overdue 60 (11 days)
    ledger.topup(store, "acme", "40", at("2026-03-21T08:00:00Z"), "t")
    mar = I.build(store, "acme", "2026-03", at("2026-04-02T00:00:00Z"), "t")
    interest = lines(mar, "interest")
    daily = 10 * 100_000_000 + 11 * 60_000_000
    assert interest[0]["detail"]["overdue_day_micros"] == daily
    # 0.005 x 1 660 / 31 = 0.267741935..., rounded once, up
    assert interest[0]["amount"] == Decimal("0.267742")
    assert store.query("SELECT amount_micros FROM ledger_entries WHERE kind = 'interest'") == [
        {"amount_micros": -267742}]
    # April, nothing paid: 1..10 April February's 60 is still overdue (March's invoice is due 11 April);
    # from 11 April March's: its unpaid charges, 160, without the 0.267742 of interest (simple interest)
    apr = I.build(store, "acme", "2026-04", at("2026-05-02T00:00:00Z"), "t")
    assert lines(apr, "interest")[0]["detail"]["overdue_day_micros"] == 10 * 60_000_000 + 20 * 160_000_000
    assert lines(apr, "interest")[0]["amount"] == Decimal("0.633334")  # 0.005 x 3 800 / 30 = 0.63333.., up
    assert apr["amount_due"] == Decimal("260") + Decimal("0.267742") + Decimal("0.633334")


def test_interest_pure_function():
    days = I.local_days("2026-06", "UTC")
    due = at("2026-06-11T00:00:00Z")
    inv = [(at("2026-06-01T00:00:00Z"), due, 30_000_000)]
    assert I.interest_micros(days, inv, []) == (100_000, 30_000_000 * 20)  # 0.005 x 30 x 20/30 = 0.1
    paid = [(at("2026-06-11T12:00:00Z"), 30_000_000)]  # paid on the due day: no overdue day
    assert I.interest_micros(days, inv, paid) == (0, 0)
    assert I.interest_micros(days, inv, [], upto=at("2026-06-16T00:00:00Z"))[1] == 30_000_000 * 5
    assert I.interest_micros(days, [], []) == (0, 0)


def test_a_draft_shows_the_interest_so_far_without_posting_it(store, acme):
    I.build(store, "acme", "2026-02", at("2026-03-02T00:00:00Z"), "t")
    draft = I.build(store, "acme", "2026-03", at("2026-03-16T00:00:00Z"), "t")
    li = lines(draft, "interest")[0]
    assert "so far" in li["description"] and li["detail"]["overdue_day_micros"] == 5 * 100_000_000
    assert store.query_one("SELECT COUNT(*) AS n FROM ledger_entries WHERE kind = 'interest'")["n"] == 0


# ------------------------------------------------------------------------- prepayment

def test_annual_prepayment_covers_twelve_months(store, acme):
    add_user(store, "acme", "ann", "agent", T0, "t")
    out = I.prepay(store, "acme", "2026-02", at("2026-01-20T00:00:00Z"), "t")
    assert out["amount"] == Decimal("2256") and out["monthly"] == Decimal("188")
    assert (out["first_period"], out["last_period"]) == ("2026-02", "2027-01")
    assert store.query("SELECT first_period, months, monthly_micros FROM prepayments") == [
        {"first_period": "2026-02", "months": 12, "monthly_micros": 188_000_000}]
    for m in range(2, 13):
        inv = I.build(store, "acme", f"2026-{m:02d}", at(f"2026-{m:02d}-01T00:00:00Z") + dt.timedelta(days=40), "t")
        assert "prepaid" in lines(inv, "account-fee")[0]["description"]
        assert inv["amount_due"] == 0
    jan = I.build(store, "acme", "2026-01", at("2026-02-03T00:00:00Z"), "t")
    assert "prepaid" not in lines(jan, "account-fee")[0]["description"]
    assert "month 3 of 12" in lines(I.show(store, "acme", "2026-04"), "account-fee")[0]["description"]
    assert I.show(store, "acme", "2026-01")["lines"][-1]["kind"] == "payment"  # received in January
    before = dump(store, "prepayments", "ledger_entries", "audit_log")
    with pytest.raises(StateError, match="already covers 2026-02 to 2027-01"):
        I.prepay(store, "acme", "2027-01", at("2026-03-01T00:00:00Z"), "t")
    with pytest.raises(InputError, match="is short"):
        I.prepay(store, "acme", "2027-02", at("2026-03-01T00:00:00Z"), "t", amount="100")
    assert dump(store, "prepayments", "ledger_entries", "audit_log") == before


# ------------------------------------------------------------------------- exports

def test_exports_json_csv_html(store, acme):
    store.execute("UPDATE accounts SET name = '<b>acme</b>' WHERE id = ?", (acme["id"],))
    add_cdr(store, "c1", acme["id"], "+442071234567", "2026-02-10T10:00:00Z", talk_s=31)
    inv = I.run(store, "<b>acme</b>", "2026-02", at("2026-03-03T00:00:00Z"), "t")["invoice"]
    j = json.loads(I.export(store, "<b>acme</b>", "2026-02", "json"))
    assert j["amount_due"] == str(inv["amount_due"]) and len(j["lines"]) == len(inv["lines"])
    rows = list(csv.DictReader(io.StringIO(I.export(store, "<b>acme</b>", "2026-02", "csv"))))
    assert [r["kind"] for r in rows][:3] == ["account-fee", "service", "telecom"]
    assert rows[-1]["description"] == "amount_due" and Decimal(rows[-1]["amount"]) == inv["amount_due"]
    page = I.export(store, "<b>acme</b>", "2026-02", "html")
    assert "&lt;b&gt;acme&lt;/b&gt;" in page and "<b>acme</b>" not in page and "Amount due" in page
    with pytest.raises(InputError, match="not one of json, csv, html"):
        I.export(store, "<b>acme</b>", "2026-02", "pdf")
