"""Webhooks (issue 14): an account's subscriptions, the signatures, and the worker that
delivers the outbox's events (``core.outbox``) with retries and a delivery log.

Subscriptions (owners: ``dialer webhook add``, the web's Webhooks screen)
    A URL, the event types (``call.ended``, ``call.disposition``, ``lead.opted_out``), a
    label, a secret of 32 random bytes (``whsec_`` + URL-safe base64) shown once at
    creation or rotation and kept to sign with, active or disabled. The URL must be
    ``https://``; ``http://`` and https to loopback or private addresses only when the
    installation allows them (``DIALER_WEBHOOK_ALLOW_PRIVATE=1``); link-local addresses
    (169.254.0.0/16 with the clouds' metadata service, fe80::/10), unspecified,
    multicast and reserved addresses never. A host name is checked again at each
    delivery, against every address it resolves to, and the connection goes to the
    address that was checked (no second look-up in between).

Signatures (Standard Webhooks style, hex)
    ``Webhook-Id`` (the event id, stable across retries and redeliveries),
    ``Webhook-Timestamp`` (Unix seconds of this attempt) and ``Webhook-Signature:
    v1=<hex HMAC-SHA256(secret, "{id}.{timestamp}." + body)>``; the HMAC key is the
    secret's text as shown (UTF-8). For 24 h after a rotation the header carries a
    second ``v1=`` signature made with the previous secret (space-separated).

Delivery (:class:`Deliverer`)
    Due deliveries are claimed off the reactor thread (a lease: a crashed worker's
    claims come due again after ``LEASE_S``), POSTed with a 10 s time-out, at most
    ``at_once`` at a time. A 2xx answer is delivered; anything else (another status, a
    redirect, a time-out, a refused address, a network error) is retried after
    :data:`SCHEDULE` (10 s, 1 min, 5 min, 30 min, 2 h, 6 h, 12 h, each +-20 % jitter),
    then the delivery is marked failed (8 attempts over about 21 h). A subscription
    whose deliveries have failed without a success for :data:`DISABLE_AFTER` is disabled
    (audited). At least once: a receiver dedupes on ``Webhook-Id``; the order of
    deliveries is not guaranteed.
"""

import base64
import datetime as _dt
import hashlib
import hmac
import ipaddress
import json
import os
import random
import secrets
import socket
import urllib.parse

from twisted.internet import defer, task
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from core import audit
from core.errors import InputError, NotFound, StateError
from core.outbox import EVENT_TYPES, TEST_EVENT, store_event
from core.tenancy import resolve_account
from core.timeutil import from_iso, shown, to_iso

log = Logger(namespace="dialer.webhooks")

ENV_ALLOW_PRIVATE = "DIALER_WEBHOOK_ALLOW_PRIVATE"
SCHEDULE = (10, 60, 300, 1800, 7200, 21600, 43200)  # seconds before retry 1, 2, ...; then failed
JITTER = 0.2
TIMEOUT_S = 10.0
LEASE_S = 60
DISABLE_AFTER = _dt.timedelta(days=5)
ROTATION_OVERLAP = _dt.timedelta(hours=24)
MAX_SUBSCRIPTIONS = 20
MAX_URL = 2000
MAX_LABEL = 100
TOLERANCE_S = 300  # what receivers should accept between Webhook-Timestamp and their clock
USER_AGENT = b"dialer-webhooks/0.1"


# ---------------------------------------------------------------------------- URLs and addresses

def allow_private_default():
    """Whether this installation allows loopback and private destinations (and plain
    http to them): ``DIALER_WEBHOOK_ALLOW_PRIVATE=1``."""
    return os.environ.get(ENV_ALLOW_PRIVATE, "").strip().lower() in ("1", "yes", "true", "on")


def address_refusal(ip, scheme, allow_private):
    """Why a delivery may not go to ``ip`` (a string), or None when it may."""
    try:
        a = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return f"{ip} is not an IP address"
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    if a.is_link_local:
        return f"{a} is a link-local address (where clouds serve instance metadata): always refused"
    if a.is_unspecified or a.is_multicast or a.is_reserved or (a.version == 4 and a == ipaddress.IPv4Address(
            "255.255.255.255")):
        return f"{a} is not a unicast address: refused"
    if not a.is_global:
        if not allow_private:
            return (f"{a} is a loopback or private address: refused (this installation does not allow them; "
                    f"{ENV_ALLOW_PRIVATE}=1 does)")
        return None
    if scheme != "https":
        return f"{a} is a public address: use https://, plain http:// goes only to loopback or private addresses"
    return None


