"""The ledger: each CDR charged once, rerating as reversal + new charge, balance, floor,
bad CDRs refused with a reason, periods half-open in the account's time zone."""

import sqlite3
from decimal import Decimal

import pytest

from billing import ledger
from billing.decks import import_deck
from billing.plans import month_bounds, set_plan
from billing.service import rate_file
from campaigns.store import create_account
from core.errors import InputError, NotFound
from core.store import Store
from billing_fixtures import BILLING_TABLES, NOW, add_cdr, dump, write_deck


@pytest.fixture
def acme(store, tmp_path):
    acc = create_account(store, "acme", NOW, "t")
    import_deck(store, write_deck(tmp_path / "deck.csv", ["44,UK,0.01,1,1,,,", "1,US,0.002,6,6,,,"]), "carrier", NOW,
                "t")
    return acc


def charges(store, call_id=None):
    sql = "SELECT call_id, kind, seq, amount_micros FROM ledger_entries WHERE kind IN ('charge', 'reversal')"
    params = ()
    if call_id:
        sql += " AND call_id = ?"
        params = (call_id,)
    return store.execute(sql + " ORDER BY id", params).fetchall()


def test_a_bill_run_charges_each_cdr_once(store, acme):
    add_cdr(store, "c1", acme["id"], "+442071234567", "2026-03-10T10:00:00Z", talk_s=31)   # UK, 1/1
    add_cdr(store, "c2", acme["id"], "+12125550100", "2026-03-10T11:00:00Z", talk_s=61)    # US, 6/6
    add_cdr(store, "c3", acme["id"], "+12125550100", "2026-03-10T12:00:00Z", ended="2026-03-10T12:00:30Z")  # no answer
    out = ledger.bill_run(store, "acme", "2026-03", NOW, "t")
    # service at 60/60: 0.0188 (31 s) + 0.0376 (61 s); telecom 31 s x 0.01/60 = 0.005167 (up), 66 s x 0.002/60 = 0.0022
    assert (out["charged"], out["free"], out["refused"], out["already"]) == (2, 1, 0, 0)
    assert out["service"] == Decimal("0.056400") and out["telecom"] == Decimal("0.007367")
    assert out["total"] == Decimal("0.063767")
    assert ledger.balance(store, "acme")["balance"] == Decimal("-0.063767")
    again = ledger.bill_run(store, "acme", "2026-03", NOW, "t")
    assert again["charged"] == 0 and again["total"] == Decimal("0")
    assert charges(store) == [("c1", "charge", 1, -23_967), ("c2", "charge", 1, -39_800)]
    assert ledger.balance(store, "acme")["balance"] == Decimal("-0.063767")


def test_two_processes_rating_the_same_cdrs_charge_once(store, acme, db_path):
    add_cdr(store, "c1", acme["id"], "+442071234567", "2026-03-10T10:00:00Z", talk_s=31)
    add_cdr(store, "c2", acme["id"], "+12125550100", "2026-03-10T11:00:00Z", talk_s=61)
    # both read the same unrated CDRs before either writes; the second insert changes nothing
    from billing.calls import rate_batch
    from billing.decks import load_index
    from billing.plans import plan_row, service_tariff
    other = Store(db_path)
    try:
        records = store.execute("SELECT call_id, destination, started_at, answered_at, ended_at, duration_ms, "
                                "billable_ms FROM cdrs ORDER BY call_id").fetchall()
        rated, _free, _refused = rate_batch(records, service_tariff(plan_row(store, acme["id"])),
                                            load_index(store, acme["id"]))
        assert ledger.charge(store, acme["id"], rated, None, NOW, "a")[0] == 2
        assert ledger.charge(other, acme["id"], rated, None, NOW, "b")[0] == 0
    finally:
        other.close()
    assert len(charges(store)) == 2
    # a bill run afterwards finds nothing unrated
    assert ledger.bill_run(store, "acme", "2026-03", NOW, "t")["charged"] == 0


def test_a_second_first_charge_is_refused_by_the_database(store, acme):
    add_cdr(store, "c1", acme["id"], "+442071234567", "2026-03-10T10:00:00Z", talk_s=31)
    batch = ledger.bill_run(store, "acme", "2026-03", NOW, "t")["batch"]
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        store.execute("INSERT INTO ledger_entries (account_id, batch_id, kind, amount_micros, at, call_id, seq) "
                      "VALUES (?, ?, 'charge', -1, 'x', 'c1', 1)", (acme["id"], batch))


