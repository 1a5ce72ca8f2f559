"""The live channel (``web/live.py``): a real ``dialer web`` process and WebSocket
clients (websocket-client, synchronous: each read waits on the socket with a timeout,
no sleeps).

The handshake: refused without a session, with a foreign or missing Origin, with an
expired session; topics never cross accounts; a campaign of another account cannot be
followed; roles decide the topics; campaign state changes and upload progress arrive;
a second login of the same user tells the first socket at once and closes it; logout,
and a session ended by another process (found by the periodic re-check); the rate limit,
the message size limit; a client too slow to read is dropped, not buffered."""

import json
import os
import socket
import struct
import time

import pytest

from core.store import Store

from web_harness import Client, Server, seed, until, logged_in

websocket = pytest.importorskip("websocket", reason="websocket-client is not installed (pip install -e '.[test]')")

pytestmark = pytest.mark.timeout(120)


def _server(db, **env):
    """A ``dialer web`` with ``env`` (DIALER_LIVE_*) in its environment."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return Server(db)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    db = tmp_path_factory.mktemp("live") / "dialer.db"
    ids = seed(db)
    server = _server(db, DIALER_LIVE_CHECK_S="0.5")  # sessions re-read twice a second (15 s by default)
    yield server, db, ids
    server.stop()


def connect(server, client=None, origin="own", timeout=10, sockopt=()):
    """A WebSocket to /live with the client's session cookie and our own Origin (or ``origin``; None: no Origin)."""
    kw = {}
    if origin == "own":
        kw["origin"] = server.url
    elif origin is None:
        kw["suppress_origin"] = True
    else:
        kw["origin"] = origin
    if client is not None and client.cookies.get("dialer_session"):
        kw["cookie"] = f"dialer_session={client.cookies['dialer_session']}"
    return websocket.create_connection(f"ws://127.0.0.1:{server.port}/live", timeout=timeout, sockopt=sockopt, **kw)


def receive(ws):
    """The next message (a dict), or {"closed": code, "reason": text} for the close frame."""
    while True:
        op, frame = ws.recv_data_frame(True)
        if op == websocket.ABNF.OPCODE_TEXT:
            return json.loads(frame.data)
        if op == websocket.ABNF.OPCODE_CLOSE:
            data = frame.data or b""
            return {"closed": struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None,
                    "reason": data[2:].decode("utf-8", "replace")}


def opened(server, client):
    ws = connect(server, client)
    hello = receive(ws)
    assert hello["type"] == "hello", hello
    return ws


def send(ws, **msg):
    ws.send(json.dumps(msg))


def subscribe(ws, topic):
    send(ws, type="subscribe", topic=topic, ref=topic)
    return receive(ws)


def nothing_pending(ws):
    """Nothing was sent to ``ws`` before now: a ping's pong is the next message (one TCP
    stream, in order; the server published before it answered the HTTP request that caused it)."""
    send(ws, type="ping", ref="barrier")
    got = receive(ws)
    assert got == {"type": "pong", "ref": "barrier"}, got


def refused(server, client=None, origin="own"):
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        connect(server, client, origin)
    return e.value.status_code, e.value.status_message


def csrf_post(c, path, data=None):
    return c.post(path, {**(data or {}), "csrf_token": c.csrf()})


# ---------------------------------------------------------------------------------- handshake
def test_refused_without_a_session(site):
    server, db, ids = site
    assert refused(server) == (401, "no session")
    c = Client(server)
    c.cookies["dialer_session"] = "x" * 43  # no such session
    assert refused(server, c) == (401, "no session")


def test_refused_with_a_foreign_or_missing_origin(site):
    server, db, ids = site
    c = logged_in(server, user="max")
    for origin in ("http://evil.example", f"http://127.0.0.1:{server.port + 1}", f"https://127.0.0.1:{server.port}",
                   "null", None):
        status, _ = refused(server, c, origin)
        assert status == 403, origin
    opened(server, c).close()  # the same cookie from our own page: accepted


