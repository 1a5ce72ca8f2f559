"""Webhooks (issue 14): the outbox written in the transactions of a call's record, a
lead's outcome and an opt-out (nothing for accounts without a subscription, nothing
after a rollback), URL checks, signatures checked by an independent HMAC, the
delivery worker on a task.Clock (back-off, give-up, time-out, bounded concurrency,
leases, auto-disable, rotation), one end-to-end run against a real twisted.web
receiver on loopback (500 then 200, signature verified), and the owner's screen over
real HTTP (a ``dialer web`` process whose worker delivers to a receiver in this test)."""

import dataclasses
import datetime as dt
import hashlib
import hmac
import http.server
import json
import random
import re
import threading

import pytest
from twisted.internet import defer, task
from twisted.internet.epollreactor import EPollReactor

from campaigns.leads import import_list, manual_outcome
from campaigns.store import create_account, create_campaign
from core import audit
from core.errors import InputError, NotFound, StateError
from core.timeutil import to_iso, to_ms
from dialer import webhooks as wh
from dialer.calls import CallLeg
from dialer.cdr import Cdr, write_cdr
from rules import service

NOW = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.timezone.utc)
T0 = to_ms(NOW)
ALL = "call.ended,call.disposition,lead.opted_out"


@pytest.fixture
def camp(store, tmp_path):
    service.ensure_defaults(store, NOW)
    acc = create_account(store, "acme", NOW, "t")
    other = create_account(store, "globex", NOW, "t")
    c = create_campaign(store, "spring", "acme", NOW, "t")
    f = tmp_path / "list.csv"
    f.write_text("phone\n3055550100\n2125550100\n2125550177\n")
    import_list(store, f, "spring", NOW, "t")
    leads = {r["phone"]: r["id"] for r in store.query("SELECT id, phone FROM leads")}
    return {"account_id": acc["id"], "other_id": other["id"], "campaign_id": c["id"], "leads": leads}


def connected_cdr(camp, call_id, phone="+13055550100", start=T0):
    leg = CallLeg(call_id, phone, now=start, account_id=camp["account_id"], campaign_id=camp["campaign_id"],
                  lead_id=camp["leads"][phone], caller_id="+12125559999", trunk="carrier-a", worker_id="w1",
                  verdict={"allowed": True, "ruleset": "US@1", "reasons": [], "flags": [], "zones": []})
    leg.ringing(now=start + 1000)
    leg.answered(now=start + 4000)
    leg.agent_assigned(5, now=start + 4800)
    leg.ended(200, "BYE", True, started_ms=start + 10, answered_ms=start + 4000, ended_ms=start + 64_001)
    return Cdr.from_leg(leg)


def events(store):
    rows = store.query("SELECT * FROM webhook_events ORDER BY id")
    for r in rows:
        r["payload"] = json.loads(r["payload"])
    return rows


def add(store, account="acme", url="https://hooks.example.com/in", events=ALL, **kw):
    return wh.add_subscription(store, account, url, events, NOW, "t", **kw)


# ---------------------------------------------------------------------------- the outbox

def test_no_subscription_no_event_rows(store, camp):
    add(store, "globex")  # another account's webhook is not acme's
    assert write_cdr(store, connected_cdr(camp, "c1"), NOW)["written"]
    manual_outcome(store, camp["leads"]["+12125550100"], "dnc-requested", NOW, "t", account="acme")
    assert events(store) == []
    assert store.query("SELECT * FROM webhook_deliveries") == []


def test_a_cdr_writes_call_ended_and_call_disposition_in_its_transaction(store, camp):
    sub = add(store)
    write_cdr(store, connected_cdr(camp, "c1"), NOW)
    evs = events(store)
    assert [e["type"] for e in evs] == ["call.ended", "call.disposition"]
    ended, disp = evs[0]["payload"], evs[1]["payload"]
    assert ended["call_id"] == "c1" and ended["campaign"] == "spring" and ended["billsec"] == 61
    assert ended["destination"] == "+13055550100" and ended["lead_outcome"] == "answered-human"
    assert disp["outcome"] == "answered-human" and disp["call_id"] == "c1" and disp["manual"] is False
    assert all(e["account_id"] == camp["account_id"] and e["event_id"].startswith("evt_") for e in evs)
    deliveries = store.query("SELECT * FROM webhook_deliveries ORDER BY id")
    assert [(d["subscription_id"], d["state"], d["attempts"]) for d in deliveries] == [(sub["id"], "pending", 0)] * 2
    # a replay of the same call id writes nothing more
    write_cdr(store, connected_cdr(camp, "c1"), NOW + dt.timedelta(minutes=1))
    assert len(events(store)) == 2


