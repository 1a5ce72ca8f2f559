"""Hostile input to the rule sets (issue 11, items 6-9): each test is named after a
defect reproduced on the code before the fix, and fails there.

6. numbers without an upper bound (10^20 h windows overflowed every check; a 10^30-day
   registry age switched the 31-day rule off), non-finite numbers, booleans as numbers;
7. `rules verify` checked only the audit chain: a deleted last row, rule-set data
   edited in its table, an unaudited version in force all passed as intact;
8. a rule set could claim another's region (a London number judged by US hours);
9. rule files: billion laughs, 100,000 nested brackets, Latin-1/UTF-16 text.

The hostile-file tests run under a memory and time bound (``bounded``) so that a
regression fails the test instead of exhausting the machine.
"""

import codecs
import contextlib
import datetime as dt
import hashlib
import json
import resource
import signal
import sqlite3

import pytest
from click.testing import CliRunner

from cli import main
from core.errors import DialerError, InputError
from core import audit
from rules import service
from rules.ruleset import LEGAL, MAX_TEXT_BYTES, RANGES, RuleSetError, canonical, limits, validate
from tests.conftest import default_data

NOW = dt.datetime(2026, 11, 27, 18, 0, tzinfo=dt.timezone.utc)
AT = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.timezone.utc)  # Tuesday 12:00 in New York, 17:00 in London
MIAMI, LONDON, NEW_YORK = "+13055550100", "+442079460000", "+12125550100"


# ----------------------------------------------------------------------------- helpers

