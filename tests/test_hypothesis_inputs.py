"""Property-based tests (hypothesis) of hostile input (issue 11): phone numbers, DNC
files, and the CLI options with dates and numbers. Every input is accepted, or refused
with one clear line; nothing is half-stored; never a traceback.

Each test is bounded (max_examples, no deadline); run with
``--hypothesis-show-statistics`` to see how many examples each ran and how long."""

import datetime as dt
import json
import re

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from campaigns.store import create_account, create_campaign
from cli import main
from core.errors import InputError
from core.store import Store
from rules import service
from rules.numbers import normalise

NOW = dt.datetime(2026, 11, 27, 18, 0, tzinfo=dt.timezone.utc)
E164 = re.compile(r"\+[1-9][0-9]{6,14}")
FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]

# --------------------------------------------------------------------------------- numbers

_DIGITS = "0123456789"
_OTHER_DIGITS = ("\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669"  # Arabic-Indic
                 "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19"  # full-width
                 "\u0966\u0967\u0968"  # Devanagari
                 "\u00b2\u00b3\u00b9\u2460\u2070")  # look like digits, are not decimal digits
_PUNCT = "()+-./ \t\u00a0\u2013\u2014\u2212\uff0b#*,;:'\"[]\n\r\u200b\ufeff\x00"
NUMBER_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=_DIGITS + _PUNCT + _OTHER_DIGITS + "abcxyzOl", max_size=30),
    st.from_regex(r"\A[+(]?[0-9]{1,4}[) .-]{0,2}[0-9]{3}[ .-]?[0-9]{3,4}[ .-]?[0-9]{0,4}\Z"),
    st.builds(lambda a, b: a + b, st.sampled_from(["", "+", "+1", "00", "011", "1-", "(", "-", "+-", "++"]),
              st.text(alphabet=_DIGITS + "()- .", min_size=8, max_size=16)),
    st.text(alphabet=_DIGITS + "()-+ ", min_size=500, max_size=3000),  # huge
    st.sampled_from(["00", "011", "+", "()", "0", "1", "+1", "+0", "000", "0011", "+00", "1-", "(0)"]),
)


@settings(max_examples=600, deadline=None)
@given(raw=NUMBER_TEXT, region=st.sampled_from(["US", "GB", "TR", "CA", "", "ZZ"]))
def test_normalise_any_text_gives_an_e164_or_a_reason(raw, region):
    f = normalise(raw, region)
    if f.e164 is not None:
        assert E164.fullmatch(f.e164), f.e164  # ASCII digits only, whatever the input's script
        assert f.value == int(f.e164[1:]) and f.error is None
        assert normalise(f.e164, region).e164 == f.e164  # its own canonical form
        assert f.input.count("(") == f.input.count(")") and "((" not in f.input.replace(" ", "")
    else:
        assert isinstance(f.error, str) and f.error and "\n" not in f.error


@settings(max_examples=300, deadline=None)
@given(number=st.from_regex(r"\A[2-9][0-9]{2}[2-9][0-9]{6}\Z"),
       seps=st.lists(st.sampled_from(["", " ", "-", ".", " - ", "/", "\u2013"]), min_size=9, max_size=9),
       paren=st.booleans(), plus=st.booleans())
def test_separators_never_change_the_number(number, seps, paren, plus):
    plain = normalise(number, "US")
    written = "".join(d + s for d, s in zip(number, seps + [""]))
    if paren:
        written = "(" + number[:3] + ")" + seps[0] + "".join(d + s for d, s in zip(number[3:], seps[3:] + [""]))
    if plus:
        written = "+1 " + written
    f = normalise(written, "US")
    assert (f.e164, f.error) == (plain.e164, plain.error) or (plain.e164 is None and f.e164 is None)


# --------------------------------------------------------------------------------- DNC files

_LINES = st.one_of(
    st.from_regex(r"\A\(?[2-9][0-9]{2}\)?[ .-]?[2-9][0-9]{2}[ .-]?[0-9]{4}\Z"),
    st.from_regex(r'\A"?[2-9][0-9]{2}"?, ?"?[0-9]{7}"?\Z'),  # FTC area,number
    st.sampled_from(["212*", "+1 646*", "305555*", "+44 20*", "+44*", "+12*", "+1*", "*", "+99912*", "area,number",
                     "phone", "# comment", "", "  ", "+44 20 7946 0000", "0044 20 7946 0001", "911", "1-800-222-1222"]),
    st.text(max_size=25),
    st.text(alphabet=_DIGITS + _OTHER_DIGITS + _PUNCT, max_size=20),
)