def test_a_rollback_leaves_no_event(store, camp):
    add(store)
    with pytest.raises(RuntimeError):
        with store.transaction():
            write_cdr(store, connected_cdr(camp, "c1"), NOW)
            manual_outcome(store, camp["leads"]["+12125550100"], "dnc-requested", NOW, "t", account="acme")
            assert len(events(store)) == 4  # inside the transaction they are there...
            raise RuntimeError("the batch failed")
    assert events(store) == []  # ...and gone with it, like the CDR
    assert store.query("SELECT * FROM cdrs") == []
    assert store.query("SELECT * FROM webhook_deliveries") == []


def test_an_opt_out_is_an_event_only_for_its_subscribers(store, camp):
    add(store, events="lead.opted_out")
    manual_outcome(store, camp["leads"]["+12125550100"], "busy", NOW, "t", account="acme")
    assert events(store) == []  # a disposition: not subscribed
    manual_outcome(store, camp["leads"]["+12125550177"], "dnc-requested", NOW, "olive", account="acme")
    (ev,) = events(store)
    assert ev["type"] == "lead.opted_out"
    assert ev["payload"]["phone"] == "+12125550177" and ev["payload"]["manual"] is True
    assert ev["payload"]["by"] == "olive" and ev["payload"]["dnc_list"] == "company"
    # a key pressed in the safe-harbor message: the CDR's outcome is the opt-out
    leg = connected_cdr(camp, "c2")
    write_cdr(store, dataclasses.replace(leg, lead_outcome="dnc-requested", opted_out=True), NOW)
    assert [e["payload"]["call_id"] for e in events(store)] == [None, "c2"]


def test_the_journal_applies_the_event_with_the_cdr(store, camp, db_path):
    from dialer.journal import Journal
    add(store, events="call.ended")
    j = Journal(db_path)
    cdr = connected_cdr(camp, "c9")
    fields = {f.name: getattr(cdr, f.name) for f in dataclasses.fields(cdr)}
    j.put("cdr", {"at": to_iso(NOW), "cdr": fields})
    assert j.apply_pending() == 1
    j.stop()
    (ev,) = events(store)
    assert ev["payload"]["call_id"] == "c9"


def test_the_hot_path_without_subscriptions_is_one_cheap_read(store, camp):
    """The outbox's cost for an account without webhooks: one indexed read, about the
    cost of reading a row by its primary key (measured side by side; a LIKE on the
    event types cost 8 times that: SQLite prepares it again at each run)."""
    import time
    from core.outbox import emit
    add(store, "globex")
    n = 3000

    def per_call(fn):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t) / n

    with store.transaction():
        ratios = []
        for _ in range(3):
            e = per_call(lambda: emit(store, camp["account_id"], "call.ended", NOW, lambda: 1 / 0))  # never built
            pk = per_call(lambda: store.execute("SELECT id FROM accounts WHERE id = ?", (1,)).fetchall())
            ratios.append(e / pk)
    assert min(ratios) < 3, ratios


# ---------------------------------------------------------------------------- subscriptions and URLs

