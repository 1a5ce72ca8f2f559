"""The browser's live channel: the WebSocket endpoint ``/live`` (autobahn's Twisted
WebSocket server, in the application's own twisted.web Site: ``web.app`` routes
``/live`` to :attr:`Hub.resource`) and the process's :class:`Hub`.

**Who may connect.** The handshake must carry this server's own ``Origin`` (a missing
or foreign one: 403, against cross-site WebSocket hijacking: the browser sends the
session cookie with any site's WebSocket) and the session cookie of an open session,
read off the reactor (``web.db.Stores``): none, ended or timed out: 401 (the HTTP
reason names why; a browser sees no status, its page asks ``/session/state``). A
session that must choose a new password first: 403. A socket is bound to its session
(account, user, role, session id) for its life.

**While it is open.** The hub re-reads the sessions of its sockets every
``Limits.check_s`` (15 s, on the reactor's clock, the read off the reactor) and closes
a socket whose session ended (code 4401, the reason: ``elsewhere``, ``expired``,
``logout``, ``password-changed``, ``role-changed``, ``disabled``), after a
``{"type": "session.ended", "reason": ...}`` message. A login ending the user's other
sessions, a logout, and the people screen's changes tell the hub at once
(:meth:`Hub.end_sessions`, :meth:`Hub.end_session`, :meth:`Hub.recheck_user`): the
other browser is told without waiting. Only the sockets of this process: another
process's are told by their own re-check (and the page's 15-s poll of
``/session/state``, which stays as the fallback).

**Topics** are per account, never across: a socket receives the messages published to
(its session's account, topic) only. A socket subscribes with
``{"type": "subscribe", "topic": T}`` (and ``unsubscribe``), each checked against the
role (``web.roles``) and, for a campaign, the account (``TOPICS``, :func:`topic_rule`).

**Limits** (:class:`Limits`): a client message of at most 4 KiB (else closed 1009), 10
a second (bursts of 40; more: closed 4429), 64 topics, 16 sockets per user at once
(then 429); a client too slow to read is dropped (its socket aborted) once 256 messages
or 1 MiB wait for it beyond the transport's buffer; a WebSocket ping every 25 s (no pong
in 10 s: closed).

**Publishing** (:meth:`Hub.publish`, on the reactor thread; :meth:`Hub.publish_from_thread`
from another thread): ``hub.publish(account_id, topic, message)``. The hub of a server is
``web.server.listen(...).web.hub``: with ``dialer run --web`` the dialer's events
can be handed to it (a plain callable: ``dialer`` does not import ``web``).
"""

import collections
import dataclasses
import datetime as _dt
import json
import os
import re

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import defer, task
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from . import roles, sessions

log = Logger(namespace="web.live")

SESSION_ENDED = 4401  # close code: the session ended (the reason is the close reason)
TOO_MANY = 4429  # close code: more messages than the rate limit allows

# topic -> the permission (web.roles) a subscriber's role needs; None: every role of the account
TOPICS = {
    "account": None,  # account-wide notices
    "campaigns": "campaigns.view",  # every campaign's state changes
    "imports": "campaigns.edit",  # list uploads' progress (the upload page)
}
CAMPAIGN_TOPIC = re.compile(r"campaign\.([1-9][0-9]{0,17})\Z")  # campaign.<id>: one campaign's events
CAMPAIGN_PERMISSION = "campaigns.view"


def topic_rule(topic):
    """(permission or None, campaign id or None) of a topic; ValueError when there is no such topic."""
    if not isinstance(topic, str) or len(topic) > 64:
        raise ValueError("no such topic")
    if topic in TOPICS:
        return TOPICS[topic], None
    m = CAMPAIGN_TOPIC.match(topic)
    if m:
        return CAMPAIGN_PERMISSION, int(m.group(1))
    raise ValueError("no such topic")