@st.composite
def dnc_file(draw):
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    lines = draw(st.lists(_LINES, max_size=25))
    text = draw(st.sampled_from(["\n", "\r\n", "\r"])).join(lines)
    enc = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"]))
    return text.encode(enc, errors="replace")


@pytest.fixture(scope="module")
def dnc_store(tmp_path_factory):
    d = tmp_path_factory.mktemp("dnc")
    s = Store(d / "dnc.db")
    service.ensure_defaults(s, NOW)
    create_account(s, "acme", NOW, "t")
    create_campaign(s, "spring", "acme", NOW, "t")
    yield s, d
    s.close()


def _table(store, scope):
    rows = store.query("SELECT pattern, is_prefix FROM dnc_entries WHERE scope = ?", (scope,))
    return {int(r["pattern"]) for r in rows if not r["is_prefix"]}, {r["pattern"] for r in rows if r["is_prefix"]}


def _state(store):
    return (store.query_one("SELECT COUNT(*) AS n FROM dnc_entries")["n"],
            store.query_one("SELECT COUNT(*) AS n FROM audit_log")["n"],
            store.query("SELECT scope, version FROM dnc_lists ORDER BY scope"))


@settings(max_examples=250, deadline=None, suppress_health_check=FIXTURES)
@given(data=dnc_file(), source=st.sampled_from(["company", "campaign"]), wide=st.booleans(),
       region=st.sampled_from(["US", "GB"]))
def test_any_dnc_file_is_imported_or_refused_in_one_line(dnc_store, data, source, wide, region):
    store, d = dnc_store
    f = d / "list.txt"
    f.write_bytes(data)
    before = _state(store)
    try:
        out = service.import_dnc(store, f, NOW, "t", source=source, campaign="spring" if source == "campaign" else None,
                                 region=region, wide=wide)
    except InputError as e:
        assert "\n" not in str(e) and str(e)
        assert _state(store) == before  # nothing half-stored, no version bumped
        return
    scope = out["scope"]
    assert out["numbers"] >= 1 and 0 <= out["added"] <= out["numbers"] and out["junk"] <= out["lines"]
    assert out["numbers"] + out["junk"] <= out["lines"]
    assert _state(store)[0] == before[0] + out["added"]
    numbers, prefixes = _table(store, scope)
    assert all(0 < v < 10 ** 15 for v in numbers)
    assert all(p.isascii() and p.isdigit() and 2 <= len(p) <= 15 for p in prefixes)
    if not wide:
        assert all(service.wildcard_width(w["entry"][1:-1]) is None for w in out["wildcards"])
    st_ = service._list_state(store, scope)  # the snapshot says what the table says
    assert st_.numbers == numbers and st_.prefixes == prefixes


@settings(max_examples=80, deadline=None, suppress_health_check=FIXTURES)
@given(data=dnc_file())
def test_any_national_registry_file_is_imported_or_refused_in_one_line(dnc_store, data):
    store, d = dnc_store
    f = d / "registry.txt"
    f.write_bytes(data)
    rows = store.query_one("SELECT COUNT(*) AS n FROM dnc_registries")["n"]
    try:
        out = service.import_dnc(store, f, NOW, "t", source="national", as_of="2026-11-20")
    except InputError as e:
        assert "\n" not in str(e)
        assert store.query_one("SELECT COUNT(*) AS n FROM dnc_registries")["n"] == rows
    else:
        assert out["numbers"] >= 1
        assert store.query_one("SELECT COUNT(*) AS n FROM dnc_registries")["n"] == rows + 1
    known = {r["path"] for r in store.query("SELECT path FROM dnc_registries")}
    assert {p.name for p in store.files_dir.glob("registry-*")} <= known  # no orphan file


