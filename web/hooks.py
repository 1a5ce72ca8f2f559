"""The owner's Webhooks screen: the account's subscriptions (add with a secret shown
once, send a test event, rotate the secret, disable/enable, remove) and the delivery
log (event, attempt, status code, latency, next retry, error) with "redeliver".

Handlers are thin: each calls the ``dialer.webhooks`` function the matching ``dialer
webhook`` command calls, off the reactor through ``self.stores``. Every subscription
and delivery is looked up within the session's account: another account's ids answer
404 and change nothing. The deliveries themselves are sent by the worker of ``dialer
web`` / ``dialer run`` (``dialer.webhooks.Deliverer``), not by these pages.
"""

from core.errors import DialerError, NotFound
from core.outbox import EVENT_TYPES

from . import sessions
from .base import _arg, app, guard

STATE_CLASS = {"delivered": "active", "pending": "notice", "failed": "suspended", "cancelled": ""}


def webhooks_view(store, account, subscription=None, limit=50):
    """What the screen shows: the subscriptions and the delivery log (of one
    subscription when given)."""
    from dialer.webhooks import delivery_log, get_subscription, list_subscriptions
    sub = get_subscription(store, account, subscription) if subscription is not None else None
    return {"subscriptions": list_subscriptions(store, account), "subscription": sub,
            "log": delivery_log(store, account, subscription, limit)}


class HookScreens:
    @app.route("/webhooks", methods=["GET"])
    @guard("webhooks.manage")
    async def webhooks_page(self, request, sess):
        return await self._webhooks_page(request, sess)

    async def _webhooks_page(self, request, sess, status=200, error=None, shown=None, done=None, form=None,
                             subscription=None):
        view = await self.stores.read(webhooks_view, sess["account_id"], subscription)
        return self.render(request, "webhooks.html", sess, status, view=view, error=error, shown=shown, done=done,
                           form=form or {"url": "", "label": "", "events": list(EVENT_TYPES)},
                           event_types=EVENT_TYPES, state_class=STATE_CLASS)

    @app.route("/webhooks", methods=["POST"])
    @guard("webhooks.manage")
    async def webhook_add(self, request, sess):
        from dialer.webhooks import add_subscription
        events = [v.decode("utf-8", "replace") for v in request.args.get(b"events", [])]
        form = {"url": _arg(request, "url", ""), "label": _arg(request, "label", ""), "events": events}
        try:
            out = await self.stores.write(add_subscription, sess["account_id"], form["url"], events, self.now(),
                                          sessions.actor(sess), label=form["label"])
        except DialerError as e:
            return await self._webhooks_page(request, sess, 400, error=str(e), form=form)
        return await self._webhooks_page(request, sess, shown=out)

    @app.route("/webhooks/<int:sid>", methods=["GET"])
    @guard("webhooks.manage")
    async def webhook_page(self, request, sess, sid):
        return await self._webhooks_page(request, sess, subscription=sid)

    @app.route("/webhooks/<int:sid>/<any(test,rotate,disable,enable,remove):action>", methods=["POST"])
    @guard("webhooks.manage")
    async def webhook_action(self, request, sess, sid, action):
        from dialer.webhooks import remove_subscription, rotate_secret, send_test, set_active
        now, who, acc = self.now(), sessions.actor(sess), sess["account_id"]
        try:
            if action == "test":
                out = await self.stores.write(send_test, acc, sid, now, who)
                return await self._webhooks_page(request, sess, subscription=sid,
                                                 done=f"Test event {out['event_id']} queued.")
            if action == "rotate":
                out = await self.stores.write(rotate_secret, acc, sid, now, who)
                return await self._webhooks_page(request, sess, subscription=sid, shown=out)
            if action == "remove":
                out = await self.stores.write(remove_subscription, acc, sid, now, who)
                return await self._webhooks_page(request, sess, done=f"Webhook {out['id']} removed "
                                                                      f"({out['cancelled']} pending deliveries cancelled).")
            await self.stores.write(set_active, acc, sid, action == "enable", now, who, _arg(request, "reason", ""))
        except DialerError as e:
            if isinstance(e, NotFound):
                raise
            return await self._webhooks_page(request, sess, 409, error=str(e), subscription=sid)
        return await self._webhooks_page(request, sess, subscription=sid, done=f"Webhook {sid} {action}d.")

    @app.route("/webhooks/deliveries/<int:did>/redeliver", methods=["POST"])
    @guard("webhooks.manage")
    async def webhook_redeliver(self, request, sess, did):
        from dialer.webhooks import redeliver
        try:
            out = await self.stores.write(redeliver, sess["account_id"], did, self.now(), sessions.actor(sess))
        except DialerError as e:
            if isinstance(e, NotFound):
                raise
            return await self._webhooks_page(request, sess, 409, error=str(e))
        return await self._webhooks_page(request, sess, done=f"Event {out['event_id']} queued again "
                                                             f"(delivery {out['delivery']}).")
