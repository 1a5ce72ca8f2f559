"""Screening a list file without importing it: the batch form of the engine,
summarised for people (`dialer screen FILE`)."""

import collections

from core.errors import InputError
from core.timeutil import utc
from rules.engine import Lead
from rules.service import check_numbers

from .files import open_table
from .leads import resolve_mapping


def read_leads(path, region="US", mapping=None):
    with open_table(str(path)) as table:
        fmap = resolve_mapping(table.header, mapping, table.source_header)
        leads = [Lead(phone=_get(cells, fmap, "phone") or "", state=_get(cells, fmap, "state"),
                      zone=_get(cells, fmap, "zone"), business=_get(cells, fmap, "business"), region=region)
                 for _, cells in table.rows]
    if not leads:
        raise InputError(f"{path} has a header but no rows")
    return leads


def _get(cells, fmap, field):
    cols = fmap.get(field)
    return " ".join(cells[i].strip() for i in cols if cells[i].strip()) or None if cols else None


def screen_file(store, path, now, at=None, region="US", campaign=None, examples=3, mapping=None, account=None):
    """Screen a list as ``campaign`` (name within ``account``), else ``account``, else the
    installation's only account sees it: its company DNC list and call history."""
    leads = read_leads(path, region, mapping)
    at = utc(at) if at is not None else utc(now)
    verdicts = check_numbers(store, None, now, at=at, region=region, campaign=campaign, leads=leads, account=account)
    by_cat = collections.Counter()
    ex = collections.defaultdict(list)
    groups = collections.Counter()
    for v in verdicts:
        for r in v.reasons:
            by_cat[r.category] += 1
            if len(ex[r.category]) < examples:
                ex[r.category].append({"input": v.input, "number": v.number, "rule": r.rule, "detail": r.detail})
        for g in v.groups:
            groups[g] += 1
    multi = {g: n for g, n in groups.items() if n > 1}
    allowed = sum(1 for v in verdicts if v.allowed)
    return {
        "file": str(path), "at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "leads": len(verdicts), "allowed": allowed,
        "blocked": len(verdicts) - allowed, "blocked_by_category": dict(by_cat.most_common()),
        "multiline_groups": len(multi), "multiline_leads": sum(multi.values()),
        "rulesets": sorted({v.ruleset for v in verdicts if v.ruleset}),
        "examples": dict(ex),
    }
