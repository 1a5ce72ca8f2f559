"""The web application: klein routes over the library functions the CLI calls.

Each handler does one library call (off the reactor, through ``web.db.Stores``) and
renders a Jinja2 template (autoescaped). :func:`guard` wraps every page but the login
page: it finds the session, ends it when a timeout passed, checks the role, and for
every state-changing request the ``Origin`` and the session's CSRF token.

Every object is loaded through the caller's account: campaigns by id within it
(``core.tenancy.campaign_row``), imports by id within it, users by name within it; a
NotFound answers 404 (the same page whether the id exists in another account or not).
"""

import datetime as _dt
import json
import secrets

from twisted.internet import defer
from twisted.web.static import File

from core.errors import InputError, NotFound

from . import roles, sessions
from .account import AccountScreens
from .api import Api
from .compliance import ComplianceScreens
from .hooks import HookScreens
from .tokens import TokenScreens
from .base import COOKIE, HERE, LOGIN_COOKIE, MAX_UPLOAD, Base, Refused, _arg, app, check_origin, guard, log


class WebApp(ComplianceScreens, AccountScreens, HookScreens, Api, TokenScreens, Base):
    """Every screen: the campaign and people pages below, plus the mixins of the other
    screen modules (listed before :class:`Base` in the bases)."""

    # ------------------------------------------------------------------ static files
    @app.route("/static/", branch=True)
    def static(self, request):
        return _Static(str(HERE / "static"))

    # ------------------------------------------------------------------ the live channel
    @app.route("/live", methods=["GET"])
    def live(self, request):
        """The WebSocket of ``web.live`` (autobahn takes the connection over; it checks
        the Origin and the session cookie itself, at the handshake)."""
        return self.hub.resource

    # ------------------------------------------------------------------ logins
    @app.route("/login", methods=["GET"])
    def login_page(self, request):
        return self._login_form(request, message=sessions.ENDED.get(_arg(request, "ended", "")))

    def _login_form(self, request, status=200, error=None, message=None, account="", user=""):
        token = (request.getCookie(LOGIN_COOKIE) or b"").decode("ascii", "replace")
        if len(token) < 32:
            token = secrets.token_urlsafe(32)
            request.addCookie(LOGIN_COOKIE, token.encode(), path=b"/login", httpOnly=True,
                              secure=request.isSecure() or None, sameSite="strict")
        return self.render(request, "login.html", None, status, login_csrf=token, error=error, message=message,
                           account=account, user=user)

    @app.route("/login", methods=["POST"])
    def login(self, request):
        return defer.ensureDeferred(self._login(request))

    async def _login(self, request):
        from campaigns.users import check_login
        account, user, password = _arg(request, "account", ""), _arg(request, "user", ""), _arg(request, "password", "")
        try:
            check_origin(request)
            cookie = (request.getCookie(LOGIN_COOKIE) or b"").decode("ascii", "replace")
            if len(cookie) < 32 or not sessions.csrf_ok(cookie, _arg(request, "login_csrf")):
                raise Refused(403, "The form's security token is missing or wrong: reload the page and try again.")
        except Refused as e:
            return self._login_form(request, e.status, error=str(e), account=account, user=user)
        source = request.getClientAddress().host if hasattr(request.getClientAddress(), "host") else "unknown"
        key = self.throttle.user_key(account, user)
        wait = self.throttle.wait(source, key, self.reactor.seconds())
        if wait > 0:
            return self._login_form(request, 429, error=f"Too many wrong passwords: try again in {int(wait) + 1} s.",
                                     account=account, user=user)
        row = await self.stores.read(check_login, account, user, password)
        if row is None:
            self.throttle.failed(source, key, self.reactor.seconds())
            log.info("web login refused for {key} from {source}", key=key, source=source)
            return self._login_form(request, 401, error="Wrong account, user or password.", account=account, user=user)
        self.throttle.succeeded(source, key)
        token, sess = await self.stores.write(sessions.open_session, row, source, self.now())
        self.hub.end_sessions(sess["user_id"], "elsewhere", keep=sess["id"])  # the other browsers are told now
        self._set_session_cookie(request, token)
        return self.redirect(request, "/password" if sess["must_change_password"] else roles.home(sess["role"]))

    @app.route("/logout", methods=["POST"])
    @guard(must_change_ok=True)
    async def logout(self, request, sess):
        await self.stores.write(sessions.end, sess, "logout", self.now())
        self.hub.end_session(sess["id"], "logout")
        self._clear_session_cookie(request)
        return self.redirect(request, "/login?ended=logout")

    @app.route("/session/state", methods=["GET"])
    def session_state(self, request):
        """For the page's poll: is this browser's session still open, and if not, why."""
        async def go():
            token = (request.getCookie(COOKIE) or b"").decode("ascii", "replace")
            sess = await self.stores.read(sessions.find_session, token) if token else None
            st = sessions.state(sess, self.now(), self.idle_s, self.absolute_s)
            return self.json(request, {"state": st if sess else "none"})
        return defer.ensureDeferred(go())

    @app.route("/password", methods=["GET"])
    @guard(must_change_ok=True)
    async def password_page(self, request, sess):
        return self.render(request, "password.html", sess, error=None)

    @app.route("/password", methods=["POST"])
    @guard(must_change_ok=True)
    async def password_change(self, request, sess):
        from campaigns.users import check_login, check_password, set_password
        current, new, again = (_arg(request, k, "") for k in ("current", "new", "again"))
        try:
            if new != again:
                raise InputError("the two new passwords differ")
            check_password(new)
            if await self.stores.read(check_login, sess["account_name"], sess["user_name"], current) is None:
                raise InputError("the current password is wrong")
            await self.stores.write(set_password, sess["account_id"], sess["user_name"], new, self.now(),
                                    sessions.actor(sess), keep_session=sess["id"])
        except InputError as e:
            return self.render(request, "password.html", sess, 400, error=str(e))
        self.hub.end_sessions(sess["user_id"], "password-changed", keep=sess["id"])
        return self.redirect(request, roles.home(sess["role"]))

    @app.route("/", methods=["GET"])
    @guard()
    async def home(self, request, sess):
        return self.redirect(request, roles.home(sess["role"]))

    @app.route("/me", methods=["GET"])
    @guard()
    async def me(self, request, sess):
        return self.render(request, "me.html", sess)

    # ------------------------------------------------------------------ campaigns
    @app.route("/campaigns", methods=["GET"])
    @guard("campaigns.view")
    async def campaigns(self, request, sess):
        from campaigns.store import list_campaigns
        rows = await self.stores.read(list_campaigns, sess["account_id"])
        return self.render(request, "campaigns.html", sess, campaigns=rows)

    def _form(self, request):
        return {k: _arg(request, k, "") for k in ("name", "region", "caller_id", "hours", "dial_mode", "power_ratio",
                                                    "abandon_target", "retry")}

    @app.route("/campaigns/new", methods=["GET"])
    @guard("campaigns.edit")
    async def campaign_new(self, request, sess):
        from campaigns.store import list_numbers
        numbers = await self.stores.read(list_numbers, sess["account_id"])
        return self.render(request, "campaign_form.html", sess, camp=None, numbers=numbers, error=None,
                           form={"region": "US", "dial_mode": "predictive", "abandon_target": "0.03"})

    @app.route("/campaigns/new", methods=["POST"])
    @guard("campaigns.edit")
    async def campaign_create(self, request, sess):
        from campaigns.store import create_campaign
        f = self._form(request)
        try:
            camp = await self.stores.write(
                create_campaign, f["name"], sess["account_id"], self.now(), sessions.actor(sess),
                region=f["region"] or "US", caller_id=f["caller_id"] or None, hours=f["hours"] or None,
                dial_mode=f["dial_mode"] or "predictive", power_ratio=f["power_ratio"] or None,
                abandon_target=f["abandon_target"] or "0.03", retry=f["retry"] or None)
        except InputError as e:
            return self.render(request, "campaign_form.html", sess, 400, camp=None, numbers=[], error=str(e), form=f)
        return self.redirect(request, f"/campaigns/{camp['id']}")

    @app.route("/campaigns/<int:cid>", methods=["GET"])
    @guard("campaigns.view")
    async def campaign(self, request, sess, cid):
        return await self._campaign_page(request, sess, cid)

    async def _campaign_page(self, request, sess, cid, status=200, error=None):
        from campaigns.store import show_campaign
        camp = await self.stores.read(show_campaign, cid, sess["account_id"])
        return self.render(request, "campaign.html", sess, status, camp=camp, error=error)

    @app.route("/campaigns/<int:cid>/edit", methods=["GET"])
    @guard("campaigns.edit")
    async def campaign_edit_page(self, request, sess, cid):
        from campaigns.store import get_campaign
        camp = await self.stores.read(get_campaign, cid, sess["account_id"])
        return self.render(request, "campaign_form.html", sess, camp=camp, numbers=[], error=None,
                           form=_campaign_form_values(camp))

    @app.route("/campaigns/<int:cid>/edit", methods=["POST"])
    @guard("campaigns.edit")
    async def campaign_edit(self, request, sess, cid):
        from campaigns.store import get_campaign, update_campaign
        f = self._form(request)
        try:
            await self.stores.write(update_campaign, cid, self.now(), sessions.actor(sess), account=sess["account_id"],
                                    caller_id=f["caller_id"], hours=f["hours"], dial_mode=f["dial_mode"] or None,
                                    power_ratio=f["power_ratio"] or None, abandon_target=f["abandon_target"] or None,
                                    retry=f["retry"] or None)
        except InputError as e:
            camp = await self.stores.read(get_campaign, cid, sess["account_id"])
            return self.render(request, "campaign_form.html", sess, 400, camp=camp, numbers=[], error=str(e), form=f)
        return self.redirect(request, f"/campaigns/{cid}")

    @app.route("/campaigns/<int:cid>/<any(start,pause,finish):action>", methods=["POST"])
    @guard("campaigns.edit")
    async def campaign_state(self, request, sess, cid, action):
        from billing.standing import change_state
        try:
            out = await self.stores.write(change_state, cid, action, self.now(), sessions.actor(sess),
                                          _arg(request, "reason", ""), account=sess["account_id"])
        except InputError as e:
            return await self._campaign_page(request, sess, cid, 409, error=str(e))
        self.publish_state(sess["account_id"], cid, out, sess["user_name"])
        return self.redirect(request, f"/campaigns/{cid}")

    def publish_state(self, account_id, cid, out, by):
        """A campaign's state change (``change_state``'s answer), made: to the live
        channel's ``campaign.<id>`` and ``campaigns`` topics of its account."""
        msg = {"type": "campaign.state", "campaign": cid, "name": out["campaign"], "state": out["state"],
               "was": out["was"], "by": by}
        self.hub.publish(account_id, f"campaign.{cid}", msg)
        self.hub.publish(account_id, "campaigns", msg)

    @app.route("/campaigns/<int:cid>/greeting", methods=["POST"])
    @guard("campaigns.edit")
    async def campaign_greeting(self, request, sess, cid):
        from campaigns.store import set_greeting
        data = request.args.get(b"greeting", [b""])[0]
        try:
            if not data:
                raise InputError("choose a WAV file (8 or 16 kHz, mono, 16-bit PCM)")
            await self.stores.write(_with_temp_file, data, set_greeting, cid, self.now(), sessions.actor(sess),
                                    account=sess["account_id"])
        except InputError as e:
            return await self._campaign_page(request, sess, cid, 400, error=str(e))
        return self.redirect(request, f"/campaigns/{cid}")

    # ------------------------------------------------------------------ lists
    @app.route("/campaigns/<int:cid>/upload", methods=["GET"])
    @guard("campaigns.edit")
    async def upload_page(self, request, sess, cid):
        from campaigns.leads import campaign_imports
        imports = await self.stores.read(campaign_imports, cid, sess["account_id"])
        camp = await self.stores.read(_campaign_name, cid, sess["account_id"])
        return self.render(request, "upload.html", sess, camp=camp, imports=imports)

    @app.route("/campaigns/<int:cid>/uploads", methods=["POST"])
    @guard("campaigns.edit")
    async def upload(self, request, sess, cid):
        """The file is the request's body (the page's script sends it as it is, with its
        name in the query): no multipart parsing, and Twisted keeps a large body in a
        temporary file, not in memory."""
        await self.stores.read(_campaign_name, cid, sess["account_id"])  # 404 before anything is saved
        size = int(request.getHeader("content-length") or 0)
        if size <= 0:
            raise Refused(400, "The file is empty.")
        if size > MAX_UPLOAD:
            raise Refused(413, f"The file is larger than {MAX_UPLOAD // 2**20} MiB.")
        dedupe = _arg(request, "dedupe", "campaign")
        if dedupe not in ("list", "campaign", "account", "none"):
            raise Refused(400, "dedupe must be list, campaign, account or none")
        job = await self.uploads.start(request.content, _arg(request, "name", "list.csv"), sess["account_id"], cid,
                                       self.now(), sessions.actor(sess), mapping=_arg(request, "map", "").strip(),
                                       dedupe=dedupe, region=(_arg(request, "region", "US") or "US"))
        return self.json(request, {**job.as_dict(), "status_url": f"/campaigns/{cid}/uploads/{job.token}"}, 202)

    @app.route("/campaigns/<int:cid>/uploads/<token>", methods=["GET"])
    @guard("campaigns.edit")
    async def upload_status(self, request, sess, cid, token):
        job = self.uploads.get(token, sess["account_id"], cid)
        if job is None:
            raise NotFound(token)
        out = job.as_dict()
        if job.import_id is not None:
            out["import_url"] = f"/campaigns/{cid}/imports/{job.import_id}"
        return self.json(request, out)

    @app.route("/campaigns/<int:cid>/imports/<int:iid>", methods=["GET"])
    @guard("campaigns.view")
    async def import_page(self, request, sess, cid, iid):
        from campaigns.leads import import_status
        job = await self.stores.read(import_status, iid, sess["account_id"])
        camp = await self.stores.read(_campaign_name, cid, sess["account_id"])
        if job["campaign"] != camp["name"]:
            raise NotFound(iid)
        summary = await self.stores.read(_import_summary, iid, sess["account_id"])
        return self.render(request, "import.html", sess, camp=camp, job=job, summary=summary)

    @app.route("/campaigns/<int:cid>/imports/<int:iid>/errors.csv", methods=["GET"])
    @guard("campaigns.screening")
    async def import_errors(self, request, sess, cid, iid):
        from campaigns.leads import errors_csv, import_errors
        camp = await self.stores.read(_campaign_name, cid, sess["account_id"])
        rows = await self.stores.read(import_errors, iid, sess["account_id"])
        if not await self.stores.read(_import_in_campaign, iid, camp["id"]):
            raise NotFound(iid)
        request.setHeader(b"content-type", b"text/csv; charset=utf-8")
        request.setHeader(b"content-disposition", f'attachment; filename="import-{iid}-errors.csv"'.encode())
        return errors_csv(rows).encode("utf-8")

    @app.route("/campaigns/<int:cid>/preview", methods=["GET"])
    @guard("campaigns.screening")
    async def preview(self, request, sess, cid):
        from campaigns.leads import preview
        camp = await self.stores.read(_campaign_name, cid, sess["account_id"])
        out = await self.stores.read(preview, cid, self.now(), account=sess["account_id"])
        return self.render(request, "preview.html", sess, camp=camp, p=out)

    @app.route("/campaigns/<int:cid>/dry-run", methods=["GET"])
    @guard("campaigns.screening")
    async def dry_run(self, request, sess, cid):
        from campaigns.dryrun import dry_run
        from core.timeutil import parse_instant
        camp = await self.stores.read(_campaign_name, cid, sess["account_id"])
        start = self.now().replace(minute=0, second=0, microsecond=0)
        frm_text, to_text = _arg(request, "from", ""), _arg(request, "to", "")
        try:
            frm = parse_instant(frm_text, "from", bounded=True) if frm_text else start
            to = parse_instant(to_text, "to", bounded=True) if to_text else frm + _dt.timedelta(hours=24)
            out = await self.stores.read(dry_run, cid, frm, to, self.now(), 60, account=sess["account_id"])
        except InputError as e:
            return self.render(request, "dryrun.html", sess, 400, camp=camp, out=None, error=str(e),
                               frm=frm_text, to=to_text)
        return self.render(request, "dryrun.html", sess, camp=camp, out=out, error=None,
                           frm=out["from"], to=out["to"])

    @app.route("/campaigns/<int:cid>/results", methods=["GET"])
    @guard("campaigns.view")
    async def results(self, request, sess, cid):
        out = await self.stores.read(_results, cid, sess["account_id"])
        return self.render(request, "results.html", sess, **out)

    # ------------------------------------------------------------------ people (owners)
    @app.route("/users", methods=["GET"])
    @guard("users.manage")
    async def users(self, request, sess):
        return await self._users_page(request, sess)

    async def _users_page(self, request, sess, status=200, error=None, shown=None):
        from campaigns.users import people
        rows = await self.stores.read(people, sess["account_id"])
        return self.render(request, "users.html", sess, status, users=rows, error=error, shown=shown,
                           roles=roles.ROLES)

    @app.route("/users/invite", methods=["POST"])
    @guard("users.manage")
    async def user_invite(self, request, sess):
        from campaigns.users import invite_user
        return await self._user_action(request, sess, invite_user, _arg(request, "name", ""),
                                       _arg(request, "role", ""), self.now(), sessions.actor(sess))

    @app.route("/users/<name>/<any(role,password,pin,disable,enable):action>", methods=["POST"])
    @guard("users.manage")
    async def user_change(self, request, sess, name, action):
        from campaigns.users import disable_user, enable_user, reset_password, set_role
        from dialer.agents import set_pin
        now, who = self.now(), sessions.actor(sess)
        if action == "role":
            return await self._user_action(request, sess, set_role, name, _arg(request, "role", ""), now, who)
        if action == "password":
            return await self._user_action(request, sess, reset_password, name, now, who)
        if action == "pin":
            return await self._user_action(request, sess, set_pin, name, _arg(request, "pin", ""), now, who)
        if action == "disable":
            return await self._user_action(request, sess, disable_user, name, now, who, _arg(request, "reason", ""))
        return await self._user_action(request, sess, enable_user, name, now, who)

    async def _user_action(self, request, sess, fn, *args):
        try:
            out = await self.stores.write(fn, sess["account_id"], *args)
        except InputError as e:
            return await self._users_page(request, sess, status=400, error=str(e))
        if isinstance(out, dict) and out.get("user"):  # a role, password or disable may have ended their sessions
            self.hub.recheck_user(sess["account_id"], out["user"])
        return await self._users_page(request, sess, shown=out)


