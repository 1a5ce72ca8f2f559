"""Property-based tests of rule-set input (issue 11): whatever a compliance officer
(or an attacker) types, a rule document or a `rules set` path and value is either
accepted, and the engine then judges numbers without an exception, or refused with a
clear error (a DialerError: one line, or one line per wrong field), the version in
force and the audit log unchanged. Never another exception.

Each example runs on its own copy of a seeded database (a file copy: cheap). Example
counts are fixed by ``settings``: 150 mutated shipped rule sets, 150 random documents,
150 rule texts with random edits, 250 `rules set` paths and values, 150 plausible
`rules set` changes, 60 through the CLI (910 in all, about 20 s); run with
``--hypothesis-show-statistics`` to see them with their timings and the
accepted/refused split (``event``).
"""

import datetime as dt
import json
import pathlib
import shutil
import tempfile

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cli import main
from core.errors import DialerError
from core.store import Store
from rules import service
from rules.engine import Context, Lead, Screener, evaluate, next_allowed
from tests.conftest import default_data

NOW = dt.datetime(2026, 11, 27, 18, 0, tzinfo=dt.timezone.utc)
INSTANTS = [dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.timezone.utc),   # Tue noon New York
            dt.datetime(2026, 12, 25, 3, 30, tzinfo=dt.timezone.utc),   # Christmas, night in the US
            dt.datetime(2026, 7, 4, 13, 0, tzinfo=dt.timezone.utc)]     # a Saturday holiday in the US
NUMBERS = ["+13055550100", "+12125550100", "+14015550100", "+442079460000", "+902125550100", "911",
           "1-800-222-1222", "+16025550100", "abc"]
LEADS = [Lead("+13055550100", state="FL"), Lead("+12125550100", state="PA"), Lead("+442079460000"),
         Lead("+902125550100"), Lead("+14015550100", state="RI")]
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ----------------------------------------------------------------------------- the database per example

@pytest.fixture(scope="module")
def template(tmp_path_factory):
    path = tmp_path_factory.mktemp("rules-template") / "seed.db"
    s = Store(path)
    service.ensure_defaults(s, NOW)
    s.close()
    return path


class Fresh:
    """A copy of the seeded database, opened; removed on exit."""

    def __init__(self, template):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="rules-hyp-"))
        self.path = self.dir / "dialer.db"
        shutil.copy(template, self.path)

    def __enter__(self):
        self.store = Store(self.path)
        return self.store

    def __exit__(self, *exc):
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def state(store):
    """What a refusal must leave unchanged: every version in force and the audit log."""
    versions = tuple((r["jurisdiction"], r["version"], r["digest"]) for r in service._in_force(store))
    head = store.query_one("SELECT COUNT(*) AS n, MAX(hash) AS h FROM audit_log")
    return versions, head["n"], head["h"]


def judge_numbers(store):
    """The accepted rule sets in use: `dialer check` on a few numbers at a few instants,
    and the engine with call history (frequency caps, lockouts) and next_allowed."""
    for at in INSTANTS:
        verdicts = service.check_numbers(store, NUMBERS, NOW, at=at)
        assert len(verdicts) == len(NUMBERS)
        for v in verdicts:
            assert v.allowed == (not v.reasons)
    rulesets = service.load_rulesets(store)
    at = INSTANTS[0]
    history = {}
    for lead in LEADS:
        f = Screener(Context(rulesets=rulesets), at).facts(lead)
        if f.value is not None:
            history[f.value] = [(at - dt.timedelta(hours=h), o) for h, o in
                                ((1, "abandoned"), (2, "machine"), (30, "answered"), (5000, "answered"))]
    ctx = Context(rulesets=rulesets, history=history)
    for lead in LEADS:
        evaluate(lead, at, ctx)
        next_allowed(lead, at, ctx, days=2)


def attempt(store, fn):
    """Run a change: accepted (then judged) or refused with a clear error, nothing changed."""
    before = state(store)
    try:
        out = fn()
    except DialerError as e:
        msg = str(e)
        lines = msg.splitlines()
        assert lines and lines[0].strip(), repr(msg)
        assert "Traceback" not in msg and len(lines) <= 25 and all(len(x) < 600 for x in lines), msg
        assert state(store) == before
        event("refused")
        return None
    event("accepted")
    assert out["version"] >= 1
    after = state(store)
    assert after != before and after[1] == before[1] + 1
    judge_numbers(store)
    assert service.verify(store)["ok"]
    return out


# ----------------------------------------------------------------------------- strategies

SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-10, max_value=400), st.integers(), st.sampled_from([10**20, 10**30, -(10**20), 2**63]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.03, 0.031, 1e-9, 8760.0, 8760.5, 24.0]),
    st.text(max_size=12),
    st.sampled_from(["08:00-21:00", "09:00-20:00", "00:00-24:00", "24:00-24:00", "8:00-21:00", "21:00-08:00",
                     "US", "GB", "TR", "FL", "daily", "mon-fri", "sun", "none", "closed", "toll_free", "premium",
                     "premium_rate", "P", "S", "I", "911", "2026-01-01"]),
)
KEYS = st.one_of(st.text(max_size=8), st.sampled_from(
    ["rules", "states", "regions", "hours", "windows", "daily", "mon-fri", "sat", "sun", "frequency", "max_calls",
     "window_hours", "registry", "required", "max_age_days", "abandon", "max_rate", "ring", "min_seconds",
     "abandon_lockout", "machine_lockout", "multiline", "stride", "run_length", "FL", "PA", "ban", "holidays",
     "source", "tag", "note", "block", "codes"]))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(KEYS, inner, max_size=4)),
                           max_leaves=12)


CLOCK = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 24), st.sampled_from([0, 15, 30, 45, 59]))
WINDOW = st.one_of(st.builds(lambda a, b: f"{a}-{b}", CLOCK, CLOCK),
                   st.sampled_from(["08:00-21:00", "09:00-20:00", "10:00-17:00", "08:00-12:00", "13:00-20:00"]))


def paths(tree, prefix=()):
    """Every path (tuple of keys and indexes) inside a JSON tree."""
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += paths(v, prefix + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += paths(v, prefix + (i,))
    return out


def typed_like(value):
    """A strategy for values of the kind ``value`` is (mostly), or anything."""
    if isinstance(value, bool):
        kind = st.booleans()
    elif isinstance(value, (int, float)):
        kind = st.one_of(st.integers(-2, 10**4), st.floats(-1, 1e5), st.sampled_from(
            [0, 1, 2, 3, 14, 15, 24, 28, 29, 31, 32, 72, 100, 101, 300, 301, 720, 721, 8760, 8761, 0.03, 0.0301]))
    elif isinstance(value, str) and "-" in value and ":" in value:
        kind = WINDOW
    elif isinstance(value, str):
        kind = st.one_of(st.text(max_size=8), st.sampled_from(["P", "S", "I", "premium", "toll_free", "US", "GB"]))
    elif value is None:
        kind = st.one_of(st.none(), st.integers(0, 200))
    else:
        kind = JSON_VALUES
    return st.one_of(kind, kind, kind, JSON_VALUES)


@st.composite
def mutated_default(draw):
    """A shipped rule set with a few random changes at random places (any path,
    leaves more often): a value replaced by one of its kind or by anything, a field
    removed, a field added."""
    jur = draw(st.sampled_from(["US", "GB", "TR"]))
    data = default_data(jur)
    rnd = draw(st.randoms(use_true_random=False))
    for _ in range(draw(st.integers(1, 3))):
        all_paths = [p for p in paths(data) if p]
        p = rnd.choice(all_paths)
        parent = data
        for k in p[:-1]:
            parent = parent[k]
        how = draw(st.sampled_from(["like", "like", "like", "anything", "remove", "add"]))
        if how == "remove":
            del parent[p[-1]]
        elif how == "add" and isinstance(parent, dict):
            parent[draw(KEYS)] = draw(JSON_VALUES)
        elif how == "like":
            parent[p[-1]] = draw(typed_like(parent[p[-1]]))
        else:
            parent[p[-1]] = draw(JSON_VALUES)
    return jur, data


def dump(data, fmt):
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False)
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


TEXT_PIECES = st.sampled_from(["[", "]", "{", "}", ":", ": ", ",", "-", "- ", "&a ", "*a", "!!", "!!binary ",
                               "!!python/object ", "|", ">", "#", "'", '"', "\n", "  ", "\t", "%YAML 1.1\n", "---\n",
                               "...\n", "? ", "<<: ", "jurisdiction: US\n", "regions: [US]\n", "rules:\n", "1e999",
                               ".nan", "~", "\ufeff", "\x00", "é", "\u2028", "9" * 40])