@contextlib.contextmanager
def bounded(seconds=20, megabytes=768):
    """Run the block with at most ``megabytes`` more address space and ``seconds`` of
    wall time: MemoryError / TimeoutError instead of a machine brought down."""
    with open("/proc/self/status") as fh:
        vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = vm + megabytes * 2**20
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)

    def expired(signum, frame):
        raise TimeoutError(f"took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture
def seeded(store):
    service.ensure_defaults(store, NOW)
    return store


def current(store, jur="US"):
    r = service.show_ruleset(store, jur)
    return r["version"], r["digest"]


def refused(store, fn, *fragments, jur="US", exc=RuleSetError):
    """``fn()`` is refused with ``exc`` naming every fragment, and changes nothing."""
    before = current(store, jur)
    rows = store.query_one("SELECT COUNT(*) AS n FROM audit_log")["n"]
    with pytest.raises(exc) as e:
        fn()
    msg = str(e.value)
    for f in fragments:
        assert f in msg, msg
    assert current(store, jur) == before
    assert store.query_one("SELECT COUNT(*) AS n FROM audit_log")["n"] == rows
    return msg


def check(store, *numbers, at=AT):
    return {v.input: v for v in service.check_numbers(store, list(numbers), NOW, at=at)}


@pytest.fixture
def run(db_path):
    def _run(*args, input=None):
        return CliRunner().invoke(main, ["--db", str(db_path), *args], input=input, catch_exceptions=False)
    return _run


def one_error_line(result, *fragments):
    """A refused CLI command: exit code != 0, exactly one line, `Error: ...`, no traceback."""
    assert result.exit_code != 0, result.output
    out = result.output.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in out[0], out[0]
    return out[0]


def cli_version(run, jur="US"):
    return json.loads(run("rules", "show", jur, "--json").output)["version"]


# ----------------------------------------------------------------------------- 6. ranges

def test_frequency_window_of_10_to_the_20_hours_is_refused_and_check_never_overflows(seeded):
    refused(seeded, lambda: service.set_rule(seeded, "US", "states.FL.frequency.window_hours",
                                             "100000000000000000000", NOW, "bob", "hostile"),
            "states.FL.frequency.window_hours", "100000000000000000000", "at least 1 and at most 8760 hours")
    v = check(seeded, MIAMI, NEW_YORK, LONDON)  # used to end in OverflowError for any number
    assert v[MIAMI].ruleset == "US@1" and v[LONDON].ruleset == "GB@1"


def test_registry_max_age_of_10_to_the_30_days_is_refused_not_switched_off(seeded):
    refused(seeded, lambda: service.set_rule(seeded, "US", "rules.registry.max_age_days", str(10**30), NOW, "bob", "x"),
            "rules.registry.max_age_days", str(10**30), "at most 31 days", "US-DNC-NAT")
    # the TSR's 31 days is the legal bound in the US: 32 is looser, refused; 7 is stricter, kept
    refused(seeded, lambda: service.set_rule(seeded, "US", "rules.registry.max_age_days", "32", NOW, "bob", "x"),
            "32 is out of range")
    assert service.set_rule(seeded, "US", "rules.registry.max_age_days", "7", NOW, "bob", "stricter")["version"] == 2
    assert service.load_rulesets(seeded)["US"].registry_max_age_days == 7


NUMERIC_FIELDS = [  # (jurisdiction, path, key of RANGES)
    ("US", "rules.registry.max_age_days", "registry.max_age_days"),
    ("GB", "rules.registry.max_age_days", "registry.max_age_days"),
    ("TR", "rules.registry.max_age_days", "registry.max_age_days"),
    ("US", "states.FL.frequency.max_calls", "frequency.max_calls"),
    ("US", "states.FL.frequency.window_hours", "frequency.window_hours"),
    ("GB", "rules.abandon_lockout.hours", "abandon_lockout.hours"),
    ("GB", "rules.machine_lockout.hours", "machine_lockout.hours"),
    ("US", "rules.ring.min_seconds", "ring.min_seconds"),
    ("US", "rules.abandon.max_rate", "abandon.max_rate"),
    ("GB", "rules.abandon.max_rate", "abandon.max_rate"),
    ("TR", "rules.abandon.max_rate", "abandon.max_rate"),
    ("US", "rules.abandon.window_hours", "abandon.window_hours"),
    ("US", "rules.multiline.stride", "multiline.stride"),
    ("US", "rules.multiline.run_length", "multiline.run_length"),
]


@pytest.mark.parametrize("jur,path,key", NUMERIC_FIELDS)
def test_every_numeric_field_has_a_range_and_refuses_nan_inf_and_booleans(seeded, jur, path, key):
    lo, hi, unit, _ = limits(jur, key)
    whole = key in ("registry.max_age_days", "frequency.max_calls", "ring.min_seconds", "multiline.stride",
                    "multiline.run_length")
    step = 1 if whole else 0.001
    bad = [repr(hi + step), "1e300" if not whole else str(10**20), repr(lo - step) if lo - step >= 0 else "-1",
           ".nan", ".inf", "-.inf"]
    shown = {".nan": "nan", ".inf": "inf", "-.inf": "-inf", "1e300": "1e+300"}
    for text in bad:
        refused(seeded, lambda: service.set_rule(seeded, jur, path, text, NOW, "bob", "hostile"),
                f"field {path}: {shown.get(text, text)} is out of range: must be at least {lo} and at most {hi}", jur=jur)
    refused(seeded, lambda: service.set_rule(seeded, jur, path, "true", NOW, "bob", "bool"), path, "not True", jur=jur)
    # both ends of the range are accepted, and the engine still judges numbers
    for edge in (hi, lo):
        before = current(seeded, jur)[0]
        try:
            service.set_rule(seeded, jur, path, json.dumps(edge), NOW, "bob", "edge")
        except InputError as e:
            assert "no change" in str(e)
        else:
            assert current(seeded, jur)[0] == before + 1
        assert len(check(seeded, MIAMI, LONDON, "+902125550100")) == 3


def test_the_legal_limits_are_the_references():
    # compliance.md: US-DNC-NAT 31 d, UK-TPS 28 d, TR-REJECT 3 d; US/UK-ABANDON 3 %;
    # UK-72H and UK-AMD (24 h); US-RING/UK-RING 15 s; TR has no abandon cap (0..1)
    assert limits("US", "registry.max_age_days")[:2] == (1, 31)
    assert limits("GB", "registry.max_age_days")[:2] == (1, 28)
    assert limits("TR", "registry.max_age_days")[:2] == (1, 3)
    assert limits("US", "abandon.max_rate")[:2] == limits("GB", "abandon.max_rate")[:2] == (0, 0.03)
    assert limits("TR", "abandon.max_rate")[:2] == (0, 1)
    assert limits("GB", "abandon_lockout.hours")[:2] == (72, 8760)
    assert limits("GB", "machine_lockout.hours")[:2] == (24, 8760)
    assert limits("US", "ring.min_seconds")[:2] == (15, 300)
    # every shipped default lies within its range
    for j in ("US", "GB", "TR"):
        validate(default_data(j))
    assert set(k for v in LEGAL.values() for k in v) <= set(RANGES)


def test_us_calling_hours_wider_than_8_to_21_are_refused(seeded):
    refused(seeded, lambda: service.set_rule(seeded, "US", "rules.hours.windows", '{daily: ["07:00-21:00"]}',
                                             NOW, "bob", "earlier"),
            "rules.hours.windows.daily[0]", "'07:00-21:00'", "outside the legal window 08:00-21:00", "US-HOURS")
    assert service.set_rule(seeded, "US", "rules.hours.windows", '{daily: ["09:00-20:00"]}', NOW, "bob", "narrower")


def test_a_rule_switched_off_by_an_empty_or_null_block_is_refused(seeded):
    # {} used to read as "registry not required"; null as a missing rule nobody noticed
    refused(seeded, lambda: service.set_rule(seeded, "US", "rules.registry", "{}", NOW, "bob", "x"),
            "rules.registry", "missing field 'required'")
    text = json.dumps(default_data("US")).replace(
        '"registry": {"required": true, "max_age_days": 31,', '"registry": null, "x": {"required": true, "max_age_days": 31,')
    refused(seeded, lambda: service.edit_ruleset(seeded, "US", text, NOW, "bob", "x"), "missing rule 'registry'")


def test_a_version_in_force_saved_before_the_limits_fails_closed_in_one_line(seeded):
    data = default_data("US")
    data["states"]["FL"]["frequency"]["window_hours"] = 10**20
    with seeded.transaction():
        service._insert_version(seeded, "US", 2, data, NOW, "legacy", "saved before the limits")
    with pytest.raises(RuleSetError) as e:
        check(seeded, MIAMI)
    msg = str(e.value)
    assert "\n" not in msg and "US@2 in force" in msg and "states.FL.frequency.window_hours" in msg
    out = service.verify(seeded)
    assert not out["ok"] and any("US@2 in force" in x for x in out["errors"])
    # the way out: correct it with rules set
    service.set_rule(seeded, "US", "states.FL.frequency.window_hours", "24", NOW, "bob", "fix")
    assert check(seeded, MIAMI)[MIAMI].ruleset == "US@3"


def test_cli_rules_set_10_to_the_20_is_one_error_line_and_check_still_works(run):
    line = one_error_line(run("rules", "set", "US", "states.FL.frequency.window_hours", "100000000000000000000",
                              "--reason", "x"))
    assert "states.FL.frequency.window_hours" in line and "8760" in line
    assert cli_version(run) == 1
    r = run("check", "+1 305 555 0100", "+44 20 7946 0000", "--at", "2026-11-24T17:00:00Z", "--json")
    assert r.exit_code == 0 and len(r.output.strip().splitlines()) == 2


# ----------------------------------------------------------------------------- 7. verify

def test_verify_detects_the_last_audit_row_deleted_against_the_recorded_head(seeded):
    service.set_rule(seeded, "US", "rules.ring.min_seconds", "20", NOW, "bob", "longer ring")
    audit.append(seeded, NOW, "bob", "note", "x", "last row", {"i": 1})
    out = service.verify(seeded)
    assert out["ok"]
    head, rows = out["head"], out["rows"]
    assert service.verify(seeded, expect_head=head, expect_rows=rows)["ok"]
    seeded.execute("DROP TRIGGER audit_log_no_delete")
    seeded.execute("DELETE FROM audit_log WHERE id = (SELECT MAX(id) FROM audit_log)")
    assert service.verify(seeded)["ok"]  # the chain alone cannot see it: hence the anchor
    out = service.verify(seeded, expect_head=head, expect_rows=rows)
    assert not out["ok"] and out["errors"] == [
        f"the log has {rows - 1} rows, fewer than the {rows} recorded with its head: rows were removed from its end"]
    out = service.verify(seeded, expect_head=head)
    assert not out["ok"] and "is not in the log" in out["errors"][0]
    # the last row was the audit entry of a version: detected without the anchor too
    seeded.execute("DELETE FROM audit_log WHERE id = (SELECT MAX(id) FROM audit_log)")
    out = service.verify(seeded)
    assert not out["ok"] and out["errors"] == ["US version 2: no audit entry records it (added outside the application)"]


def test_verify_detects_rule_set_data_edited_in_its_table(seeded):
    row = seeded.query_one("SELECT data FROM rule_set_versions WHERE jurisdiction = 'US' AND version = 1")
    data = json.loads(row["data"])
    data["rules"]["hours"]["windows"] = {"daily": ["00:00-24:00"]}  # a 24-hour window, behind the app's back
    seeded.execute("UPDATE rule_set_versions SET data = ? WHERE jurisdiction = 'US' AND version = 1",
                   (json.dumps(data, sort_keys=True, indent=2),))
    out = service.verify(seeded)
    assert not out["ok"]
    assert "US version 1: its data does not match its digest (changed after it was saved)" in out["errors"]
    assert "US version 1: its data is not the data the audit log recorded" in " ".join(out["errors"])
    # the digest recomputed to match: the audit entry still tells
    seeded.execute("UPDATE rule_set_versions SET digest = ? WHERE jurisdiction = 'US' AND version = 1",
                   (hashlib.sha256(json.dumps(data, sort_keys=True, indent=2).encode()).hexdigest(),))
    out = service.verify(seeded)
    assert not out["ok"] and any(e.startswith("US version 1: its data is not the data the audit log recorded")
                                 for e in out["errors"])


def test_verify_detects_an_unaudited_version_in_force(seeded):
    data = default_data("US")
    data["rules"]["registry"]["required"] = False
    text = canonical(data)
    seeded.execute("INSERT INTO rule_set_versions (jurisdiction, version, data, digest, created_at, author, reason) "
                   "VALUES ('US', 2, ?, ?, '2026-11-27T18:00:00Z', 'mallory', 'quiet')",
                   (text, hashlib.sha256(text.encode()).hexdigest()))
    assert check(seeded, MIAMI)[MIAMI].ruleset == "US@2"  # in force
    out = service.verify(seeded)
    assert not out["ok"] and out["errors"] == ["US version 2: no audit entry records it (added outside the application)"]


def test_verify_detects_a_version_row_deleted(seeded):
    service.set_rule(seeded, "US", "rules.ring.min_seconds", "20", NOW, "bob", "longer ring")
    seeded.execute("DELETE FROM rule_set_versions WHERE jurisdiction = 'US' AND version = 2")
    out = service.verify(seeded)
    assert not out["ok"] and out["errors"][0].startswith(
        "US version 2: recorded in the audit log (row ") and "missing from the rule-set table" in out["errors"][0]


def test_verify_refuses_a_malformed_expected_head(seeded):
    with pytest.raises(InputError, match="64 hexadecimal digits"):
        service.verify(seeded, expect_head="abc")
    with pytest.raises(InputError, match="whole number"):
        service.verify(seeded, expect_rows=-1)


def test_cli_verify_prints_the_head_exits_non_zero_with_each_problem_on_its_own_line(run, db_path):
    assert run("rules", "show", "US").exit_code == 0
    r = run("rules", "verify")
    assert r.exit_code == 0
    first, second = r.output.strip().splitlines()
    out = json.loads(run("rules", "verify", "--json").output)
    assert out["ok"] and out["versions"] == 3 and out["rows"] == 4  # 3 versions + the life-line import
    assert first == f"audit log: 4 rows, head {out['head']}; rule-set versions: 3 checked"
    assert f"--expect-head {out['head']} --expect-rows 4" in second
    assert run("rules", "verify", "--expect-head", out["head"], "--expect-rows", "4").exit_code == 0
    con = sqlite3.connect(db_path)
    con.execute("DROP TRIGGER audit_log_no_delete")
    con.execute("DELETE FROM audit_log WHERE id = (SELECT MAX(id) FROM audit_log)")
    con.execute("UPDATE rule_set_versions SET data = replace(data, '08:00-21:00', '00:00-24:00') "
                "WHERE jurisdiction = 'GB'")
    con.commit()
    con.close()
    r = run("rules", "verify", "--expect-head", out["head"], "--expect-rows", "4")
    assert r.exit_code == 1
    text = r.output.strip().splitlines()
    assert text[1] == "NOT INTACT (3 problems):"
    assert text[2:] == [
        "  the log has 3 rows, fewer than the 4 recorded with its head: rows were removed from its end",
        "  GB version 1: its data does not match its digest (changed after it was saved)",
        f"  GB version 1: its data is not the data the audit log recorded (audit row 2, digest {out_digest(run, 'GB')}; "
        f"the data's digest is {gb_digest(db_path)})",
    ]
    r = run("rules", "verify", "--json", "--expect-rows", "4")
    assert r.exit_code == 1 and len(json.loads(r.output)["errors"]) == 3
    one_error_line(run("rules", "verify", "--expect-head", "not-a-hash"), "64 hexadecimal digits")


def out_digest(run, jur):
    return json.loads(run("rules", "show", jur, "--json").output)["digest"][:16]


def gb_digest(db_path):
    con = sqlite3.connect(db_path)
    data = con.execute("SELECT data FROM rule_set_versions WHERE jurisdiction = 'GB'").fetchone()[0]
    con.close()
    return hashlib.sha256(data.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- 8. regions

def test_a_rule_set_cannot_claim_a_region_another_rule_set_holds(seeded):
    msg = refused(seeded, lambda: service.set_rule(seeded, "US", "regions", '["US", "GB"]', NOW, "bob", "grab"),
                  "region GB belongs to rule set GB (version 1)", "US cannot claim it")
    assert "\n" not in msg
    v = check(seeded, LONDON)[LONDON]
    assert v.ruleset == "GB@1"  # a London number is still judged by the UK rules
    # a new jurisdiction cannot take one either
    text = json.dumps(dict(default_data("GB"), jurisdiction="UK"))
    refused(seeded, lambda: service.edit_ruleset(seeded, "UK", text, NOW, "bob", "dup", create=True),
            "region GB belongs to rule set GB", "UK cannot claim it", jur="GB")
    # once GB lets it go, another rule set may cover it
    data = default_data("GB")
    data["regions"] = ["GG"]
    service.edit_ruleset(seeded, "GB", json.dumps(data), NOW, "bob", "hand over")
    assert service.set_rule(seeded, "US", "regions", '["US", "GB"]', NOW, "bob", "take")["version"] == 2


def test_region_claimed_twice_in_an_old_database_fails_closed_and_verify_reports_it(seeded):
    data = default_data("US")
    data["regions"] = ["US", "GB"]
    with seeded.transaction():
        service._insert_version(seeded, "US", 2, data, NOW, "legacy", "saved before the check")
    with pytest.raises(RuleSetError, match="region GB is claimed by GB@1 and US@2"):
        check(seeded, LONDON)
    out = service.verify(seeded)
    assert out["errors"] == ["region GB is claimed by rule sets GB and US: a region belongs to one"]


def test_cli_rules_set_claiming_another_region_is_one_error_line(run):
    one_error_line(run("rules", "set", "US", "regions", '["US","GB"]', "--reason", "grab"),
                   "region GB belongs to rule set GB")
    assert cli_version(run) == 1


# ----------------------------------------------------------------------------- 9. rule files

def billion_laughs():
    lines = ['jurisdiction: US', 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


NESTED = "[" * 100_000 + "]" * 100_000


def latin1_file():
    data = default_data("US")
    data["name"] = "États-Unis: règles fédérales"
    return json.dumps(data, ensure_ascii=False, indent=2).encode("latin-1")


def changed_us():
    data = default_data("US")
    data["name"] = "United States — counsel's edition"
    return json.dumps(data, ensure_ascii=False, indent=2)


HOSTILE = {
    "billion-laughs": (billion_laughs().encode(), "YAML anchors and aliases"),
    "nested-brackets": (NESTED.encode(), "nested more than 32 levels deep"),
    "latin-1": (latin1_file(), "is not UTF-8 text (byte 0xC9 at line 4"),
    "utf-16-without-bom": (changed_us().encode("utf-16-le"), "UTF-16 or UTF-32 without a byte-order mark"),
    "too-long": (b"# " + b"x" * MAX_TEXT_BYTES + b"\n", "is too long"),
    "binary": (bytes(range(256)) * 4, "is not UTF-8 text"),
    "huge-integer": (("note: " + "9" * 5000 + "\n").encode(), "not accepted"),
    "alias-in-a-field": (b'jurisdiction: US\nregions: &r ["US"]\nx: *r\n', "anchors and aliases"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_rule_file_is_one_line_error_through_the_library(seeded, name):
    raw, fragment = HOSTILE[name]
    with bounded():
        msg = refused(seeded, lambda: service.edit_ruleset(seeded, "US", raw, NOW, "bob", "hostile"), fragment)
    assert "\n" not in msg and len(msg) < 300, msg


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_rule_file_is_one_line_error_through_the_cli(run, tmp_path, name):
    raw, fragment = HOSTILE[name]
    f = tmp_path / "rules.yaml"
    f.write_bytes(raw)
    assert cli_version(run) == 1
    with bounded():
        r = run("rules", "edit", "US", str(f), "--reason", "x")
    one_error_line(r, fragment)
    assert cli_version(run) == 1
    with bounded():  # the same through stdin
        one_error_line(run("rules", "edit", "US", "-", "--reason", "x", input=raw), fragment)


def test_billion_laughs_in_a_rules_set_value_is_refused(seeded):
    value = "\n".join(billion_laughs().splitlines()[1:])
    with bounded():
        refused(seeded, lambda: service.set_rule(seeded, "US", "note", value, NOW, "bob", "x"),
                "anchors and aliases")


def test_deep_nesting_in_a_rules_set_path_or_value_is_refused(seeded):
    with bounded():
        refused(seeded, lambda: service.set_rule(seeded, "US", "note", "[" * 5000 + "]" * 5000, NOW, "bob", "x"),
                "nested more than 32 levels deep")
        refused(seeded, lambda: service.set_rule(seeded, "US", "note." + ".".join(["a"] * 50), "1", NOW, "bob", "x"),
                "more than 8 parts")
        deep = 1
        for _ in range(2000):
            deep = [deep]
        refused(seeded, lambda: service.set_rule(seeded, "US", "note", deep, NOW, "bob", "x"),
                "nested more than 32 levels deep")


@pytest.mark.parametrize("bom,encoding", [(codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
                                          (codecs.BOM_UTF16_BE, "utf-16-be"), (codecs.BOM_UTF32_LE, "utf-32-le")])
def test_utf16_rule_file_with_a_byte_order_mark_is_read(run, tmp_path, bom, encoding):
    f = tmp_path / "rules.json"
    f.write_bytes(bom + changed_us().encode(encoding))
    r = run("rules", "edit", "US", str(f), "--reason", "counsel", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["changes"] == [
        {"field": "name", "old": default_data("US")["name"], "new": "United States — counsel's edition"}]


def test_yaml_values_that_are_not_json_data_are_refused(seeded):
    # a date, a binary blob, a non-text key: refused by name instead of failing to store
    refused(seeded, lambda: service.set_rule(seeded, "US", "note", "2026-01-01", NOW, "bob", "x"),
            "field note: date value", "not JSON data")
    refused(seeded, lambda: service.set_rule(seeded, "US", "note", "!!binary aGVsbG8=", NOW, "bob", "x"),
            "bytes value")
    refused(seeded, lambda: service.set_rule(seeded, "US", "rules.hours.windows", "{1: ['09:00-20:00']}",
                                             NOW, "bob", "x"),
            "a field name must be text, not 1")
    refused(seeded, lambda: service.set_rule(seeded, "US", "regions", "[[US]]", NOW, "bob", "x"),
            "['US'] is not a phone region code")
    refused(seeded, lambda: service.set_rule(seeded, "US", "holiday_calendar", "utils", NOW, "bob", "x"),
            "'utils' is not a country code")
    assert issubclass(RuleSetError, DialerError)


def test_json_escaped_surrogate_pair_is_one_character_and_a_lone_half_is_refused(seeded):
    # found by tests/test_hypothesis_rules.py: YAML read "\ud800\udc00" as two lone halves,
    # and storing the version then failed with UnicodeEncodeError
    out = service.set_rule(seeded, "US", "name", json.dumps({"𐀀": "😀"}), NOW, "bob", "astral")
    assert out["changes"][0]["new"] == {"𐀀": "😀"}
    refused(seeded, lambda: service.set_rule(seeded, "US", "name", '"\\ud800 alone"', NOW, "bob", "x"),
            "field name: text '\\ud800 alone' holds a lone UTF-16 surrogate")