@dataclasses.dataclass(frozen=True)
class Limits:
    max_message: int = 4096  # bytes of one client message (frame and message)
    rate: float = 10.0  # client messages a second, sustained
    burst: int = 40  # client messages at once
    queue: int = 256  # messages waiting for a slow client (beyond the transport's buffer) before it is dropped
    queue_bytes: int = 1 << 20
    topics: int = 64  # subscriptions of one socket
    per_user: int = 16  # sockets of one user at once
    check_s: float = 15.0  # sessions re-read
    ping_s: float = 25.0  # WebSocket ping
    ping_timeout_s: float = 10.0

    @classmethod
    def from_env(cls, environ=None):
        """``DIALER_LIVE_RATE`` (``RATE`` or ``RATE/BURST``), ``DIALER_LIVE_QUEUE``
        (messages), ``DIALER_LIVE_CHECK_S`` (seconds): for operators and tests."""
        env = os.environ if environ is None else environ
        kw = {}
        rate = env.get("DIALER_LIVE_RATE", "").strip()
        if rate:
            r, _, b = rate.partition("/")
            kw["rate"] = float(r)
            kw["burst"] = int(b) if b else max(1, int(4 * float(r)))
        if env.get("DIALER_LIVE_QUEUE", "").strip():
            kw["queue"] = int(env["DIALER_LIVE_QUEUE"])
        if env.get("DIALER_LIVE_CHECK_S", "").strip():
            kw["check_s"] = float(env["DIALER_LIVE_CHECK_S"])
        return cls(**kw)


def _cookie(header, name):
    """The value of cookie ``name`` in a Cookie header (the first one), or ''."""
    for part in (header or "").split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v.strip()
    return ""


def sessions_by_id(store, ids):
    """{session id: the session as ``web.sessions.find_session`` reads it} for ``ids``."""
    out = {}
    ids = list(ids)
    for i in range(0, len(ids), 500):
        part = ids[i:i + 500]
        for row in store.query(
                "SELECT s.id, s.user_id, u.name AS user_name, u.role, s.account_id, a.name AS account_name, "
                "a.operator AS account_operator, s.csrf_token, s.source, s.created_at, s.last_seen_at, s.ended_at, "
                "s.end_reason, u.must_change_password, u.disabled_at "
                "FROM user_sessions s JOIN users u ON u.id = s.user_id JOIN accounts a ON a.id = s.account_id "
                f"WHERE s.id IN ({','.join('?' * len(part))})", part):
            out[row["id"]] = row
    return out


def _campaign_of(store, cid, account_id):
    return store.query_one("SELECT id FROM campaigns WHERE id = ? AND account_id = ?", (cid, account_id)) is not None


def _encode(obj):
    return json.dumps(obj, default=str, separators=(",", ":")).encode("utf-8")