@st.composite
def text_mutation(draw):
    """A shipped rule file (JSON or YAML text) with a few random edits to its text."""
    jur = draw(st.sampled_from(["US", "GB", "TR"]))
    text = dump(default_data(jur), draw(st.sampled_from(["json", "yaml"])))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(text)))
        how = draw(st.sampled_from(["insert", "delete", "duplicate"]))
        if how == "insert":
            text = text[:i] + draw(st.one_of(TEXT_PIECES, st.text(max_size=5))) + text[i:]
        elif how == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 40)):]
        else:
            j = draw(st.integers(i, min(len(text), i + 200)))
            text = text[:j] + text[i:j] + text[j:]
    return jur, text


PATH_PARTS = st.one_of(st.sampled_from(
    ["rules", "states", "regions", "name", "note", "holiday_calendar", "hours", "windows", "daily", "sun", "mon-fri",
     "frequency", "max_calls", "window_hours", "registry", "required", "max_age_days", "abandon", "max_rate",
     "window_hours", "ring", "min_seconds", "abandon_lockout", "machine_lockout", "hours", "multiline", "stride",
     "run_length", "caller_id", "forbid_types", "require_own", "number_types", "block", "special_codes", "codes",
     "emergency", "lifeline", "holidays", "ban", "FL", "PA", "TX", "ZZ", "source", "tag", "0", ""]),
    st.text(max_size=6))
RULE_PATHS = st.one_of(
    st.lists(PATH_PARTS, min_size=1, max_size=6).map(".".join),
    st.sampled_from(["states.FL.frequency.window_hours", "rules.registry.max_age_days", "rules.abandon.max_rate",
                     "rules.ring.min_seconds", "rules.abandon_lockout.hours", "regions", "holiday_calendar",
                     "states.PA.hours.windows.sun", "rules.hours.windows", "rules.multiline.run_length"]),
)
VALUE_TEXTS = st.one_of(
    JSON_VALUES.map(lambda v: json.dumps(v)),
    JSON_VALUES.map(lambda v: yaml.safe_dump(v)),
    st.lists(TEXT_PIECES, max_size=8).map("".join),
    st.text(max_size=20),
    st.sampled_from(["100000000000000000000", "1e20", "1E-2", ".inf", "-.inf", ".nan", "true", "null", "", "~",
                     '["US","GB"]', '["GB"]', '{daily: ["00:00-24:00"]}', '{daily: ["09:00-20:00"]}', "24", "0.03",
                     "0.02", "31", "32", "3", "8760", "8761"]),
)


def near(lo, hi, whole):
    """Numbers in, at and just outside a range (most in it)."""
    inside = st.integers(lo, hi) if whole else st.floats(lo, hi)
    edges = st.sampled_from([lo, hi, lo - 1, hi + 1] if whole else [lo, hi, lo - 0.001, hi + 0.001, hi * 10])
    return st.one_of(inside, inside, edges)


WINDOWS = st.dictionaries(st.sampled_from(["daily", "mon-fri", "mon-sat", "sat", "sun", "tue-thu"]),
                          st.lists(WINDOW, max_size=2), min_size=1, max_size=3)
STATES = st.sampled_from(["FL", "PA", "TX", "NY", "CA", "RI", "OK"])
PLAUSIBLE = st.one_of(  # (jurisdiction, path, value): mostly legal changes, some just out of range
    st.tuples(st.just("US"), STATES.map(lambda c: f"states.{c}.frequency.window_hours"), near(1, 8760, False)),
    st.tuples(st.just("US"), STATES.map(lambda c: f"states.{c}.frequency.max_calls"), near(1, 100, True)),
    st.tuples(st.just("US"), STATES.map(lambda c: f"states.{c}.hours.windows"), WINDOWS),
    st.tuples(st.just("US"), st.just("rules.hours.windows"), WINDOWS),
    st.tuples(st.just("US"), STATES.map(lambda c: f"states.{c}.holidays.ban"), st.booleans()),
    st.tuples(st.sampled_from(["US", "GB", "TR"]), st.just("rules.registry.max_age_days"), near(1, 31, True)),
    st.tuples(st.sampled_from(["US", "GB", "TR"]), st.just("rules.abandon.max_rate"), near(0, 0.03, False)),
    st.tuples(st.sampled_from(["US", "GB", "TR"]), st.just("rules.abandon.window_hours"), near(1, 720, False)),
    st.tuples(st.sampled_from(["US", "GB", "TR"]), st.just("rules.ring.min_seconds"), near(15, 300, True)),
    st.tuples(st.sampled_from(["US", "GB", "TR"]), st.sampled_from(["rules.abandon_lockout.hours",
                                                                     "rules.machine_lockout.hours"]),
              st.one_of(st.none(), near(0, 8760, False))),
    st.tuples(st.sampled_from(["US", "GB", "TR"]), st.just("rules.frequency"),
              st.fixed_dictionaries({"max_calls": near(1, 100, True), "window_hours": near(1, 8760, False)})),
    st.tuples(st.sampled_from(["US", "GB", "TR"]), st.sampled_from(["rules.multiline.stride",
                                                                     "rules.multiline.run_length"]),
              near(2, 100, True)),
    st.tuples(st.sampled_from(["GB", "TR"]), st.just("regions"),
              st.lists(st.sampled_from(["GB", "TR", "GG", "JE", "IM", "US", "CY"]), min_size=1, max_size=3)),
    st.tuples(st.sampled_from(["US", "GB", "TR"]), st.just("holiday_calendar"),
              st.sampled_from(["US", "GB", "TR", "DE", "XX", None])),
)


