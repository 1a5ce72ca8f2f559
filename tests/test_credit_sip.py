"""The balance guard over real SIP: ``dialer.service.Service`` (what ``dialer run``
runs) in this process's reactor, pjsua2 workers, SIPp as the carrier (it answers and
keeps every call up; its own message trace is the witness) and as the agents' phones.

An account whose balance is just above its floor runs two power campaigns at once:
many calls race for the last dollars above the floor. Prices: telecom to +1 at $1.20
a minute, 1/1 (2 cents a second); service minutes $0.0188, 60/60; slices of 4 s with
a 1 s margin. A first slice is $0.08 + $0.0188 = $0.0988, a second one $0.08 (the
service minute is paid already). The balance is the floor + 3 first slices + one
second slice + $0.01: three calls start, the 4th is refused; at the first boundary
one call gets its second slice and the others end; nothing else fits after that.
"""

import datetime as _dt
from decimal import Decimal

from billing import ledger, standing
from billing.decks import import_deck
from billing.money import micros
from campaigns.leads import import_list
from campaigns.store import add_number, add_user, change_state, create_account, create_campaign
from dialer.agents import set_pin
from dialer.journal import Journal
from dialer.service import Service
from core.store import Store
from rules import service
from billing_fixtures import write_deck
from sip_harness import carrier_calls, free_udp_port, max_concurrent, needs_sip, write_tone
from test_engine_sip import run, until, when_to_test

pytestmark = needs_sip

FIRST = Decimal("0.0988")
SECOND = Decimal("0.08")
ABOVE = 3 * FIRST + SECOND + Decimal("0.01")


def billed_account(tmp_path, now, proxy, numbers):
    store = Store(tmp_path / "d.db")
    service.ensure_defaults(store, now)
    reg = tmp_path / "reg.txt"
    reg.write_text("2025550199\n")
    service.import_dnc(store, reg, now, "t", source="national", as_of=now.date().isoformat())
    create_account(store, "acme", now, "t", connection="fiber", lines=10)
    add_number(store, "acme", "212 555 9999", now, "t")
    for who, pin in (("alice", "7391"), ("bob", "5828")):
        add_user(store, "acme", who, "agent", now, "t")
        set_pin(store, "acme", who, pin, now, "t")
    from dialer.trunks import add_trunk
    add_trunk(store, "acme", "carrier", proxy, now, "t", cps=20)
    # a long message: a call no agent takes stays up (safe harbor) past the slice boundaries
    greeting = write_tone(tmp_path / "greeting.wav", seconds=10.0)
    for name in ("spring", "autumn"):
        create_campaign(store, name, "acme", now, "t", caller_id="212-555-9999", greeting=greeting,
                        dial_mode="power", power_ratio="3")
        f = tmp_path / f"{name}.csv"
        f.write_text("phone\n" + "\n".join(numbers[name]) + "\n")
        import_list(store, f, name, now, "t")
        change_state(store, name, "start", now, "t")
    import_deck(store, write_deck(tmp_path / "deck.csv", ["1,USA,1.20,1,1,,,"]), "carrier", now, "t")
    standing.enable(store, "acme", now, "t")
    ledger.topup(store, "acme", str(Decimal("100") + ABOVE), now, "t")
    return store


def test_calls_racing_for_the_last_dollars_above_the_floor(tmp_path, sipp):
    now, area, offset = when_to_test()
    trace = tmp_path / "carrier-messages.log"
    carrier = sipp("uas_answer_hold.xml", "-d", "20000", "-trace_msg", "-message_file", trace, echo=True)
    numbers = {"spring": [f"{area}555{1000 + 29 * i:04d}" for i in range(12)],
               "autumn": [f"{area}555{5000 + 29 * i:04d}" for i in range(12)]}
    store = billed_account(tmp_path, now, f"127.0.0.1:{carrier.port}", numbers)
    port = free_udp_port()
    seen = {}

    async def test(reactor):
        journal = Journal(store.path, reactor=reactor)
        journal.start()
        svc = Service(reactor, Store(store.path, timeout=0.2), journal, port=port, workers=2, tick=0.2,
                      credit_slice_s=4, credit_margin_s=1.0)
        try:
            await svc.start()
            for who, pin, camp in (("alice", "7391", "spring"), ("bob", "5828", "autumn")):
                sipp("uac_agent.xml", f"127.0.0.1:{port}", echo=True, service=f"agent-{who}-{pin}-{camp}", calls=1)
            loops = list(svc.dialers.values())
            await until(reactor, lambda: all(d.floor.counts(d.cid).agents == 1 for d in loops), 20,
                        "both agents' logins")
            g = svc.credit
            acc = loops[0].account_id
            await until(reactor, lambda: sum(d.stats.dials for d in loops) >= 3, 20, "the first dials")
            # every call ends (the guard ends them at their boundaries), and what is left fits no call
            await until(reactor, lambda: g.status(acc)["ended_at_boundary"] >= 3 and not any(d.legs for d in loops),
                        30, "the guard's hang-ups")
            t = reactor.seconds()
            await until(reactor, lambda: reactor.seconds() - t > 2.0, 5, "two more seconds")
            seen["dials"] = sum(d.stats.dials for d in loops)
            seen["status"] = g.status(acc)
            seen["blocked"] = [d.blocked_reason for d in loops]
            seen["peak"] = svc.gate.peak.get(acc)
            seen["service"] = svc.status()["balances"]
        finally:
            await svc.stop(drain_s=1.0)
            assert journal.stop(timeout=15) == 0

    run(test, timeout=120, offset_s=offset)
    calls = carrier_calls(trace)
    st = seen["status"]
    print("carrier calls", len(calls), "peak", max_concurrent(calls), "guard", st, "blocked", seen["blocked"])
    # the carrier never saw more calls than the balance held first slices for, and no more after
    assert len(calls) == seen["dials"] == 3 and max_concurrent(calls) <= 3
    assert seen["service"]["acme"]["dials"] == 3  # what dialer run's status lines show
    # the other dials the policies asked for were refused with the reason
    assert st["held_back"] > 0
    assert any(b and "is at the floor $100.000000: no new calls" in b for b in seen["blocked"])
    # one call got its second slice, every call was ended by the guard at a boundary
    assert st["extended"] == 1 and st["ended_at_boundary"] == 3
    cdrs = store.query("SELECT call_id, billsec, hangup_by FROM cdrs ORDER BY billsec")
    assert len(cdrs) == 3 and all(r["hangup_by"] == "balance" for r in cdrs)
    assert [r["billsec"] <= 4 for r in cdrs] == [True, True, False] and cdrs[2]["billsec"] <= 8
    # every CDR rated into the ledger once (at its write), and a bill run changes nothing
    charges = store.query("SELECT call_id, amount_micros FROM ledger_entries WHERE kind = 'charge'")
    assert sorted(r["call_id"] for r in charges) == sorted(r["call_id"] for r in cdrs)
    period = now.strftime("%Y-%m")
    assert ledger.bill_run(store, "acme", period, now, "t")["charged"] == 0
    for r in cdrs:
        assert -next(c["amount_micros"] for c in charges if c["call_id"] == r["call_id"]) == \
            micros(Decimal("0.0188") + Decimal("0.02") * r["billsec"])
    # the balance never went under the floor
    bal = ledger.balance(store, "acme")
    print("balance", bal["balance"], "above the floor", bal["above_floor"])
    assert not bal["below_floor"] and bal["above_floor"] >= 0
