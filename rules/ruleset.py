"""Rule sets: data a compliance officer edits, validated field by field, compiled
into the plain structures the engine reads.

A rule set is one jurisdiction (US federal + states, GB, TR, ...). Each rule is a
block under ``rules`` (or under ``states.XX`` for a state), carrying its
parameters and, beside them, the ``source`` and ``tag`` ([P] primary text, [S]
secondary, [I] inference) of its default. See ``rules/defaults/*.json``.
"""

import copy
import json
import re
from dataclasses import dataclass, field

import holidays as _holidays
import phonenumbers
import yaml

from dialer.errors import InputError

from .numbers import STATE_CODES, TYPE_NAMES

SCHEMA = 1
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
TAGS = ("P", "S", "I")

# rule key -> short code used in stable rule ids ("US-HOURS", "US-FL-FREQ")
RULE_CODES = {
    "hours": "HOURS",
    "holidays": "HOLIDAY",
    "registry": "DNC-NAT",
    "emergency": "EMERG",
    "special_codes": "N11",
    "lifeline": "LIFELINE",
    "number_types": "PAID",
    "multiline": "MULTI",
    "frequency": "FREQ",
    "abandon_lockout": "ABANDON-LOCKOUT",
    "machine_lockout": "AMD-LOCKOUT",
    "caller_id": "CLI",
    "ring": "RING",
    "abandon": "ABANDON",
}
STATE_RULES = ("hours", "holidays", "frequency")
BLOCK_CATEGORIES = ("toll_free", "premium")


class RuleSetError(InputError):
    code = "invalid-rule-set"


# ---------------------------------------------------------------------------------
# reading text with line numbers
# ---------------------------------------------------------------------------------

def _line_map(node, path=(), out=None):
    """Map field paths to 1-based line numbers from a YAML node tree."""
    if out is None:
        out = {}
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[path + (key,)] = k.start_mark.line + 1
            _line_map(v, path + (key,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_map(v, path + (i,), out)
    return out


def parse_text(text):
    """Parse rule-set text (JSON or YAML). Returns (data, lines) where ``lines`` maps
    field paths to line numbers. Raises RuleSetError naming the line."""
    if not text or not text.strip():
        raise RuleSetError("rule set is empty")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise RuleSetError(f"rule set is not valid JSON/YAML: {where}{e.problem or e}") from None
    except yaml.YAMLError as e:
        raise RuleSetError(f"rule set is not valid JSON/YAML: {e}") from None
    if not isinstance(data, dict):
        raise RuleSetError("rule set must be an object with 'jurisdiction', 'rules' and 'states'")
    return data, _line_map(node)


def _fmt_path(path):
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (("." if out else "") + str(p))
    return out or "(top)"


# ---------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------

class _Errors:
    def __init__(self, lines):
        self.lines = lines or {}
        self.items = []

    def add(self, path, msg):
        line = None
        p = tuple(path)
        while p and p not in self.lines:
            p = p[:-1]
        line = self.lines.get(p)
        where = f"line {line}, " if line else ""
        self.items.append(f"{where}field {_fmt_path(path)}: {msg}")


_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})$")


def parse_clock(text):
    m = _TIME_RE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a time (HH:MM)")
    h, mi = int(m.group(1)), int(m.group(2))
    if mi > 59 or h > 24 or (h == 24 and mi):
        raise ValueError(f"{text!r} is not a time of day (00:00 to 24:00)")
    return h * 60 + mi


def parse_window(text):
    """'08:00-21:00' -> (480, 1260): start inclusive, end exclusive, in minutes."""
    if not isinstance(text, str) or text.count("-") != 1:
        raise ValueError(f"{text!r} is not a window (HH:MM-HH:MM)")
    a, b = text.split("-")
    start, end = parse_clock(a), parse_clock(b)
    if start == 24 * 60:
        raise ValueError(f"{text!r} starts at 24:00")
    if end <= start:
        raise ValueError(f"{text!r} ends before it starts (windows may not cross midnight)")
    return start, end