def test_refused_with_an_expired_or_ended_session(site):
    server, db, ids = site
    c = logged_in(server, user="max")
    s = Store(db)
    try:
        s.execute("UPDATE user_sessions SET last_seen_at = '2000-01-01T00:00:00.000Z' WHERE ended_at IS NULL AND "
                  "user_id = (SELECT id FROM users WHERE name = 'max')")
        s.conn.commit()
        assert refused(server, c) == (401, "session ended: expired")
        row = s.query_one("SELECT end_reason FROM user_sessions WHERE user_id = (SELECT id FROM users WHERE "
                          "name = 'max') ORDER BY id DESC LIMIT 1")
        assert row["end_reason"] == "expired"  # ended in the store, as a page would
    finally:
        s.close()
    c = logged_in(server, user="max")
    cookie = c.cookies["dialer_session"]
    assert c.post("/logout", {"csrf_token": c.csrf()}).status == 303
    c.cookies["dialer_session"] = cookie  # the logged-out session's cookie, kept
    assert refused(server, c) == (401, "session ended: logout")


# ---------------------------------------------------------------------------------- topics
def test_topics_never_cross_accounts(site):
    server, db, ids = site
    olive, gus = logged_in(server, "acme", "olive"), logged_in(server, "globex", "gus")
    a, g = opened(server, olive), opened(server, gus)
    r = csrf_post(olive, "/campaigns/new", {"name": "summer", "dial_mode": "progressive", "region": "US",
                                            "caller_id": "+1 212 555 0000", "abandon_target": "0.03"})
    assert r.status == 303
    summer = int(r.header("location").rsplit("/", 1)[1])
    for ws, topics in ((a, ("campaigns", f"campaign.{summer}", "account", "imports")),
                       (g, ("campaigns", f"campaign.{ids['rival']}", "account", "imports"))):
        for t in topics:
            assert subscribe(ws, t) == {"type": "subscribed", "topic": t, "ref": t}
    assert csrf_post(olive, f"/campaigns/{summer}/start").status == 303
    got = [receive(a), receive(a)]
    assert {m["topic"] for m in got} == {"campaigns", f"campaign.{summer}"}
    for m in got:
        assert m["type"] == "publish"
        assert m["data"] == {"type": "campaign.state", "campaign": summer, "name": "summer", "state": "running",
                             "was": "draft", "by": "olive"}
    nothing_pending(g)  # globex's socket, subscribed to the same topic names: nothing
    assert csrf_post(gus, f"/campaigns/{ids['rival']}/finish").status == 303
    assert {receive(g)["topic"], receive(g)["topic"]} == {"campaigns", f"campaign.{ids['rival']}"}
    nothing_pending(a)
    # unsubscribed: no more
    send(a, type="unsubscribe", topic="campaigns")
    assert receive(a) == {"type": "unsubscribed", "topic": "campaigns"}
    assert csrf_post(olive, f"/campaigns/{summer}/pause").status == 303
    m = receive(a)
    assert m["topic"] == f"campaign.{summer}" and m["data"]["state"] == "paused"
    nothing_pending(a)
    a.close()
    g.close()


def test_another_accounts_campaign_cannot_be_followed(site):
    server, db, ids = site
    olive, gus = logged_in(server, "acme", "olive"), logged_in(server, "globex", "gus")
    a = opened(server, olive)
    for t in (f"campaign.{ids['rival']}", "campaign.999999"):
        # the same answer whether the campaign is another account's or nobody's
        assert subscribe(a, t) == {"type": "error", "error": "no such campaign", "topic": t, "ref": t}
    for t in ("campaign.x", "campaign.0", "globex", "imports.other", "x" * 100):
        got = subscribe(a, t)
        assert got["type"] == "error" and got["error"] == "no such topic", got
    # a state change of globex's campaign: nothing arrives
    assert csrf_post(gus, f"/campaigns/{ids['rival']}/edit", {"caller_id": ""}).status in (303, 400)
    r = csrf_post(gus, "/campaigns/new", {"name": "other", "dial_mode": "progressive", "region": "US"})
    other = int(r.header("location").rsplit("/", 1)[1])
    assert csrf_post(gus, f"/campaigns/{other}/finish").status == 303
    nothing_pending(a)
    a.close()