class Hub:
    """The sockets of this process and their topics. Everything runs on the reactor
    thread; the store is read through ``stores`` (off the reactor)."""

    def __init__(self, reactor, stores, cookie=b"dialer_session", idle_s=sessions.IDLE_S,
                 absolute_s=sessions.ABSOLUTE_S, limits=None):
        self.reactor, self.stores = reactor, stores
        self.cookie = cookie.decode() if isinstance(cookie, bytes) else cookie
        self.idle_s, self.absolute_s = idle_s, absolute_s
        self.limits = limits or Limits.from_env()
        self.conns = set()
        self._topics = collections.defaultdict(set)  # (account id, topic) -> sockets
        self._loop = None
        self._checking = None
        self.dropped = 0  # slow clients dropped (for the log and tests)
        self.factory = WebSocketServerFactory(reactor=reactor)
        self.factory.protocol = LiveProtocol
        self.factory.hub = self
        lim = self.limits
        self.factory.setProtocolOptions(
            maxMessagePayloadSize=lim.max_message, maxFramePayloadSize=lim.max_message,
            autoPingInterval=lim.ping_s, autoPingTimeout=lim.ping_timeout_s, openHandshakeTimeout=10,
            closeHandshakeTimeout=5, failByDrop=False, webStatus=False, allowNullOrigin=True)  # "null": refused by admit (403)
        self.resource = WebSocketResource(self.factory)

    def now(self):
        return _dt.datetime.fromtimestamp(self.reactor.seconds(), _dt.timezone.utc)

    # ------------------------------------------------------------------ publishing
    def publish(self, account_id, topic, message):
        """Send ``message`` (JSON-able) to the sockets of ``account_id`` subscribed to
        ``topic``, as ``{"type": "publish", "topic": topic, "data": message}``. On the
        reactor thread; returns how many sockets it went to."""
        subs = self._topics.get((account_id, topic))
        if not subs:
            return 0
        payload = _encode({"type": "publish", "topic": topic, "data": message})
        for c in list(subs):
            c.send_payload(payload)
        return len(subs)

    def publish_from_thread(self, account_id, topic, message):
        """:meth:`publish` from a thread that is not the reactor's (a store thread)."""
        self.reactor.callFromThread(self.publish, account_id, topic, message)

    def send_user(self, account_id, user_id, message):
        """``message`` (a dict with its own ``type``) to every socket of one user of the
        account, whatever it subscribed to (an agent's own events). Returns how many."""
        n = 0
        for c in list(self.conns):
            if c.sess["account_id"] == account_id and c.sess["user_id"] == user_id:
                c.send_payload(_encode(message))
                n += 1
        return n

    # ------------------------------------------------------------------ sessions
    def end_sessions(self, user_id, reason, keep=None):
        """The user's sessions but ``keep`` ended (a login elsewhere): their sockets are
        told and closed now."""
        for c in [c for c in self.conns if c.sess["user_id"] == user_id and c.sess["id"] != keep]:
            c.session_ended(reason)

    def end_session(self, session_id, reason):
        for c in [c for c in self.conns if c.sess["id"] == session_id]:
            c.session_ended(reason)

    def recheck_user(self, account_id, user_name):
        """Re-read the sessions of one user's sockets now (an owner changed the user)."""
        d = self.recheck([c for c in self.conns if c.sess["account_id"] == account_id and c.sess["user_name"] == user_name])
        return d.addErrback(lambda f: log.failure("live: the sessions' check failed", f))

    def recheck(self, conns=None):
        """Re-read the sessions of ``conns`` (all sockets) and close those that ended; a Deferred."""
        return defer.ensureDeferred(self._recheck(list(self.conns if conns is None else conns)))

    async def _recheck(self, conns):
        if not conns:
            return
        rows = await self.stores.read(sessions_by_id, {c.sess["id"] for c in conns})
        now = self.now()
        ended = {}
        for sid, row in rows.items():
            st = sessions.state(row, now, self.idle_s, self.absolute_s)
            if st == "expired":
                await self.stores.write(sessions.end, row, "expired", now)
            if st != "open":
                ended[sid] = st
        for c in conns:
            why = ended.get(c.sess["id"]) if c.sess["id"] in rows else "logout"
            if why:
                c.session_ended(why)

    def _tick(self):
        if self._checking is not None:  # the last check is still reading
            return
        d = self._checking = self.recheck()

        def done(r):
            self._checking = None
            return r
        d.addBoth(done).addErrback(lambda f: log.failure("live: the sessions' check failed", f))

    # ------------------------------------------------------------------ sockets
    async def admit(self, proto, request):
        """The handshake's checks (``onConnect``): Origin, then the session. Raises
        ConnectionDeny, or returns the session."""
        origin = request.headers.get("origin", "")
        own = ("https://" if proto.secure() else "http://") + request.headers.get("host", "")
        if not origin or origin != own:
            raise ConnectionDeny(403, "origin refused: open the dialer's own pages")
        token = _cookie(request.headers.get("cookie"), self.cookie)
        sess = await self.stores.read(sessions.find_session, token) if token else None
        now = self.now()
        st = sessions.state(sess, now, self.idle_s, self.absolute_s)
        if st == "expired":
            await self.stores.write(sessions.end, sess, "expired", now)
        if st != "open":
            raise ConnectionDeny(401, "no session" if sess is None else f"session ended: {st}")
        if sess["must_change_password"]:
            raise ConnectionDeny(403, "choose a new password first")
        if sum(1 for c in self.conns if c.sess["user_id"] == sess["user_id"]) >= self.limits.per_user:
            raise ConnectionDeny(429, "too many live connections for this user")
        return {k: sess[k] for k in ("id", "user_id", "user_name", "role", "account_id", "account_name",
                                     "account_operator")}

    def opened(self, conn):
        self.conns.add(conn)
        if self._loop is None:
            self._loop = task.LoopingCall(self._tick)
            self._loop.clock = self.reactor
            self._loop.start(self.limits.check_s, now=False).addErrback(
                lambda f: log.failure("live: the sessions' check stopped", f))

    def closed(self, conn):
        self.conns.discard(conn)
        for t in list(conn.topics):
            self._unsubscribe(conn, t)
        if not self.conns and self._loop is not None:
            self._loop.stop()
            self._loop = None

    def _unsubscribe(self, conn, topic):
        conn.topics.discard(topic)
        key = (conn.sess["account_id"], topic)
        subs = self._topics.get(key)
        if subs is not None:
            subs.discard(conn)
            if not subs:
                del self._topics[key]

    async def subscribe(self, conn, topic, ref):
        try:
            permission, cid = topic_rule(topic)
        except ValueError as e:
            return conn.error(str(e), topic, ref)
        if permission is not None and not roles.may(conn.sess["role"], permission, conn.sess["account_operator"]):
            return conn.error(f"your role ({conn.sess['role']}) may not follow this topic", topic, ref)
        if topic in conn.topics:
            return conn.reply({"type": "subscribed", "topic": topic}, ref)
        if len(conn.topics) + len(conn.pending) >= self.limits.topics:
            return conn.error(f"at most {self.limits.topics} topics", topic, ref)
        if cid is not None:
            conn.pending.add(topic)
            ok = await self.stores.read(_campaign_of, cid, conn.sess["account_id"])
            if topic not in conn.pending or conn not in self.conns:  # unsubscribed or closed meanwhile
                return
            conn.pending.discard(topic)
            if not ok:  # the same answer whether the campaign is another account's or nobody's
                return conn.error("no such campaign", topic, ref)
        conn.topics.add(topic)
        self._topics[(conn.sess["account_id"], topic)].add(conn)
        conn.reply({"type": "subscribed", "topic": topic}, ref)

    def unsubscribe(self, conn, topic, ref):
        conn.pending.discard(topic)
        self._unsubscribe(conn, topic)
        conn.reply({"type": "unsubscribed", "topic": topic}, ref)


