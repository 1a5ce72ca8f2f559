"""What every page module shares: the one Klein route table (:data:`app`), the
:func:`guard` every page but the login page goes through, and :class:`Base`, the
plumbing (clock, templates, JSON, redirects, session cookie) of :class:`web.app.WebApp`.

Each screen module (``web.app`` for campaigns and people, ``web.compliance``,
``web.account``, ``web.api``...) defines a mixin class whose handlers are routed on
:data:`app`; ``web.app.WebApp`` combines them.
"""

import datetime as _dt
import functools
import json
import pathlib

import jinja2
from klein import Klein
from twisted.internet import defer
from twisted.logger import Logger

from core.errors import DialerError, NotFound

from . import roles, sessions
from .live import Hub
from .uploads import Uploads

HERE = pathlib.Path(__file__).resolve().parent
COOKIE = b"dialer_session"
LOGIN_COOKIE = b"dialer_login"  # the login form's own CSRF token (double submit): no session yet
SAFE_METHODS = (b"GET", b"HEAD")
MAX_UPLOAD = 512 * 1024 * 1024

log = Logger(namespace="web")
app = Klein()  # the one route table: every screen module routes its handlers here


class Refused(Exception):
    """A request refused before its handler ran: (HTTP status, message)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def _arg(request, name, default=None):
    vals = request.args.get(name.encode())
    if not vals:
        return default
    v = vals[0]
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def _fetch(request):
    """A request made by the page's scripts (answered in JSON, never redirected)."""
    return request.getHeader("x-requested-with") == "fetch"


def _own_origin(request):
    host = request.getHeader("host") or ""
    return ("https://" if request.isSecure() else "http://") + host


def check_origin(request):
    """A state-changing request must come from our own pages: its Origin (or, without
    one, its Referer) names this server. Neither header: the CSRF token decides."""
    origin = request.getHeader("origin")
    if origin is not None:
        if origin != _own_origin(request):
            raise Refused(403, "This request came from another site and was refused.")
        return
    referer = request.getHeader("referer")
    if referer is not None and not (referer == _own_origin(request) or referer.startswith(_own_origin(request) + "/")):
        raise Refused(403, "This request came from another site and was refused.")


def guard(permission=None, must_change_ok=False):
    """Wrap a handler ``fn(self, request, sess, **kw)`` (async): session, timeouts,
    CSRF and Origin on state-changing methods, role."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(self, request, **kw):
            return defer.ensureDeferred(self._guarded(fn, permission, must_change_ok, request, kw))
        return wrapper
    return deco


class Base:
    app = app

    def __init__(self, reactor, stores, idle_s=sessions.IDLE_S, absolute_s=sessions.ABSOLUTE_S):
        self.reactor, self.stores = reactor, stores
        self.idle_s, self.absolute_s = idle_s, absolute_s
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True)
        self.env.filters["pct"] = lambda x: "—" if x is None else f"{100 * float(x):.2f} %"
        self.throttle = sessions.LoginThrottle()
        self.hub = Hub(reactor, stores, COOKIE, idle_s, absolute_s)  # the live channel (/live)
        self.uploads = Uploads(stores, self.hub)

    # ------------------------------------------------------------------ plumbing
    def now(self):
        return _dt.datetime.fromtimestamp(self.reactor.seconds(), _dt.timezone.utc)

    def render(self, request, template, sess=None, status=200, **ctx):
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return self.env.get_template(template).render(sess=sess, may=roles.may, **ctx).encode("utf-8")

    def json(self, request, obj, status=200):
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(obj, default=str).encode()

    @staticmethod
    def redirect(request, url):
        request.setResponseCode(303)
        request.setHeader(b"location", url.encode())
        return b""

    def _set_session_cookie(self, request, token):
        request.addCookie(COOKIE, token.encode(), path=b"/", httpOnly=True, secure=request.isSecure() or None,
                          sameSite="lax")

    def _clear_session_cookie(self, request):
        request.addCookie(COOKIE, b"", path=b"/", httpOnly=True, secure=request.isSecure() or None, sameSite="lax",
                          max_age=b"0")

    def _to_login(self, request, why):
        if request.getCookie(COOKIE):
            self._clear_session_cookie(request)
        if _fetch(request):
            return self.json(request, {"error": "not logged in", "ended": why}, 401)
        return self.redirect(request, "/login" + (f"?ended={why}" if why in sessions.ENDED else ""))

    def refused(self, request, sess, status, message):
        if _fetch(request):
            return self.json(request, {"error": message}, status)
        return self.render(request, "error.html", sess, status, status_code=status, message=message)

    async def _guarded(self, fn, permission, must_change_ok, request, kw):
        now = self.now()
        token = (request.getCookie(COOKIE) or b"").decode("ascii", "replace")
        sess = await self.stores.read(sessions.find_session, token) if token else None
        st = sessions.state(sess, now, self.idle_s, self.absolute_s)
        if st == "expired":
            await self.stores.write(sessions.end, sess, "expired", now)
        if st != "open":
            return self._to_login(request, st if sess else None)
        try:
            if request.method not in SAFE_METHODS:
                check_origin(request)
                given = request.getHeader("x-csrf-token") or _arg(request, "csrf_token")
                if not sessions.csrf_ok(sess["csrf_token"], given):
                    raise Refused(403, "The form's security token is missing or wrong: reload the page and try again.")
            if sess["must_change_password"] and not must_change_ok:
                return self.redirect(request, "/password")
            why = roles.refusal(sess, permission)
            if why is not None:
                raise Refused(403, why)
            if sessions.needs_touch(sess, now):
                await self.stores.write(sessions.touch, sess["id"], now)
            return await fn(self, request, sess, **kw)
        except Refused as e:
            return self.refused(request, sess, e.status, str(e))
        except NotFound:
            return self.refused(request, sess, 404, "Not found.")
        except DialerError as e:
            return self.refused(request, sess, 400, str(e))