def test_roles_decide_the_topics(site):
    server, db, ids = site
    sue, alan = logged_in(server, "acme", "sue"), logged_in(server, "acme", "alan")  # supervisor, agent
    s, g = opened(server, sue), opened(server, alan)
    assert subscribe(s, "imports")["error"] == "your role (supervisor) may not follow this topic"
    assert subscribe(s, f"campaign.{ids['spring']}")["type"] == "subscribed"
    assert subscribe(g, "campaigns")["error"] == "your role (agent) may not follow this topic"
    assert subscribe(g, f"campaign.{ids['spring']}")["type"] == "error"
    assert subscribe(g, "account")["type"] == "subscribed"
    send(g, type="dance")
    assert receive(g)["error"].startswith("unknown message type")
    g.send("not json")
    assert receive(g) == {"type": "error", "error": "not JSON"}
    s.close()
    g.close()


def test_upload_progress_arrives(site):
    server, db, ids = site
    mx, gus = logged_in(server, "acme", "max"), logged_in(server, "globex", "gus")
    a, g = opened(server, mx), opened(server, gus)
    assert subscribe(a, "imports")["type"] == "subscribed"
    assert subscribe(g, "imports")["type"] == "subscribed"
    rows = "\n".join(f"2125{5500000 + i:07d}" for i in range(12000))  # 3 chunks of at most 5 000 rows
    r = mx.post(f"/campaigns/{ids['spring']}/uploads?name=big.csv", body=("phone\n" + rows + "\n").encode(),
                headers={"X-CSRF-Token": mx.csrf(), "X-Requested-With": "fetch"})
    assert r.status == 202, r.text
    token = r.json()["token"]
    seen = []
    while not seen or seen[-1]["state"] not in ("done", "failed"):
        m = receive(a)
        assert m["type"] == "publish" and m["topic"] == "imports", m
        assert m["data"]["token"] == token and m["data"]["campaign"] == ids["spring"]
        seen.append(m["data"])
    assert seen[-1]["state"] == "done", seen[-1]
    assert seen[-1]["rows"] == 12000 and seen[-1]["fraction"] == 1.0
    assert seen[-1]["import_url"] == f"/campaigns/{ids['spring']}/imports/{seen[-1]['import_id']}"
    importing = [m["rows"] for m in seen if m["state"] == "importing"]
    assert len(importing) >= 3 and importing == sorted(importing)  # per chunk, in order
    # the polled status agrees
    assert mx.get(f"/campaigns/{ids['spring']}/uploads/{token}", headers={"X-Requested-With": "fetch"}).json()["state"] == "done"
    nothing_pending(g)  # globex's imports topic heard nothing
    a.close()
    g.close()


# ---------------------------------------------------------------------------------- sessions
def test_a_second_login_tells_the_first_socket_at_once(site):
    server, db, ids = site
    first = logged_in(server, "acme", "sue")
    ws = opened(server, first)
    t0 = time.monotonic()
    second = logged_in(server, "acme", "sue")
    assert receive(ws) == {"type": "session.ended", "reason": "elsewhere"}
    assert receive(ws) == {"closed": 4401, "reason": "elsewhere"}
    assert time.monotonic() - t0 < 5  # pushed by the login, not found by a poll
    ws.close()
    other = opened(server, second)  # the new session's socket works
    nothing_pending(other)
    other.close()