@implementer(IPushProducer)
class _Flow:
    """The transport's producer: it says when its buffer is full (pause) and drained (resume)."""

    def __init__(self, conn):
        self.conn = conn

    def pauseProducing(self):
        self.conn.paused = True

    def resumeProducing(self):
        self.conn.resume()

    def stopProducing(self):
        self.conn.paused = True


class LiveProtocol(WebSocketServerProtocol):
    """One browser's socket: text frames of JSON both ways."""

    sess = None

    def __init__(self):
        super().__init__()
        self.topics, self.pending = set(), set()
        self.queue, self.queued_bytes, self.paused = collections.deque(), 0, False
        self.ended = False

    @property
    def hub(self):
        return self.factory.hub

    def secure(self):
        details = getattr(self, "_transport_details", None)
        return bool(getattr(details, "is_secure", False))

    def onConnect(self, request):
        d = defer.ensureDeferred(self.hub.admit(self, request))

        def bound(sess):
            self.sess = sess
            return None
        return d.addCallback(bound)

    def onOpen(self):
        if self.sess is None:  # cannot happen: onConnect refused it
            self.dropConnection(abort=True)
            return
        t = self.transport
        try:  # twisted.web's channel, which handed the connection over, was the transport's producer
            t.unregisterProducer()
        except Exception:
            pass
        t.registerProducer(_Flow(self), True)
        self.tokens, self.last = float(self.hub.limits.burst), self.hub.reactor.seconds()
        self.hub.opened(self)
        s = self.sess
        self.reply({"type": "hello", "account": s["account_name"], "user": s["user_name"], "role": s["role"]}, None)

    def onClose(self, wasClean, code, reason):
        if self.sess is not None:
            self.hub.closed(self)
        self.queue.clear()

    # ------------------------------------------------------------------ sending
    def _open(self):
        return self.state == self.STATE_OPEN and not self.ended

    def send_payload(self, payload):
        """Send one JSON message (bytes); queued while the transport's buffer is full;
        a client whose queue overflows is dropped."""
        if not self._open():
            return
        if self.paused or self.queue:
            self.queue.append(payload)
            self.queued_bytes += len(payload)
            lim = self.hub.limits
            if len(self.queue) > lim.queue or self.queued_bytes > lim.queue_bytes:
                self.hub.dropped += 1
                log.info("live: dropped {user} of {account}: too slow to read ({n} messages waiting)",
                         user=self.sess["user_name"], account=self.sess["account_name"], n=len(self.queue))
                self.ended = True
                self.queue.clear()
                self.hub.closed(self)
                self.dropConnection(abort=True)
            return
        self.sendMessage(payload, isBinary=False)

    def resume(self):
        self.paused = False
        while self.queue and not self.paused and self._open():
            p = self.queue.popleft()
            self.queued_bytes -= len(p)
            self.sendMessage(p, isBinary=False)

    def reply(self, obj, ref):
        if ref is not None:
            obj = {**obj, "ref": ref}
        self.send_payload(_encode(obj))

    def error(self, message, topic=None, ref=None):
        obj = {"type": "error", "error": message}
        if topic is not None:
            obj["topic"] = topic if isinstance(topic, str) and len(topic) <= 64 else None
        self.reply(obj, ref)

    def session_ended(self, reason):
        """Tell the browser why, and close (4401, the reason)."""
        if not self._open():
            return
        if not self.paused and not self.queue:
            self.sendMessage(_encode({"type": "session.ended", "reason": reason}), isBinary=False)
        self.ended = True
        self.hub.closed(self)
        self.sendClose(SESSION_ENDED, str(reason)[:100])

    # ------------------------------------------------------------------ receiving
    def onMessage(self, payload, isBinary):
        if not self._open():
            return
        lim, now = self.hub.limits, self.hub.reactor.seconds()
        self.tokens = min(float(lim.burst), self.tokens + (now - self.last) * lim.rate)
        self.last = now
        if self.tokens < 1:
            log.info("live: closed {user} of {account}: more than {rate} messages a second",
                     user=self.sess["user_name"], account=self.sess["account_name"], rate=lim.rate)
            self.ended = True
            self.hub.closed(self)
            self.sendClose(TOO_MANY, "too many messages")
            return
        self.tokens -= 1
        if isBinary:
            return self.error("text frames of JSON only")
        try:
            msg = json.loads(payload.decode("utf-8"))
        except ValueError:
            return self.error("not JSON")
        if not isinstance(msg, dict):
            return self.error("a JSON object, please")
        ref = msg.get("ref")
        if not (ref is None or (isinstance(ref, str) and len(ref) <= 64)
                or (isinstance(ref, int) and not isinstance(ref, bool))):
            ref = None
        kind, topic = msg.get("type"), msg.get("topic")
        if kind == "subscribe":
            defer.ensureDeferred(self.hub.subscribe(self, topic, ref)).addErrback(
                lambda f: (log.failure("live: subscribe failed", f), self.error("internal error", topic, ref)))
        elif kind == "unsubscribe":
            self.hub.unsubscribe(self, topic if isinstance(topic, str) else "", ref)
        elif kind == "ping":
            self.reply({"type": "pong"}, ref)
        else:
            self.error("unknown message type (subscribe, unsubscribe, ping)", None, ref)