def fmt_window(w):
    return "%02d:%02d-%02d:%02d" % (w[0] // 60, w[0] % 60, w[1] // 60, w[1] % 60)


def _expand_days(spec):
    spec = spec.strip().lower()
    if spec == "daily":
        return list(DAYS)
    if "-" in spec:
        a, b = spec.split("-", 1)
        if a not in DAYS or b not in DAYS:
            raise ValueError(f"{spec!r} is not a day range (e.g. mon-fri)")
        i, j = DAYS.index(a), DAYS.index(b)
        if j < i:
            raise ValueError(f"{spec!r}: a day range runs forward (e.g. mon-fri)")
        return list(DAYS[i:j + 1])
    if spec not in DAYS:
        raise ValueError(f"{spec!r} is not a day (mon..sun, a range like mon-fri, or daily)")
    return [spec]


def compile_windows(spec, errors=None, path=()):
    """{day-spec: [windows]} -> tuple of 7 entries: None (unrestricted) or a tuple of
    (start, end) minute pairs (empty tuple: no calls that day)."""
    week = [None] * 7
    if not isinstance(spec, dict):
        if errors is not None:
            errors.add(path, "must map days (mon..sun, mon-fri, daily) to lists of HH:MM-HH:MM windows")
            return tuple(week)
        raise ValueError("windows must map days to lists of HH:MM-HH:MM windows")
    for day_spec, wins in spec.items():
        p = path + (day_spec,)
        try:
            days = _expand_days(str(day_spec))
        except ValueError as e:
            errors.add(p, str(e))
            continue
        if wins in (None, "none", "closed"):
            wins = []
        if isinstance(wins, str):
            wins = [wins]
        if not isinstance(wins, list):
            errors.add(p, "must be a list of HH:MM-HH:MM windows ([] for no calls that day)")
            continue
        parsed = []
        for i, w in enumerate(wins):
            try:
                parsed.append(parse_window(w))
            except ValueError as e:
                errors.add(p + (i,), str(e))
        parsed.sort()
        for a, b in zip(parsed, parsed[1:]):
            if b[0] < a[1]:
                errors.add(p, f"windows {fmt_window(a)} and {fmt_window(b)} overlap")
        for d in days:
            i = DAYS.index(d)
            if week[i] is not None:
                errors.add(p, f"{d} is given twice")
            week[i] = tuple(parsed)
    return tuple(week)


def _check_keys(block, allowed, errors, path):
    for k in block:
        if k not in allowed and k not in ("source", "tag", "note"):
            errors.add(path + (k,), f"unknown field {k!r} (allowed: {', '.join(sorted(allowed))})")
    tag = block.get("tag")
    if tag is not None and tag not in TAGS:
        errors.add(path + ("tag",), f"tag must be one of {', '.join(TAGS)}")
    src = block.get("source")
    if src is not None and not isinstance(src, str):
        errors.add(path + ("source",), "source must be text")


def _need(block, key, kind, errors, path, minimum=None, required=True):
    if key not in block:
        if required:
            errors.add(path, f"missing field {key!r}")
        return None
    v = block[key]
    ok = {
        "bool": isinstance(v, bool),
        "int": isinstance(v, int) and not isinstance(v, bool),
        "number": isinstance(v, (int, float)) and not isinstance(v, bool),
        "str": isinstance(v, str),
        "list": isinstance(v, list),
        "dict": isinstance(v, dict),
    }[kind]
    if not ok:
        errors.add(path + (key,), f"must be a {dict(bool='true/false', int='whole number', number='number', str='text', list='list', dict='mapping')[kind]}")
        return None
    if minimum is not None and v < minimum:
        errors.add(path + (key,), f"must be at least {minimum}")
        return None
    return v


@dataclass(frozen=True)
class Frequency:
    max_calls: int
    window_hours: float
    rule: str


@dataclass(frozen=True)
class StateRules:
    code: str
    hours: object = None  # 7-tuple or None
    hours_rule: str = ""
    holiday_ban: bool = False
    holiday_rule: str = ""
    frequency: object = None


@dataclass(frozen=True)
class CompiledRuleSet:
    """The engine's view of one rule-set version."""

    jurisdiction: str
    version: int
    regions: frozenset
    holiday_calendar: str
    hours: tuple
    holiday_ban: bool
    registry_required: bool
    registry_max_age_days: int
    emergency: bool
    special_codes: frozenset
    lifeline: bool
    blocked_types: dict
    multiline_stride: int
    multiline_run: int
    frequency: object
    abandon_lockout_hours: object
    machine_lockout_hours: object
    caller_id_require_own: bool
    caller_id_forbid_types: frozenset
    ring_min_seconds: int
    abandon_max_rate: float
    abandon_window_hours: float
    states: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def label(self):
        return f"{self.jurisdiction}@{self.version}"

    def rule_id(self, key, state=None):
        parts = [self.jurisdiction] + ([state] if state else []) + [RULE_CODES[key]]
        return "-".join(parts)


def validate(data, lines=None, version=0):
    """Validate rule-set data. Returns a CompiledRuleSet or raises RuleSetError listing
    every wrong field with its line (when the text was given)."""
    E = _Errors(lines)
    if not isinstance(data, dict):
        raise RuleSetError("rule set must be an object")
    for k in data:
        if k not in ("schema", "jurisdiction", "name", "regions", "holiday_calendar", "rules", "states", "note"):
            E.add((k,), f"unknown field {k!r}")
    if data.get("schema", SCHEMA) != SCHEMA:
        E.add(("schema",), f"schema {data.get('schema')!r} is not supported (this version reads {SCHEMA})")
    jur = data.get("jurisdiction")
    if not isinstance(jur, str) or not re.match(r"^[A-Z]{2}[A-Z0-9-]*$", jur or ""):
        E.add(("jurisdiction",), "must be an upper-case code such as US, GB or TR")
        jur = "??"
    regions = data.get("regions")
    known_regions = phonenumbers.SUPPORTED_REGIONS
    if not isinstance(regions, list) or not regions:
        E.add(("regions",), "must list the phone regions (e.g. [\"US\"]) this rule set covers")
        regions = []
    for i, r in enumerate(regions):
        if r not in known_regions:
            E.add(("regions", i), f"{r!r} is not a phone region code")
    cal = data.get("holiday_calendar", jur)
    if cal is not None:
        try:
            _holidays.country_holidays(cal, years=2026)
        except NotImplementedError:
            E.add(("holiday_calendar",), f"no holiday calendar {cal!r} in the holidays package")
            cal = None
    rules = data.get("rules")
    if not isinstance(rules, dict):
        E.add(("rules",), "must be a mapping of rule name to its parameters")
        rules = {}
    for k in rules:
        if k not in RULE_CODES:
            E.add(("rules", k), f"unknown rule {k!r} (known: {', '.join(RULE_CODES)})")
    for k in RULE_CODES:
        if k not in rules:
            E.add(("rules",), f"missing rule {k!r}")

    def block(key, base=("rules",), src=rules):
        b = src.get(key)
        if b is None:
            return None
        if not isinstance(b, dict):
            E.add(base + (key,), "must be a mapping of parameters")
            return None
        return b

    P = ("rules",)
    hours = (None,) * 7
    b = block("hours")
    if b is not None:
        _check_keys(b, {"windows"}, E, P + ("hours",))
        if "windows" not in b:
            E.add(P + ("hours",), "missing field 'windows'")
        else:
            hours = compile_windows(b["windows"], E, P + ("hours", "windows"))
    b = block("holidays") or {}
    _check_keys(b, {"ban"}, E, P + ("holidays",))
    holiday_ban = _need(b, "ban", "bool", E, P + ("holidays",)) if b else False
    b = block("registry") or {}
    _check_keys(b, {"required", "max_age_days"}, E, P + ("registry",))
    reg_req = _need(b, "required", "bool", E, P + ("registry",)) if b else False
    reg_age = _need(b, "max_age_days", "int", E, P + ("registry",), minimum=1, required=bool(reg_req)) or 31
    b = block("emergency") or {}
    _check_keys(b, {"block"}, E, P + ("emergency",))
    emergency = _need(b, "block", "bool", E, P + ("emergency",)) if b else True
    if emergency is False:
        E.add(P + ("emergency", "block"), "emergency numbers cannot be unblocked (terms of service)")
    b = block("special_codes") or {}
    _check_keys(b, {"codes"}, E, P + ("special_codes",))
    codes = _need(b, "codes", "list", E, P + ("special_codes",)) if b else []
    for i, c in enumerate(codes or []):
        if not isinstance(c, str) or not c.isdigit() or not 2 <= len(c) <= 6:
            E.add(P + ("special_codes", "codes", i), f"{c!r} is not a short code (2 to 6 digits, as text)")
    b = block("lifeline") or {}
    _check_keys(b, {"block"}, E, P + ("lifeline",))
    lifeline = _need(b, "block", "bool", E, P + ("lifeline",)) if b else True
    if lifeline is False:
        E.add(P + ("lifeline", "block"), "lifeline numbers cannot be unblocked (terms of service)")
    b = block("number_types") or {}
    _check_keys(b, {"block"}, E, P + ("number_types",))
    blocked = _need(b, "block", "dict", E, P + ("number_types",)) if b else {}
    type_names = set(TYPE_NAMES.values())
    for t, cat in (blocked or {}).items():
        if t not in type_names:
            E.add(P + ("number_types", "block", t), f"unknown number type {t!r} (known: {', '.join(sorted(type_names))})")
        elif cat not in BLOCK_CATEGORIES:
            E.add(P + ("number_types", "block", t), f"category must be one of {', '.join(BLOCK_CATEGORIES)}")
    b = block("multiline") or {}
    _check_keys(b, {"stride", "run_length"}, E, P + ("multiline",))
    stride = _need(b, "stride", "int", E, P + ("multiline",), minimum=1) or 1
    run = _need(b, "run_length", "int", E, P + ("multiline",), minimum=2) or 3

    def freq(src, base, rule):
        b = src.get("frequency")
        if b is None:
            return None
        if not isinstance(b, dict):
            E.add(base + ("frequency",), "must be a mapping of parameters")
            return None
        _check_keys(b, {"max_calls", "window_hours"}, E, base + ("frequency",))
        if b.get("max_calls") is None:
            return None
        m = _need(b, "max_calls", "int", E, base + ("frequency",), minimum=1)
        w = _need(b, "window_hours", "number", E, base + ("frequency",), minimum=1)
        if m and w:
            return Frequency(m, float(w), rule)
        return None

    frequency = freq(rules, P, f"{jur}-FREQ")

    def hours_opt(key):
        b = block(key) or {}
        _check_keys(b, {"hours"}, E, P + (key,))
        if b.get("hours") is None:
            return None
        return _need(b, "hours", "number", E, P + (key,), minimum=1)

    abandon_lockout = hours_opt("abandon_lockout")
    machine_lockout = hours_opt("machine_lockout")
    b = block("caller_id") or {}
    _check_keys(b, {"require_own", "forbid_types"}, E, P + ("caller_id",))
    cli_own = _need(b, "require_own", "bool", E, P + ("caller_id",)) if b else True
    cli_forbid = _need(b, "forbid_types", "list", E, P + ("caller_id",), required=False) or []
    for i, t in enumerate(cli_forbid):
        if t not in type_names:
            E.add(P + ("caller_id", "forbid_types", i), f"unknown number type {t!r}")
    b = block("ring") or {}
    _check_keys(b, {"min_seconds"}, E, P + ("ring",))
    ring = _need(b, "min_seconds", "int", E, P + ("ring",), minimum=15) if b else 15
    b = block("abandon") or {}
    _check_keys(b, {"max_rate", "window_hours"}, E, P + ("abandon",))
    ab_rate = _need(b, "max_rate", "number", E, P + ("abandon",)) if b else 0.03
    if ab_rate is not None and not 0 <= ab_rate <= 1:
        E.add(P + ("abandon", "max_rate"), "must be a fraction between 0 and 1 (0.03 for 3 %)")
    ab_win = _need(b, "window_hours", "number", E, P + ("abandon",), minimum=1) if b else 720

    states = {}
    sdata = data.get("states", {})
    if not isinstance(sdata, dict):
        E.add(("states",), "must map state codes to their rules")
        sdata = {}
    for code, sb in sdata.items():
        sp = ("states", code)
        if jur == "US" and code not in STATE_CODES:
            E.add(sp, f"{code!r} is not a US state code")
            continue
        if not isinstance(sb, dict):
            E.add(sp, "must be a mapping of rule name to parameters")
            continue
        for k in sb:
            if k not in STATE_RULES and k not in ("name", "note"):
                E.add(sp + (k,), f"unknown state rule {k!r} (known: {', '.join(STATE_RULES)})")
        s_hours = None
        hb = sb.get("hours")
        if hb is not None:
            if not isinstance(hb, dict):
                E.add(sp + ("hours",), "must be a mapping with 'windows'")
            else:
                _check_keys(hb, {"windows"}, E, sp + ("hours",))
                if "windows" not in hb:
                    E.add(sp + ("hours",), "missing field 'windows'")
                else:
                    s_hours = compile_windows(hb["windows"], E, sp + ("hours", "windows"))
        hol = False
        hb = sb.get("holidays")
        if hb is not None:
            if not isinstance(hb, dict):
                E.add(sp + ("holidays",), "must be a mapping with 'ban'")
            else:
                _check_keys(hb, {"ban"}, E, sp + ("holidays",))
                hol = bool(_need(hb, "ban", "bool", E, sp + ("holidays",)))
                if hol and cal:
                    try:
                        _holidays.country_holidays(cal, subdiv=code, years=2026)
                    except NotImplementedError:
                        E.add(sp + ("holidays",), f"the holidays package has no calendar for {cal}-{code}")
        states[code] = StateRules(
            code=code, hours=s_hours, hours_rule=f"{jur}-{code}-HOURS", holiday_ban=hol,
            holiday_rule=f"{jur}-{code}-HOLIDAY", frequency=freq(sb, sp, f"{jur}-{code}-FREQ"),
        )
    if E.items:
        raise RuleSetError("rule set not accepted:\n  " + "\n  ".join(E.items))
    return CompiledRuleSet(
        jurisdiction=jur, version=version, regions=frozenset(regions), holiday_calendar=cal,
        hours=hours, holiday_ban=bool(holiday_ban), registry_required=bool(reg_req),
        registry_max_age_days=int(reg_age), emergency=True, special_codes=frozenset(codes or ()),
        lifeline=True, blocked_types=dict(blocked or {}), multiline_stride=stride, multiline_run=run,
        frequency=frequency, abandon_lockout_hours=abandon_lockout, machine_lockout_hours=machine_lockout,
        caller_id_require_own=bool(cli_own), caller_id_forbid_types=frozenset(cli_forbid),
        ring_min_seconds=int(ring or 15), abandon_max_rate=float(ab_rate if ab_rate is not None else 0.03),
        abandon_window_hours=float(ab_win or 720), states=states, data=copy.deepcopy(data),
    )


def load_text(text, version=0):
    data, lines = parse_text(text)
    return validate(data, lines, version)


def canonical(data):
    """The stored form: JSON with sorted keys, so versions diff and hash stably."""
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False)


