"""The owner's account screens: the account page (links to its people, numbers, trunks
and billing), the numbers (caller IDs: list with what uses each, add, remove), the trunks
(list, add, remove, and "check registration": one REGISTER from a SIP worker of its
own, measured, with the 100 ms alert) and a read-only billing overview.

Handlers are thin: each calls the library function the matching CLI command calls
(``dialer.numbers``, ``dialer.trunks``, ``billing.overview``), off the reactor through
``self.stores``. The registration check is the one exception to "one call": its SIP
part runs ON the reactor, without blocking it (``dialer.trunks.register_once`` spawns a
worker process and waits for its events), between a read (the trunk) and a write (the
outcome recorded). ``dialer.trunks.check_trunk``, which ``dialer trunk check`` calls,
runs the same three steps on a reactor of its own; it cannot run in a thread of this
process (a Twisted reactor installs its signal handlers, SIGCHLD included, from the main
thread only).

Every trunk and number is looked up within the session's account: another account's
names answer 404 and change nothing. Passwords of trunks are never sent back.
"""

from core.errors import DialerError, InputError

from . import sessions
from .base import Refused, _arg, app, guard

CHECK_TIMEOUT_S = 5.0
CHECKS_AT_ONCE = 2     # registration checks running at once (each a SIP worker process)


class AccountScreens:
    # ------------------------------------------------------------------ the account page
    @app.route("/account", methods=["GET"])
    @guard("account.manage")
    async def account_page(self, request, sess):
        from campaigns.store import show_account
        acc = await self.stores.read(show_account, sess["account_id"])
        return self.render(request, "account.html", sess, acc=acc)

    # ------------------------------------------------------------------ numbers
    @app.route("/account/numbers", methods=["GET"])
    @guard("account.manage")
    async def numbers_page(self, request, sess):
        return await self._numbers_page(request, sess)

    async def _numbers_page(self, request, sess, status=200, error=None, done=None, form=None):
        from dialer.numbers import numbers_view
        view = await self.stores.read(numbers_view, sess["account_id"])
        return self.render(request, "numbers.html", sess, status, view=view, error=error, done=done,
                           form=form or {"region": "US"})

    @app.route("/account/numbers", methods=["POST"])
    @guard("account.manage")
    async def number_add(self, request, sess):
        from dialer.numbers import add_number
        form = {k: _arg(request, k, "") for k in ("number", "label", "region")}
        try:
            out = await self.stores.write(add_number, sess["account_id"], form["number"], self.now(),
                                          sessions.actor(sess), region=form["region"] or "US", label=form["label"])
        except InputError as e:
            return await self._numbers_page(request, sess, 400, error=str(e), form=form)
        return await self._numbers_page(request, sess, done=f"{out['number']} added.")

    @app.route("/account/numbers/remove", methods=["POST"])
    @guard("account.manage")
    async def number_remove(self, request, sess):
        from dialer.numbers import remove_number
        try:
            out = await self.stores.write(remove_number, sess["account_id"], _arg(request, "number", ""), self.now(),
                                          sessions.actor(sess))
        except InputError as e:
            return await self._numbers_page(request, sess, 409, error=str(e))
        return await self._numbers_page(request, sess, done=f"{out['number']} removed.")

    # ------------------------------------------------------------------ trunks
    @app.route("/account/trunks", methods=["GET"])
    @guard("account.manage")
    async def trunks_page(self, request, sess):
        return await self._trunks_page(request, sess)

    async def _trunks_page(self, request, sess, status=200, error=None, form=None):
        from dialer.numbers import numbers_view
        from dialer.trunks import list_trunks
        rows = await self.stores.read(list_trunks, sess["account_id"])
        numbers = (await self.stores.read(numbers_view, sess["account_id"]))["numbers"]
        return self.render(request, "trunks.html", sess, status, trunks=rows, numbers=numbers, error=error,
                           form=form or {"cps": "10"})

    @app.route("/account/trunks", methods=["POST"])
    @guard("account.manage")
    async def trunk_add(self, request, sess):
        from dialer.trunks import add_trunk
        form = {k: _arg(request, k, "") for k in ("name", "proxy", "username", "realm", "cps", "caller_id")}
        form["register"] = _arg(request, "register", "") == "yes"
        try:
            out = await self.stores.write(
                add_trunk, sess["account_id"], form["name"], form["proxy"], self.now(), sessions.actor(sess),
                username=form["username"], password=_arg(request, "password", "") or None, realm=form["realm"],
                register=form["register"], cps=form["cps"] or "10", caller_id=form["caller_id"] or None)
        except InputError as e:
            return await self._trunks_page(request, sess, 400, error=str(e), form=form)  # the password is not sent back
        return self.redirect(request, f"/account/trunks/{out['name']}")

    @app.route("/account/trunks/<name>", methods=["GET"])
    @guard("account.manage")
    async def trunk_page(self, request, sess, name):
        return await self._trunk_page(request, sess, name)

    async def _trunk_page(self, request, sess, name, status=200, error=None, check=None, check_error=None):
        from dialer.trunks import ALERT_MS, show_trunk
        t = await self.stores.read(show_trunk, sess["account_id"], name)
        return self.render(request, "trunk.html", sess, status, t=t, error=error, check=check,
                           check_error=check_error, alert_ms=ALERT_MS)

    @app.route("/account/trunks/<name>/remove", methods=["POST"])
    @guard("account.manage")
    async def trunk_remove(self, request, sess, name):
        from dialer.trunks import remove_trunk
        try:
            await self.stores.write(remove_trunk, sess["account_id"], name, self.now(), sessions.actor(sess))
        except InputError as e:
            return await self._trunk_page(request, sess, name, 409, error=str(e))
        return self.redirect(request, "/account/trunks")

    @app.route("/account/trunks/<name>/check", methods=["POST"])
    @guard("account.manage")
    async def trunk_check(self, request, sess, name):
        """One REGISTER from a SIP worker of its own, measured: the answer waits for it
        (at most CHECK_TIMEOUT_S for the registrar, plus the worker's start)."""
        from dialer.trunks import check_trunk_finish, check_trunk_prepare, not_registering, register_once
        account, trunk = await self.stores.read(check_trunk_prepare, sess["account_id"], name)  # 404: not ours
        if not trunk.register:
            return await self._trunk_page(request, sess, name, check=not_registering(account, trunk))
        running = self.__dict__.setdefault("_trunk_checks", set())
        if trunk.id in running:
            raise Refused(409, f"A registration check of trunk {trunk.name} is already running: wait for its answer.")
        if len(running) >= CHECKS_AT_ONCE:
            raise Refused(503, "Other registration checks are running: try again in a few seconds.")
        running.add(trunk.id)
        try:
            outcome = await register_once(self.reactor, trunk, timeout=CHECK_TIMEOUT_S)
            try:
                check = await self.stores.write(check_trunk_finish, account, trunk, outcome)
            except DialerError as e:      # the registration failed (recorded): its cause
                return await self._trunk_page(request, sess, name, check_error=str(e))
        finally:
            running.discard(trunk.id)
        return await self._trunk_page(request, sess, name, check=check)

    # ------------------------------------------------------------------ billing (read only)
    @app.route("/account/billing", methods=["GET"])
    @guard("account.manage")
    async def billing_page(self, request, sess):
        from billing.money import fmt
        from billing.overview import overview
        out = await self.stores.read(overview, sess["account_id"], self.now())
        return self.render(request, "billing.html", sess, b=out, money=fmt)
