"""What each role may do in the browser. One table; the handlers ask :func:`may`.

owner       everything of its account: campaigns, lists, and the people (invite, roles,
            passwords, agent PINs, disable), its numbers, trunks and billing overview
manager     campaigns and their lists: create, edit, start/pause/finish, upload, results
compliance  sees the campaigns, their previews, dry runs and results; the compliance
            screens (with the owner): rule sets read-only, registries' freshness, the
            account's DNC lists and waivers, its audit trail, "may this number be called"
supervisor  sees the campaigns and their results (wallboards come later)
agent       no campaign screens (the agent console comes later)
"""

from campaigns.model import ROLES  # noqa: F401 (the roles, in the order screens list them)

PERMISSIONS = {
    "campaigns.view": ("owner", "manager", "compliance", "supervisor"),
    "campaigns.screening": ("owner", "manager", "compliance"),  # preview, dry run, error reports
    "campaigns.edit": ("owner", "manager"),
    "users.manage": ("owner",),
    "webhooks.manage": ("owner",),  # webhooks: subscriptions, secrets, the delivery log
    "account.manage": ("owner",),  # numbers, trunks (check registration), billing overview
    # the compliance screens: rule sets (read), registries, the account's own DNC lists
    # and waivers, its audit trail, checks
    "compliance": ("owner", "compliance"),
    # what every account is held to (rule sets, life-line numbers, national
    # registries): only the installation's operator account (OPERATOR_ONLY)
    "rules.edit": ("owner", "compliance"),
    # the JSON API (web/api.py): an API token has one role and these permissions, like a
    # person; its DNC changes need "compliance", as in the browser
    "leads.view": ("owner", "manager", "compliance", "supervisor"),
    "leads.outcome": ("owner", "manager", "supervisor", "agent"),  # dispositions, callbacks
    "numbers.check": ("owner", "manager", "compliance", "supervisor", "agent"),  # rule and DNC checks
    "cdrs.view": ("owner", "manager", "compliance", "supervisor"),
    "tokens.manage": ("owner",),  # API tokens: make, list, revoke (the browser and the CLI only)
}
OPERATOR_ONLY = {"rules.edit"}


def may(role, permission, operator=False):
    """``operator``: the user's account is the installation's operator (the session's
    ``account_operator``), needed for the OPERATOR_ONLY permissions."""
    return role in PERMISSIONS[permission] and (permission not in OPERATOR_ONLY or bool(operator))


def refusal(sess, permission):
    """Why the session may not use ``permission`` (one line), or None."""
    if permission is None or may(sess["role"], permission, sess.get("account_operator")):
        return None
    if sess["role"] in PERMISSIONS[permission]:  # the role would do; the account is not the operator
        return ("Only the installation's operator account may change what every account is held to (rule sets, "
                "life-line numbers, national registries); your account sees them read-only.")
    return f"Your role ({sess['role']}) may not use this page."


def home(role):
    """Where a role lands after logging in."""
    return "/campaigns" if may(role, "campaigns.view") else "/me"
