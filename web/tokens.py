"""The owner's API tokens page (``/tokens``): the account's tokens (name, role, when
made and by whom, last used, revoked), a new one (shown once), revoking one. The same
library functions as ``dialer account token create|list|revoke`` (``campaigns.tokens``)."""

from core.errors import InputError

from . import roles, sessions
from .base import _arg, app, guard


class TokenScreens:
    """Routes of the tokens page (a mixin of :class:`web.app.WebApp`)."""

    async def _tokens_page(self, request, sess, status=200, error=None, made=None, form=None):
        from campaigns.tokens import list_tokens
        rows = await self.stores.read(list_tokens, sess["account_id"])
        return self.render(request, "tokens.html", sess, status, tokens=rows, error=error, made=made,
                           roles=roles.ROLES, form=form or {"name": "", "role": "manager"})

    @app.route("/tokens", methods=["GET"])
    @guard("tokens.manage")
    async def tokens(self, request, sess):
        return await self._tokens_page(request, sess)

    @app.route("/tokens", methods=["POST"])
    @guard("tokens.manage")
    async def token_create(self, request, sess):
        from campaigns.tokens import create_token
        form = {"name": _arg(request, "name", ""), "role": _arg(request, "role", "")}
        try:
            made = await self.stores.write(create_token, sess["account_id"], form["name"], form["role"], self.now(),
                                           sessions.actor(sess))
        except InputError as e:
            return await self._tokens_page(request, sess, 400, error=str(e), form=form)
        return await self._tokens_page(request, sess, 201, made=made)

    @app.route("/tokens/<int:tid>/revoke", methods=["POST"])
    @guard("tokens.manage")
    async def token_revoke(self, request, sess, tid):
        from campaigns.tokens import revoke_token
        try:
            await self.stores.write(revoke_token, sess["account_id"], tid, self.now(), sessions.actor(sess),
                                    _arg(request, "reason", ""))
        except InputError as e:
            return await self._tokens_page(request, sess, 400, error=str(e))
        return self.redirect(request, "/tokens")
