"""Issue 11 ("Hostile input"), DNC and checks items 10-12: each test is named after the
defect it pins down (reproduced on the code before the fix)."""

import datetime as dt
import json
import re
import wave

import pytest
from click.testing import CliRunner

from campaigns.hopper import Hopper
from campaigns.leads import import_list
from campaigns.store import add_number, change_state, create_account, create_campaign
from cli import main
from core.errors import InputError
from core.store import Store
from rules import service

NOW = dt.datetime(2026, 11, 27, 18, 0, tzinfo=dt.timezone.utc)
AT = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.timezone.utc)  # Tuesday 12:00 in New York


@pytest.fixture
def run(db_path):
    def _run(*args):
        return CliRunner().invoke(main, ["--db", str(db_path), *args], catch_exceptions=False)
    return _run


def one_error_line(r, *fragments):
    """A refusal: exit code 1 and exactly one line, 'Error: ...' with every fragment."""
    assert r.exit_code == 1, r.output
    out = r.output.strip()
    assert len(out.splitlines()) == 1 and out.startswith("Error: "), out
    for f in fragments:
        assert f in out, (f, out)
    return out


def dnc_rules(store, number, **kw):
    v = service.check_numbers(store, [number], NOW, at=AT, **kw)[0]
    return [r.rule for r in v.reasons if r.category == "dnc"]


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


class SqlLog:
    """The SQL statements a connection runs (sqlite3 trace callback)."""

    def __init__(self, store):
        self.store, self.statements = store, []

    def __enter__(self):
        self.store.conn.set_trace_callback(self.statements.append)
        return self

    def __exit__(self, *exc):
        self.store.conn.set_trace_callback(None)

    def whole_list_reads(self):
        """Statements that read a list's entries other than by version (the delta)."""
        return [s for s in self.statements if re.search(r"FROM dnc_entries\b", s) and "version >" not in s
                and s.lstrip().upper().startswith("SELECT")]


# ---------------------------------------------------------------------------------
# 10. a big company list was read whole for every check
# ---------------------------------------------------------------------------------

N_LIST = 20_000  # modest: the figures for 10M entries are bench/dnc_list_bench.py's


@pytest.fixture
def big_list(store, tmp_path):
    service.ensure_defaults(store, NOW)
    create_account(store, "acme", NOW, "t")
    numbers = [f"+1212{2000000 + 37 * i:07d}" for i in range(N_LIST)]
    service.import_dnc(store, write(tmp_path / "optouts.txt", numbers + ["305*"]), NOW, "t", source="company")
    return numbers


def test_10_company_list_is_not_read_whole_for_every_check(store, big_list):
    with SqlLog(store) as log:
        for i in range(0, 200, 4):  # 50 checks, listed and not
            listed = dnc_rules(store, big_list[i])
            assert "DNC-COMPANY" in listed
            assert "DNC-COMPANY" not in dnc_rules(store, f"+1212{2000000 + 37 * i + 1:07d}")
        assert dnc_rules(store, "+13055550100") == ["US-DNC-NAT-MISSING", "DNC-COMPANY-PREFIX"]
    # the import built the snapshot: 101 checks read the list's version, never the list
    assert log.whole_list_reads() == []
    assert [p.name for p in store.files_dir.glob("dnclist-*")] == ["dnclist-account-1-v1.snap"]


def test_10_checks_read_the_snapshot_file_not_the_table(store, big_list):
    service._list_cache.clear()  # a new process: nothing in memory
    with SqlLog(store) as log:
        assert "DNC-COMPANY" in dnc_rules(store, big_list[7])
    assert log.whole_list_reads() == []
    st = service._list_cache[(str(store.path), "account:1")]
    assert (len(st.numbers), st.prefixes, st.version) == (N_LIST, frozenset({"1305"}), 1)


def test_10_a_new_opt_out_and_a_removal_are_seen_at_once(store, db_path, big_list):
    assert dnc_rules(store, "+14155550100") == ["US-DNC-NAT-MISSING"]
    other = Store(db_path)  # another connection (the CLI while the dialer runs)
    try:
        service.add_dnc(other, ["415-555-0100"], NOW, "t", reason="asked on a call")
        assert dnc_rules(store, "+14155550100") == ["US-DNC-NAT-MISSING", "DNC-COMPANY"]
        service.remove_dnc(other, [big_list[3]], NOW, "t", reason="added by mistake")
        assert dnc_rules(store, big_list[3]) == ["US-DNC-NAT-MISSING"]
        service.add_dnc(other, [big_list[3]], NOW, "t", reason="asked again")
        assert "DNC-COMPANY" in dnc_rules(store, big_list[3])
        service.remove_dnc(other, ["305*"], NOW, "t", reason="wrong prefix")
        assert dnc_rules(store, "+13055550100") == ["US-DNC-NAT-MISSING"]
    finally:
        other.close()
    # brought up to date from the changes, never by reading the list again
    assert service._list_cache[(str(store.path), "account:1")].version == 5