def check_url(url, allow_private=None):
    """The URL, checked: https (or http when the installation allows loopback/private
    destinations), a host, no user name or password, no fragment. An IP address is
    checked here; a host name at each delivery (after its look-up). InputError with
    one clear message otherwise."""
    allow = allow_private_default() if allow_private is None else allow_private
    text = (url or "").strip()
    if not text:
        raise InputError("give the URL the events are posted to (https://...)")
    if len(text) > MAX_URL:
        raise InputError(f"the URL is longer than {MAX_URL} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        raise InputError(f"the URL {shown(text)} holds spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise InputError(f"the URL {shown(text)} is not valid ({e})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise InputError(f"the URL {shown(text)} must start with https:// (not {shown(scheme + ':') if scheme else 'nothing'})")
    host = parts.hostname
    if not host:
        raise InputError(f"the URL {shown(text)} has no host")
    if parts.username is not None or parts.password is not None:
        raise InputError("the URL must not hold a user name or password: the signature tells your receiver the "
                         "event came from here")
    if parts.fragment:
        raise InputError(f"the URL {shown(text)} has a #fragment, which is never sent: remove it")
    if port == 0:
        raise InputError(f"the URL {shown(text)} has port 0")
    literal = _ip_literal(host)
    if literal is not None:
        why = address_refusal(literal, scheme, allow)
        if why:
            raise InputError(f"the URL {shown(text)} is refused: {why}")
    elif host == "localhost" or host.endswith(".localhost"):
        why = address_refusal("127.0.0.1", scheme, allow)
        if why:
            raise InputError(f"the URL {shown(text)} is refused: {why}")
    elif scheme == "http" and not allow:
        raise InputError(f"the URL {shown(text)} is refused: use https:// (plain http:// only to loopback or private "
                         f"addresses, when the installation allows them: {ENV_ALLOW_PRIVATE}=1)")
    elif "." not in host:
        raise InputError(f"the URL's host {shown(host)} is not a full host name (example.com)")
    return urllib.parse.urlunsplit((scheme, parts.netloc.lower() if literal is None else parts.netloc, parts.path or "/",
                                    parts.query, ""))


def _ip_literal(host):
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def resolve(host, port):
    """The addresses of ``host`` (a blocking look-up: run it in a thread)."""
    literal = _ip_literal(host)
    if literal is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise InputError(f"cannot resolve {host}: {e.strerror}") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


def pick_address(addresses, scheme, allow_private):
    """The address to connect to: every address the name resolves to must be allowed
    (a name that also resolves to a private address is refused as a whole)."""
    if not addresses:
        raise InputError("the host has no address")
    for a in addresses:
        why = address_refusal(a, scheme, allow_private)
        if why:
            raise InputError(f"refused: {why}")
    return addresses[0]


# ---------------------------------------------------------------------------- signatures

def new_secret():
    return "whsec_" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")


def sign(secret, event_id, timestamp, body):
    """``v1=<hex HMAC-SHA256(secret, "{id}.{timestamp}." + body)>``; ``body`` bytes."""
    mac = hmac.new(secret.encode("utf-8"), f"{event_id}.{int(timestamp)}.".encode("ascii") + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def headers(secrets_, event_id, event_type, timestamp, body, attempt=1):
    """The headers of one attempt (str -> str)."""
    return {"Content-Type": "application/json", "User-Agent": USER_AGENT.decode(), "Webhook-Id": event_id,
            "Webhook-Timestamp": str(int(timestamp)), "Webhook-Event": event_type, "Webhook-Attempt": str(attempt),
            "Webhook-Signature": " ".join(sign(s, event_id, timestamp, body) for s in secrets_)}


def verify(secret, hdrs, body, now_s, tolerance_s=TOLERANCE_S):
    """What a receiver does (a reference; the docs show it): True when one ``v1=``
    signature matches and the timestamp is within ``tolerance_s`` of ``now_s``."""
    try:
        ts = int(hdrs["Webhook-Timestamp"])
    except (KeyError, ValueError):
        return False
    if abs(now_s - ts) > tolerance_s:
        return False
    want = sign(secret, hdrs.get("Webhook-Id", ""), ts, body)
    return any(hmac.compare_digest(want, given) for given in hdrs.get("Webhook-Signature", "").split())


# ---------------------------------------------------------------------------- subscriptions

def _events(events):
    items = events.split(",") if isinstance(events, str) else list(events or ())
    out = []
    for e in (str(x).strip() for x in items):
        if not e:
            continue
        if e not in EVENT_TYPES:
            raise InputError(f"unknown event type {shown(e)} (one of {', '.join(EVENT_TYPES)})")
        if e not in out:
            out.append(e)
    if not out:
        raise InputError(f"choose at least one event type ({', '.join(EVENT_TYPES)})")
    return out


def _public(row, acc_name=None):
    return {"id": row["id"], "account": acc_name, "url": row["url"], "label": row["label"],
            "events": [e for e in row["events"].split(",") if e], "active": bool(row["active"]),
            "failing_since": row["failing_since"], "disabled_reason": row["disabled_reason"],
            "created_at": row["created_at"], "created_by": row["created_by"], "updated_at": row["updated_at"],
            "rotated_overlap_until": row["previous_until"]}


def _subscription(store, acc, sid):
    try:
        sid = int(sid)
    except (TypeError, ValueError):
        raise NotFound(f"no webhook {shown(sid)} in account {acc['name']!r}") from None
    row = store.query_one("SELECT * FROM webhook_subscriptions WHERE id = ? AND account_id = ? AND removed_at IS NULL",
                          (sid, acc["id"]))
    if row is None:
        raise NotFound(f"no webhook {sid} in account {acc['name']!r}")
    return row


def add_subscription(store, account, url, events, now, actor, label="", allow_private=None):
    """A new subscription of ``account``; its secret is in the result, shown once."""
    acc = resolve_account(store, account)
    url = check_url(url, allow_private)
    evs = _events(events)
    label = (label or "").strip()
    if len(label) > MAX_LABEL:
        raise InputError(f"the label is longer than {MAX_LABEL} characters")
    secret = new_secret()
    at = to_iso(now)
    with store.transaction():
        n = store.query_one("SELECT COUNT(*) AS n FROM webhook_subscriptions WHERE account_id = ? AND removed_at IS NULL",
                            (acc["id"],))["n"]
        if n >= MAX_SUBSCRIPTIONS:
            raise InputError(f"account {acc['name']!r} has {n} webhooks already (at most {MAX_SUBSCRIPTIONS}): "
                             f"remove one first")
        cur = store.execute("INSERT INTO webhook_subscriptions (account_id, url, label, events, secret, active, "
                            "created_at, created_by, updated_at) VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?)",
                            (acc["id"], url, label, "," + ",".join(evs) + ",", secret, at, actor, at))
        sid = cur.lastrowid
        audit.append(store, now, actor, "webhook.add", f"webhook:{sid}", "", {"url": url, "events": evs,
                                                                               "label": label}, account_id=acc["id"])
        row = _subscription(store, acc, sid)
    return {**_public(row, acc["name"]), "secret": secret}


def list_subscriptions(store, account):
    """The account's subscriptions (never their secrets), with their deliveries counted
    by state and the last delivery's time."""
    acc = resolve_account(store, account)
    rows = store.query("SELECT * FROM webhook_subscriptions WHERE account_id = ? AND removed_at IS NULL ORDER BY id",
                       (acc["id"],))
    out = []
    for r in rows:
        counts = {s: 0 for s in ("pending", "delivered", "failed")}
        for c in store.query("SELECT state, COUNT(*) AS n FROM webhook_deliveries WHERE subscription_id = ? "
                             "GROUP BY state", (r["id"],)):
            counts[c["state"]] = c["n"]
        last = store.query_one("SELECT MAX(finished_at) AS at FROM webhook_deliveries WHERE subscription_id = ? "
                               "AND state = 'delivered'", (r["id"],))
        out.append({**_public(r, acc["name"]), "deliveries": counts, "last_delivered_at": last["at"]})
    return out


def get_subscription(store, account, sid):
    acc = resolve_account(store, account)
    return _public(_subscription(store, acc, sid), acc["name"])


def remove_subscription(store, account, sid, now, actor):
    """Remove a subscription: nothing more is sent to it (its pending deliveries are
    cancelled); its log stays."""
    acc = resolve_account(store, account)
    at = to_iso(now)
    with store.transaction():
        row = _subscription(store, acc, sid)
        store.execute("UPDATE webhook_subscriptions SET removed_at = ?, active = 0, updated_at = ? WHERE id = ?",
                      (at, at, row["id"]))
        n = store.execute("UPDATE webhook_deliveries SET state = 'cancelled', finished_at = ?, claim = NULL "
                          "WHERE subscription_id = ? AND state = 'pending'", (at, row["id"])).rowcount
        audit.append(store, now, actor, "webhook.remove", f"webhook:{row['id']}", "",
                     {"url": row["url"], "cancelled": n}, account_id=acc["id"])
    return {"id": row["id"], "account": acc["name"], "url": row["url"], "removed": True, "cancelled": n}


def set_active(store, account, sid, active, now, actor, reason=""):
    """Disable (deliveries wait, nothing is sent) or enable a subscription."""
    acc = resolve_account(store, account)
    at = to_iso(now)
    with store.transaction():
        row = _subscription(store, acc, sid)
        store.execute("UPDATE webhook_subscriptions SET active = ?, disabled_reason = ?, failing_since = ?, "
                      "updated_at = ? WHERE id = ?",
                      (1 if active else 0, None if active else (reason or f"disabled by {actor}"),
                       None if active else row["failing_since"], at, row["id"]))
        audit.append(store, now, actor, "webhook.enable" if active else "webhook.disable", f"webhook:{row['id']}",
                     reason or "", {"url": row["url"]}, account_id=acc["id"])
        row = _subscription(store, acc, row["id"])
    return _public(row, acc["name"])


def rotate_secret(store, account, sid, now, actor):
    """A new secret (in the result, shown once); for 24 h deliveries are also signed
    with the previous one, so the receiver can switch without losing events."""
    acc = resolve_account(store, account)
    secret = new_secret()
    at = to_iso(now)
    with store.transaction():
        row = _subscription(store, acc, sid)
        store.execute("UPDATE webhook_subscriptions SET secret = ?, previous_secret = ?, previous_until = ?, "
                      "updated_at = ? WHERE id = ?",
                      (secret, row["secret"], to_iso(now + ROTATION_OVERLAP), at, row["id"]))
        audit.append(store, now, actor, "webhook.rotate", f"webhook:{row['id']}", "", {"url": row["url"]},
                     account_id=acc["id"])
        row = _subscription(store, acc, row["id"])
    return {**_public(row, acc["name"]), "secret": secret}


def send_test(store, account, sid, now, actor):
    """A ``webhook.test`` event to this subscription alone (whatever it subscribed to)."""
    acc = resolve_account(store, account)
    with store.transaction():
        row = _subscription(store, acc, sid)
        if not row["active"]:
            raise StateError(f"webhook {row['id']} is disabled: enable it first")
        event_id = store_event(store, acc["id"], TEST_EVENT, now, {"message": "a test event", "by": actor},
                               [row["id"]])
        audit.append(store, now, actor, "webhook.test", f"webhook:{row['id']}", "", {"event": event_id},
                     account_id=acc["id"])
    return {"id": row["id"], "account": acc["name"], "event_id": event_id, "queued": True}


def redeliver(store, account, delivery_id, now, actor):
    """Send a delivered or failed delivery's event again (a new delivery of the same
    event id, due now: the receiver can recognise it)."""
    acc = resolve_account(store, account)
    at = to_iso(now)
    with store.transaction():
        d = _delivery(store, acc, delivery_id)
        sub = _subscription(store, acc, d["subscription_id"])
        if d["state"] == "pending":
            raise StateError(f"delivery {d['id']} is still being tried: wait for it to be delivered or failed")
        if not sub["active"]:
            raise StateError(f"webhook {sub['id']} is disabled: enable it first")
        cur = store.execute("INSERT INTO webhook_deliveries (event_row, subscription_id, account_id, state, attempts, "
                            "next_attempt_at, redelivery_of, created_at) VALUES (?, ?, ?, 'pending', 0, ?, ?, ?)",
                            (d["event_row"], sub["id"], acc["id"], at, d["id"], at))
        new_id = cur.lastrowid
        audit.append(store, now, actor, "webhook.redeliver", f"webhook:{sub['id']}", "",
                     {"delivery": d["id"], "new_delivery": new_id, "event": d["event_id"]}, account_id=acc["id"])
    return {"delivery": new_id, "redelivery_of": d["id"], "event_id": d["event_id"], "account": acc["name"]}


def _delivery(store, acc, delivery_id):
    try:
        did = int(delivery_id)
    except (TypeError, ValueError):
        raise NotFound(f"no delivery {shown(delivery_id)} in account {acc['name']!r}") from None
    row = store.query_one("SELECT d.*, e.event_id, e.type FROM webhook_deliveries d "
                          "JOIN webhook_events e ON e.id = d.event_row WHERE d.id = ? AND d.account_id = ?",
                          (did, acc["id"]))
    if row is None:
        raise NotFound(f"no delivery {did} in account {acc['name']!r}")
    return row


def delivery_log(store, account, subscription=None, limit=50):
    """The account's latest deliveries (of one subscription when given), newest first,
    each with its attempts (attempt, when, status code, latency, error, next retry)."""
    acc = resolve_account(store, account)
    limit = max(1, min(int(limit), 1000))
    sql = ("SELECT d.id, d.subscription_id, s.url, s.label, d.state, d.attempts, d.next_attempt_at, d.last_status, "
           "d.last_error, d.redelivery_of, d.created_at, d.finished_at, e.event_id, e.type "
           "FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_row "
           "JOIN webhook_subscriptions s ON s.id = d.subscription_id WHERE d.account_id = ?")
    params = [acc["id"]]
    if subscription is not None:
        sql += " AND d.subscription_id = ?"
        params.append(_subscription(store, acc, subscription)["id"])
    rows = store.query(sql + " ORDER BY d.id DESC LIMIT ?", params + [limit])
    for r in rows:
        r["attempt_log"] = store.query("SELECT attempt, at, status_code, latency_ms, error, outcome, next_retry_at "
                                       "FROM webhook_attempts WHERE delivery_id = ? ORDER BY id", (r["id"],))
        if r["state"] != "pending":
            r["next_attempt_at"] = None
    return rows


def delivery_payload(store, account, delivery_id):
    """The JSON body a delivery sends (its event's envelope)."""
    acc = resolve_account(store, account)
    d = _delivery(store, acc, delivery_id)
    ev = store.query_one("SELECT * FROM webhook_events WHERE id = ?", (d["event_row"],))
    return _envelope(ev, acc["name"])


# ---------------------------------------------------------------------------- the worker's store side

def _envelope(ev, account_name):
    return {"id": ev["event_id"], "type": ev["type"], "created_at": ev["created_at"], "account_id": ev["account_id"],
            "account": account_name, "data": json.loads(ev["payload"])}


def due(store, now, limit):
    """Ids of deliveries due at ``now`` (a plain read: nothing is locked when nothing
    is due)."""
    return [r[0] for r in store.execute(
        "SELECT d.id FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id "
        "WHERE d.state = 'pending' AND d.next_attempt_at <= ? AND s.active = 1 AND s.removed_at IS NULL "
        "ORDER BY d.next_attempt_at, d.id LIMIT ?", (to_iso(now), int(limit))).fetchall()]


def claim_due(store, now, limit, lease_s=LEASE_S):
    """Claim up to ``limit`` due deliveries for ``lease_s`` seconds (another worker, or
    this one after a crash, takes them again once the lease has run out); each job
    holds what its attempt needs: URL, secrets, event id and type, the body."""
    if limit <= 0 or not due(store, now, limit):
        return []
    jobs = []
    until = to_iso(now + _dt.timedelta(seconds=lease_s))
    with store.transaction():
        for did in due(store, now, limit):  # again, under the write lock
            claim = secrets.token_hex(8)
            store.execute("UPDATE webhook_deliveries SET next_attempt_at = ?, claim = ? WHERE id = ?",
                          (until, claim, did))
            row = store.query_one(
                "SELECT d.id, d.attempts, d.subscription_id, d.account_id, s.url, s.secret, s.previous_secret, "
                "s.previous_until, e.event_id, e.type, e.payload, e.created_at, e.account_id AS event_account, "
                "a.name AS account_name FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id "
                "JOIN webhook_events e ON e.id = d.event_row JOIN accounts a ON a.id = d.account_id WHERE d.id = ?",
                (did,))
            keys = [row["secret"]]
            if row["previous_secret"] and row["previous_until"] and row["previous_until"] > to_iso(now):
                keys.append(row["previous_secret"])
            env = {"id": row["event_id"], "type": row["type"], "created_at": row["created_at"],
                   "account_id": row["event_account"], "account": row["account_name"],
                   "data": json.loads(row["payload"])}
            jobs.append({"delivery_id": did, "claim": claim, "attempt": row["attempts"] + 1, "url": row["url"],
                         "secrets": keys, "event_id": row["event_id"], "type": row["type"],
                         "subscription_id": row["subscription_id"], "account_id": row["account_id"],
                         "body": json.dumps(env, sort_keys=True, separators=(",", ":")).encode("utf-8")})
    return jobs


def record_attempt(store, job, now, status_code, latency_ms, error, retry_in):
    """One attempt's result: the log row; the delivery delivered (2xx), due again in
    ``retry_in`` seconds, or failed (``retry_in`` None); the subscription's failing
    streak (disabled, audited, after :data:`DISABLE_AFTER` without a success)."""
    ok = status_code is not None and 200 <= status_code < 300
    at = to_iso(now)
    if ok:
        outcome, next_at = "delivered", None
    elif retry_in is not None:
        outcome, next_at = "retry", to_iso(now + _dt.timedelta(seconds=retry_in))
    else:
        outcome, next_at = "failed", None
    with store.transaction():
        store.execute("INSERT INTO webhook_attempts (delivery_id, account_id, attempt, at, status_code, latency_ms, "
                      "error, outcome, next_retry_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (job["delivery_id"], job["account_id"], job["attempt"], at, status_code, latency_ms, error,
                       outcome, next_at))
        mine = store.execute(
            "UPDATE webhook_deliveries SET state = ?, attempts = ?, next_attempt_at = ?, claim = NULL, "
            "last_status = ?, last_error = ?, finished_at = ? WHERE id = ? AND claim = ? AND state = 'pending'",
            ("pending" if outcome == "retry" else outcome, job["attempt"], next_at, status_code, error,
             None if outcome == "retry" else at, job["delivery_id"], job["claim"])).rowcount
        sub = store.query_one("SELECT * FROM webhook_subscriptions WHERE id = ?", (job["subscription_id"],))
        disabled = False
        if mine and sub is not None:
            if ok:
                if sub["failing_since"] is not None:
                    store.execute("UPDATE webhook_subscriptions SET failing_since = NULL WHERE id = ?", (sub["id"],))
            elif sub["failing_since"] is None:
                store.execute("UPDATE webhook_subscriptions SET failing_since = ? WHERE id = ?", (at, sub["id"]))
            elif sub["active"] and now - from_iso(sub["failing_since"]) >= DISABLE_AFTER:
                reason = (f"every delivery failed since {sub['failing_since']} "
                          f"({DISABLE_AFTER.days} days without a success)")
                store.execute("UPDATE webhook_subscriptions SET active = 0, disabled_reason = ?, updated_at = ? "
                              "WHERE id = ?", (reason, at, sub["id"]))
                audit.append(store, now, "dialer", "webhook.disable", f"webhook:{sub['id']}", reason,
                             {"url": sub["url"], "last_error": error}, account_id=sub["account_id"])
                disabled = True
    return {"outcome": outcome, "next_retry_at": next_at, "recorded": bool(mine), "disabled": disabled}


# ---------------------------------------------------------------------------- the worker

def retry_delay(attempt, schedule=SCHEDULE, jitter=JITTER, rng=random):
    """Seconds before the retry after failed attempt ``attempt`` (1-based), with
    +-``jitter`` spread; None after the last: give up."""
    if attempt > len(schedule):
        return None
    base = schedule[attempt - 1]
    return base * (1 + rng.uniform(-jitter, jitter)) if jitter else float(base)


class Deliverer:
    """Sends the due deliveries. ``clock``: an IReactorTime (every timer and "now");
    ``run(fn, *args)``: runs ``fn(store, *args)`` off the reactor thread and returns a
    Deferred (``Journal.call`` in ``dialer run``, ``Stores.write`` in ``dialer web``);
    ``send(url, headers, body)``: a Deferred of ``(status code, first bytes of the
    answer)`` (:class:`HttpSender` by default)."""

    def __init__(self, clock, run, send=None, schedule=SCHEDULE, jitter=JITTER, poll_s=1.0, at_once=4,
                 timeout_s=TIMEOUT_S, lease_s=LEASE_S, rng=None, allow_private=None):
        if not schedule or any(s <= 0 for s in schedule):
            raise InputError("the retry schedule needs at least one delay, each above 0 s")
        self.clock, self.run = clock, run
        self.send = send if send is not None else HttpSender(clock, allow_private=allow_private)
        self.schedule, self.jitter, self.poll_s, self.at_once = tuple(schedule), jitter, poll_s, at_once
        self.timeout_s, self.lease_s = timeout_s, lease_s
        self.rng = rng or random.Random()
        self.inflight = {}  # delivery id -> Deferred
        self.claiming = False
        self.loop = None
        self.stopping = False
        self.sent = self.delivered = self.failed = 0

    def now(self):
        return _dt.datetime.fromtimestamp(self.clock.seconds(), _dt.timezone.utc)

    def start(self):
        self.loop = task.LoopingCall(self.poll)
        self.loop.clock = self.clock
        self.loop.start(self.poll_s, now=True)
        return self

    def poll(self):
        """Claim what is due (off the reactor) and send it; nothing when a claim is
        already under way or ``at_once`` attempts are in flight."""
        free = self.at_once - len(self.inflight)
        if self.stopping or self.claiming or free <= 0:
            return None
        self.claiming = True
        d = self.run(claim_due, self.now(), free, self.lease_s)

        def done(result):
            self.claiming = False
            return result
        d.addBoth(done)
        d.addCallbacks(self._claimed, self._claim_failed)
        return d

    def _claim_failed(self, f):
        log.warn("webhooks: deliveries not claimed ({err}); trying again", err=f.getErrorMessage())

    def _claimed(self, jobs):
        for job in jobs:
            self.inflight[job["delivery_id"]] = self._attempt(job)
        return len(jobs)

    def _attempt(self, job):
        ts = int(self.clock.seconds())
        hdrs = headers(job["secrets"], job["event_id"], job["type"], ts, job["body"], job["attempt"])
        t0 = self.clock.seconds()
        self.sent += 1
        try:
            d = self.send(job["url"], hdrs, job["body"])
        except Exception as e:  # noqa: BLE001 - a sender that fails at once is a failed attempt
            d = defer.fail(e)
        d.addTimeout(self.timeout_s, self.clock)

        def answered(result):
            code, _head = result
            return code, None if 200 <= code < 300 else f"HTTP {code}"

        def failed(f):
            return None, describe_failure(f, self.timeout_s)

        d.addCallbacks(answered, failed)

        def record(result):
            code, error = result
            latency_ms = int(round((self.clock.seconds() - t0) * 1000))
            retry_in = None if error is None else retry_delay(job["attempt"], self.schedule, self.jitter, self.rng)
            if error is None:
                self.delivered += 1
            elif retry_in is None:
                self.failed += 1
            if error is not None:
                log.info("webhook delivery {d} (event {e}) attempt {n}: {err}", d=job["delivery_id"],
                         e=job["event_id"], n=job["attempt"], err=error)
            return self.run(record_attempt, job, self.now(), code, latency_ms, error, retry_in)

        d.addCallback(record)

        def finished(result):
            self.inflight.pop(job["delivery_id"], None)
            if hasattr(result, "getErrorMessage"):  # the result not written: the lease brings the delivery back
                log.warn("webhook delivery {d}: its result was not recorded ({err}); it is tried again after its "
                         "lease", d=job["delivery_id"], err=result.getErrorMessage())
            return None
        d.addBoth(finished)
        return d

    def stop(self):
        """No more claims; a Deferred fired when the attempts in flight have ended
        (each within its time-out)."""
        self.stopping = True
        if self.loop is not None and self.loop.running:
            self.loop.stop()
        return defer.DeferredList(list(self.inflight.values()))


def describe_failure(f, timeout_s=TIMEOUT_S):
    """One line for the delivery log."""
    from twisted.internet import error as ierror
    from twisted.web.client import RequestTransmissionFailed, ResponseFailed, ResponseNeverReceived
    if f.check(defer.TimeoutError, defer.CancelledError):
        return f"no answer within {timeout_s:g} s"
    if f.check(InputError):
        return f.getErrorMessage()
    if f.check(ierror.ConnectionRefusedError):
        return "connection refused"
    if f.check(ierror.DNSLookupError):
        return "cannot resolve the host"
    if f.check(ierror.TimeoutError):
        return "connection timed out"
    if f.check(ResponseNeverReceived, RequestTransmissionFailed, ResponseFailed):
        reasons = getattr(f.value, "reasons", []) or []
        inner = "; ".join(r.getErrorMessage() for r in reasons if hasattr(r, "getErrorMessage"))
        return "no response" + (f" ({inner})" if inner else "")
    return f"{f.type.__name__}: {f.getErrorMessage()}"[:300]


class HttpSender:
    """POSTs with twisted.web's Agent: the host looked up in a thread, every address
    checked (:func:`pick_address`), the connection made to the checked address (TLS
    checked against the host name), no redirects followed, the answer's first 512
    bytes kept, the rest discarded."""

    def __init__(self, reactor, allow_private=None, lookup=resolve):
        self.reactor = reactor
        self.allow_private = allow_private
        self.lookup = lookup

    def __call__(self, url, hdrs, body):
        return defer.ensureDeferred(self._post(url, hdrs, body))

    async def _post(self, url, hdrs, body):
        from twisted.internet.threads import deferToThreadPool
        from twisted.web.client import Agent
        from twisted.web.http_headers import Headers
        allow = allow_private_default() if self.allow_private is None else self.allow_private
        parts = urllib.parse.urlsplit(url)
        scheme, host = parts.scheme, parts.hostname
        port = parts.port or (443 if scheme == "https" else 80)
        addrs = await deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self.lookup, host, port)
        ip = pick_address(addrs, scheme, allow)
        agent = Agent.usingEndpointFactory(self.reactor, _Pinned(self.reactor, ip, host, port, scheme == "https"))
        h = Headers({k.encode(): [v.encode()] for k, v in hdrs.items()})
        resp = await agent.request(b"POST", url.encode("ascii"), h, _Body(body))
        head = _Head()
        resp.deliverBody(head)
        return resp.code, await head.done


class _Pinned:
    """An endpoint factory for Agent: every request to the address that was checked."""

    def __init__(self, reactor, ip, host, port, tls):
        self.reactor, self.ip, self.host, self.port, self.tls = reactor, ip, host, port, tls

    def endpointForURI(self, uri):
        from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
        cls = TCP6ClientEndpoint if ":" in self.ip else TCP4ClientEndpoint
        ep = cls(self.reactor, self.ip, self.port, timeout=TIMEOUT_S)
        if self.tls:
            from twisted.internet.ssl import optionsForClientTLS
            ep = wrapClientTLS(optionsForClientTLS(self.host), ep)
        return ep


@implementer(IBodyProducer)
class _Body:
    """A request body written at once (no cooperator: works on any reactor)."""

    def __init__(self, body):
        self.body, self.length = body, len(body)

    def startProducing(self, consumer):
        consumer.write(self.body)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


class _Head(Protocol):
    """A body protocol keeping the first 512 bytes of an answer (``done`` fires with
    them; cancelling it drops the connection)."""

    def __init__(self, limit=512):
        self.limit, self.buf = limit, b""
        self.done = defer.Deferred(lambda _d: self.transport is not None and self.transport.stopProducing())

    def dataReceived(self, data):
        if len(self.buf) < self.limit:
            self.buf += data[: self.limit - len(self.buf)]

    def connectionLost(self, reason=None):
        if not self.done.called:
            self.done.callback(self.buf)


def start_worker(clock, run, **kw):
    """The worker of a service (``dialer run``, ``dialer web``), started."""
    return Deliverer(clock, run, **kw).start()
