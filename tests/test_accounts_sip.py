"""Account-wide guarantees of the real service over real SIP: ``dialer.service.Service``
(the object ``dialer run`` runs) in this process's reactor, pjsua2 workers, SIPp as the
carrier behind the account's trunk (its own message trace is the witness) and as the
agents' phones.

- an ADSL account (3 lines) running two campaigns never has more than 3 calls at the
  carrier (before: 3 per campaign, 6 at once);
- a lead dialled again after a restart gets a new call id and its own CDR (before:
  ``c<campaign>-<lead>-1`` again, and the second CDR was dropped);
- one user, two phones, two campaigns: one session (before: logged in twice).
"""

import datetime as _dt

from campaigns.leads import import_list
from campaigns.store import add_number, add_user, change_state, create_account, create_campaign
from dialer.agents import set_pin
from dialer.journal import Journal
from dialer.service import Service
from core.store import Store
from dialer.trunks import add_trunk
from rules import service
from sip_harness import carrier_calls, free_udp_port, max_concurrent, needs_sip, write_tone
from test_engine_sip import run, until, when_to_test

pytestmark = needs_sip


def account_with_two_campaigns(tmp_path, now, proxy, numbers=None, lines=3, mode="power", retry=None):
    """Account "adsl" (``lines`` lines) with a trunk to ``proxy``, agents alice (PIN 7391)
    and bob (5828), and two running campaigns "spring" and "autumn" with the lists in
    ``numbers`` ({campaign: [number]}; none: no leads)."""
    store = Store(tmp_path / "d.db")
    service.ensure_defaults(store, now)
    reg = tmp_path / "reg.txt"
    reg.write_text("2025550199\n")
    service.import_dnc(store, reg, now, "t", source="national", as_of=now.date().isoformat())
    create_account(store, "adsl", now, "t", connection="adsl" if lines <= 3 else "fiber", lines=lines)
    add_number(store, "adsl", "212 555 9999", now, "t")
    for who, pin in (("alice", "7391"), ("bob", "5828")):
        add_user(store, "adsl", who, "agent", now, "t")
        set_pin(store, "adsl", who, pin, now, "t")
    add_trunk(store, "adsl", "carrier", proxy, now, "t", cps=20)
    greeting = write_tone(tmp_path / "greeting.wav", seconds=1.0)
    for name in ("spring", "autumn"):
        create_campaign(store, name, "adsl", now, "t", caller_id="212-555-9999", greeting=greeting, dial_mode=mode,
                        power_ratio="3", retry=retry)
        if numbers and numbers.get(name):
            f = tmp_path / f"{name}.csv"
            f.write_text("phone\n" + "\n".join(numbers[name]) + "\n")
            import_list(store, f, name, now, "t")
        change_state(store, name, "start", now, "t")
    return store


def serve(store, port, body, workers=2, offset_s=0):
    """Run ``body(reactor, svc)`` against a started Service on ``store``'s database,
    then stop the service (drain 1 s) and its journal; on a clock shifted by ``offset_s``
    (test_engine_sip.when_to_test)."""
    async def test(reactor):
        journal = Journal(store.path, reactor=reactor)  # its calls answer on this reactor
        journal.start()
        svc = Service(reactor, Store(store.path, timeout=0.2), journal, port=port, workers=workers, tick=0.2)
        try:
            await svc.start()
            return await body(reactor, svc)
        finally:
            await svc.stop(drain_s=1.0)
            left = journal.stop(timeout=15)
            assert left == 0
    return run(test, timeout=120, offset_s=offset_s)


def dialer_of(svc, name):
    return next(d for d in svc.dialers.values() if d.campaign["name"] == name)


def test_an_adsl_account_never_has_more_than_3_calls_at_the_carrier(tmp_path, sipp):
    now, area, offset = when_to_test()
    trace = tmp_path / "carrier-messages.log"
    carrier = sipp("uas_answer_hold.xml", "-d", "2500", "-trace_msg", "-message_file", trace, echo=True)
    numbers = {"spring": [f"{area}555{1000 + 29 * i:04d}" for i in range(12)],
               "autumn": [f"{area}555{5000 + 29 * i:04d}" for i in range(12)]}
    store = account_with_two_campaigns(tmp_path, now, f"127.0.0.1:{carrier.port}", numbers)
    port = free_udp_port()

    async def body(reactor, svc):
        for who, pin, camp in (("alice", "7391", "spring"), ("bob", "5828", "autumn")):
            sipp("uac_agent.xml", f"127.0.0.1:{port}", echo=True, service=f"agent-{who}-{pin}-{camp}", calls=1)
        spring, autumn = dialer_of(svc, "spring"), dialer_of(svc, "autumn")
        await until(reactor, lambda: spring.floor.counts(spring.cid).agents == 1
                    and autumn.floor.counts(autumn.cid).agents == 1, 20, "both agents' logins")
        # power 3 with one free agent each: each campaign alone would put 3 calls in flight
        await until(reactor, lambda: spring.stats.dials + autumn.stats.dials >= 10
                    and spring.stats.dials >= 3 and autumn.stats.dials >= 3, 60, "ten dials over both campaigns")
        return svc.gate.peak.get(spring.account_id)

    peak = serve(store, port, body, offset_s=offset)
    calls = carrier_calls(trace)
    print("carrier calls", len(calls), "peak at the carrier", max_concurrent(calls), "gate peak", peak)
    assert max_concurrent(calls) == 3  # the account's lines were all used, never exceeded
    assert peak == 3
    cdrs = store.query("SELECT campaign_id, destination FROM cdrs")
    assert {r["campaign_id"] for r in cdrs} == {1, 2}
    # every call the carrier saw has its CDR (numbers as the carrier got them)
    seen = sorted(c["number"] for c in calls.values())
    assert sorted(r["destination"][1:] for r in cdrs) == seen


