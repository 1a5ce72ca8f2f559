"""Rule sets: data a compliance officer edits, validated field by field, compiled
into the plain structures the engine reads.

A rule set is one jurisdiction (US federal + states, GB, TR, ...). Each rule is a
block under ``rules`` (or under ``states.XX`` for a state), carrying its
parameters and, beside them, the ``source`` and ``tag`` ([P] primary text, [S]
secondary, [I] inference) of its default. See ``rules/defaults/*.json``.
"""

import codecs
import copy
import json
import math
import re
from dataclasses import dataclass, field

import holidays as _holidays
import phonenumbers
import yaml

from core.errors import InputError

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

# Bounds on rule text, so a hostile file is refused in one line before it costs much:
# the shipped rule sets are under 16 KiB and nest 7 levels deep.
MAX_TEXT_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_VALUES = 20000
MAX_ERRORS = 20

# The range of every numeric parameter: (low, high, unit, why). RANGES are the sane
# bounds for any jurisdiction; LEGAL narrows them where the law sets a limit (see
# ../shared/reference/compliance.md): a rule set may be stricter than the law, never looser.
RANGES = {
    "registry.max_age_days": (1, 365, "days", "a registry copy older than a year is no copy"),
    "frequency.max_calls": (1, 100, "calls", ""),
    "frequency.window_hours": (1, 8760, "hours", "one year at most"),
    "abandon_lockout.hours": (0, 8760, "hours", "one year at most"),
    "machine_lockout.hours": (0, 8760, "hours", "one year at most"),
    "ring.min_seconds": (15, 300, "seconds", "at least 15 s or 4 rings (US-RING, UK-RING)"),
    "abandon.max_rate": (0, 1, "", "a fraction: 0.03 for 3 %"),
    "abandon.window_hours": (1, 720, "hours", "the 30-day period of US-ABANDON at most"),
    "multiline.stride": (1, 100, "", ""),
    "multiline.run_length": (2, 100, "", ""),
}
LEGAL = {
    "US": {
        "registry.max_age_days": (1, 31, "days", "US-DNC-NAT: TSR safe harbor, a copy no older than 31 days"),
        "abandon.max_rate": (0, 0.03, "", "US-ABANDON: 47 CFR 64.1200(a)(7), TSR 310.4(b)(4): at most 3 %"),
    },
    "GB": {
        "registry.max_age_days": (1, 28, "days", "UK-TPS: PECR reg 21, 28 days after listing"),
        "abandon.max_rate": (0, 0.03, "", "UK-ABANDON: Ofcom persistent misuse policy, at most 3 %"),
        "abandon_lockout.hours": (72, 8760, "hours", "UK-72H: no repeat call for 72 h after an abandoned call"),
        "machine_lockout.hours": (24, 8760, "hours", "UK-AMD: Ofcom 2010, 24 h after a machine"),
    },
    "TR": {
        "registry.max_age_days": (1, 3, "days", "TR-REJECT: a rejection honoured within 3 days"),
    },
}
# the calling-hours window the law allows (minutes); a rule set's windows lie inside it
LEGAL_HOURS = {"US": (8 * 60, 21 * 60, "US-HOURS: 47 CFR 64.1200(c)(1), 08:00-21:00 at the called party's location")}


def limits(jurisdiction, key):
    """(low, high, unit, why) for a numeric parameter ``key`` (``rule.param``)."""
    return LEGAL.get(jurisdiction, {}).get(key) or RANGES[key]


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


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32"), (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16"), (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16"),
)


def read_limited(source, limit=MAX_TEXT_BYTES):
    """The bytes (or text) of ``source``: bytes, str, or an open binary file, of which
    at most ``limit`` + 1 bytes are read (more is refused by decode_text)."""
    if hasattr(source, "read"):
        return source.read(limit + 1)
    return source


