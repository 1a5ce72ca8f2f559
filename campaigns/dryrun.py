"""Dry run: walk a campaign through virtual time with the rules engine and report,
hour by hour, how many leads would be dialable and why the others would not.

Rules that do not depend on time (DNC, number type, lifeline...) are judged once per
lead; the time-dependent ones (hours, holidays, zone) are judged once per distinct
(zones, states, lead zone) key per hour, so a million leads cost little per hour.
Frequency caps and multi-line exclusion depend on the calls actually placed, which a
dry run does not place: they are judged against the history as it stands."""

import collections
import datetime as _dt

from core.errors import InputError
from core.timeutil import check_instant, shown
from rules.engine import Screener

from .leads import _lead_rows, lead_of
from .store import get_campaign

TIME_CATEGORIES = frozenset({"hours", "holiday"})
MAX_HOURS = 24 * 31
MAX_STEP = 1440  # minutes: one sample a day


def parse_step(step):
    """--step: whole minutes, 1..MAX_STEP (rules work in whole minutes). InputError."""
    text = str(step).strip()
    if isinstance(step, bool) or not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_STEP:
        raise InputError(f"--step {shown(step)}: give whole minutes between 1 and {MAX_STEP}")
    return int(text)


def dry_run(store, campaign, frm, to, now, step_minutes=60, account=None):
    """Per sample instant from ``frm`` to ``to`` (instants in years MIN_YEAR..MAX_YEAR, at
    most MAX_HOURS apart) every ``step_minutes`` (whole minutes, 1..MAX_STEP): the
    leads dialable then and why the others are not."""
    from rules.service import load_context
    step_minutes = parse_step(step_minutes)
    frm, to = check_instant(frm, "--from"), check_instant(to, "--to")
    if to <= frm:
        raise InputError("--to must be after --from")
    steps = int((to - frm) / _dt.timedelta(minutes=step_minutes))
    if steps > MAX_HOURS * 60 // step_minutes:
        raise InputError(f"a dry run covers at most {MAX_HOURS // 24} days")
    camp = get_campaign(store, campaign, account)
    campaign = camp["name"]
    ctx = load_context(store, now, camp["region"], camp["id"])
    rows = _lead_rows(store, camp["id"], statuses=("new", "retry", "callback", "reserved"))
    sc0 = Screener(ctx, frm)
    static = collections.Counter()  # (key, static categories) -> count
    reps = {}
    for row in rows:
        lead = lead_of(row)
        v = sc0.evaluate(lead)
        static_cats = tuple(sorted({r.category for r in v.reasons if r.category not in TIME_CATEGORIES}))
        key = (v.zones, lead.facts.state, lead.state, lead.zone, lead.facts.region)
        static[(key, static_cats)] += 1
        reps.setdefault(key, lead)
    hours = []
    t = frm
    while t < to:
        sc = Screener(ctx, t)
        time_cats = {}
        for key, lead in reps.items():
            v = sc.evaluate(lead)
            time_cats[key] = tuple(sorted({r.category for r in v.reasons if r.category in TIME_CATEGORIES}))
        dialable = 0
        blocked = collections.Counter()
        for (key, scats), n in static.items():
            cats = set(scats) | set(time_cats[key])
            if not cats:
                dialable += n
            for c in cats:
                blocked[c] += n
        hours.append({"at": t.strftime("%Y-%m-%dT%H:%MZ"), "dialable": dialable, "blocked": dict(blocked.most_common())})
        t += _dt.timedelta(minutes=step_minutes)
    return {"campaign": campaign, "from": frm.strftime("%Y-%m-%dT%H:%MZ"), "to": to.strftime("%Y-%m-%dT%H:%MZ"),
            "leads": len(rows), "distinct_time_keys": len(reps), "hours": hours}
