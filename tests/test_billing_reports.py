"""The high-cost destination report (billing.reports, `dialer report high-cost`): the
threshold (strictly over), per-campaign shares of telecom cost, the flag above the
limit (strictly), the period's boundaries in the account's time zone, the ledger's
current charge of a rerated call, one account's rows only, and the CLI."""

import json
from decimal import Decimal

import pytest
from click.testing import CliRunner

from billing import ledger
from billing.decks import import_deck
from billing.plans import set_plan
from billing.reports import high_cost, minutes, share
from billing_fixtures import NOW, add_cdr, write_deck
from campaigns.store import create_account, create_campaign
from cli import main
from core.errors import InputError, NotFound
from core.store import Store
from test_billing_money_paths import check_money

DECK = ["44,UK,0.01,60,60,,,", "4470,UK mobile,0.15,60,60,,,", "882,Satellite,1.5,60,60,,,",
        "1,US,0.002,60,60,,,", "33,France,0.10,60,60,,,"]
UK, MOBILE, SAT, US, FR = "+442071234567", "+447012345678", "+88216000000", "+12125550100", "+33123456789"


def _calls(store, account_id, campaign_id, prefix, calls):
    """``calls``: [(destination, started, talk seconds)]."""
    for i, (dest, started, talk) in enumerate(calls):
        cid = f"{prefix}-{i}"
        add_cdr(store, cid, account_id, dest, started, talk_s=talk)
        store.execute("UPDATE cdrs SET campaign_id = ? WHERE call_id = ?", (campaign_id, cid))


@pytest.fixture
def acme(store, tmp_path):
    """acme (billed in New York time) with campaigns spring, summer and edge; beta, another
    account, with its own satellite traffic in the same month."""
    for name in ("acme", "beta"):
        create_account(store, name, NOW, "t")
    set_plan(store, "acme", NOW, "t", time_zone="America/New_York")
    import_deck(store, write_deck(tmp_path / "deck.csv", DECK), "carrier-a", NOW, "t")
    ids = {}
    for camp, acc in (("spring", "acme"), ("summer", "acme"), ("edge", "acme"), ("other", "beta")):
        create_campaign(store, camp, acc, NOW, "t")
        ids[camp] = store.query_one("SELECT id FROM campaigns WHERE name = ?", (camp,))["id"]
    a = store.query_one("SELECT id FROM accounts WHERE name = 'acme'")["id"]
    b = store.query_one("SELECT id FROM accounts WHERE name = 'beta'")["id"]
    day = "2026-03-10T15:00:00Z"
    # spring: 4 UK fixed (0.04), 1 UK mobile (0.15), 1 France at exactly the threshold (0.10): 0.29
    _calls(store, a, ids["spring"], "sp", [(UK, day, 60)] * 4 + [(MOBILE, day, 60), (FR, day, 60)])
    # summer: 135 UK fixed (1.35) + 1 UK mobile (0.15): a high-cost share of exactly 0.10
    _calls(store, a, ids["summer"], "su", [(UK, day, 60)] * 135 + [(MOBILE, day, 30)])
    # edge: satellite calls on the period's edges (New York: 2026-03-01T05:00Z .. 2026-04-01T04:00Z)
    _calls(store, a, ids["edge"], "ed", [(SAT, "2026-03-01T04:59:59Z", 60), (SAT, "2026-03-01T05:00:00Z", 60),
                                         (SAT, "2026-04-01T03:59:59Z", 60), (SAT, "2026-04-01T04:00:00Z", 60)])
    _calls(store, b, ids["other"], "ot", [(SAT, day, 600)] * 3)
    for acc in ("acme", "beta"):
        for period in ("2026-02", "2026-03", "2026-04"):
            ledger.bill_run(store, acc, period, NOW, "t")
    return ids


def test_minutes_and_shares_are_exact_decimals():
    assert minutes(60) == Decimal("1.00") and minutes(61) == Decimal("1.02") and minutes(0) == Decimal("0.00")
    assert share(15, 150) == Decimal("0.1000") and share(1, 3) == Decimal("0.3333") and share(2, 3) == Decimal("0.6667")
    assert share(5, 0) is None