def test_10_the_hopper_sees_a_new_opt_out_at_once(store, tmp_path, db_path):
    service.ensure_defaults(store, NOW)
    service.import_dnc(store, write(tmp_path / "reg.txt", ["2125550199"]), NOW, "t", source="national",
                       as_of="2026-11-20")
    create_account(store, "acme", NOW, "t")
    add_number(store, "acme", "212 555 9999", NOW, "t")
    g = tmp_path / "g.wav"
    with wave.open(str(g), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000), w.writeframes(b"\x00" * 1600)
    create_campaign(store, "c", "acme", NOW, "t", caller_id="212-555-9999", greeting=g)
    import_list(store, write(tmp_path / "l.csv", ["phone", "2125550100", "3125550100", "4155550100"]), "c", NOW, "t")
    change_state(store, "c", "start", NOW, "t")
    service.import_dnc(store, write(tmp_path / "o.txt", [f"+1646{2000000 + i:07d}" for i in range(5000)]),
                       NOW, "t", source="company")
    h = Hopper(store, "c")
    (first, _), = h.next_leads(1, AT, "loop")
    assert first["phone"] == "+12125550100"
    cli = Store(db_path)
    try:
        service.add_dnc(cli, ["312-555-0100"], NOW, "t", reason="asked on a call")
    finally:
        cli.close()
    got = [row["phone"] for row, _ in h.next_leads(5, AT, "loop")]
    assert got == ["+14155550100"]
    assert store.query_one("SELECT status, disposition FROM leads WHERE phone = '+13125550100'") == \
        {"status": "blocked", "disposition": "dnc"}