def decode_text(raw, name="the rule file"):
    """Rule text from bytes: UTF-8, or UTF-16/UTF-32 with a byte-order mark. Anything
    else (Latin-1, UTF-16 without a BOM, binary) is refused in one line."""
    if isinstance(raw, str):
        if len(raw) > MAX_TEXT_BYTES:
            raise RuleSetError(f"{name} is too long ({len(raw)} characters; a rule set is at most "
                               f"{MAX_TEXT_BYTES // 1024} KiB)")
        return raw
    if not isinstance(raw, (bytes, bytearray)):
        raise RuleSetError(f"{name} must be text")
    raw = bytes(raw)
    if len(raw) > MAX_TEXT_BYTES:
        raise RuleSetError(f"{name} is too long (over {MAX_TEXT_BYTES // 1024} KiB; the shipped rule sets are "
                           f"under 16 KiB)")
    for bom, enc, label in _BOMS:
        if raw.startswith(bom):
            try:
                return raw[len(bom):].decode(enc)
            except UnicodeDecodeError as e:
                raise RuleSetError(f"{name} starts with a {label} byte-order mark but is not {label} text "
                                   f"(bad bytes at offset {len(bom) + e.start}): save it as UTF-8") from None
    if b"\x00" in raw:
        raise RuleSetError(f"{name} is not UTF-8 text (it holds NUL bytes: UTF-16 or UTF-32 without a "
                           f"byte-order mark, or binary): save it as UTF-8") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise RuleSetError(f"{name} is not UTF-8 text (byte 0x{raw[e.start]:02X} at line {line}, column {column}; "
                           f"Latin-1 or Windows-1252?): save it as UTF-8") from None


class _RuleLoader(yaml.SafeLoader):
    """The safe loader, refusing anchors and aliases (a few lines of aliases can stand
    for billions of nodes) and nesting deeper than MAX_DEPTH (Python's recursion)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if getattr(event, "anchor", None) is not None:
            raise RuleSetError(f"{_where(event.start_mark)}YAML anchors and aliases (&name, *name) are not "
                               f"accepted in rule files: write the values out")
        if not isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise RuleSetError(f"{_where(event.start_mark)}nested more than {MAX_DEPTH} levels deep "
                               f"(the shipped rule sets nest 7)")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# JSON numbers with an exponent and no dot (1e20, 3E-2) are text to YAML 1.1: read them
# as numbers, as JSON does.
_RuleLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)(?:\.[0-9]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _where(mark):
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


def _one_line(text):
    return " ".join(str(text).split())


def load_yaml(text, what="rule set"):
    """(node, data) of one JSON/YAML document, with the guards of _RuleLoader.
    Raises RuleSetError in one line; node is None for an empty document."""
    loader = None
    try:
        loader = _RuleLoader(text)
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise RuleSetError(f"{what} is not valid JSON/YAML: {_where(mark)}{_one_line(e.problem or e)}") from None
    except yaml.YAMLError as e:
        raise RuleSetError(f"{what} is not valid JSON/YAML: {_one_line(e)}") from None
    except ValueError as e:  # e.g. an integer longer than Python converts (4300 digits)
        raise RuleSetError(f"{what} is not accepted: {_one_line(e)[:200]}") from None
    finally:
        if loader is not None:
            loader.dispose()
    return node, _pair_surrogates(data)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _pair_surrogates(value):
    """JSON writes a character beyond U+FFFF as an escaped surrogate pair ("\\ud83d\\ude00");
    YAML reads the two halves apart: join them. A lone half stays (refused by validate)."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            try:
                return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
            except UnicodeDecodeError:
                return value
        return value
    if isinstance(value, list):
        return [_pair_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_pair_surrogates(k): _pair_surrogates(v) for k, v in value.items()}
    return value