def test_per_campaign_minutes_cost_shares_and_flags(store, acme):
    out = high_cost(store, "2026-03", "acme")
    assert check_money(out) > 10
    assert (out["threshold"], out["limit"], out["time_zone"]) == (Decimal("0.10"), Decimal("0.10"), "America/New_York")
    assert (out["from"], out["to"]) == ("2026-03-01T05:00:00.000Z", "2026-04-01T04:00:00.000Z")
    by = {c["campaign"]: c for c in out["campaigns"]}
    assert set(by) == {"spring", "summer", "edge"}  # beta's campaign is not acme's
    sp = by["spring"]
    assert sp["all"] == {"calls": 6, "minutes": Decimal("6.00"), "telecom": Decimal("0.290000")}
    # France at exactly $0.10 is not over the threshold; the UK mobile is
    assert sp["high_cost"] == {"calls": 1, "minutes": Decimal("1.00"), "telecom": Decimal("0.150000")}
    assert sp["share"] == Decimal("0.5172") and sp["flagged"] is True
    (mob,) = sp["destinations"]
    assert (mob["prefix"], mob["destination"], mob["rate"], mob["calls"]) == ("4470", "UK mobile", Decimal("0.15"), 1)
    assert mob["share_of_campaign"] == Decimal("0.5172")
    su = by["summer"]
    assert su["high_cost"]["telecom"] == Decimal("0.15") and su["all"]["telecom"] == Decimal("1.50")
    assert su["share"] == Decimal("0.1000") and su["flagged"] is False  # at the limit, not above it
    ed = by["edge"]  # the two calls inside the New York month, not the two outside
    assert ed["high_cost"] == {"calls": 2, "minutes": Decimal("2.00"), "telecom": Decimal("3.000000")}
    assert ed["share"] == Decimal("1.0000") and ed["flagged"]
    assert out["all"]["calls"] == 6 + 136 + 2 and out["high_cost"]["calls"] == 1 + 1 + 2
    assert out["high_cost"]["telecom"] == Decimal("3.30") and out["all"]["telecom"] == Decimal("4.79")
    assert out["share"] == share(3_300_000, 4_790_000) and out["flagged"]
    assert out["unrated_calls"] == 0 and out["unknown_rate_calls"] == 0
    assert [c["campaign"] for c in out["campaigns"]] == ["edge", "spring", "summer"]  # flagged first, by cost
    # beta sees only its own satellite traffic
    beta = high_cost(store, "2026-03", "beta")
    assert [c["campaign"] for c in beta["campaigns"]] == ["other"]
    assert beta["high_cost"] == {"calls": 3, "minutes": Decimal("30.00"), "telecom": Decimal("45.000000")}


def test_threshold_limit_and_cost_limit_options(store, acme):
    low = high_cost(store, "2026-03", "acme", threshold="0.009")  # UK fixed at 0.01 is over it now
    by = {c["campaign"]: c for c in low["campaigns"]}
    assert by["summer"]["high_cost"]["calls"] == 136 and by["summer"]["share"] == Decimal("1.0000")
    assert by["spring"]["high_cost"]["calls"] == 6  # France's 0.10 too
    tight = {c["campaign"]: c for c in high_cost(store, "2026-03", "acme", limit="9%")["campaigns"]}
    assert tight["summer"]["flagged"] is True
    loose = {c["campaign"]: c for c in high_cost(store, "2026-03", "acme", limit="0.6")["campaigns"]}
    assert not loose["spring"]["flagged"] and loose["edge"]["flagged"]
    by_cost = {c["campaign"]: c for c in high_cost(store, "2026-03", "acme", limit="1", cost_limit="0.14")["campaigns"]}
    assert by_cost["spring"]["flagged"] and by_cost["summer"]["flagged"] and by_cost["edge"]["flagged"]
    for bad, message in ((dict(threshold="-1"), "negative"), (dict(threshold="abc"), "not a number"),
                         (dict(limit="2"), "above"), (dict(limit="150%"), "above"), (dict(limit="0.1234567"), "decimal")):
        with pytest.raises(InputError, match=message):
            high_cost(store, "2026-03", "acme", **bad)
    with pytest.raises(InputError, match="not a month"):
        high_cost(store, "2026-13", "acme")
    with pytest.raises(NotFound):
        high_cost(store, "2026-03", "nobody")


def test_a_rerated_call_counts_once_with_its_new_rate_and_unrated_calls_are_counted(store, acme, tmp_path):
    deck = [line.replace("4470,UK mobile,0.15", "4470,UK mobile,0.20") for line in DECK]
    import_deck(store, write_deck(tmp_path / "deck2.csv", deck), "carrier-b", NOW, "t")
    ledger.rerate(store, "acme", NOW, "t", period="2026-03")
    by = {c["campaign"]: c for c in high_cost(store, "2026-03", "acme")["campaigns"]}
    (mob,) = by["spring"]["destinations"]
    assert (mob["rate"], mob["calls"], mob["telecom"]) == (Decimal("0.20"), 1, Decimal("0.20"))
    assert by["spring"]["all"]["calls"] == 6
    a = store.query_one("SELECT id FROM accounts WHERE name = 'acme'")["id"]
    add_cdr(store, "late", a, SAT, "2026-03-20T12:00:00Z", talk_s=60)
    out = high_cost(store, "2026-03", "acme")
    assert out["unrated_calls"] == 1 and out["high_cost"]["calls"] == 4  # the report is the bill: run it first


def test_cli_report_high_cost(db_path, acme):
    def run(*args):
        return CliRunner().invoke(main, ["--db", str(db_path), *args], catch_exceptions=False)
    r = run("report", "high-cost", "--period", "2026-03", "--account", "acme", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["high_cost"]["telecom"] == "3.300000" and out["campaigns"][0]["campaign"] == "edge"
    r = run("report", "high-cost", "--period", "2026-03", "--account", "acme", "--threshold", "0.2", "--limit", "50%")
    assert r.exit_code == 0, r.output
    assert "edge" in r.output and "FLAGGED" in r.output and "spring" in r.output
    for args, message in ((("--period", "03/2026", "--account", "acme"), "not a month"),
                          (("--period", "2026-03", "--account", "acme", "--limit", "x"), "not a number"),
                          (("--period", "2026-03"), "several accounts"),
                          (("--period", "2026-03", "--account", "nobody"), "no account")):
        r = run("report", "high-cost", *args)
        assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output