def test_logout_and_a_session_ended_elsewhere_close_the_socket(site):
    server, db, ids = site
    c = logged_in(server, "acme", "max")
    ws = opened(server, c)
    assert c.post("/logout", {"csrf_token": c.csrf()}).status == 303
    assert receive(ws) == {"type": "session.ended", "reason": "logout"}
    assert receive(ws)["closed"] == 4401
    ws.close()
    # ended by another process (as `dialer account disable` would): the periodic re-check finds it
    c = logged_in(server, "acme", "max")
    ws = opened(server, c)
    s = Store(db)
    try:
        s.execute("UPDATE user_sessions SET ended_at = '2026-11-24T17:00:00.000Z', end_reason = 'disabled' "
                  "WHERE ended_at IS NULL AND user_id = (SELECT id FROM users WHERE name = 'max')")
        s.conn.commit()
    finally:
        s.close()
    assert receive(ws) == {"type": "session.ended", "reason": "disabled"}
    assert receive(ws) == {"closed": 4401, "reason": "disabled"}
    ws.close()


# ---------------------------------------------------------------------------------- limits
def test_rate_limit_and_message_size(site):
    server, db, ids = site
    c = logged_in(server, "acme", "olive")
    ws = opened(server, c)
    for i in range(100):
        send(ws, type="ping", ref=i)
    got = [receive(ws) for _ in range(41)]  # a burst of 40 answered, then closed
    assert [m.get("ref") for m in got[:40]] == list(range(40))
    assert got[40] == {"closed": 4429, "reason": "too many messages"}
    ws.close()
    ws = opened(server, c)
    ws.send("x" * 5000)  # more than 4 KiB
    assert receive(ws)["closed"] == 1009
    ws.close()


def test_a_slow_client_is_dropped_not_buffered(tmp_path):
    db = tmp_path / "dialer.db"
    seed(db)
    server = _server(db, DIALER_LIVE_RATE="1000000", DIALER_LIVE_QUEUE="8")
    try:
        c = logged_in(server, "acme", "olive")
        # a client that never reads, with a small receive buffer: its answers pile up on the server
        ws = connect(server, c, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
        frame = websocket.ABNF.create_frame(json.dumps({"type": "ping", "ref": "x" * 60}), websocket.ABNF.OPCODE_TEXT)
        batch = frame.format() * 500
        sent, deadline, dropped = 0, time.monotonic() + 60, False
        ws.sock.settimeout(5)
        while time.monotonic() < deadline and sent < 400_000:
            try:
                ws.sock.sendall(batch)
            except OSError:  # reset: the server dropped us
                dropped = True
                break
            sent += 500
            if sent % 5000 == 0 and "too slow to read" in open(server.log_path).read():
                dropped = True
                break
        assert dropped, f"not dropped after {sent} messages"
        until(lambda: "too slow to read" in open(server.log_path).read(), timeout=10, what="the server's log line")
        ws.sock.close()
        # the server goes on serving
        other = opened(server, logged_in(server, "acme", "max"))
        nothing_pending(other)
        other.close()
    finally:
        server.stop()


def test_over_tls(tmp_path):
    """``dialer web --tls-cert``: ``wss://`` on the same port, our own Origin is then
    ``https://``; the flow control works on the TLS transport too (a ping answered)."""
    import ssl

    import test_web_tls as tls  # its self-signed certificate and server (as a module: its tests are not ours)
    db = tmp_path / "dialer.db"
    seed(db)
    cert, key = tls._self_signed(tmp_path)
    server = tls.TlsServer(db, cert, key)
    try:
        c = Client(server)
        assert c.login("acme", "olive").status == 303
        kw = {"cookie": f"dialer_session={c.cookies['dialer_session']}", "timeout": 10,
              "sslopt": {"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": str(cert)}}
        url = f"wss://127.0.0.1:{server.port}/live"
        with pytest.raises(websocket.WebSocketBadStatusException) as e:
            websocket.create_connection(url, origin=f"http://127.0.0.1:{server.port}", **kw)
        assert e.value.status_code == 403
        ws = websocket.create_connection(url, origin=f"https://127.0.0.1:{server.port}", **kw)
        assert receive(ws)["type"] == "hello"
        assert subscribe(ws, "imports")["type"] == "subscribed"
        nothing_pending(ws)
        ws.close()
    finally:
        server.stop()