class _Static(File):
    """The static files, without directory listings."""

    def directoryListing(self):
        from twisted.web.resource import NoResource
        return NoResource()


def _campaign_form_values(camp):
    hours = camp["hours"] or {}
    return {"name": camp["name"], "region": camp["region"], "caller_id": camp["caller_id"] or "",
            "hours": ";".join(f"{d}={','.join(w)}" for d, w in hours.items()), "dial_mode": camp["dial_mode"],
            "power_ratio": camp["power_ratio"] or "", "abandon_target": camp["abandon_target"],
            "retry": ",".join(f"{k}={v['delay_minutes']}m/{v['max_attempts']}" for k, v in camp["retry_rules"].items())}


def _campaign_name(store, cid, account_id):
    """id, name, state of a campaign of the account (NotFound otherwise)."""
    from campaigns.store import get_campaign
    c = get_campaign(store, cid, account_id)
    return {"id": c["id"], "name": c["name"], "state": c["state"]}


def _import_in_campaign(store, iid, campaign_id):
    return store.query_one("SELECT 1 AS x FROM imports WHERE id = ? AND campaign_id = ?", (iid, campaign_id)) is not None


def _import_summary(store, iid, account_id):
    """The summary a finished import stored (its rejections by reason), or None."""
    row = store.query_one("SELECT summary FROM imports WHERE id = ? AND account_id = ?", (iid, account_id))
    return json.loads(row["summary"]) if row and row["summary"] else None


def _results(store, cid, account_id):
    """A campaign's results: its leads by status (``campaign show``) and its calls since
    it was created (``dialer.cdr.campaign_stats``, the reports' one definition)."""
    from campaigns.store import show_campaign
    from core.timeutil import from_iso
    from dialer.cdr import campaign_stats
    camp = show_campaign(store, cid, account_id)
    return {"camp": camp, "stats": campaign_stats(store, cid, from_iso(camp["created_at"]), account=account_id)}


def _with_temp_file(store, data, fn, *args, **kw):
    """``fn(store, first_arg, path, ...)`` with ``data`` saved to a temporary file beside
    the database (a greeting upload: ``set_greeting`` takes a path)."""
    import tempfile
    base = store.files_dir / "uploads"
    base.mkdir(exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=base, suffix=".wav") as f:
        f.write(data)
        f.flush()
        return fn(store, args[0], f.name, *args[1:], **kw)