# one list through any sequence of changes, with the snapshot dropped, corrupted or
# brought up to date along the way: what a check sees is always the table
_POOL = [f"+1212555{i:04d}" for i in range(0, 40)] + ["305*", "+1 415*", "+4420*"]
_OPS = st.one_of(
    st.tuples(st.just("add"), st.lists(st.sampled_from(_POOL), min_size=1, max_size=6)),
    st.tuples(st.just("remove"), st.lists(st.sampled_from(_POOL), min_size=1, max_size=6)),
    st.tuples(st.just("import"), st.lists(st.sampled_from(_POOL), min_size=1, max_size=30)),
    st.tuples(st.sampled_from(["forget", "drop_file", "corrupt_file", "other_connection"]), st.just(())),
)


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURES)
@given(ops=st.lists(_OPS, min_size=1, max_size=12))
def test_the_list_snapshot_always_matches_the_table(dnc_store, monkeypatch, ops):
    store, d = dnc_store
    monkeypatch.setattr(service, "DELTA_MAX", 8)  # small, so every path is taken: catch-up, rebuild, re-save
    monkeypatch.setattr(service, "DELTA_SAVE", 3)
    acc = create_account(store, f"a{store.query_one('SELECT MAX(id) AS n FROM accounts')['n'] + 1}", NOW, "t")
    scope = f"account:{acc['id']}"
    writer = store
    for op, arg in ops:
        if op == "add":
            service.add_dnc(writer, arg, NOW, "t", account=acc["id"])
        elif op == "remove":
            service.remove_dnc(writer, arg, NOW, "t", reason="r", account=acc["id"])
        elif op == "import":
            (d / "ops.txt").write_text("\n".join(arg) + "\n")
            service.import_dnc(writer, d / "ops.txt", NOW, "t", account=acc["id"])
        elif op == "forget":
            service._list_cache.pop((str(store.path), scope), None)
        elif op in ("drop_file", "corrupt_file"):
            service._list_cache.pop((str(store.path), scope), None)
            for p in store.files_dir.glob(f"dnclist-account-{acc['id']}-v*"):
                if op == "drop_file":
                    p.unlink()
                else:
                    p.write_bytes(p.read_bytes()[:-1] + b"?")
        else:
            writer = Store(store.path) if writer is store else store
        st_ = service._list_state(store, scope)
        numbers, prefixes = _table(store, scope)
        assert st_.numbers == numbers and st_.prefixes == prefixes
    if writer is not store:
        writer.close()


# --------------------------------------------------------------------------------- CLI options

@pytest.fixture(scope="module")
def cli_db(tmp_path_factory):
    db = tmp_path_factory.mktemp("cli") / "cli.db"
    r = CliRunner()
    assert r.invoke(main, ["--db", str(db), "account", "create", "acme"], catch_exceptions=False).exit_code == 0
    assert r.invoke(main, ["--db", str(db), "campaign", "create", "c"], catch_exceptions=False).exit_code == 0
    return db


def cli(db, *args):
    """Run the CLI; a traceback fails the test (catch_exceptions=False). A refusal is
    exit code != 0 with exactly one 'Error:' line (click's own usage errors add their
    Usage/Try lines above it; the application's errors are that line alone)."""
    r = CliRunner().invoke(main, ["--db", str(db), *args], catch_exceptions=False)
    lines = r.output.strip("\n").split("\n")  # JSON may hold U+0085 or U+2028: not line ends
    errors = [x for x in lines if x.startswith("Error:")]
    if r.exit_code == 0:
        assert not errors
    else:
        assert len(errors) == 1 and "Traceback" not in r.output, r.output
        if r.exit_code == 1:
            assert lines == errors, r.output
    return r


def _counts(db):
    s = Store(db)
    try:
        return (s.query_one("SELECT COUNT(*) AS n FROM campaigns")["n"], s.query_one("SELECT COUNT(*) AS n FROM "
                                                                                      "accounts")["n"])
    finally:
        s.close()


_INSTANTS = st.one_of(
    st.text(max_size=30),
    st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30)).map(lambda t: t.isoformat()),
    st.builds(lambda t, z: t.isoformat() + z, st.datetimes(min_value=dt.datetime(1, 1, 1)),
              st.sampled_from(["Z", "+00:00", "-01:00", "+14:00", "+25:00", "z", " ", "+01:30"])),
    st.datetimes(min_value=dt.datetime(1999, 12, 31), max_value=dt.datetime(2100, 1, 2)).map(
        lambda t: t.strftime("%Y-%m-%dT%H:%MZ")),
    st.sampled_from(["", " ", "now", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59-01:00", "2026-02-30",
                     "2026-11-24", "2026-11-24T17:00:00.999999999Z"]),
)
_NUMBERS = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=_DIGITS + ".-+eE_ ", max_size=12),
    st.sampled_from(["nan", "NaN", "-nan", "inf", "-Infinity", "sNaN", "1e999", "-0", "0", "0.03", "3", "2.5", "1",
                     "5", "5.0000001", "0.0300000001", "1_0", "\u0661.\u0665", "1e-999999999", "99" * 30]),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.floats().map(repr),
    st.integers().map(str),
)
_RETRY = st.one_of(
    st.text(max_size=30),
    st.builds(lambda o, d, u, a: f"{o}={d}{u}/{a}", st.sampled_from(["busy", "no-answer", "machine", "x", ""]),
              st.one_of(st.integers(-5, 10 ** 12).map(str), st.text(max_size=3)),
              st.sampled_from(["", "m", "min", "h", "d", "s", " m"]),
              st.one_of(st.integers(-5, 10 ** 9).map(str), st.text(max_size=3))),
    st.lists(st.sampled_from(["busy=20m/5", "no-answer=2h/4", "busy=0m/1", "machine=1d/25", ",", "=", "/"]),
             max_size=4).map(",".join),
)