def diff(old, new, path=()):
    """Changed fields between two rule-set data trees: [{field, old, new}]."""
    out = []
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new), key=str):
            if k not in new:
                out.append({"field": _fmt_path(path + (k,)), "old": old[k], "new": None})
            elif k not in old:
                out.append({"field": _fmt_path(path + (k,)), "old": None, "new": new[k]})
            else:
                out.extend(diff(old[k], new[k], path + (k,)))
    elif old != new:
        out.append({"field": _fmt_path(path), "old": old, "new": new})
    return out


def set_field(data, dotted, value):
    """Return a copy of ``data`` with the field at ``dotted`` (a.b.c) set to ``value``
    (None removes it). Unknown top-level rule names are caught by validation."""
    new = copy.deepcopy(data)
    parts = [p for p in dotted.split(".") if p]
    if not parts:
        raise RuleSetError("field path is empty (e.g. states.FL.hours.windows.sun)")
    cur = new
    for p in parts[:-1]:
        nxt = cur.get(p) if isinstance(cur, dict) else None
        if nxt is None:
            if not isinstance(cur, dict):
                raise RuleSetError(f"field {dotted}: {p!r} is not inside a mapping")
            nxt = cur[p] = {}
        elif not isinstance(nxt, dict):
            raise RuleSetError(f"field {dotted}: {p!r} is not a mapping")
        cur = nxt
    if value is None:
        cur.pop(parts[-1], None)
    else:
        cur[parts[-1]] = value
    return new