def test_10_missing_or_corrupt_snapshot_is_rebuilt_never_skipped(store, big_list):
    (snap,) = store.files_dir.glob("dnclist-*")
    snap.unlink()
    service._list_cache.clear()
    assert "DNC-COMPANY" in dnc_rules(store, big_list[11])
    assert snap.exists()  # rebuilt from the entries and saved
    data = bytearray(snap.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snap.write_bytes(bytes(data))
    service._list_cache.clear()
    assert "DNC-COMPANY" in dnc_rules(store, big_list[12])
    from rules.registry import load_list_snapshot
    numbers, prefixes, meta = load_list_snapshot(snap)  # the corrupt file was replaced by a good one
    assert len(numbers) == N_LIST and prefixes == ("1305",) and meta["version"] == 1
    snap.write_bytes(b"")  # truncated to nothing
    service._list_cache.clear()
    assert "DNC-COMPANY" in dnc_rules(store, big_list[13])


def test_10_a_snapshot_left_by_another_database_is_never_used(tmp_path):
    db = tmp_path / "d.db"
    s = Store(db)
    create_account(s, "acme", NOW, "t")
    service.add_dnc(s, ["212-555-0100"], NOW, "t")
    assert "DNC-COMPANY" in dnc_rules(s, "+12125550100")
    s.close()
    for suffix in ("", "-wal", "-shm"):  # the database is replaced; its files directory stays
        (tmp_path / ("d.db" + suffix)).unlink(missing_ok=True)
    s = Store(db)
    create_account(s, "acme", NOW, "t")
    service.add_dnc(s, ["212-555-0111"], NOW, "t")  # same scope, same version 1, other numbers
    service._list_cache.clear()
    assert dnc_rules(s, "+12125550100") == ["US-DNC-NAT-MISSING"]
    assert "DNC-COMPANY" in dnc_rules(s, "+12125550111")
    s.close()


def test_10_many_prefixes_are_matched_by_length_not_one_by_one(rulesets):
    from conftest import make_ctx
    from rules.engine import DncLists, evaluate
    from rules.registry import NumberSet
    prefixes = tuple(sorted({f"1{npa}" for npa in range(201, 260)} | {"1305555", "44207946"}))
    ctx = make_ctx(rulesets, dnc=DncLists(company=NumberSet.from_iterable([13125550100]), company_prefixes=prefixes))
    rules = lambda n: [r.rule for r in evaluate(n, AT, ctx).reasons if r.rule.startswith("DNC")]  # noqa: E731
    assert rules("+1 212 555 0100") == ["DNC-COMPANY-PREFIX"]
    assert rules("+1 305 555 0100") == ["DNC-COMPANY-PREFIX"]
    assert rules("+1 305 556 0100") == []
    assert rules("+1 312 555 0100") == ["DNC-COMPANY"]
    assert rules("+44 20 7946 0000") == ["DNC-COMPANY-PREFIX"]
    assert rules("+1 415 555 0100") == []


# ---------------------------------------------------------------------------------
# 11. DNC files and wildcards
# ---------------------------------------------------------------------------------

def test_11_company_import_accepts_the_ftc_area_number_lines_its_help_promises(run, tmp_path, store):
    create_account(store, "acme", NOW, "t")
    f = write(tmp_path / "ftc.txt", ["area,number", "212,5550100", '"305","5550101"', "415, 5550102", "212,55501",
                                     "abc,defghij"])
    r = run("dnc", "import", str(f), "--source", "company", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert (out["numbers"], out["added"], out["junk"]) == (3, 3, 2)
    assert [j["line"] for j in out["junk_examples"]] == [5, 6]
    for n in ("+12125550100", "+13055550101", "+14155550102"):
        assert "DNC-COMPANY" in dnc_rules(store, n)


def test_11_campaign_import_without_campaign_says_what_is_missing(run, tmp_path, store):
    create_account(store, "acme", NOW, "t")
    f = write(tmp_path / "ftc.txt", ["212,5550100"])
    one_error_line(run("dnc", "import", str(f), "--source", "campaign"), "--source campaign needs --campaign NAME")
    one_error_line(run("dnc", "import", str(tmp_path / "missing.txt"), "--source", "campaign"),
                   "--source campaign needs --campaign NAME")
    assert store.query("SELECT * FROM dnc_entries") == []


def test_11_wide_wildcards_need_wide_and_say_how_many_numbers_they_block(run, store, tmp_path):
    create_account(store, "acme", NOW, "t")
    one_error_line(run("dnc", "add", "+44*"), "+44*", "11,010,000,000 numbers", "--wide")
    one_error_line(run("dnc", "add", "+12*", "212-555-0100"), "+12*", "1,000,000,000 numbers",
                   "wider than a North American area code", "--wide")
    one_error_line(run("dnc", "add", "+447*"), "+447*", "--wide")
    f = write(tmp_path / "w.txt", ["2125550100", "+44*"])
    one_error_line(run("dnc", "import", str(f), "--source", "company"), "line 2", "+44*", "--wide")
    assert store.query("SELECT * FROM dnc_entries") == []  # nothing half-stored
    r = run("dnc", "add", "212*", "+44 20*")
    assert r.exit_code == 0, r.output
    assert "+1212* may block up to 10,000,000 numbers" in r.output
    assert "+4420* may block up to 110,100,000 numbers" in r.output
    r = run("dnc", "add", "+44*", "--wide", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["wildcards"] == [{"entry": "+44*", "may_block": 11010000000}]
    r = run("dnc", "import", str(f), "--source", "company", "--wide", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["may_block"] == 11010000000
    assert "DNC-COMPANY-PREFIX" in dnc_rules(store, "+44 20 7946 0000")
    one_error_line(run("dnc", "add", "+99912*"), "no country has a code")
    one_error_line(run("dnc", "add", "+1212555010099999*"), "at most 15 digits")


# ---------------------------------------------------------------------------------
# 12. user mistakes: one line naming the option and the value, nothing changed
# ---------------------------------------------------------------------------------

def test_12_check_at_year_one_is_one_line_not_a_traceback(run):
    one_error_line(run("check", "2125550100", "--at", "0001-01-01T00:00:00Z"), "--at '0001-01-01T00:00:00Z'",
                   "between 2000-01-01 and 2099-12-31")
    one_error_line(run("check", "2125550100", "--at", "9999-12-31T23:59:59-01:00"), "--at", "out of range")
    with pytest.raises(InputError, match="--at"):
        service.check_numbers(Store(":memory:"), ["2125550100"], NOW, at=dt.datetime(1, 1, 1))


def test_12_check_at_empty_is_a_mistake_not_now(run):
    one_error_line(run("check", "2125550100", "--at", ""), "--at ''", "not an ISO 8601 time")
    one_error_line(run("screen", "nofile.csv", "--at", ""), "--at ''")


def test_12_campaign_abandon_target_nan_and_negative(run, store):
    create_account(store, "acme", NOW, "t")
    one_error_line(run("campaign", "create", "c", "--abandon-target", "nan"), "--abandon-target 'nan'",
                   "not a finite number")
    one_error_line(run("campaign", "create", "c", "--abandon-target", "inf"), "--abandon-target 'inf'")
    out = one_error_line(run("campaign", "create", "c", "--abandon-target", "-1"), "--abandon-target '-1'",
                         "negative", "between 0 and 0.03")
    assert "above" not in out
    one_error_line(run("campaign", "create", "c", "--abandon-target", "0.05"), "above the legal cap of 3 %")
    assert store.query("SELECT * FROM campaigns") == []


def test_12_campaign_power_ratio_nan(run, store):
    create_account(store, "acme", NOW, "t")
    one_error_line(run("campaign", "create", "c", "--mode", "power", "--ratio", "nan"), "--ratio 'nan'",
                   "not a finite number")
    one_error_line(run("campaign", "create", "c", "--mode", "power", "--ratio", "7"), "--ratio '7'", "between 1 and 5")
    one_error_line(run("campaign", "create", "c", "--mode", "power"), "needs --ratio")
    assert store.query("SELECT * FROM campaigns") == []


def test_12_retry_zero_delay_and_a_million_attempts_are_refused(run, store):
    create_account(store, "acme", NOW, "t")
    one_error_line(run("campaign", "create", "c", "--retry", "busy=0m/1000000"), "--retry rule 'busy=0m/1000000'",
                   "between 1 minute and 30 days")
    one_error_line(run("campaign", "create", "c", "--retry", "busy=20m/1000000"), "from 1 to 20")
    one_error_line(run("campaign", "create", "c", "--retry", "busy=99999999999m/2"), "--retry rule")
    one_error_line(run("campaign", "create", "c", "--retry", "busy=20m/\u00b2"), "from 1 to 20")
    assert store.query("SELECT * FROM campaigns") == []
    r = run("campaign", "create", "c", "--retry", "busy=1m/20,no-answer=30d/1", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["retry_rules"]["busy"] == {"delay_minutes": 1,
                                                                               "max_attempts": 20}


def test_12_dry_run_step_zero_is_one_line(run, store):
    create_account(store, "acme", NOW, "t")
    create_campaign(store, "c", "acme", NOW, "t")
    args = ("campaign", "dry-run", "c", "--from", "2026-11-24T12:00Z", "--to", "2026-11-24T15:00Z")
    one_error_line(run(*args, "--step", "0"), "--step '0'", "between 1 and 1440")
    one_error_line(run(*args, "--step", "0.001"), "--step '0.001'")
    one_error_line(run(*args, "--step", "-5"), "--step '-5'")
    one_error_line(run("campaign", "dry-run", "c", "--from", "0001-01-01T00:00Z", "--to", "2026-11-24T15:00Z"),
                   "--from '0001-01-01T00:00Z'", "out of range")
    r = run(*args, "--step", "90", "--json")
    assert r.exit_code == 0 and len(json.loads(r.output)["hours"]) == 2


@pytest.mark.parametrize("raw,why", [
    ("(((2125550100", "nested parentheses"),
    ("-2125550100", "cannot start with '-'"),
    ("2125550100)", "')' without its '('"),
    ("(2125550100", "'(' without its ')'"),
    ("+-2125550100", "'+' must be followed by the country code"),
    ("()2125550100", "empty parentheses"),
    ("2125550100-", "cannot end with '-'"),
    ("212+5550100", "'+' may only come first"),
    ("2\u00b225550100", "unexpected character '\u00b2' (U+00B2)"),  # used to raise NumberParseException
    ("00", "no digits after the international prefix"),  # used to raise ValueError (found by hypothesis)
    ("011", "no digits after the international prefix"),
])
def test_12_malformed_numbers_are_refused_with_the_reason(run, store, raw, why):
    create_account(store, "acme", NOW, "t")
    r = run("check", "--at", "2026-11-24T17:00:00Z", "--json", "--", raw)
    assert r.exit_code == 0
    v = json.loads(r.output)
    assert v["number"] is None and v["reasons"][-1]["rule"] == "INVALID" and why in v["reasons"][-1]["detail"]
    one_error_line(run("dnc", "add", "--", raw), "is not a valid phone number", why)
    assert store.query("SELECT * FROM dnc_entries") == []


def test_12_other_scripts_digits_give_the_ascii_number():
    from rules.numbers import normalise
    for raw in ("2\u0661\u0662\u0665\u0665\u0665\u0660\u0661\u0660\u0660", "\uff12\uff11\uff12\uff15\uff15\uff15"
                "\uff10\uff11\uff10\uff10", "212\u20135550100"):
        f = normalise(raw, "US")
        assert (f.e164, f.value) == ("+12125550100", 12125550100)  # the e164 used to keep the Arabic digits
    f = normalise("+44 (0)20 7946 0000", "GB")  # the trunk 0 in brackets: the same number as +44 20 ...
    assert f.e164 == normalise("+44 20 7946 0000", "GB").e164 == "+442079460000"