@pytest.mark.parametrize("url, allow, message", [
    ("", False, "give the URL"),
    ("ftp://example.com/x", False, "must start with https://"),
    ("example.com/x", False, "must start with https://"),
    ("https://", False, "has no host"),
    ("https://user:pw@example.com/x", False, "must not hold a user name or password"),
    ("https://exa mple.com/x", False, "spaces or control characters"),
    ("https://example.com/x#frag", False, "#fragment"),
    ("http://example.com/x", False, "use https://"),
    ("http://93.184.216.34/x", True, "public address: use https://"),
    ("https://169.254.169.254/latest/meta-data", True, "link-local address"),
    ("https://[fe80::1]/x", True, "link-local address"),
    ("https://[::ffff:169.254.169.254]/x", True, "link-local address"),
    ("https://0.0.0.0/x", True, "not a unicast address"),
    ("https://224.0.0.1/x", True, "not a unicast address"),
    ("https://10.1.2.3/x", False, "loopback or private address: refused"),
    ("http://127.0.0.1:8080/x", False, "loopback or private address: refused"),
    ("https://localhost/x", False, "loopback or private address: refused"),
    ("https://intranet/x", False, "not a full host name"),
    ("https://example.com:99999/x", False, "not valid"),
])
def test_bad_urls_are_refused_with_one_message_and_nothing_changes(store, camp, url, allow, message):
    with pytest.raises(InputError, match=re.escape(message)):
        add(store, url=url, allow_private=allow)
    assert store.query("SELECT * FROM webhook_subscriptions") == []
    assert audit.entries(store, action_prefix="webhook.") == []


def test_allowed_urls(store, camp):
    assert wh.check_url("https://Hooks.Example.com/in?x=1") == "https://hooks.example.com/in?x=1"
    assert wh.check_url("https://example.com") == "https://example.com/"
    assert wh.check_url("http://127.0.0.1:8080/in", allow_private=True) == "http://127.0.0.1:8080/in"
    assert wh.check_url("https://10.1.2.3/in", allow_private=True) == "https://10.1.2.3/in"
    assert wh.check_url("http://crm.internal.lan/in", allow_private=True) == "http://crm.internal.lan/in"
    # a name is checked at delivery, against every address it resolves to
    with pytest.raises(InputError, match="link-local"):
        wh.pick_address(["93.184.216.34", "169.254.169.254"], "https", True)
    with pytest.raises(InputError, match="loopback or private"):
        wh.pick_address(["192.168.1.5"], "https", False)
    assert wh.pick_address(["93.184.216.34"], "https", False) == "93.184.216.34"


def test_event_types_and_the_secret(store, camp):
    with pytest.raises(InputError, match="unknown event type 'call.started'"):
        add(store, events="call.ended,call.started")
    with pytest.raises(InputError, match="at least one event type"):
        add(store, events=" , ")
    out = add(store, events="call.ended, call.ended", label="CRM")
    assert out["events"] == ["call.ended"] and out["secret"].startswith("whsec_") and len(out["secret"]) == 49
    listed = wh.list_subscriptions(store, "acme")
    assert "secret" not in json.dumps(listed) and out["secret"] not in json.dumps(listed)
    assert [a["action"] for a in audit.entries(store, action_prefix="webhook.")] == ["webhook.add"]
    assert out["secret"] not in json.dumps(audit.entries(store))
    # another account's webhook is not found, and nothing changes
    for fn, args in ((wh.remove_subscription, ()), (wh.rotate_secret, ()), (wh.send_test, ()),
                     (wh.set_active, (False,))):
        with pytest.raises(NotFound):
            fn(store, "globex", out["id"], *args, NOW, "t")
    with pytest.raises(NotFound):
        wh.delivery_log(store, "globex", out["id"])
    assert wh.get_subscription(store, "acme", out["id"])["active"] is True


# ---------------------------------------------------------------------------- signatures

def independent_signature(secret, hdrs, body):
    """What a receiver computes, without the project's code."""
    signed = hdrs["Webhook-Id"].encode() + b"." + hdrs["Webhook-Timestamp"].encode() + b"." + body
    return "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def test_signature_verifiable_independently():
    body = b'{"id":"evt_1","type":"call.ended"}'
    h = wh.headers(["whsec_abc"], "evt_1", "call.ended", 1_790_000_000, body)
    assert h["Webhook-Signature"] == independent_signature("whsec_abc", h, body)
    assert h["Webhook-Id"] == "evt_1" and h["Webhook-Timestamp"] == "1790000000"
    assert wh.verify("whsec_abc", h, body, 1_790_000_000 + 299)
    assert not wh.verify("whsec_abc", h, body, 1_790_000_000 + 301)  # replayed too late
    assert not wh.verify("whsec_abc", h, body + b" ", 1_790_000_000)  # body changed
    assert not wh.verify("whsec_other", h, body, 1_790_000_000)


# ---------------------------------------------------------------------------- the worker on a task.Clock