@settings(max_examples=200, deadline=None, suppress_health_check=FIXTURES)
@given(at=_INSTANTS)
def test_check_at_any_string(cli_db, at):
    r = cli(cli_db, "check", "2125550100", "--account=acme", f"--at={at}", "--json")
    if r.exit_code == 0:
        assert 2000 <= int(json.loads(r.output)["at"][:4]) <= 2099


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURES)
@given(frm=_INSTANTS, to=_INSTANTS, step=st.one_of(_NUMBERS, st.integers(-2, 3000).map(str)))
def test_dry_run_from_to_step_any_string(cli_db, frm, to, step):
    r = cli(cli_db, "campaign", "dry-run", "c", "--account=acme", f"--from={frm}", f"--to={to}", f"--step={step}",
            "--json")
    if r.exit_code == 0:
        out = json.loads(r.output)
        assert 1 <= len(out["hours"]) <= 31 * 24 * 60


@settings(max_examples=200, deadline=None, suppress_health_check=FIXTURES)
@given(target=_NUMBERS, ratio=st.one_of(st.none(), _NUMBERS), retry=st.one_of(st.none(), _RETRY),
       mode=st.sampled_from(["predictive", "power"]))
def test_campaign_create_options_any_string(cli_db, target, ratio, retry, mode):
    before = _counts(cli_db)
    name = f"c{before[0] + 1}"
    args = ["campaign", "create", name, "--account=acme", f"--abandon-target={target}", f"--mode={mode}", "--json"]
    args += [f"--ratio={ratio}"] if ratio is not None else []
    args += [f"--retry={retry}"] if retry is not None else []
    r = cli(cli_db, *args)
    if r.exit_code == 0:
        out = json.loads(r.output)
        assert 0 <= float(out["abandon_target"]) <= 0.03
        assert all(1 <= x["delay_minutes"] <= 43200 and 1 <= x["max_attempts"] <= 20
                   for x in out["retry_rules"].values())
        if mode == "power":
            assert 1 <= float(out["power_ratio"]) <= 5
        assert _counts(cli_db)[0] == before[0] + 1
    else:
        assert _counts(cli_db) == before  # nothing half-stored


@settings(max_examples=100, deadline=None, suppress_health_check=FIXTURES)
@given(lines=st.one_of(_NUMBERS, st.integers(-10, 10 ** 25).map(str)),
       connection=st.sampled_from(["adsl", "gshdsl", "fiber"]))
def test_account_create_lines_any_string(cli_db, lines, connection):
    before = _counts(cli_db)
    r = cli(cli_db, "account", "create", f"acc{before[1] + 1}", f"--connection={connection}", f"--lines={lines}",
            "--json")
    if r.exit_code == 0:
        assert 1 <= json.loads(r.output)["line_capacity"] <= 1000
        assert _counts(cli_db)[1] == before[1] + 1
    else:
        assert _counts(cli_db) == before


@settings(max_examples=100, deadline=None, suppress_health_check=FIXTURES)
@example(numbers=["\x85"], wide=False)  # U+0085 is a line end for str.splitlines, not for JSON lines
@example(numbers=["00"], wide=False)  # no digits after the international prefix: used to raise ValueError
@given(numbers=st.lists(NUMBER_TEXT.filter(lambda s: not s.startswith("-")), min_size=1, max_size=4),
       wide=st.booleans())
def test_dnc_add_and_check_any_number_text(cli_db, numbers, wide):
    s = Store(cli_db)
    try:
        before = s.query_one("SELECT COUNT(*) AS n FROM dnc_entries")["n"]
    finally:
        s.close()
    r = cli(cli_db, "dnc", "add", *numbers, "--account=acme", "--reason=fuzz", "--json", *(["--wide"] if wide else []))
    s = Store(cli_db)
    try:
        after = s.query_one("SELECT COUNT(*) AS n FROM dnc_entries")["n"]
    finally:
        s.close()
    if r.exit_code == 0:
        assert after == before + json.loads(r.output)["added"]
    else:
        assert after == before
    r = cli(cli_db, "check", "--account=acme", "--at=2026-11-24T17:00:00Z", "--json", "--", *numbers)
    assert r.exit_code == 0 and len(r.output.strip("\n").split("\n")) == len(numbers)