# ----------------------------------------------------------------------------- properties

@settings(max_examples=150, **SETTINGS)
@given(doc=mutated_default(), fmt=st.sampled_from(["json", "yaml"]))
def test_mutated_shipped_rule_sets_are_accepted_and_usable_or_refused_cleanly(template, doc, fmt):
    jur, data = doc
    try:
        text = dump(data, fmt)
    except ValueError:  # e.g. an integer too long for str(): nothing to send
        return
    with Fresh(template) as store:
        attempt(store, lambda: service.edit_ruleset(store, jur, text, NOW, "hyp", "mutation"))


@settings(max_examples=150, **SETTINGS)
@given(doc=st.dictionaries(st.one_of(KEYS, st.sampled_from(["jurisdiction", "schema", "regions", "rules",
                                                            "states", "holiday_calendar"])), JSON_VALUES, max_size=7),
       fmt=st.sampled_from(["json", "yaml"]), jur=st.one_of(st.sampled_from(["US", "GB", "TR", "XX"]), st.text(max_size=4)),
       create=st.booleans())
def test_random_rule_documents_are_refused_cleanly(template, doc, fmt, jur, create):
    try:
        text = dump(doc, fmt)
    except ValueError:
        return
    with Fresh(template) as store:
        attempt(store, lambda: service.edit_ruleset(store, jur, text, NOW, "hyp", "random", create=create))


@settings(max_examples=150, **SETTINGS)
@given(doc=text_mutation(), as_bytes=st.booleans())
def test_rule_text_with_random_edits_is_accepted_or_refused_cleanly(template, doc, as_bytes):
    jur, text = doc
    payload = text.encode("utf-8", "surrogatepass") if as_bytes else text
    with Fresh(template) as store:
        attempt(store, lambda: service.edit_ruleset(store, jur, payload, NOW, "hyp", "text edit"))


@settings(max_examples=250, **SETTINGS)
@given(jur=st.one_of(st.sampled_from(["US", "GB", "TR", "us", " gb ", "XX"]), st.text(max_size=5)), field=RULE_PATHS,
       value=VALUE_TEXTS)
def test_rules_set_any_path_and_value_is_accepted_and_usable_or_refused_cleanly(template, jur, field, value):
    with Fresh(template) as store:
        attempt(store, lambda: service.set_rule(store, jur, field, value, NOW, "hyp", "set"))


@settings(max_examples=150, **SETTINGS)
@given(change=PLAUSIBLE, fmt=st.sampled_from(["json", "yaml"]))
def test_plausible_rules_set_changes_are_accepted_and_usable_or_refused_cleanly(template, change, fmt):
    jur, field, value = change
    text = json.dumps(value) if fmt == "json" else yaml.safe_dump(value)
    with Fresh(template) as store:
        attempt(store, lambda: service.set_rule(store, jur, field, text, NOW, "hyp", "plausible"))


@settings(max_examples=60, **SETTINGS)
@given(field=RULE_PATHS, value=VALUE_TEXTS)
def test_cli_rules_set_exits_0_or_prints_error_lines_without_a_traceback(template, field, value):
    fresh = Fresh(template)
    with fresh as store:
        before = state(store)
        store.close()  # the command opens the file itself
        r = CliRunner().invoke(main, ["--db", str(fresh.path), "rules", "set", "--reason", "hyp", "--", "US", field,
                                      value])
        fresh.store = Store(fresh.path)
        after = state(fresh.store)
        assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
        if r.exit_code == 0:
            event("accepted")
            assert after[1] == before[1] + 1
        else:
            event("refused")
            out = r.output.strip().splitlines()
            assert out and out[0].startswith("Error: ") and "Traceback" not in r.output, r.output
            assert after == before