def parse_text(text):
    """Parse rule-set text (JSON or YAML; str, or bytes decoded by decode_text). Returns
    (data, lines) where ``lines`` maps field paths to line numbers. Raises
    RuleSetError naming the line; text over MAX_TEXT_BYTES, anchors/aliases and
    nesting deeper than MAX_DEPTH are refused."""
    text = decode_text(text)
    if not text or not text.strip():
        raise RuleSetError("rule set is empty")
    node, data = load_yaml(text)
    if not isinstance(data, dict):
        raise RuleSetError("rule set must be an object with 'jurisdiction', 'rules' and 'states'")
    return data, _line_map(node)


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


def _show(value, limit=60):
    """A value for a one-line message: its repr, shortened."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _fmt_path(path):
    out = ""
    for p in path:
        if isinstance(p, int) and not isinstance(p, bool):
            out += f"[{p}]"
        else:
            key = p if isinstance(p, str) and _PLAIN_KEY.match(p) else _show(p, 40)
            out += ("." if out else "") + key
    return out or "(top)"


# ---------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------

class _Errors:
    def __init__(self, lines):
        self.lines = lines or {}
        self.items = []

    def add(self, path, msg):
        if len(self.items) > MAX_ERRORS:
            return
        if len(self.items) == MAX_ERRORS:
            self.items.append("(more errors not shown: fix these first)")
            return
        p = tuple(path)
        while p and p not in self.lines:
            p = p[:-1]
        line = self.lines.get(p)
        where = f"line {line}, " if line else ""
        self.items.append(f"{where}field {_fmt_path(path)}: {msg}")

    def error(self):
        """One line for one wrong field; else every wrong field on its own line."""
        if len(self.items) == 1:
            return RuleSetError(f"rule set not accepted: {self.items[0]}")
        return RuleSetError("rule set not accepted:\n  " + "\n  ".join(self.items))


_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})$", re.ASCII)


def parse_clock(text):
    m = _TIME_RE.match(text.strip())
    if not m:
        raise ValueError(f"{_show(text)} is not a time (HH:MM)")
    h, mi = int(m.group(1)), int(m.group(2))
    if mi > 59 or h > 24 or (h == 24 and mi):
        raise ValueError(f"{_show(text)} is not a time of day (00:00 to 24:00)")
    return h * 60 + mi


def parse_window(text):
    """'08:00-21:00' -> (480, 1260): start inclusive, end exclusive, in minutes."""
    if not isinstance(text, str) or text.count("-") != 1:
        raise ValueError(f"{_show(text)} is not a window (HH:MM-HH:MM)")
    a, b = text.split("-")
    start, end = parse_clock(a), parse_clock(b)
    if start == 24 * 60:
        raise ValueError(f"{_show(text)} starts at 24:00")
    if end <= start:
        raise ValueError(f"{_show(text)} ends before it starts (windows may not cross midnight)")
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
            raise ValueError(f"{_show(spec)} is not a day range (e.g. mon-fri)")
        i, j = DAYS.index(a), DAYS.index(b)
        if j < i:
            raise ValueError(f"{_show(spec)}: a day range runs forward (e.g. mon-fri)")
        return list(DAYS[i:j + 1])
    if spec not in DAYS:
        raise ValueError(f"{_show(spec)} is not a day (mon..sun, a range like mon-fri, or daily)")
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
            errors.add(path + (k,), f"unknown field {_show(k)} (allowed: {', '.join(sorted(allowed))})")
    tag = block.get("tag")
    if tag is not None and tag not in TAGS:
        errors.add(path + ("tag",), f"tag must be one of {', '.join(TAGS)}")
    src = block.get("source")
    if src is not None and not isinstance(src, str):
        errors.add(path + ("source",), "source must be text")


def _out_of_range(value, limit):
    lo, hi, unit, why = limit
    return (f"{_show(value)} is out of range: must be at least {lo} and at most {hi}" + (f" {unit}" if unit else "")
            + (f" ({why})" if why else ""))


_KINDS = dict(bool="true/false", int="whole number", number="number", str="text", list="list", dict="mapping")


def _need(block, key, kind, errors, path, minimum=None, required=True, limit=None):
    """The value of ``block[key]`` if it is of ``kind`` (and, for numbers, finite and
    within ``limit`` = (low, high, unit, why)); else None, with the error recorded."""
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
        errors.add(path + (key,), f"must be a {_KINDS[kind]}, not {_show(v)}")
        return None
    finite = kind not in ("int", "number") or math.isfinite(v)
    if limit is not None:
        if not finite or not limit[0] <= v <= limit[1]:
            errors.add(path + (key,), _out_of_range(v, limit))
            return None
    elif not finite:
        errors.add(path + (key,), f"{_show(v)} is not a finite number")
        return None
    elif minimum is not None and v < minimum:
        errors.add(path + (key,), f"must be at least {minimum}, not {_show(v)}")
        return None
    return v


def _json_data(data, errors, jur=None):
    """Check that ``data`` is plain JSON data (text keys; text, finite numbers,
    true/false, null, lists, mappings) of bounded depth and size, without recursion.
    Returns False (errors recorded) if not: nothing else can be read safely then."""
    stack = [(data, (), 0)]
    count = 0
    ok = True
    while stack:
        v, path, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            errors.add((), f"more than {MAX_VALUES} values (the shipped rule sets hold under 1000)")
            return False
        if depth > MAX_DEPTH:
            errors.add(path[:3], f"nested more than {MAX_DEPTH} levels deep (the shipped rule sets nest 7)")
            return False
        if isinstance(v, dict):
            for k, x in v.items():
                if not isinstance(k, str):
                    errors.add(path + (k,), f"a field name must be text, not {_show(k)} (quote it)")
                    ok = False
                elif _SURROGATE.search(k):
                    errors.add(path, f"field name {_show(k)} holds a lone UTF-16 surrogate: not valid Unicode")
                    ok = False
                else:
                    stack.append((x, path + (k,), depth + 1))
        elif isinstance(v, list):
            stack.extend((x, path + (i,), depth + 1) for i, x in enumerate(v))
        elif isinstance(v, str):
            if _SURROGATE.search(v):
                errors.add(path, f"text {_show(v)} holds a lone UTF-16 surrogate: not valid Unicode")
                ok = False
        elif v is None or isinstance(v, bool):
            pass
        elif isinstance(v, int):
            if v.bit_length() > 200:
                errors.add(path, "number too large")
                ok = False
        elif isinstance(v, float):
            if not math.isfinite(v):
                key = ".".join(str(p) for p in path[-2:])
                if key in RANGES:
                    errors.add(path, _out_of_range(v, limits(jur, key)))
                else:
                    errors.add(path, f"{_show(v)} is not a finite number")
                ok = False
        else:
            errors.add(path, f"{type(v).__name__} value {_show(v)} is not JSON data (text, numbers, true/false, "
                             f"null, lists, mappings); quote it")
            ok = False
    return ok


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
    """The engine's view of one rule-set version. Every field is read in the live path
    (tests/test_ruleset_fields.py maps each to its consumer); the emergency and
    lifeline blocks have no field: they are always on (``block: false`` is refused)."""

    jurisdiction: str
    version: int
    regions: frozenset
    holiday_calendar: str
    hours: tuple
    holiday_ban: bool
    registry_required: bool
    registry_max_age_days: int
    special_codes: frozenset
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

    @property
    def label(self):
        return f"{self.jurisdiction}@{self.version}"

    def rule_id(self, key, state=None):
        parts = [self.jurisdiction] + ([state] if state else []) + [RULE_CODES[key]]
        return "-".join(parts)


def validate(data, lines=None, version=0):
    """Validate rule-set data. Returns a CompiledRuleSet or raises RuleSetError listing
    every wrong field with its line (when the text was given): each number within its
    range (RANGES, narrowed by LEGAL for the jurisdiction), the data plain JSON."""
    E = _Errors(lines)
    if not isinstance(data, dict):
        raise RuleSetError("rule set must be an object")
    if not _json_data(data, E, data.get("jurisdiction") if isinstance(data.get("jurisdiction"), str) else None):
        raise E.error()
    for k in data:
        if k not in ("schema", "jurisdiction", "name", "regions", "holiday_calendar", "rules", "states", "note"):
            E.add((k,), f"unknown field {_show(k)}")
    schema = data.get("schema", SCHEMA)
    if isinstance(schema, bool) or schema != SCHEMA:
        E.add(("schema",), f"schema {_show(schema)} is not supported (this version reads {SCHEMA})")
    jur = data.get("jurisdiction")
    if not isinstance(jur, str) or not re.match(r"^[A-Z]{2}[A-Z0-9-]{0,14}$", jur):
        E.add(("jurisdiction",), "must be an upper-case code such as US, GB or TR")
        jur = "??"
    regions = data.get("regions")
    known_regions = phonenumbers.SUPPORTED_REGIONS
    if not isinstance(regions, list) or not regions:
        E.add(("regions",), "must list the phone regions (e.g. [\"US\"]) this rule set covers")
        regions = []
    for i, r in enumerate(regions):
        if not isinstance(r, str) or r not in known_regions:
            E.add(("regions", i), f"{_show(r)} is not a phone region code")
    cal = data.get("holiday_calendar", jur)
    if cal is not None:
        if not isinstance(cal, str) or not re.match(r"^[A-Z]{2}$", cal):
            E.add(("holiday_calendar",), f"{_show(cal)} is not a country code of the holidays package (e.g. US)")
            cal = None
        else:
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
            E.add(("rules", k), f"unknown rule {_show(k)} (known: {', '.join(RULE_CODES)})")
    for k in RULE_CODES:
        if rules.get(k) is None and isinstance(data.get("rules"), dict):
            E.add(("rules",), f"missing rule {k!r}")

    def block(key, base=("rules",), src=rules):
        """The rule's parameters, or None when the rule is missing (reported above)."""
        b = src.get(key)
        if b is None:
            return None
        if not isinstance(b, dict):
            E.add(base + (key,), "must be a mapping of parameters")
            return None
        return b

    def lim(key):
        return limits(jur, key)

    P = ("rules",)
    hours = (None,) * 7
    b = block("hours")
    if b is not None:
        _check_keys(b, {"windows"}, E, P + ("hours",))
        if "windows" not in b:
            E.add(P + ("hours",), "missing field 'windows'")
        else:
            hours = compile_windows(b["windows"], E, P + ("hours", "windows"))
            legal = LEGAL_HOURS.get(jur)
            if legal is not None and isinstance(b["windows"], dict):
                _legal_hours(b["windows"], legal, E, P + ("hours", "windows"))
    b = block("holidays")
    holiday_ban = False
    if b is not None:
        _check_keys(b, {"ban"}, E, P + ("holidays",))
        holiday_ban = _need(b, "ban", "bool", E, P + ("holidays",))
    b = block("registry")
    reg_req, reg_age = False, None
    if b is not None:
        _check_keys(b, {"required", "max_age_days"}, E, P + ("registry",))
        reg_req = _need(b, "required", "bool", E, P + ("registry",))
        reg_age = _need(b, "max_age_days", "int", E, P + ("registry",), required=bool(reg_req),
                        limit=lim("registry.max_age_days"))
    reg_age = reg_age or lim("registry.max_age_days")[1]
    b = block("emergency")
    if b is not None:
        _check_keys(b, {"block"}, E, P + ("emergency",))
        if _need(b, "block", "bool", E, P + ("emergency",)) is False:
            E.add(P + ("emergency", "block"), "emergency numbers cannot be unblocked (terms of service)")
    b = block("special_codes")
    codes = []
    if b is not None:
        _check_keys(b, {"codes"}, E, P + ("special_codes",))
        codes = _need(b, "codes", "list", E, P + ("special_codes",)) or []
        for i, c in enumerate(codes):
            if not isinstance(c, str) or not re.match(r"^[0-9]{2,6}$", c):
                E.add(P + ("special_codes", "codes", i), f"{_show(c)} is not a short code (2 to 6 digits, as text)")
    b = block("lifeline")
    if b is not None:
        _check_keys(b, {"block"}, E, P + ("lifeline",))
        if _need(b, "block", "bool", E, P + ("lifeline",)) is False:
            E.add(P + ("lifeline", "block"), "lifeline numbers cannot be unblocked (terms of service)")
    b = block("number_types")
    blocked = {}
    type_names = set(TYPE_NAMES.values())
    if b is not None:
        _check_keys(b, {"block"}, E, P + ("number_types",))
        blocked = _need(b, "block", "dict", E, P + ("number_types",)) or {}
        for t, cat in blocked.items():
            if t not in type_names:
                E.add(P + ("number_types", "block", t),
                      f"unknown number type {_show(t)} (known: {', '.join(sorted(type_names))})")
            elif cat not in BLOCK_CATEGORIES:
                E.add(P + ("number_types", "block", t), f"category must be one of {', '.join(BLOCK_CATEGORIES)}")
    b = block("multiline")
    stride, run = 1, 3
    if b is not None:
        _check_keys(b, {"stride", "run_length"}, E, P + ("multiline",))
        stride = _need(b, "stride", "int", E, P + ("multiline",), limit=lim("multiline.stride")) or 1
        run = _need(b, "run_length", "int", E, P + ("multiline",), limit=lim("multiline.run_length")) or 3

    def freq(src, base, rule):
        b = src.get("frequency")
        if b is None:
            return None
        if not isinstance(b, dict):
            E.add(base + ("frequency",), "must be a mapping of parameters")
            return None
        _check_keys(b, {"max_calls", "window_hours"}, E, base + ("frequency",))
        if b.get("max_calls") is None:  # no cap; a window given beside it must still be sane
            if b.get("window_hours") is not None:
                _need(b, "window_hours", "number", E, base + ("frequency",), limit=lim("frequency.window_hours"))
            return None
        m = _need(b, "max_calls", "int", E, base + ("frequency",), limit=lim("frequency.max_calls"))
        w = _need(b, "window_hours", "number", E, base + ("frequency",), limit=lim("frequency.window_hours"))
        if m and w:
            return Frequency(m, float(w), rule)
        return None

    frequency = freq(rules, P, f"{jur}-FREQ")

    def hours_opt(key):
        b = block(key)
        if b is None:
            return None
        _check_keys(b, {"hours"}, E, P + (key,))
        if b.get("hours") is None:
            return None
        h = _need(b, "hours", "number", E, P + (key,), limit=lim(f"{key}.hours"))
        return float(h) if h is not None else None

    abandon_lockout = hours_opt("abandon_lockout")
    machine_lockout = hours_opt("machine_lockout")
    b = block("caller_id")
    cli_own, cli_forbid = True, []
    if b is not None:
        _check_keys(b, {"require_own", "forbid_types"}, E, P + ("caller_id",))
        cli_own = _need(b, "require_own", "bool", E, P + ("caller_id",))
        cli_forbid = _need(b, "forbid_types", "list", E, P + ("caller_id",), required=False) or []
        for i, t in enumerate(cli_forbid):
            if not isinstance(t, str) or t not in type_names:
                E.add(P + ("caller_id", "forbid_types", i), f"unknown number type {_show(t)}")
    b = block("ring")
    ring = 15
    if b is not None:
        _check_keys(b, {"min_seconds"}, E, P + ("ring",))
        ring = _need(b, "min_seconds", "int", E, P + ("ring",), limit=lim("ring.min_seconds"))
    b = block("abandon")
    ab_rate, ab_win = 0.03, 720
    if b is not None:
        _check_keys(b, {"max_rate", "window_hours"}, E, P + ("abandon",))
        ab_rate = _need(b, "max_rate", "number", E, P + ("abandon",), limit=lim("abandon.max_rate"))
        ab_win = _need(b, "window_hours", "number", E, P + ("abandon",), limit=lim("abandon.window_hours"))

    states = {}
    sdata = data.get("states", {})
    if not isinstance(sdata, dict):
        E.add(("states",), "must map state codes to their rules")
        sdata = {}
    for code, sb in sdata.items():
        sp = ("states", code)
        if jur == "US" and code not in STATE_CODES:
            E.add(sp, f"{_show(code)} is not a US state code")
            continue
        if not re.match(r"^[A-Z0-9]{1,3}$", code):
            E.add(sp, f"{_show(code)} is not a subdivision code (1 to 3 upper-case letters or digits)")
            continue
        if not isinstance(sb, dict):
            E.add(sp, "must be a mapping of rule name to parameters")
            continue
        for k in sb:
            if k not in STATE_RULES and k not in ("name", "note"):
                E.add(sp + (k,), f"unknown state rule {_show(k)} (known: {', '.join(STATE_RULES)})")
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
        raise E.error()
    return CompiledRuleSet(
        jurisdiction=jur, version=version, regions=frozenset(regions), holiday_calendar=cal,
        hours=hours, holiday_ban=bool(holiday_ban), registry_required=bool(reg_req),
        registry_max_age_days=int(reg_age), special_codes=frozenset(codes),
        blocked_types=dict(blocked), multiline_stride=stride, multiline_run=run,
        frequency=frequency, abandon_lockout_hours=abandon_lockout, machine_lockout_hours=machine_lockout,
        caller_id_require_own=bool(cli_own), caller_id_forbid_types=frozenset(cli_forbid),
        ring_min_seconds=int(ring), abandon_max_rate=float(ab_rate), abandon_window_hours=float(ab_win),
        states=states,
    )


