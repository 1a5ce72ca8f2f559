"""Every field of a compiled rule set has a consumer in the live path (issue 12).

``CONSUMERS`` maps each field of ``rules.ruleset.CompiledRuleSet`` to where it is read
and to a probe of that reader: the field is changed in a shipped rule set (GB, or US
for the state rules) and the probe's answer must change with it. A field added to the
rule set without an entry here fails the first test; an entry whose consumer no longer
reads its field fails its probe.

Probes: the rules engine's verdict at dial time (``rules.engine.Screener.evaluate``,
what the hopper asks for each lead), the multi-line runs of a list
(``rules.engine.flag_groups``, whose groups the hopper keeps to one live call), and for
the pacing fields the live dialer's policy and ring timeout (``dialer.engine.policy_for``
with ``dialer.jurisdiction.PacingRules``, which ``Dialer`` builds and ``Dialer._dial``
asks for each call's ring timeout; tests/test_jurisdiction.py runs them in the loop).
"""

import dataclasses
import datetime as _dt
import importlib
import json
import pathlib

import pytest

from dialer.engine import policy_for
from dialer.jurisdiction import pacing_from
from rules.engine import CampaignRules, Context, DncLists, Lead, Registry, Screener, screen
from rules.numbers import normalise
from rules.ruleset import CompiledRuleSet, Frequency, validate

DEFAULTS = pathlib.Path(__file__).resolve().parent.parent / "rules" / "defaults"
AT = _dt.datetime(2026, 11, 24, 15, 0, tzinfo=_dt.timezone.utc)  # a Tuesday: 15:00 in London
CHRISTMAS = _dt.datetime(2026, 12, 25, 12, 0, tzinfo=_dt.timezone.utc)  # a Friday, a GB holiday
LONDON = "+442079460100"
CALLER_ID = "+442079460999"


def shipped(jur):
    return validate(json.loads((DEFAULTS / f"{jur}.json").read_text(encoding="utf-8")), version=1)


def context(rs, registry_age_days=2, history=None, live=(), caller_id=CALLER_ID, own=(CALLER_ID,)):
    """The rules context of a dial with ``rs`` in force for its regions (and US beside it)."""
    sets = {"US": shipped("US"), rs.jurisdiction: rs} if rs.jurisdiction != "US" else {"US": rs}
    as_of = (AT - _dt.timedelta(days=registry_age_days)).date()
    regs = {j: Registry(j, as_of, frozenset()) for j in ("US", "GB")}
    camp = CampaignRules(name="c", caller_id=caller_id, own_numbers=frozenset(own))
    ctx = Context(rulesets=sets, default_region="GB", dnc=DncLists(registries=regs), campaign=camp,
                  history=history or {})
    if live:
        ctx.set_live(set(live), set())
    return ctx


def verdict(rs, number=LONDON, at=AT, **kw):
    """What the engine says about ``number`` at ``at``: allowed, and the rules that said no."""
    v = Screener(context(rs, **kw), at).evaluate(Lead(number))
    return v.allowed, v.ruleset, sorted(r.rule for r in v.reasons)


def value(number):
    return normalise(number, "GB").value


