"""The rules engine: a pure function of a lead, an instant and a context.

``evaluate(lead, at, context)`` and ``screen(leads, at, context)`` do no I/O and
read no clock: everything they need (rule sets, DNC lists, lifeline list, call
history, calls live now) is in the context, which the store layer loads.
Every failing rule is listed; every verdict names the rule-set version used.
"""

import bisect
import datetime as _dt
import functools
from dataclasses import dataclass, field, replace

import holidays as _holidays
import pytz

from core.timeutil import utc

from .numbers import normalise
from .ruleset import fmt_window

CATEGORIES = (
    "invalid", "emergency", "special", "lifeline", "toll_free", "premium", "dnc", "hours",
    "holiday", "timezone_unknown", "multiline", "frequency", "caller_id",
)


@dataclass(frozen=True, slots=True)
class Reason:
    rule: str
    category: str
    detail: str

    def as_dict(self):
        return {"rule": self.rule, "category": self.category, "detail": self.detail}


@dataclass(slots=True)
class Verdict:
    """One decision. Treat as immutable (plain slots: frozen construction is slow)."""

    input: str
    number: object  # E.164 or None
    allowed: bool
    reasons: tuple  # blocking reasons, every one that failed
    at: _dt.datetime
    ruleset: object = None  # "US@3": the rule-set version that decided
    zones: tuple = ()
    window: tuple = ()  # per zone: {"zone", "local", "windows"}
    flags: tuple = ()  # non-blocking findings (multi-line runs in a batch)
    groups: tuple = ()  # business groups the number belongs to
    value: object = None  # the number as an int (E.164 digits), for batch passes

    @property
    def categories(self):
        return tuple(r.category for r in self.reasons)

    def as_dict(self):
        return {
            "input": self.input,
            "number": self.number,
            "allowed": self.allowed,
            "reasons": [r.as_dict() for r in self.reasons],
            "flags": [r.as_dict() for r in self.flags],
            "groups": list(self.groups),
            "zones": list(self.zones),
            "window": [dict(w) for w in self.window],
            "ruleset": self.ruleset,
            "at": self.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


@dataclass(frozen=True, slots=True)
class Lead:
    """A number to call and what the list says about the callee."""

    phone: str
    state: object = None  # two-letter state from the list
    zone: object = None  # IANA zone from the list
    business: object = None  # business id / company name from the list
    region: object = None  # default region for this lead's number
    facts: object = None  # NumberFacts computed at import, if any
    groups: tuple = ()  # group keys assigned at import (multi-line runs)


@dataclass(frozen=True)
class Registry:
    """One imported national registry: membership test and its date."""

    jurisdiction: str
    as_of: _dt.date
    numbers: object  # supports ``int in numbers``; None when it could not be read
    label: str = "national registry"
    error: object = None  # why the snapshot could not be read: every number is blocked


@dataclass(frozen=True)
class DncLists:
    registries: dict = field(default_factory=dict)  # jurisdiction -> Registry
    company: frozenset = frozenset()  # E.164 values (int)
    company_prefixes: tuple = ()  # digit strings (E.164 without +)
    campaign: frozenset = frozenset()
    campaign_prefixes: tuple = ()
    # the versions of the company and campaign lists these are (``dnc_lists.version``;
    # None: no such list, 0: not versioned yet), recorded with each call's evidence
    company_version: object = None
    campaign_version: object = None


@dataclass(frozen=True)
class CampaignRules:
    name: str
    hours: object = None  # 7-tuple of windows or None: narrows, never widens
    registry_waived: frozenset = frozenset()  # jurisdictions whose registry requirement is waived
    caller_id: object = None
    own_numbers: frozenset = frozenset()  # the account's DIDs, E.164


@dataclass
class Context:
    rulesets: dict  # jurisdiction -> CompiledRuleSet
    default_region: str = "US"
    dnc: DncLists = field(default_factory=DncLists)
    lifeline: dict = field(default_factory=dict)  # e164 or "REGION:digits" -> (category, name)
    campaign: object = None  # CampaignRules
    history: dict = field(default_factory=dict)  # int value -> [(datetime, outcome)], oldest first
    live_groups: frozenset = frozenset()
    live_numbers: frozenset = frozenset()  # int values with a call ringing or connected

    def __post_init__(self):
        self.by_region = {}
        for rs in self.rulesets.values():
            for r in rs.regions:
                self.by_region[r] = rs
        self.special_codes = {r: rs.special_codes for r, rs in self.by_region.items()}
        self.set_live(self.live_numbers, self.live_groups)

    def set_live(self, numbers, groups):
        """Replace the calls live now (ringing or connected): E.164 values and group keys."""
        self.live_numbers = set(numbers)
        self.live_groups = set(groups)
        live = {}
        for v in self.live_numbers:
            live.setdefault(v // 10000, []).append(v % 10000)
        self.live_by_exchange = {k: sorted(v) for k, v in live.items()}

    def mark_live(self, value, groups=()):
        """One more live call (e.g. a lead just reserved in the same batch)."""
        if value not in self.live_numbers:
            self.live_numbers.add(value)
            bisect.insort(self.live_by_exchange.setdefault(value // 10000, []), value % 10000)
        self.live_groups.update(groups)

    def with_(self, **changes):
        """A shallow copy with some fields replaced, without recomputing the rest."""
        import copy
        c = copy.copy(self)
        for k, v in changes.items():
            setattr(c, k, v)
        if "live_numbers" in changes or "live_groups" in changes:
            c.set_live(c.live_numbers, c.live_groups)
        return c


@functools.lru_cache(maxsize=512)
def _holiday_calendar(calendar, subdiv, year):
    """Public holidays of one calendar (and state) for one year, from the holidays package."""
    return _holidays.country_holidays(calendar, subdiv=subdiv, years=year)


_WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _intersect(a, b):
    """Intersection of two sorted window tuples; None means unrestricted."""
    if a is None:
        return b
    if b is None:
        return a
    out = []
    for s1, e1 in a:
        for s2, e2 in b:
            s, e = max(s1, s2), min(e1, e2)
            if s < e:
                out.append((s, e))
    return tuple(sorted(out))


class Screener:
    """Evaluates leads at one instant against one context. Caches what depends only
    on (rule set, zones, states) for that instant, so a batch costs little per lead."""

    def __init__(self, context, at):
        self.ctx = context
        self.at = utc(at)
        self._local = {}
        self._time = {}
        self._registry = {}
        self._labels = {r: rs.label for r, rs in context.by_region.items()}
        self._prefixes = tuple(context.dnc.company_prefixes) + tuple(context.dnc.campaign_prefixes)
        # the lists' membership tests, the fastest form each offers (a NumberSet's bitmap
        # method; the frozenset's own), and the prefixes by length when they are many
        self._in_company = _member(context.dnc.company)
        self._in_campaign = _member(context.dnc.campaign)
        self._prefix_match = _prefix_matcher(self._prefixes)
        self._profiles = {}
        # membership tests of the registries, the fastest form each offers
        self._in_registry = {j: getattr(r.numbers, "contains_int", r.numbers.__contains__)
                             for j, r in context.dnc.registries.items() if r.numbers is not None}
        camp = context.campaign
        self._cli = tuple(caller_id_reasons(camp.caller_id, camp.own_numbers, context)) if camp is not None else ()

    # -- pieces ---------------------------------------------------------------------
    def _local_time(self, zone):
        lt = self._local.get(zone)
        if lt is None:
            lt = self.at.astimezone(pytz.timezone(zone))
            self._local[zone] = lt
        return lt

    def _holiday(self, calendar, subdiv, day):
        return _holiday_calendar(calendar, subdiv, day.year).get(day)

    def same_minute(self, at):
        """Move this screener to ``at`` if it falls in the same UTC minute: every rule
        works in whole minutes, so the per-exchange caches stay valid. False otherwise."""
        at = utc(at)
        if at.replace(second=0, microsecond=0) != self.at.replace(second=0, microsecond=0):
            return False
        self.at = at
        return True

    def _time_reasons(self, rs, zones, states, lead_zone_error):
        """Hours, holiday and zone reasons plus the windows that applied."""
        key = (rs.jurisdiction, zones, states, lead_zone_error)
        hit = self._time.get(key)
        if hit is not None:
            return hit
        reasons = []
        window = []
        if lead_zone_error:
            reasons.append(Reason(f"{rs.jurisdiction}-TZ", "timezone_unknown", lead_zone_error))
        if not zones:
            reasons.append(Reason(f"{rs.jurisdiction}-TZ", "timezone_unknown",
                                  "the callee's time zone is unknown (no zone for this number and none on the lead)"))
        camp = self.ctx.campaign
        for zone in zones:
            lt = self._local_time(zone)
            wd = lt.weekday()
            minute = lt.hour * 60 + lt.minute
            wins = rs.hours[wd]
            applied = [rs.jurisdiction] if wins is not None else []
            for st in states:
                sr = rs.states.get(st)
                if sr is None:
                    continue
                if sr.hours is not None and sr.hours[wd] is not None:
                    wins = _intersect(wins, sr.hours[wd])
                    applied.append(st)
            if camp is not None and camp.hours is not None and camp.hours[wd] is not None:
                wins = _intersect(wins, camp.hours[wd])
                applied.append(f"campaign {camp.name}")
            shown = "any time" if wins is None else (", ".join(fmt_window(w) for w in wins) or "no calls")
            window.append({
                "zone": zone, "local": lt.strftime("%Y-%m-%dT%H:%M%z"),
                "windows": [] if wins is None else [fmt_window(w) for w in wins],
                "rules": applied,
            })
            if wins is not None and not any(s <= minute < e for s, e in wins):
                rule = rs.rule_id("hours")
                for st in states:
                    sr = rs.states.get(st)
                    if sr is not None and sr.hours is not None and sr.hours[wd] is not None:
                        rule = sr.hours_rule
                if not wins:
                    detail = f"no calls on {_WEEKDAY_NAMES[wd]} in {zone} ({', '.join(applied)})"
                else:
                    detail = (f"{lt.strftime('%H:%M')} {_WEEKDAY_NAMES[wd]} in {zone} is outside "
                              f"{shown} ({', '.join(applied)})")
                reasons.append(Reason(rule, "hours", detail))
            day = lt.date()
            if rs.holiday_ban and rs.holiday_calendar:
                name = self._holiday(rs.holiday_calendar, None, day)
                if name:
                    reasons.append(Reason(rs.rule_id("holidays"), "holiday",
                                          f"{day} is {name} in {zone}: no calls on public holidays"))
            for st in states:
                sr = rs.states.get(st)
                if sr is not None and sr.holiday_ban and rs.holiday_calendar:
                    name = self._holiday(rs.holiday_calendar, st, day)
                    if name:
                        reasons.append(Reason(sr.holiday_rule, "holiday",
                                              f"{day} is {name} in {st} ({zone}): no calls on holidays there"))
        hit = (tuple(_dedupe(reasons)), tuple(window))
        self._time[key] = hit
        return hit

    def _registry_reasons(self, rs):
        hit = self._registry.get(rs.jurisdiction)
        if hit is not None:
            return hit
        out = []
        camp = self.ctx.campaign
        waived = camp is not None and rs.jurisdiction in camp.registry_waived
        reg = self.ctx.dnc.registries.get(rs.jurisdiction)
        rule = rs.rule_id("registry")
        if rs.registry_required and not waived:
            if reg is not None and reg.error:
                out.append(Reason(rule + "-UNREADABLE", "dnc", f"the {rs.jurisdiction} DNC registry cannot be read "
                                                               f"({reg.error}): re-import it"))
            elif reg is None:
                out.append(Reason(rule + "-MISSING", "dnc", f"no {rs.jurisdiction} national DNC registry has been imported; "
                                               f"import one (dialer dnc import FILE --source national) before calling"))
            else:
                age = (self.at.date() - reg.as_of).days
                if age > rs.registry_max_age_days:
                    out.append(Reason(rule + "-STALE", "dnc", f"the {rs.jurisdiction} DNC registry is {age} days old "
                                                   f"(as of {reg.as_of}; at most {rs.registry_max_age_days}): refresh it"))
        hit = tuple(out)
        self._registry[rs.jurisdiction] = hit
        return hit

    def _dnc_reasons(self, rs, value, e164, out):
        """Which DNC lists hold the number (the registry's own status is added apart)."""
        d = self.ctx.dnc
        reg = d.registries.get(rs.jurisdiction)
        if reg is not None and reg.numbers is not None and value in reg.numbers:
            out.append(Reason(rs.rule_id("registry"), "dnc", f"on the {rs.jurisdiction} {reg.label} (as of {reg.as_of})"))
        if value in d.company:
            out.append(Reason("DNC-COMPANY", "dnc", "on the company do-not-call list"))
        elif d.company_prefixes and e164[1:].startswith(d.company_prefixes):
            p = next(p for p in d.company_prefixes if e164[1:].startswith(p))
            out.append(Reason("DNC-COMPANY-PREFIX", "dnc", f"matches company do-not-call prefix +{p}*"))
        if value in d.campaign:
            out.append(Reason("DNC-CAMPAIGN", "dnc", "on this campaign's do-not-call list"))
        elif d.campaign_prefixes and e164[1:].startswith(d.campaign_prefixes):
            p = next(p for p in d.campaign_prefixes if e164[1:].startswith(p))
            out.append(Reason("DNC-CAMPAIGN-PREFIX", "dnc", f"matches campaign do-not-call prefix +{p}*"))
        return out

    def _frequency_reasons(self, rs, hist, states):
        out = []
        caps = [rs.frequency] if rs.frequency else []
        for st in states:
            sr = rs.states.get(st)
            if sr is not None and sr.frequency is not None:
                caps.append(sr.frequency)
        for cap in caps:
            since = self.at - _dt.timedelta(hours=cap.window_hours)
            n = sum(1 for t, _ in hist if since < t <= self.at)
            if n >= cap.max_calls:
                out.append(Reason(cap.rule, "frequency",
                                  f"{n} calls in the last {cap.window_hours:g} h (at most {cap.max_calls})"))
        for hours, outcome, key, what in (
            (rs.abandon_lockout_hours, "abandoned", "abandon_lockout", "an abandoned call"),
            (rs.machine_lockout_hours, "machine", "machine_lockout", "an answering machine"),
        ):
            if not hours:
                continue
            since = self.at - _dt.timedelta(hours=hours)
            last = [t for t, o in hist if o == outcome and since < t <= self.at]
            if last:
                until = max(last) + _dt.timedelta(hours=hours)
                out.append(Reason(rs.rule_id(key), "frequency",
                                  f"{what} at {max(last):%Y-%m-%d %H:%MZ}: no call for {hours:g} h (until {until:%Y-%m-%d %H:%MZ})"))
        return out

    def _live_reasons(self, rs, value, groups):
        out = []
        ctx = self.ctx
        for g in groups:
            if g in ctx.live_groups:
                out.append(Reason(rs.rule_id("multiline"), "multiline",
                                  f"another line of business group {g} has a live call"))
                break
        lines = ctx.live_by_exchange.get(value // 10000)
        if lines:
            line = value % 10000
            i = bisect.bisect_left(lines, line - rs.multiline_stride)
            if i < len(lines) and lines[i] <= line + rs.multiline_stride:
                other = lines[i]
                what = "this number already has a live call" if other == line else \
                    f"a live call to +{value // 10000}{other:04d} (a near-consecutive line)"
                out.append(Reason(rs.rule_id("multiline"), "multiline", what))
        return out

    # -- the verdict ------------------------------------------------------------------
    def facts(self, lead):
        if lead.facts is not None:
            return lead.facts
        return normalise(lead.phone, lead.region or self.ctx.default_region, self.ctx.special_codes)

    def evaluate(self, lead):
        if lead.__class__ is str:
            lead = Lead(lead)
        ctx = self.ctx
        f = lead.facts if lead.facts is not None else normalise(
            lead.phone, lead.region or ctx.default_region, ctx.special_codes)
        if f.emergency or f.short_code is not None or f.e164 is None:
            region = f.region or (lead.region or ctx.default_region)
            rs = ctx.by_region.get(region)
            reasons = [] if rs is not None else [_no_ruleset(region)]
            return self._not_a_number(f, rs, region, self._labels.get(region), reasons)
        prof = f.profile
        pkey = (prof if prof is not None else (f.region, f.kind, f.zones, f.state), lead.state, lead.zone)
        p = self._profiles.get(pkey)
        if p is None:
            p = self._profile(f, lead, pkey)
        rs, label, reasons, timed, zones, window, states, in_registry = p
        value = f.value
        life = ctx.lifeline.get(f.e164)
        if life is not None:
            reasons = reasons + (Reason(f"{rs.jurisdiction if rs else f.region}-LIFELINE", "lifeline",
                                        f"{life[1]} ({life[0]}) is a life-line number"),)
        if rs is None:
            return Verdict(f.input, f.e164, False, reasons, self.at)
        if (self._in_company(value) or self._in_campaign(value) or (in_registry is not None and in_registry(value))
                or (self._prefixes and self._prefix_match(f.e164))):
            reasons = reasons + tuple(self._dnc_reasons(rs, value, f.e164, []))
        if timed:
            reasons = reasons + timed
        if ctx.history:
            hist = ctx.history.get(value)
            if hist:
                reasons = reasons + tuple(self._frequency_reasons(rs, hist, states))
        groups = lead.groups
        if lead.business:
            groups = groups + (business_group(lead.business),)
        if ctx.live_groups or ctx.live_numbers:
            live = self._live_reasons(rs, value, groups)
            if live:
                reasons = reasons + tuple(live)
        if self._cli:
            reasons = reasons + self._cli
        return Verdict(f.input, f.e164, not reasons, reasons, self.at, label, zones, window, (), groups, value)

    def _profile(self, f, lead, pkey):
        """What every number of one exchange (and one lead state/zone) shares at this
        instant: rule set, number-type and registry-status reasons, zones, hours."""
        ctx = self.ctx
        region = f.region or (lead.region or ctx.default_region)
        rs = ctx.by_region.get(region)
        if rs is None:
            p = (None, None, (_no_ruleset(region),), (), (), (), (), None)
            self._profiles[pkey] = p
            return p
        reasons = []
        cat = rs.blocked_types.get(f.kind)
        if cat is not None:
            reasons.append(Reason(rs.rule_id("number_types"), cat,
                                  f"{f.kind.replace('_', '-')} number: the called party pays or it is a high-cost destination"))
        status = self._registry.get(rs.jurisdiction)
        if status is None:
            status = self._registry_reasons(rs)
        reasons.extend(status)
        # zones: the number's, and the lead's when the list gives one (all must allow)
        zones = f.zones
        zone_error = None
        if lead.zone:
            if lead.zone in pytz.all_timezones_set:
                if lead.zone not in zones:
                    zones = tuple(sorted(zones + (lead.zone,)))
            else:
                zone_error = f"the lead's time zone {lead.zone!r} is not a time zone name"
        states = (f.state,) if f.state else ()
        if lead.state:
            ls = str(lead.state).strip().upper()
            if ls != f.state:
                states = tuple(sorted(states + (ls,)))
        t_reasons, window = self._time_reasons(rs, zones, states, zone_error)
        p = (rs, self._labels.get(region), tuple(reasons), t_reasons, zones, window, states,
             self._in_registry.get(rs.jurisdiction))
        self._profiles[pkey] = p
        return p

    def _not_a_number(self, f, rs, region, label, reasons):
        """Emergency numbers, short codes and invalid input: no further rule applies."""
        jur = rs.jurisdiction if rs is not None else region or "??"
        if f.emergency:
            what = f.short_code or f.input.strip()
            reasons.append(Reason(f"{jur}-EMERG", "emergency", f"{what} is or reaches an emergency number in {region}"))
        elif f.short_code is not None:
            reasons.append(Reason(f"{jur}-N11", "special", f"{f.short_code} is a service code (N11/short code)"))
        key = f.e164 if f.e164 is not None else (f"{region}:{f.short_code}" if f.short_code else None)
        life = self.ctx.lifeline.get(key) if key is not None else None
        if life is not None:
            reasons.append(Reason(f"{jur}-LIFELINE", "lifeline", f"{life[1]} ({life[0]}) is a life-line number"))
        if f.e164 is None and f.short_code is None:
            reasons.append(Reason("INVALID", "invalid", f.error or "not a valid phone number"))
        return Verdict(f.input, f.e164, False, tuple(reasons), self.at, ruleset=label)


def _member(numbers):
    """The membership test of a DNC list (a NumberSet or any set of ints)."""
    return getattr(numbers, "contains_int", None) or numbers.__contains__


_PREFIX_TUPLE_MAX = 16  # up to this many prefixes str.startswith(tuple) is fastest


def _prefix_matcher(prefixes):
    """f(e164) -> does the number start with one of ``prefixes`` (digits without '+')?
    Many prefixes: one set look-up per distinct prefix length, not one test each."""
    if len(prefixes) <= _PREFIX_TUPLE_MAX:
        return lambda e164: e164.startswith(prefixes, 1)
    pset = frozenset(prefixes)
    lengths = tuple(sorted({len(p) for p in pset}))
    return lambda e164: any(e164[1:1 + n] in pset for n in lengths)


def _no_ruleset(region):
    return Reason("NO-RULESET", "invalid", f"no rule set covers region {region}: add one before calling there")


def _dedupe(reasons):
    seen = set()
    out = []
    for r in reasons:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


def business_group(name):
    return "business:" + " ".join(str(name).lower().split())


def caller_id_reasons(caller_id, own_numbers, ctx):
    """Why a campaign with this caller ID may not start (empty: it may)."""
    if not caller_id:
        return [Reason("CALLER-ID", "caller_id", "the campaign has no caller ID")]
    f = normalise(caller_id, ctx.default_region)
    if f.e164 is None:
        return [Reason("CALLER-ID", "caller_id", f"caller ID {caller_id!r} is not a valid number: {f.error}")]
    out = []
    rs = ctx.by_region.get(f.region)
    rule = rs.rule_id("caller_id") if rs is not None else "CALLER-ID"
    if (rs is None or rs.caller_id_require_own) and f.e164 not in own_numbers:
        out.append(Reason(rule, "caller_id", f"caller ID {f.e164} is not one of the account's own numbers"))
    if rs is not None and f.kind in rs.caller_id_forbid_types:
        out.append(Reason(rule, "caller_id", f"caller ID {f.e164} is a {f.kind.replace('_', '-')} number, not allowed"))
    return out


def evaluate(lead, at, context):
    """The verdict for one lead (or number string) at instant ``at``."""
    return Screener(context, at).evaluate(lead)


def find_runs(values, stride, run_length):
    """Runs of near-consecutive numbers: same exchange (all digits but the last four),
    line numbers at most ``stride`` apart, at least ``run_length`` long.
    Returns {value: (first_value, last_value, count)} for the members of runs."""
    import numpy as np
    arr = np.fromiter(values, dtype=np.int64)
    if arr.size < run_length:
        return {}
    arr.sort()
    arr = arr[np.r_[True, arr[1:] != arr[:-1]]]
    ex = arr // 10000
    breaks = np.flatnonzero((np.diff(arr) > stride) | (ex[1:] != ex[:-1])) + 1
    starts = np.r_[0, breaks]
    ends = np.r_[breaks, arr.size]
    keep = (ends - starts) >= run_length
    out = {}
    for a, b in zip(starts[keep].tolist(), ends[keep].tolist()):
        members = arr[a:b].tolist()
        info = (members[0], members[-1], b - a)
        for v in members:
            out[v] = info
    return out


def run_group(first_value):
    return f"run:+{first_value}"


def screen(leads, at, context):
    """Verdicts for many leads at one instant, plus multi-line findings across them:
    runs of near-consecutive numbers and leads sharing a business are flagged
    (``flags``, ``groups``) so the dialer keeps one live call per group."""
    import gc
    sc = Screener(context, at)
    enabled = gc.isenabled()
    gc.disable()  # a million verdicts and no cycles: the collector would only rescan them
    try:
        verdicts = [sc.evaluate(ld if ld.__class__ is not str else Lead(ld)) for ld in leads]
        return flag_groups(verdicts, context)
    finally:
        if enabled:
            gc.enable()


def flag_groups(verdicts, context):
    by_rs = {}
    business = {}
    for i, v in enumerate(verdicts):
        if v.number is None or v.ruleset is None:
            continue
        by_rs.setdefault(v.ruleset, []).append(i)
        if v.groups:
            for g in v.groups:
                if g.startswith("business:"):
                    business.setdefault(g, []).append(i)
    extra = {}
    by_label = {rs.label: rs for rs in context.rulesets.values()}
    for label, idx in by_rs.items():
        rs = by_label[label]
        values = [verdicts[i].value if verdicts[i].value is not None else int(verdicts[i].number[1:]) for i in idx]
        runs = find_runs(values, rs.multiline_stride, rs.multiline_run)
        if not runs:
            continue
        for i, val in zip(idx, values):
            hit = runs.get(val)
            if hit is None:
                continue
            first, last, count = hit
            flag = Reason(rs.rule_id("multiline"), "multiline",
                          f"one of {count} near-consecutive numbers +{first}..+{last}: likely one business, "
                          f"one live call at a time")
            extra.setdefault(i, ([], []))
            extra[i][0].append(flag)
            extra[i][1].append(run_group(first))
    for g, idx in business.items():
        if len(idx) < 2:
            continue
        for i in idx:
            rs = by_label[verdicts[i].ruleset]
            extra.setdefault(i, ([], []))
            extra[i][0].append(Reason(rs.rule_id("multiline"), "multiline",
                                      f"{len(idx)} numbers of {g[9:]!r} in this batch: one live call at a time"))
    if not extra:
        return verdicts
    out = list(verdicts)
    for i, (flags, groups) in extra.items():
        v = out[i]
        out[i] = replace(v, flags=v.flags + tuple(flags), groups=tuple(dict.fromkeys(v.groups + tuple(groups))))
    return out


TIME_CATEGORIES = frozenset({"hours", "holiday", "frequency"})
# categories that no later instant can lift: the lead leaves the hopper for good
NEVER_CATEGORIES = frozenset({"invalid", "emergency", "special", "lifeline", "toll_free", "premium", "timezone_unknown"})


def is_campaign_wide(reason):
    """A reason that blocks every lead of the campaign alike (registry missing, stale or
    unreadable; caller ID), as opposed to something about this number."""
    return reason.rule.endswith(("-MISSING", "-STALE", "-UNREADABLE")) or reason.category == "caller_id"


def _window_starts(screener, zones, rs, states, days):
    """Instants (UTC) at which some calling window opens in any of ``zones`` during
    the next ``days`` local days."""
    out = set()
    camp = screener.ctx.campaign
    for zone in zones:
        tz = pytz.timezone(zone)
        local = screener.at.astimezone(tz)
        for d in range(days + 1):
            day = (local + _dt.timedelta(days=d)).date()
            wd = day.weekday()
            starts = set()
            for wins in [rs.hours[wd]] + [rs.states[s].hours[wd] for s in states
                                          if s in rs.states and rs.states[s].hours is not None] + \
                    ([camp.hours[wd]] if camp is not None and camp.hours is not None else []):
                if wins:
                    starts.update(s for s, _ in wins)
            starts.add(0)
            for m in starts:
                naive = _dt.datetime(day.year, day.month, day.day, m // 60, m % 60)
                try:
                    t = tz.localize(naive, is_dst=None)
                except (pytz.NonExistentTimeError, pytz.AmbiguousTimeError):
                    t = tz.localize(naive + _dt.timedelta(hours=1), is_dst=False)
                t = t.astimezone(_dt.timezone.utc)
                if t > screener.at:
                    out.add(t)
    return out


def next_allowed(lead, at, context, days=8):
    """The earliest instant after ``at`` when ``lead`` passes every time-dependent rule
    (hours, holidays, frequency caps and lockouts), or None if some other rule blocks it
    or nothing opens within ``days``. Pure: used to park leads until they may be called."""
    if lead.__class__ is str:
        lead = Lead(lead)
    sc = Screener(context, at)
    v = sc.evaluate(lead)
    if v.allowed:
        return sc.at
    if any(r.category not in TIME_CATEGORIES for r in v.reasons):
        return None
    f = sc.facts(lead)
    rs = context.by_region.get(f.region)
    states = tuple(z for z in ((f.state,) if f.state else ()) + ((str(lead.state).upper(),) if lead.state else ()))
    candidates = _window_starts(sc, v.zones, rs, states, days)
    hist = context.history.get(f.value) or ()
    for t, _ in hist:  # when an attempt leaves a cap's window or a lockout ends
        for hours in [rs.frequency.window_hours if rs.frequency else None, rs.abandon_lockout_hours,
                      rs.machine_lockout_hours] + [rs.states[s].frequency.window_hours for s in states
                                                   if s in rs.states and rs.states[s].frequency]:
            if hours:
                e = t + _dt.timedelta(hours=hours, seconds=1)
                if e > sc.at:
                    candidates.add(e)
    for t in sorted(candidates):
        if Screener(context, t).evaluate(lead).allowed:
            return t
    return None
