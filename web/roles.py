"""What each role may do in the browser. One table; the handlers ask :func:`may`.

owner       everything of its account: campaigns, lists, and the people (invite, roles,
            passwords, agent PINs, disable)
manager     campaigns and their lists: create, edit, start/pause/finish, upload, results
compliance  sees the campaigns, their previews, dry runs and results (its own screens:
            rules, DNC lists, audit, come with the compliance part of the issue)
supervisor  sees the campaigns and their results (wallboards come later)
agent       no campaign screens (the agent console comes later)
"""

from campaigns.model import ROLES  # noqa: F401 (the roles, in the order screens list them)

PERMISSIONS = {
    "campaigns.view": ("owner", "manager", "compliance", "supervisor"),
    "campaigns.screening": ("owner", "manager", "compliance"),  # preview, dry run, error reports
    "campaigns.edit": ("owner", "manager"),
    "users.manage": ("owner",),
}


def may(role, permission):
    return role in PERMISSIONS[permission]


def home(role):
    """Where a role lands after logging in."""
    return "/campaigns" if may(role, "campaigns.view") else "/me"