def test_a_lead_dialled_again_after_a_restart_keeps_both_cdrs(tmp_path, sipp):
    now, area, offset = when_to_test()
    trace = tmp_path / "carrier-messages.log"
    carrier = sipp("uas_busy.xml", "-trace_msg", "-message_file", trace)
    number = f"{area}5551000"
    store = account_with_two_campaigns(tmp_path, now, f"127.0.0.1:{carrier.port}", {"spring": [number]}, lines=10,
                                       mode="progressive")
    for _ in range(2):  # two runs of the service, one after the other
        port = free_udp_port()

        async def body(reactor, svc):
            sipp("uac_agent.xml", f"127.0.0.1:{port}", echo=True, service="agent-alice-7391-spring", calls=1)
            d = dialer_of(svc, "spring")
            await until(reactor, lambda: d.stats.dispositions.get("busy") == 1, 40, "the busy call's end")
            return d

        serve(store, port, body, offset_s=offset)
        # the lead's retry comes due (its retry delay is minutes; the test does not wait)
        store.execute("UPDATE leads SET next_attempt_at = ? WHERE phone = ?", ("2000-01-01T00:00:00.000Z", "+1" + number))
    cdrs = store.query("SELECT call_id, disposition FROM cdrs ORDER BY call_id")
    invites = [c for c in carrier_calls(trace).values() if c["number"] == "1" + number]
    assert len(invites) == 2 and len(cdrs) == 2 and len({r["call_id"] for r in cdrs}) == 2
    assert [r["disposition"] for r in cdrs] == ["busy", "busy"]
    assert store.query_one("SELECT attempts FROM leads")["attempts"] == 2
    assert not store.query("SELECT * FROM cdr_conflicts") and not store.query("SELECT * FROM open_calls")


def test_one_user_two_phones_two_campaigns_one_session(tmp_path, sipp):
    now = _dt.datetime.now(_dt.timezone.utc)
    carrier_port = free_udp_port()  # no leads: nothing is dialled, the agents stay ready
    store = account_with_two_campaigns(tmp_path, now, f"127.0.0.1:{carrier_port}")
    port = free_udp_port()
    alice = store.query_one("SELECT id FROM users WHERE name = 'alice'")["id"]

    async def body(reactor, svc):
        spring, autumn = dialer_of(svc, "spring"), dialer_of(svc, "autumn")
        first = sipp("uac_agent.xml", f"127.0.0.1:{port}", echo=True, service="agent-alice-7391-spring", calls=1)
        await until(reactor, lambda: spring.floor.state_of(alice) == "ready", 20, "alice's first phone")
        second = sipp("uac_agent.xml", f"127.0.0.1:{port + 1}", echo=True, service="agent-alice-7391-autumn",
                      calls=1)
        await until(reactor, lambda: autumn.floor.state_of(alice) == "ready", 20, "alice's second phone")
        assert spring.floor.state_of(alice) == "logged_out"
        # the first phone was hung up by the dialer: its SIPp scenario got the BYE and ended
        await until(reactor, lambda: first.proc.poll() is not None, 20, "the first phone's hang-up")
        assert first.proc.returncode == 0
        assert second.proc.poll() is None and svc.sessions.holder(alice)[0] is autumn
        return True

    assert serve(store, port, body)
    events = store.query("SELECT campaign_id, state, reason, account_id FROM agent_events WHERE user_id = ? "
                         "ORDER BY id", (alice,))
    assert {e["account_id"] for e in events} == {1}  # every agent event carries its account
    assert [(e["campaign_id"], e["state"]) for e in events][:3] == [(1, "ready"), (1, "logged_out"), (2, "ready")]
    assert "logged in again on another phone" in events[1]["reason"]


def test_wrong_pins_over_sip_slow_down_the_phones_address(tmp_path, sipp):
    """The worker reports where a phone's INVITE came from; after three wrong PINs from
    that address even the right PIN waits out the back-off (answered, then hung up:
    never logged in), and alice's account is not locked."""
    import json
    now = _dt.datetime.now(_dt.timezone.utc)
    store = account_with_two_campaigns(tmp_path, now, f"127.0.0.1:{free_udp_port()}")
    store.execute("UPDATE campaigns SET state = 'paused' WHERE name = 'autumn'")
    port = free_udp_port()
    alice = store.query_one("SELECT id FROM users WHERE name = 'alice'")["id"]

    async def body(reactor, svc):
        spring = dialer_of(svc, "spring")
        for pin in ("0000", "1111", "2222", "7391"):
            phone = sipp("uac_agent.xml", f"127.0.0.1:{port}", service=f"agent-alice-{pin}", calls=1)
            await until(reactor, lambda: phone.proc.poll() is not None, 20, f"the phone with PIN {pin} hung up")
        assert spring.floor.state_of(alice) == "logged_out"
        return svc.login_guard.wait("127.0.0.1", reactor.seconds())

    wait = serve(store, port, body, workers=1)
    assert wait > 0  # the address is still waiting out its back-off
    refused = store.query("SELECT actor, reason, detail FROM audit_log WHERE action = 'user.login-refused' ORDER BY id")
    assert [r["reason"] for r in refused] == ["wrong PIN"] * 3
    assert all(json.loads(r["detail"])["source"] == "127.0.0.1" and r["actor"] == "phone:127.0.0.1" for r in refused)
    assert store.query_one("SELECT pin_failures FROM users WHERE id = ?", (alice,))["pin_failures"] == 0