def _legal_hours(windows, legal, errors, path):
    """Each calling window inside the window the law allows (a rule set may narrow it)."""
    lo, hi, why = legal
    for day_spec, wins in windows.items():
        for i, w in enumerate(wins if isinstance(wins, list) else [wins]):
            try:
                start, end = parse_window(w)
            except ValueError:
                continue  # reported by compile_windows
            if start < lo or end > hi:
                errors.add(path + (day_spec, i) if isinstance(wins, list) else path + (day_spec,),
                           f"{_show(w)} is outside the legal window {fmt_window((lo, hi))} ({why})")


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


MAX_PATH_PARTS = 8


def set_field(data, dotted, value):
    """Return a copy of ``data`` with the field at ``dotted`` (a.b.c) set to ``value``
    (None removes it). Unknown top-level rule names are caught by validation."""
    if not isinstance(dotted, str) or len(dotted) > 200:
        raise RuleSetError(f"field path {_show(dotted)} is too long (e.g. states.FL.hours.windows.sun)")
    parts = [p for p in dotted.split(".") if p]
    if not parts:
        raise RuleSetError("field path is empty (e.g. states.FL.hours.windows.sun)")
    if len(parts) > MAX_PATH_PARTS:
        raise RuleSetError(f"field path {_show(dotted)} has more than {MAX_PATH_PARTS} parts "
                           f"(e.g. states.FL.hours.windows.sun)")
    new = copy.deepcopy(data)
    cur = new
    for p in parts[:-1]:
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        elif not isinstance(nxt, dict):
            raise RuleSetError(f"field {_show(dotted)}: {_show(p)} is not a mapping")
        cur = nxt
    if value is None:
        cur.pop(parts[-1], None)
    else:
        cur[parts[-1]] = value
    return new
