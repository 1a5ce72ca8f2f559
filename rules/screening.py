"""Screening a list: the batch form of the engine, summarised for people."""

import collections
import csv
import io

from dialer.errors import InputError
from dialer.timeutil import utc

from .engine import Lead
from .service import check_numbers

PHONE_COLUMNS = ("phone", "number", "phone_number", "telephone", "tel")
STATE_COLUMNS = ("state", "st")
ZONE_COLUMNS = ("zone", "timezone", "time_zone", "tz")
BUSINESS_COLUMNS = ("business", "company", "business_id", "company_name")


def read_leads(path, region="US"):
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise InputError(f"file not found: {path}") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = raw.decode("utf-16")
    else:
        if b"\x00" in raw[:4096]:
            raise InputError(f"{path} looks binary, not a CSV list")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
    if not text.strip():
        raise InputError(f"{path} is empty")
    sample = text[:8192]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = csv.reader(io.StringIO(text), dialect)
    header = [h.strip().lower() for h in next(rows)]

    def col(names):
        for n in names:
            if n in header:
                return header.index(n)
        return None

    ip = col(PHONE_COLUMNS)
    if ip is None:
        raise InputError(f"{path}: no phone column in the header (looked for {', '.join(PHONE_COLUMNS)}); "
                         f"columns are: {', '.join(header)}")
    ist, iz, ib = col(STATE_COLUMNS), col(ZONE_COLUMNS), col(BUSINESS_COLUMNS)
    leads = []
    for r in rows:
        if not any(c.strip() for c in r):
            continue
        get = lambda i: (r[i].strip() or None) if i is not None and i < len(r) else None
        leads.append(Lead(phone=get(ip) or "", state=get(ist), zone=get(iz), business=get(ib), region=region))
    if not leads:
        raise InputError(f"{path} has a header but no rows")
    return leads


def screen_file(store, path, now, at=None, region="US", campaign=None, examples=3):
    leads = read_leads(path, region)
    at = utc(at) if at is not None else utc(now)
    verdicts = check_numbers(store, None, now, at=at, region=region, campaign=campaign, leads=leads)
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