class FakeSend:
    """Answers from a script: an int status, an Exception, or None (never answers)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = []

    def __call__(self, url, hdrs, body):
        self.calls.append((url, hdrs, body))
        a = self.answers.pop(0) if self.answers else 200
        if a is None:
            return defer.Deferred()
        if isinstance(a, Exception):
            return defer.fail(a)
        return defer.succeed((a, b""))


def worker(store, send, clock=None, **kw):
    clock = clock or task.Clock()
    clock.advance(NOW.timestamp() - clock.seconds())
    kw.setdefault("jitter", 0)
    d = wh.Deliverer(clock, lambda fn, *a: defer.maybeDeferred(fn, store, *a), send=send, **kw)
    return clock, d


def attempts(store):
    return store.query("SELECT * FROM webhook_attempts ORDER BY id")


def test_back_off_schedule_then_give_up(store, camp):
    sub = add(store, events="call.disposition")
    manual_outcome(store, camp["leads"]["+12125550100"], "busy", NOW, "t", account="acme")
    send = FakeSend([500, 503, ConnectionRefusedError("refused"), 404])
    clock, w = worker(store, send, schedule=(10, 60, 300))
    w.start()
    assert len(send.calls) == 1
    for step in (9, 1, 59, 1, 299, 1):
        clock.advance(step)
    assert len(send.calls) == 4  # at 0, 10, 70 and 370 s, not in between
    clock.advance(10_000)
    assert len(send.calls) == 4  # given up after the last
    log = attempts(store)
    assert [(a["attempt"], a["status_code"], a["outcome"]) for a in log] == [
        (1, 500, "retry"), (2, 503, "retry"), (3, None, "retry"), (4, 404, "failed")]
    assert log[0]["next_retry_at"] == to_iso(NOW + dt.timedelta(seconds=10))
    assert log[1]["next_retry_at"] == to_iso(NOW + dt.timedelta(seconds=70))
    assert log[2]["error"].startswith("ConnectionRefusedError") or log[2]["error"] == "connection refused"
    assert log[3]["error"] == "HTTP 404" and log[3]["next_retry_at"] is None
    (d,) = store.query("SELECT * FROM webhook_deliveries")
    assert d["state"] == "failed" and d["attempts"] == 4 and d["last_status"] == 404
    # one event id across every attempt (receivers dedupe on it), each attempt signed
    ids = {h["Webhook-Id"] for _, h, _ in send.calls}
    assert len(ids) == 1
    secret = store.query_one("SELECT secret FROM webhook_subscriptions WHERE id = ?", (sub["id"],))["secret"]
    for _, h, body in send.calls:
        assert h["Webhook-Signature"] == independent_signature(secret, h, body)
    assert [h["Webhook-Attempt"] for _, h, _ in send.calls] == ["1", "2", "3", "4"]
    envelope = json.loads(send.calls[0][2])
    assert envelope["type"] == "call.disposition" and envelope["account"] == "acme"
    assert envelope["data"]["outcome"] == "busy"
    assert wh.get_subscription(store, "acme", sub["id"])["failing_since"] == to_iso(NOW)
    w.stop()


def test_default_schedule_and_jitter():
    assert wh.SCHEDULE == (10, 60, 300, 1800, 7200, 21600, 43200)
    assert sum(wh.SCHEDULE) / 3600 < 24  # 8 attempts over about 21 h
    rng = random.Random(7)
    for n, base in enumerate(wh.SCHEDULE, 1):
        for _ in range(50):
            assert base * 0.8 <= wh.retry_delay(n, rng=rng) <= base * 1.2
    assert wh.retry_delay(len(wh.SCHEDULE) + 1) is None


def test_success_clears_the_failing_streak_and_a_timeout_is_a_failed_attempt(store, camp):
    add(store, events="call.disposition")
    manual_outcome(store, camp["leads"]["+12125550100"], "busy", NOW, "t", account="acme")
    send = FakeSend([None, 204])
    clock, w = worker(store, send, schedule=(5,))
    w.start()
    clock.advance(10)  # the first attempt's 10 s are up
    log = attempts(store)
    assert log[0]["error"] == "no answer within 10 s" and log[0]["latency_ms"] == 10_000
    clock.advance(5)
    log = attempts(store)
    assert [a["outcome"] for a in log] == ["retry", "delivered"] and log[1]["status_code"] == 204
    (d,) = store.query("SELECT * FROM webhook_deliveries")
    assert d["state"] == "delivered" and d["finished_at"] is not None
    assert store.query_one("SELECT failing_since FROM webhook_subscriptions")["failing_since"] is None


def test_concurrency_is_bounded(store, camp):
    add(store, events="call.disposition")
    for phone in camp["leads"]:
        manual_outcome(store, camp["leads"][phone], "busy", NOW, "t", account="acme")
    manual_outcome(store, camp["leads"]["+12125550100"], "no-answer", NOW, "t", account="acme")
    send = FakeSend([None] * 10)
    clock, w = worker(store, send, at_once=2)
    w.start()
    clock.advance(1)
    clock.advance(1)
    assert len(send.calls) == 2 and len(w.inflight) == 2


def test_a_lost_claim_comes_back_after_its_lease(store, camp):
    """A worker that dies mid-attempt: the delivery is claimed again after the lease
    (at least once)."""
    add(store, events="call.disposition")
    manual_outcome(store, camp["leads"]["+12125550100"], "busy", NOW, "t", account="acme")
    jobs = wh.claim_due(store, NOW, 10)
    assert len(jobs) == 1 and wh.claim_due(store, NOW, 10) == []
    assert wh.claim_due(store, NOW + dt.timedelta(seconds=wh.LEASE_S - 1), 10) == []
    again = wh.claim_due(store, NOW + dt.timedelta(seconds=wh.LEASE_S), 10)
    assert [j["event_id"] for j in again] == [jobs[0]["event_id"]] and again[0]["claim"] != jobs[0]["claim"]
    # the first worker's late result is logged but does not change the delivery
    out = wh.record_attempt(store, jobs[0], NOW, 200, 5, None, None)
    assert out["recorded"] is False
    assert store.query_one("SELECT state FROM webhook_deliveries")["state"] == "pending"


def test_failing_for_days_disables_the_subscription_with_an_audit_entry(store, camp):
    sub = add(store, events="call.disposition")
    manual_outcome(store, camp["leads"]["+12125550100"], "busy", NOW, "t", account="acme")
    store.execute("UPDATE webhook_subscriptions SET failing_since = ?", (to_iso(NOW - dt.timedelta(days=5, hours=1)),))
    (job,) = wh.claim_due(store, NOW, 10)
    out = wh.record_attempt(store, job, NOW, 500, 12, "HTTP 500", 10)
    assert out["disabled"] is True
    got = wh.get_subscription(store, "acme", sub["id"])
    assert got["active"] is False and "5 days without a success" in got["disabled_reason"]
    (entry,) = audit.entries(store, action_prefix="webhook.disable")
    assert entry["actor"] == "dialer" and entry["subject"] == f"webhook:{sub['id']}"
    assert wh.claim_due(store, NOW + dt.timedelta(hours=1), 10) == []  # nothing is sent to it now
    wh.set_active(store, "acme", sub["id"], True, NOW, "t")
    assert len(wh.claim_due(store, NOW + dt.timedelta(hours=1), 10)) == 1  # it waited


def test_rotation_signs_with_both_secrets_for_a_day(store, camp):
    sub = add(store, events="call.disposition")
    old = sub["secret"]
    new = wh.rotate_secret(store, "acme", sub["id"], NOW, "t")["secret"]
    assert new != old
    manual_outcome(store, camp["leads"]["+12125550100"], "busy", NOW, "t", account="acme")
    (job,) = wh.claim_due(store, NOW, 10)
    h = wh.headers(job["secrets"], job["event_id"], job["type"], 1_790_000_000, job["body"])
    assert wh.verify(new, h, job["body"], 1_790_000_000) and wh.verify(old, h, job["body"], 1_790_000_000)
    store.execute("UPDATE webhook_deliveries SET next_attempt_at = ?", (to_iso(NOW),))
    (job,) = wh.claim_due(store, NOW + dt.timedelta(hours=25), 10)
    assert job["secrets"] == [new]


def test_test_event_redeliver_and_remove(store, camp):
    sub = add(store, events="call.ended")
    out = wh.send_test(store, "acme", sub["id"], NOW, "olive")
    (job,) = wh.claim_due(store, NOW, 10)
    assert job["type"] == "webhook.test" and job["event_id"] == out["event_id"]
    with pytest.raises(StateError, match="still being tried"):
        wh.redeliver(store, "acme", job["delivery_id"], NOW, "t")
    wh.record_attempt(store, job, NOW, 200, 3, None, None)
    with pytest.raises(NotFound):
        wh.redeliver(store, "globex", job["delivery_id"], NOW, "t")
    again = wh.redeliver(store, "acme", job["delivery_id"], NOW, "t")
    (job2,) = wh.claim_due(store, NOW, 10)
    assert job2["event_id"] == job["event_id"] and job2["delivery_id"] == again["delivery"]
    log = wh.delivery_log(store, "acme")
    assert [d["redelivery_of"] for d in log] == [job["delivery_id"], None]
    assert log[1]["attempt_log"][0]["status_code"] == 200
    removed = wh.remove_subscription(store, "acme", sub["id"], NOW, "t")
    assert removed["cancelled"] == 1
    assert wh.list_subscriptions(store, "acme") == [] and wh.claim_due(store, NOW + dt.timedelta(hours=1), 10) == []
    assert len(wh.delivery_log(store, "acme")) == 2  # the log stays


# ---------------------------------------------------------------------------- end to end: a real receiver

def run_reactor(test, timeout=30):
    reactor = EPollReactor()
    outcome = {}

    def go():
        d = defer.ensureDeferred(test(reactor))
        d.addCallbacks(lambda r: outcome.setdefault("ok", r), lambda f: outcome.setdefault("fail", f))
        d.addBoth(lambda _: reactor.stop())
    reactor.callWhenRunning(go)
    deadline = reactor.callLater(timeout, lambda: (outcome.setdefault("timeout", True), reactor.stop()))
    reactor.run(installSignalHandlers=False)
    if deadline.active():
        deadline.cancel()
    if "fail" in outcome:
        outcome["fail"].raiseException()
    assert "timeout" not in outcome, "the reactor test ran past its deadline"
    return outcome.get("ok")


def test_end_to_end_a_real_receiver_fails_once_then_accepts(store, camp, db_path):
    from twisted.web import resource, server
    from web.db import Stores

    seen = []

    class Receiver(resource.Resource):
        isLeaf = True

        def __init__(self, secret, reactor):
            super().__init__()
            self.secret, self.reactor = secret, reactor

        def render_POST(self, request):
            body = request.content.read()
            h = {k: request.getHeader(k) for k in ("Webhook-Id", "Webhook-Timestamp", "Webhook-Signature")}
            signed = f"{h['Webhook-Id']}.{h['Webhook-Timestamp']}.".encode() + body
            want = "v1=" + hmac.new(self.secret.encode(), signed, hashlib.sha256).hexdigest()
            ok = hmac.compare_digest(want, h["Webhook-Signature"]) and \
                abs(self.reactor.seconds() - int(h["Webhook-Timestamp"])) <= 300
            seen.append({"ok": ok, "id": h["Webhook-Id"], "body": json.loads(body),
                         "type": request.getHeader("content-type")})
            request.setResponseCode(500 if len(seen) == 1 else 200)
            return b"thanks"

    async def scenario(reactor):
        port = reactor.listenTCP(0, server.Site(Receiver(secret["value"], reactor)), interface="127.0.0.1")
        url = f"http://127.0.0.1:{port.getHost().port}/hooks"
        sub = await stores.write(wh.add_subscription, "acme", url, "call.disposition", NOW, "t", allow_private=True)
        secret["value"] = sub["secret"]
        port.factory.resource.secret = sub["secret"]
        await stores.write(manual_outcome, camp["leads"]["+12125550100"], "busy", NOW, "t", account="acme")
        w = wh.Deliverer(reactor, stores.write, schedule=(0.2,), jitter=0, poll_s=0.05, allow_private=True)
        w.start()
        while True:
            log = await stores.read(wh.delivery_log, "acme")
            if log and log[0]["state"] != "pending":
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        await w.stop()
        await port.stopListening()
        return log

    secret = {"value": ""}
    stores = None

    async def main(reactor):
        nonlocal stores
        stores = Stores(reactor, db_path)  # stopped at the reactor's shutdown
        return await scenario(reactor)

    log = run_reactor(main)
    assert [s["ok"] for s in seen] == [True, True], log[0]["attempt_log"]
    assert seen[0]["id"] == seen[1]["id"] and seen[0]["type"] == "application/json"
    assert seen[0]["body"]["data"]["outcome"] == "busy"
    (d,) = log
    assert d["state"] == "delivered"
    assert [(a["attempt"], a["status_code"], a["outcome"]) for a in d["attempt_log"]] == [
        (1, 500, "retry"), (2, 200, "delivered")]
    assert d["attempt_log"][0]["error"] == "HTTP 500" and d["attempt_log"][1]["latency_ms"] >= 0


def test_end_to_end_refuses_a_private_address_at_delivery(store, camp, db_path):
    """A name resolving to a private address is refused at delivery (the check after
    the look-up), without connecting."""
    sender = wh.HttpSender(None, allow_private=False, lookup=lambda host, port: ["10.0.0.7"])

    async def main(reactor):
        sender.reactor = reactor
        try:
            await sender("https://crm.example.com/in", {"Content-Type": "application/json"}, b"{}")
        except InputError as e:
            return str(e)

    msg = run_reactor(main)
    assert "10.0.0.7 is a loopback or private address: refused" in msg


# ---------------------------------------------------------------------------- the CLI

def test_cli_add_list_log_remove(db_path, store, camp, monkeypatch):
    from click.testing import CliRunner
    import cli
    monkeypatch.delenv(wh.ENV_ALLOW_PRIVATE, raising=False)
    run = lambda *a: CliRunner().invoke(cli.main, ["--db", str(db_path), "webhook", *a])  # noqa: E731
    r = run("add", "http://crm.example.com/in", "--account", "acme", "--events", "call.ended")
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "Error: the URL" in r.output and "use https://" in r.output
    r = run("add", "https://crm.example.com/in", "--account", "acme", "--events", "call.ended,call.disposition",
            "--label", "CRM", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["secret"].startswith("whsec_") and out["events"] == ["call.ended", "call.disposition"]
    r = run("list", "--account", "acme")
    assert r.exit_code == 0 and "https://crm.example.com/in" in r.output and out["secret"] not in r.output
    assert run("list", "--account", "globex").output.startswith("no webhooks")
    assert run("test", str(out["id"]), "--account", "acme").exit_code == 0
    r = run("log", "--account", "acme")
    assert r.exit_code == 0 and "webhook.test" in r.output and "pending" in r.output
    r = run("remove", str(out["id"]), "--account", "globex")
    assert r.exit_code == 1 and f"no webhook {out['id']} in account 'globex'" in r.output
    r = run("remove", str(out["id"]), "--account", "acme")
    assert r.exit_code == 0 and "1 pending deliveries cancelled" in r.output


def test_https_checks_the_certificate(tmp_path):
    """https to a receiver whose certificate no trusted authority signed: the attempt
    fails (a TLS error), nothing is posted."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from twisted.internet import ssl
    from twisted.web import resource, server

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "receiver.test")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("receiver.test")]), critical=False)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    posted = []

    class Receiver(resource.Resource):
        isLeaf = True

        def render_POST(self, request):
            posted.append(request.content.read())
            return b"ok"

    async def main(reactor):
        opts = ssl.PrivateCertificate.loadPEM(pem).options()
        port = reactor.listenSSL(0, server.Site(Receiver()), opts, interface="127.0.0.1")
        sender = wh.HttpSender(reactor, allow_private=True, lookup=lambda host, p: ["127.0.0.1"])
        d = sender(f"https://receiver.test:{port.getHost().port}/in", {"Content-Type": "application/json"}, b"{}")
        d.addTimeout(10, reactor)
        try:
            await d
            return "answered"
        except Exception:  # noqa: BLE001 - the failure, as the delivery log describes it
            from twisted.python.failure import Failure
            return wh.describe_failure(Failure())
        finally:
            await port.stopListening()

    msg = run_reactor(main)
    assert posted == [] and msg != "answered"
    assert "certificate verify failed" in msg, msg