def test_the_ledger_is_append_only(store, acme):
    ledger.topup(store, "acme", "10", NOW, "t")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.execute("UPDATE ledger_entries SET amount_micros = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.execute("DELETE FROM ledger_entries")


def test_the_database_refuses_entries_with_the_wrong_sign_or_kind(store, acme):
    entry = ledger.topup(store, "acme", "10", NOW, "t")["entry"]
    batch = store.query_one("SELECT batch_id FROM ledger_entries WHERE id = ?", (entry,))["batch_id"]
    for kind, amount, call_id, seq in (("charge", 5, "c9", 1), ("payment", -5, None, None), ("refund", 5, None, None),
                                       ("charge", -5, None, None), ("interest", 5, None, None)):
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            store.execute("INSERT INTO ledger_entries (account_id, batch_id, kind, amount_micros, at, call_id, seq) "
                          "VALUES (?, ?, ?, ?, 'x', ?, ?)", (acme["id"], batch, kind, amount, call_id, seq))


def test_rerating_is_a_reversal_plus_a_new_charge(store, acme, tmp_path):
    add_cdr(store, "c1", acme["id"], "+442071234567", "2026-03-10T10:00:00Z", talk_s=31)
    add_cdr(store, "c2", acme["id"], "+12125550100", "2026-03-10T11:00:00Z", talk_s=61)
    ledger.topup(store, "acme", "100", NOW, "t")
    ledger.bill_run(store, "acme", "2026-03", NOW, "t")
    assert ledger.balance(store, "acme")["balance"] == Decimal("99.936233")
    # the carrier corrects the UK rate; US unchanged
    import_deck(store, write_deck(tmp_path / "fixed.csv", ["44,UK,0.02,1,1,,,", "1,US,0.002,6,6,,,"]), "fixed", NOW,
                "t")
    out = ledger.rerate(store, "acme", NOW, "t", period="2026-03", reason="carrier correction")
    assert (out["calls"], out["rerated"], out["unchanged"], out["refused"]) == (2, 1, 1, 0)
    # UK telecom 31 s x 0.02/60 = 0.010334 (up) instead of 0.005167
    assert out["net"] == Decimal("-0.005167")
    assert charges(store, "c1") == [("c1", "charge", 1, -23_967), ("c1", "reversal", 2, 23_967),
                                    ("c1", "charge", 3, -29_134)]
    assert charges(store, "c2") == [("c2", "charge", 1, -39_800)]
    bal = ledger.balance(store, "acme")
    assert bal["balance"] == Decimal("100") - Decimal("0.029134") - Decimal("0.039800") == Decimal("99.931066")
    assert bal["by_kind"]["reversal"] == {"entries": 1, "amount": Decimal("0.023967")}
    # a rerate with nothing changed adds nothing; a bill run does not charge rerated calls again
    again = ledger.rerate(store, "acme", NOW, "t", period="2026-03")
    assert again["rerated"] == 0 and again["unchanged"] == 2
    assert ledger.bill_run(store, "acme", "2026-03", NOW, "t")["charged"] == 0
    assert len(charges(store)) == 4
    # rerate by call id: the reversal of the current charge (seq 3) and a new charge
    set_plan(store, "acme", NOW, "t", increment="1/1")
    ledger.rerate(store, "acme", NOW, "t", call_ids=["c1"])
    assert [r[1:3] for r in charges(store, "c1")] == [("charge", 1), ("reversal", 2), ("charge", 3),
                                                      ("reversal", 4), ("charge", 5)]
    reversal = ledger.entries(store, "acme", call_id="c1")[3]
    assert reversal["reverses"] == ledger.entries(store, "acme", call_id="c1")[2]["id"]
    assert reversal["posting"] == "rerate" and reversal["actor"] == "t"
    # service 31 s at 1/1: 0.009714; telecom 0.010334
    assert charges(store, "c1")[-1][3] == -(9_714 + 10_334)
    audit = store.query("SELECT action, reason FROM audit_log WHERE action = 'billing.rerate'")
    assert audit[0]["reason"] == "carrier correction" and len(audit) == 2


def test_rerate_needs_a_period_or_call_ids(store, acme):
    with pytest.raises(InputError, match="a period"):
        ledger.rerate(store, "acme", NOW, "t")


def test_balance_floor_payments_credits_interest(store, acme):
    bal = ledger.balance(store, "acme")
    assert bal["balance"] == Decimal("0") and bal["floor"] == Decimal("100") and bal["below_floor"]
    ledger.topup(store, "acme", "250.50", NOW, "t", reference="wire 123")
    ledger.post(store, "acme", "credit", "10", NOW, "t", reference="goodwill")
    ledger.post(store, "acme", "interest", "1.25", NOW, "t", reference="late payment")
    bal = ledger.balance(store, "acme")
    assert bal["balance"] == Decimal("259.25") and bal["above_floor"] == Decimal("159.25") and not bal["below_floor"]
    assert bal["by_kind"]["interest"] == {"entries": 1, "amount": Decimal("-1.25")}
    out = ledger.set_floor(store, "acme", "300", NOW, "t", reason="large campaign")
    assert out["floor"] == Decimal("300") and out["changed"]
    assert store.query_one("SELECT floor_micros FROM billing_accounts")["floor_micros"] == 300_000_000
    bal = ledger.balance(store, "acme")
    assert bal["below_floor"] and bal["above_floor"] == Decimal("-40.75")
    actions = [r["action"] for r in store.query("SELECT action FROM audit_log WHERE action LIKE 'billing.%' "
                                                "AND action <> 'billing.deck.import' ORDER BY id")]
    assert actions == ["billing.payment", "billing.credit", "billing.interest", "billing.plan"]


@pytest.mark.parametrize("amount,message", [("0", "more than 0"), ("-5", "negative"), ("ten", "not a number"),
                                            ("1.0000001", "more than 6 decimal places")])
def test_bad_payments_change_nothing(store, acme, amount, message):
    before = dump(store, *BILLING_TABLES)
    with pytest.raises(InputError, match=message):
        ledger.topup(store, "acme", amount, NOW, "t")
    assert dump(store, *BILLING_TABLES) == before


def test_bad_floor_and_plan_change_nothing(store, acme):
    before = dump(store, *BILLING_TABLES)
    for kw, message in (({"floor": "-1"}, "negative"), ({"increment": "60"}, "INITIAL/INCREMENT"),
                        ({"increment": "6/0"}, "increment 1 to 3600"), ({"time_zone": "Mars/Base"}, "IANA"),
                        ({"min_cost": "0.5", "max_cost": "0.1"}, "minimum cost"), ({"price": "abc"}, "not a number")):
        with pytest.raises(InputError, match=message):
            set_plan(store, "acme", NOW, "t", **kw)
    assert dump(store, *BILLING_TABLES) == before


def test_unknown_accounts(store, acme):
    with pytest.raises(NotFound, match="no account named 'ghost'"):
        ledger.bill_run(store, "ghost", "2026-03", NOW, "t")
    with pytest.raises(NotFound):
        ledger.topup(store, "ghost", "5", NOW, "t")


def test_bad_cdrs_are_refused_with_a_reason_never_billed(store, acme, tmp_path):
    a = acme["id"]
    add_cdr(store, "ok", a, "+442071234567", "2026-03-10T10:00:00Z", talk_s=31)
    add_cdr(store, "ends-before-answer", a, "+442071234567", "2026-03-10T10:00:00Z", answered="2026-03-10T10:01:00Z",
            ended="2026-03-10T10:00:30Z", billable_ms=-30_000)
    add_cdr(store, "answered-before-start", a, "+442071234567", "2026-03-10T10:00:00Z",
            answered="2026-03-10T09:59:00Z", ended="2026-03-10T10:00:30Z")
    add_cdr(store, "absurd", a, "+442071234567", "2026-03-10T10:00:00Z", answered="2026-03-10T10:00:05Z",
            ended="2026-03-11T10:00:06Z")
    add_cdr(store, "no-rate", a, "+33123456789", "2026-03-10T10:00:00Z", talk_s=10)
    add_cdr(store, "not-a-number", a, "sip:alice@example.com", "2026-03-10T10:00:00Z", talk_s=10)
    add_cdr(store, "billable-unanswered", a, "+442071234567", "2026-03-10T10:00:00Z", ended="2026-03-10T10:00:30Z",
            billable_ms=20_000)
    out = ledger.bill_run(store, "acme", "2026-03", NOW, "t")
    assert out["charged"] == 1 and out["refused"] == 6
    reasons = {r["call_id"]: r["reason"] for r in out["refused_examples"]}
    assert reasons["ends-before-answer"].startswith("ends (2026-03-10T10:00:30.000Z) before it was answered")
    assert reasons["answered-before-start"].startswith("answered (2026-03-10T09:59:00.000Z) before it started")
    assert reasons["absurd"] == "absurd duration (86406 s, more than 24 h)"
    assert reasons["no-rate"] == "no rate for +33123456789 at 2026-03-10T10:00:00.000Z in deck carrier"
    assert reasons["not-a-number"] == "destination 'sip:alice@example.com' is not a number"
    assert reasons["billable-unanswered"] == "billable time without an answer (20000 ms)"
    assert out["refused_by_reason"]["absurd duration"] == 1
    assert [r[0] for r in charges(store)] == ["ok"]
    # refused CDRs stay unrated: a run after the deck covers France charges the French call
    import_deck(store, write_deck(tmp_path / "fr.csv", ["44,UK,0.01,1,1,,,", "33,France,0.01,1,1,,,"]), "with-fr",
                NOW, "t")
    again = ledger.bill_run(store, "acme", "2026-03", NOW, "t")
    assert (again["charged"], again["refused"]) == (1, 5)
    assert [r[0] for r in charges(store)] == ["ok", "no-rate"]


def test_without_a_deck_answered_calls_are_refused(store):
    create_account(store, "solo", NOW, "t")
    acc = store.query_one("SELECT id FROM accounts WHERE name = 'solo'")
    add_cdr(store, "c1", acc["id"], "+442071234567", "2026-03-10T10:00:00Z", talk_s=31)
    out = ledger.bill_run(store, "solo", "2026-03", NOW, "t")
    assert out["charged"] == 0 and out["deck"] is None
    assert out["refused_examples"][0]["reason"].startswith("no rate deck in force")


def test_periods_are_half_open_months_in_the_accounts_time_zone(store, acme):
    set_plan(store, "acme", NOW, "t", time_zone="America/New_York")
    start, end = month_bounds("2026-03", "America/New_York")
    assert (start.isoformat(), end.isoformat()) == ("2026-03-01T05:00:00+00:00", "2026-04-01T04:00:00+00:00")  # DST
    a = acme["id"]
    add_cdr(store, "feb-last-evening", a, "+442071234567", "2026-03-01T04:59:59.999Z", talk_s=10)   # 28 Feb 23:59 NY
    add_cdr(store, "mar-first", a, "+442071234567", "2026-03-01T05:00:00.000Z", talk_s=10)          # 1 Mar 00:00 NY
    add_cdr(store, "mar-last", a, "+442071234567", "2026-04-01T03:59:59.999Z", talk_s=10)           # 31 Mar 23:59 NY
    add_cdr(store, "apr-first", a, "+442071234567", "2026-04-01T04:00:00.000Z", talk_s=10)          # 1 Apr 00:00 NY
    out = ledger.bill_run(store, "acme", "2026-03", NOW, "t")
    assert out["charged"] == 2 and out["from"] == "2026-03-01T05:00:00.000Z"
    assert sorted(r[0] for r in charges(store)) == ["mar-first", "mar-last"]
    assert ledger.bill_run(store, "acme", "2026-02", NOW, "t")["charged"] == 1
    assert ledger.bill_run(store, "acme", "2026-04", NOW, "t")["charged"] == 1
    for bad in ("2026-3", "March", "2026-13", "1999-12"):
        with pytest.raises(InputError, match="period"):
            ledger.bill_run(store, "acme", bad, NOW, "t")


def test_bill_run_in_chunks_covers_every_cdr_once(store, acme):
    for i in range(23):
        # several calls at the same instant: the chunks' keyset must not skip or repeat any
        add_cdr(store, f"c{i:02d}", acme["id"], "+442071234567", f"2026-03-10T10:00:{i // 4:02d}Z", talk_s=31)
    out = ledger.bill_run(store, "acme", "2026-03", NOW, "t", chunk=5)
    assert out["charged"] == 23 and out["cdrs"] == 23
    assert sorted(r[0] for r in charges(store)) == [f"c{i:02d}" for i in range(23)]
    assert out["total"] == 23 * Decimal("0.023967")


def test_bill_run_chunks_with_many_calls_at_one_instant_and_refused_ones(store, acme):
    a = acme["id"]
    for i in range(7):  # more calls at one instant than a chunk holds
        add_cdr(store, f"same{i}", a, "+442071234567", "2026-03-10T10:00:00Z", talk_s=31)
    for i in range(4):  # refused and free calls around a chunk's edge stay unrated, and are read once per run
        add_cdr(store, f"bad{i}", a, "+33123", f"2026-03-10T10:00:0{i}Z", talk_s=5)
        add_cdr(store, f"free{i}", a, "+442071234567", f"2026-03-10T10:00:0{i}Z", ended=f"2026-03-10T10:00:3{i}Z")
    for i in range(5):
        add_cdr(store, f"later{i}", a, "+442071234567", f"2026-03-10T11:00:0{i // 2}Z", talk_s=31)
    out = ledger.bill_run(store, "acme", "2026-03", NOW, "t", chunk=3)
    assert (out["cdrs"], out["charged"], out["refused"], out["free"]) == (20, 12, 4, 4)
    assert len(charges(store)) == 12
    again = ledger.bill_run(store, "acme", "2026-03", NOW, "t", chunk=3)
    assert (again["cdrs"], again["charged"], again["refused"], again["free"]) == (8, 0, 4, 4)


def test_what_if_rating_of_a_file_stores_nothing(store, acme, tmp_path):
    create_account(store, "other", NOW, "t")
    f = tmp_path / "cdrs.csv"
    f.write_text(
        "call_id,destination,started_at,answered_at,ended_at,account\n"
        "a,+442071234567,2026-03-10T10:00:00Z,2026-03-10T10:00:05Z,2026-03-10T10:00:36Z,\n"
        "b,+12125550100,2026-03-10T10:00:00Z,,2026-03-10T10:00:30Z,\n"
        "c,+442071234567,2026-03-10T10:00:00Z,2026-03-10T10:01:00Z,2026-03-10T10:00:30Z,\n"
        "d,+442071234567,2026-03-10T10:00:00Z,2026-03-10T10:00:05Z,2026-03-12T10:00:00Z,\n"
        "e,+442071234567,2026-03-10T10:00:00Z,2026-03-10T10:00:05Z,2026-03-10T10:00:36Z,ghost\n"
        "a,+442071234567,2026-03-10T10:00:00Z,2026-03-10T10:00:05Z,2026-03-10T10:00:36Z,\n"
        "f,+442071234567,yesterday,2026-03-10T10:00:05Z,2026-03-10T10:00:36Z,\n"
        "junk\n"
        "g,+442071234567,2026-03-10T10:00:00Z,2026-03-10T10:00:05Z,2026-03-10T10:01:06Z,other\n")
    before = dump(store, *BILLING_TABLES)
    out = rate_file(store, f, "acme")
    assert dump(store, *BILLING_TABLES) == before and out["stored"] is False
    rated = {r["call_id"]: r for r in out["cdrs"]}
    assert rated["a"]["total"] == Decimal("0.023967") and rated["a"]["line"] == 2
    assert rated["b"]["free"] and rated["b"]["total"] == Decimal("0")
    assert rated["g"]["account"] == "other" and rated["g"]["service"] == Decimal("0.037600")
    refused = {r["line"]: r["reason"] for r in out["refused"]}
    assert refused[4].startswith("ends (2026-03-10T10:00:30.000Z) before it was answered")
    assert refused[5].startswith("absurd duration")
    assert refused[6] == "unknown account 'ghost'"
    assert refused[7] == "call_id 'a' is also on line 2"
    assert refused[8] == "started_at 'yesterday' is not an ISO 8601 time (e.g. 2026-11-27T18:30:00Z)"
    assert refused[9] == "1 cells where the header has 6"
    t = out["totals"]
    assert (t["rated"], t["free"], t["refused"]) == (2, 1, 6)
    assert t["total"] == Decimal("0.023967") + rated["g"]["total"]


def test_what_if_file_without_the_columns(store, acme, tmp_path):
    f = tmp_path / "cdrs.csv"
    f.write_text("id,number\n1,2\n")
    with pytest.raises(InputError, match="line 1: the header needs the columns call_id"):
        rate_file(store, f, "acme")
