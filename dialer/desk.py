"""The agent desk of one dialer loop: agents' phones, their login and their session.

Agents log in by calling ``sip:agent-<user>-<pin>@<worker>`` and stay on the line.
The user is looked up in the campaign's account through the store hook (``run``:
off the reactor thread live), the PIN checked off the reactor thread (``verify``);
wrong PINs slow down the caller's source address (``LoginGuard``), never lock the
user out. An agent is logged in once the phone's ACK confirms the call (a phone
that cannot hear us is never given a customer). One session per person across the
service (``AgentSessions``): a second login of an agent who is ready or paused ends
the first session; one on a call or in wrap-up is refused (486).

The desk owns the agents' SIP legs (``agent_legs``: leg key -> user id and back);
what happens to a customer call when its agent's phone hangs up is the loop's
(``on_gone``).
"""

from twisted.logger import Logger

from core.errors import StoreError

from .agents import login_user
from .gate import source_host

log = Logger(namespace="dialer.desk")


class AgentDesk:
    """Agents' phone legs of one campaign loop. ``owner`` is the loop (what
    ``AgentSessions`` keeps: another loop asks it ``floor`` and ``end_session``)."""

    def __init__(self, clock, pool, floor, records, sessions, login_guard, verify, run, account, campaign,
                 owner=None, on_login=None, on_gone=None):
        self.clock, self.pool, self.floor, self.records = clock, pool, floor, records
        self.sessions, self.login_guard, self.verify, self.run = sessions, login_guard, verify, run
        self.account, self.campaign = account, campaign
        self.account_id, self.cid = account["id"], campaign["id"]
        self.owner = owner if owner is not None else self
        self.on_login = on_login or (lambda uid: None)
        self.on_gone = on_gone or (lambda uid, key: None)
        self.checking = {}  # agent leg key -> user name: PIN being checked
        self.confirmed = set()  # of those, the legs whose ACK already came
        self.pending_login = {}  # agent SIP leg key -> (user id, name): PIN checked, waiting for the ACK
        self.agent_legs = {}  # agent SIP leg key -> user id
        self.agent_of_user = {}  # user id -> agent leg key

    def owns(self, key):
        return key in self.agent_legs or key in self.pending_login or key in self.checking

    def agent_key(self, uid):
        return self.agent_of_user.get(uid)

    def on_event(self, key, ev):
        """A worker event about one of the desk's legs (``owns(key)``)."""
        name = ev.get("ev")
        if key in self.checking:
            if name == "ended":
                self.checking.pop(key, None)
                self.confirmed.discard(key)
            elif name == "confirmed":  # the ACK came before the PIN check's answer
                self.confirmed.add(key)
        elif key in self.pending_login:
            if name == "confirmed":
                self._login(key)
            elif name == "ended":
                uid, user = self.pending_login.pop(key)
                log.warn("agent {user}: the phone never confirmed its call (no ACK: a NAT or firewall in the "
                         "way?); not logged in", user=user)
        elif key in self.agent_legs:
            if name == "ended":
                self._gone(key)

    # -- login ------------------------------------------------------------------------
    def incoming(self, ev):
        """An agent's phone calls ``agent-<user>-<pin>``: the user is looked up in this
        campaign's account, the PIN checked off the reactor thread."""
        to = ev.get("to_user") or ""
        if ev.get("tie"):
            return
        key = ev["key"]
        parts = to.split("-", 3)  # agent-<user>-<pin>[-<campaign>] (the service picks the campaign)
        if len(parts) < 3 or parts[0] != "agent":
            self.pool.hangup(key, code=404)
            return
        user, pin = ev.get("agent_user") or parts[1], parts[2]
        if user.endswith("." + self.account["name"]) and not ev.get("agent_user"):
            user = user[:-len(self.account["name"]) - 1]  # agent-<user>.<account>-<pin>
        source = source_host(ev.get("source") or "")
        wait = self.login_guard.wait(source, self.clock.seconds())
        if wait > 0:
            log.warn("agent login of {user} from {source} refused: too many wrong PINs from that address, "
                     "next try in {wait:.0f} s", user=user, source=source, wait=wait)
            self.pool.hangup(key, code=403)
            return
        self.checking[key] = user
        d = self.run(login_user, self.account_id, user)
        d.addCallbacks(self._looked_up, self._lookup_failed, callbackArgs=(key, user, pin, source),
                       errbackArgs=(key, user))
        d.addErrback(lambda f: log.failure("agent login of {user}", f, user=user))

    def _lookup_failed(self, failure, key, user):
        failure.trap(StoreError)
        if self.checking.pop(key, None) is None:
            return
        self.confirmed.discard(key)
        log.warn("agent login of {user} not checked, the database is unavailable ({err})", user=user,
                 err=str(failure.value))
        self.pool.hangup(key, code=503)

    def _looked_up(self, u, key, user, pin, source):
        if key not in self.checking:  # the phone hung up meanwhile
            return
        if u is None or not u["pin_hash"]:
            # the same back-off as a wrong PIN: guessing user names costs as much as guessing PINs
            self.checking.pop(key, None)
            self.confirmed.discard(key)
            self._refused(key, user, source, "no such agent, or no PIN set" if u is None else "no PIN set")
            return
        d = self.verify(pin, u["pin_hash"])
        d.addCallback(self._pin_checked, key, u, source)
        d.addErrback(lambda f: log.failure("PIN check of {user}", f, user=user))

    def _pin_checked(self, ok, key, u, source):
        if self.checking.pop(key, None) is None:  # the phone hung up while its PIN was checked
            return
        if not ok:
            self.confirmed.discard(key)
            self._refused(key, u["name"], source, "wrong PIN")
            return
        self.pin_accepted(key, u, source)

    def pin_accepted(self, key, u, source):
        """The login path after a right PIN (``u``: the user row, id and name): one
        session per person, then logged in when the phone's ACK has come."""
        self.login_guard.succeeded(source)
        held = self.sessions.holder(u["id"])
        if held is not None and held[0].floor.state_of(u["id"]) in ("on_call", "wrap_up"):
            loop, _ = held
            log.warn("agent login of {user} refused: already logged in on campaign {camp} and {state} there "
                     "(one login per person)", user=u["name"], camp=loop.campaign["name"],
                     state=loop.floor.state_of(u["id"]).replace("_", " "))
            self.records.audit(f"agent:{u['name']}", "agent.login-refused", f"user:{u['name']}",
                               "already logged in, on a call", {"source": source, "campaign": self.campaign["name"]})
            self.confirmed.discard(key)
            self.pool.hangup(key, code=486)
            return
        # logged in once the phone's ACK confirms the call: a phone that cannot hear us
        # (no ACK) must never be given a customer
        self.pending_login[key] = (u["id"], u["name"])
        if key in self.confirmed:
            self.confirmed.discard(key)
            self._login(key)

    def _refused(self, key, user, source, why):
        n = self.login_guard.failed(source, self.clock.seconds())
        log.warn("agent login of {user} from {source} refused: {why} ({n} failure(s) from that address)",
                 user=user, source=source, why=why, n=n)
        self.records.audit(f"phone:{source}", "user.login-refused", f"user:{user}", why,
                           {"source": source, "failures_from_source": n})
        self.pool.hangup(key, code=403)

    def _login(self, key):
        uid, user = self.pending_login.pop(key)
        held = self.sessions.holder(uid)
        if held is not None and held[1] != key:
            loop, old = held
            if loop.floor.state_of(uid) in ("on_call", "wrap_up"):  # became busy while this one was checked
                log.warn("agent login of {user} refused: already on a call (one login per person)", user=user)
                self.pool.hangup(key, code=486)
                return
            loop.end_session(uid, f"logged in again on another phone (campaign {self.campaign['name']})")
        self.records.agent_events([self.floor.login(uid, self.cid, self.records.now(), name=user)])
        self.agent_legs[key] = uid
        self.agent_of_user[uid] = key
        self.sessions.open(uid, self.owner, key)
        self.on_login(uid)

    # -- sessions ending --------------------------------------------------------------
    def end_session(self, uid, reason):
        """The user logged in on another phone: this session ends now (logged out with
        ``reason``, the old phone hung up; its ``ended`` later changes nothing)."""
        key = self.agent_of_user.pop(uid, None)
        if key is None:
            return
        self.agent_legs.pop(key, None)
        self.sessions.close(uid, key)
        if self.floor.state_of(uid) in ("ready", "paused"):
            self.records.agent_events([self.floor.logout(uid, self.records.now(), reason=reason)])
        log.warn("agent {uid}: session on campaign {camp} ended: {why}", uid=uid, camp=self.campaign["name"],
                 why=reason)
        try:
            self.pool.hangup(key)
        except KeyError:
            pass

    def _gone(self, key):
        """The agent's phone hung up: the loop ends their call in progress and closes
        their wrap-up ("other", ``on_gone``); the agent is logged out."""
        uid = self.agent_legs.pop(key)
        if self.agent_of_user.get(uid) == key:
            del self.agent_of_user[uid]
        self.sessions.close(uid, key)
        self.on_gone(uid, key)
        if self.floor.state_of(uid) != "logged_out":
            self.records.agent_events([self.floor.logout(uid, self.records.now(), reason="phone hung up")])

    def logout(self, uid):
        """The agent asks to log out (ready or paused): the phone's leg is hung up and
        its ``ended`` logs the agent out. Returns the result text."""
        state = self.floor.state_of(uid)
        if state not in ("ready", "paused"):
            return f"refused: agent is {state.replace('_', ' ')}; log out when ready or paused"
        key = self.agent_of_user.get(uid)
        if key is not None:
            self.pool.hangup(key)
        return "done: logged out"