# field -> (the consumer, the rule set to probe with, how to change the field, the probe)
CONSUMERS = {
    "jurisdiction": ("rules.engine.Screener.evaluate", "GB", lambda rs: "GX",
                     lambda rs: verdict(rs, "+44 800 046 0000")),  # rule ids and the verdict's label
    "version": ("rules.engine.Screener.evaluate", "GB", lambda rs: 7, verdict),
    "regions": ("rules.engine.Context", "GB", lambda rs: frozenset({"IE"}), verdict),
    "holiday_calendar": ("rules.engine.Screener.evaluate", "GB", lambda rs: "TR",
                         lambda rs: verdict(dataclasses.replace(rs, holiday_ban=True), at=CHRISTMAS)),
    "hours": ("rules.engine.Screener.evaluate", "GB", lambda rs: (((9 * 60, 10 * 60),),) * 7, verdict),
    "holiday_ban": ("rules.engine.Screener.evaluate", "GB", lambda rs: not rs.holiday_ban,
                    lambda rs: verdict(rs, at=CHRISTMAS)),
    "registry_required": ("rules.engine.Screener.evaluate", "GB", lambda rs: not rs.registry_required,
                          lambda rs: verdict(rs, registry_age_days=40)),
    "registry_max_age_days": ("rules.engine.Screener.evaluate", "GB", lambda rs: 1, verdict),
    "special_codes": ("rules.numbers.normalise (rules.engine.Context.special_codes)", "GB",
                      lambda rs: frozenset(), lambda rs: verdict(rs, "101")),
    "blocked_types": ("rules.engine.Screener.evaluate", "GB", lambda rs: {},
                      lambda rs: verdict(rs, "+44 800 046 0000")),
    "multiline_stride": ("rules.engine.Screener.evaluate", "GB", lambda rs: 5,
                         lambda rs: verdict(rs, live=[value("+442079460103")])),
    "multiline_run": ("rules.engine.flag_groups", "GB", lambda rs: 4,
                      lambda rs: [v.groups for v in screen([Lead(f"+4420794601{i:02d}") for i in (10, 11, 12)], AT,
                                                           context(rs))]),
    "frequency": ("rules.engine.Screener.evaluate", "GB", lambda rs: Frequency(1, 24.0, "GB-FREQ"),
                  lambda rs: verdict(rs, history={value(LONDON): [(AT - _dt.timedelta(hours=1), "no-answer")]})),
    "abandon_lockout_hours": ("rules.engine.Screener.evaluate", "GB", lambda rs: None,
                              lambda rs: verdict(rs, history={value(LONDON): [(AT - _dt.timedelta(hours=48),
                                                                                "abandoned")]})),
    "machine_lockout_hours": ("rules.engine.Screener.evaluate", "GB", lambda rs: None,
                              lambda rs: verdict(rs, history={value(LONDON): [(AT - _dt.timedelta(hours=12),
                                                                                "machine")]})),
    "caller_id_require_own": ("rules.engine.caller_id_reasons", "GB", lambda rs: not rs.caller_id_require_own,
                              lambda rs: verdict(rs, own=())),
    "caller_id_forbid_types": ("rules.engine.caller_id_reasons", "GB", lambda rs: frozenset(),
                               lambda rs: verdict(rs, caller_id="+449098790000", own=("+449098790000",))),
    "ring_min_seconds": ("dialer.jurisdiction.PacingRules.ring_timeout_s", "GB", lambda rs: 25,
                         lambda rs: pacing_from({"abandon_target": "0.03"}, rs).ring_timeout_s(
                             15, {"ruleset": rs.label})),
    "abandon_max_rate": ("dialer.engine.policy_for", "GB", lambda rs: 0.02,
                         lambda rs: policy_for(CAMPAIGN, pacing_from(CAMPAIGN, rs)).cap),
    "abandon_window_hours": ("dialer.engine.policy_for", "GB", lambda rs: 12.0,
                             lambda rs: policy_for(CAMPAIGN, pacing_from(CAMPAIGN, rs)).window_s),
    "states": ("rules.engine.Screener.evaluate", "US", lambda rs: {},  # 20:30 in Miami: Florida says no
               lambda rs: verdict(rs, "+1 305 555 0100", at=_dt.datetime(2026, 11, 25, 1, 30, tzinfo=_dt.timezone.utc),
                                  caller_id="+12125559999", own=("+12125559999",))),
}
CAMPAIGN = {"dial_mode": "predictive", "abandon_target": "0.03", "power_ratio": None}


def resolve(path):
    """The object a consumer path names (module, then attributes)."""
    dotted = path.split(" ")[0]
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


def test_every_rule_set_field_has_a_consumer_in_the_live_path():
    names = [f.name for f in dataclasses.fields(CompiledRuleSet)]
    missing = [n for n in names if n not in CONSUMERS]
    assert not missing, (f"rule-set field(s) {missing} have no consumer in the live dialer: read them where the "
                         f"dialer decides and add each to CONSUMERS with a probe")
    gone = [n for n in CONSUMERS if n not in names]
    assert not gone, f"CONSUMERS lists fields the rule set no longer has: {gone}"


@pytest.mark.parametrize("name", sorted(CONSUMERS))
def test_the_consumer_reads_the_field(name):
    where, jur, change, probe = CONSUMERS[name]
    assert resolve(where) is not None
    rs = shipped(jur)
    changed = dataclasses.replace(rs, **{name: change(rs)})
    assert getattr(changed, name) != getattr(rs, name)
    before, after = probe(rs), probe(changed)
    assert before != after, f"{name}: {where} gives {before!r} whatever the field says"
