"""Rule sets as data: validation with line and field, versions, audit chain."""

import datetime as dt
import json
import sqlite3

import pytest

from core.errors import InputError
from core import audit
from rules import service
from rules.ruleset import RuleSetError, load_text, validate
from tests.conftest import default_data

NOW = dt.datetime(2026, 11, 27, 18, 0, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("j", ["US", "GB", "TR"])
def test_shipped_defaults_are_valid_and_cite_sources(j):
    data = default_data(j)
    rs = validate(data, version=1)
    assert rs.jurisdiction == j
    for key, block in data["rules"].items():
        assert block.get("source") and block.get("tag") in ("P", "S", "I"), (j, key)
    for st, rules in data["states"].items():
        for key, block in rules.items():
            assert block.get("source") and block.get("tag"), (j, st, key)


BAD_TIME = """{
  "schema": 1,
  "jurisdiction": "US",
  "regions": ["US"],
  "rules": {
    "hours": {"windows": {"mon-fri": ["08:00-21:00"],
                          "sat": ["25:00-26:00"]}}
  }
}"""


def test_bad_time_names_line_and_field():
    with pytest.raises(RuleSetError) as e:
        load_text(BAD_TIME)
    msg = str(e.value)
    assert "line 7, field rules.hours.windows.sat[0]: '25:00' is not a time of day" in msg


def _with(path_value):
    data = default_data("US")
    cur = data
    *parents, last = path_value[0]
    for p in parents:
        cur = cur[p]
    cur[last] = path_value[1]
    return data


@pytest.mark.parametrize("change,expect", [
    ((("rules", "hours", "windows"), {"daily": ["08:00-12:00", "11:00-21:00"]}), "overlap"),
    ((("rules", "hours", "windows"), {"mon-fri": ["08:00-21:00"], "fri": ["08:00-20:00"]}), "fri is given twice"),
    ((("rules", "hours", "windows"), {"funday": ["08:00-21:00"]}), "not a day"),
    ((("rules", "hours", "windows"), {"daily": ["21:00-08:00"]}), "ends before it starts"),
    ((("rules", "curfew"), {"x": 1}), "unknown rule 'curfew'"),
    ((("rules", "registry", "max_age_days"), "31"), "must be a whole number"),
    ((("rules", "multiline", "run_length"), 1), "at least 2"),
    ((("rules", "emergency", "block"), False), "cannot be unblocked"),
    ((("rules", "number_types", "block"), {"toll_free": "cheap"}), "category must be one of"),
    ((("rules", "ring", "min_seconds"), 10), "at least 15"),
    ((("states", "ZZ"), {"hours": {"windows": {"daily": ["09:00-20:00"]}}}), "not a US state code"),
    ((("states", "FL", "curfew"), {}), "unknown state rule"),
    ((("regions",), ["XX"]), "not a phone region"),
])
def test_invalid_rule_data_is_refused_with_the_field(change, expect):
    with pytest.raises(RuleSetError) as e:
        validate(_with(change))
    assert expect in str(e.value)


def test_edit_keeps_old_version_when_refused(store):
    service.ensure_defaults(store, NOW)
    before = service.show_ruleset(store, "US")
    text = json.dumps(default_data("US"), indent=2).replace('"08:00-20:00"', '"08:00-20:61"', 1)
    with pytest.raises(RuleSetError) as e:
        service.edit_ruleset(store, "US", text, NOW, "alice", "typo")
    assert "line " in str(e.value) and "20:61" in str(e.value)
    assert service.show_ruleset(store, "US")["version"] == before["version"] == 1


def test_edit_set_history_and_verdict_version(store):
    service.ensure_defaults(store, NOW)
    data = default_data("US")
    data["states"]["FL"]["hours"]["windows"] = {"daily": ["09:00-20:00"]}
    out = service.edit_ruleset(store, "US", json.dumps(data), NOW, "alice", "FL counsel says 9am")
    assert out["version"] == 2
    assert out["changes"] == [{"field": "states.FL.hours.windows.daily", "old": ["08:00-20:00"], "new": ["09:00-20:00"]}]
    out = service.set_rule(store, "US", "states.TX.frequency", '{"max_calls": 2, "window_hours": 24}', NOW, "bob", "TX cap")
    assert out["version"] == 3
    hist = service.history(store, "US")
    assert [(h["version"], h["actor"], h["reason"]) for h in hist] == [
        (1, "system", "shipped defaults"), (2, "alice", "FL counsel says 9am"), (3, "bob", "TX cap")]
    v = service.check_numbers(store, ["+13055550100"], NOW, at=dt.datetime(2026, 11, 24, 13, 30, tzinfo=dt.timezone.utc))[0]
    assert v.ruleset == "US@3"
    assert any(r.rule == "US-FL-HOURS" for r in v.reasons)  # 08:30 in Miami is now too early


def test_changes_need_a_reason_and_a_change(store):
    service.ensure_defaults(store, NOW)
    with pytest.raises(InputError, match="say why"):
        service.set_rule(store, "US", "rules.ring.min_seconds", "20", NOW, "bob", "")
    with pytest.raises(InputError, match="no change"):
        service.edit_ruleset(store, "US", json.dumps(default_data("US")), NOW, "bob", "same")
    with pytest.raises(RuleSetError, match="unknown field"):
        service.set_rule(store, "US", "rulez.ring", "20", NOW, "bob", "typo")
    with pytest.raises(RuleSetError, match="unknown rule 'rign'"):
        service.set_rule(store, "US", "rules.rign.min_seconds", "20", NOW, "bob", "typo")


def test_audit_chain_verifies_and_detects_tampering(store):
    service.ensure_defaults(store, NOW)
    service.set_rule(store, "US", "rules.ring.min_seconds", "20", NOW, "bob", "longer ring")
    assert service.verify(store)["ok"]
    # the log is append-only from the application's side
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store.execute("UPDATE audit_log SET actor = 'mallory' WHERE id = 2")
    # someone with the file drops the guard and rewrites a row: the chain catches it
    store.execute("DROP TRIGGER audit_log_no_update")
    store.execute("UPDATE audit_log SET reason = 'nothing to see' WHERE id = 2")
    out = service.verify(store)
    assert not out["ok"] and "row 2: content does not match its hash" in out["errors"][0]


def test_audit_chain_detects_a_removed_row(store):
    service.ensure_defaults(store, NOW)
    for i in range(3):
        audit.append(store, NOW, "x", "test", "t", f"r{i}", {"i": i})
    store.execute("DROP TRIGGER audit_log_no_delete")
    rows = store.query("SELECT id FROM audit_log ORDER BY id")
    store.execute("DELETE FROM audit_log WHERE id = ?", (rows[-2]["id"],))
    out = service.verify(store)
    assert not out["ok"] and "prev_hash does not match" in out["errors"][0]
