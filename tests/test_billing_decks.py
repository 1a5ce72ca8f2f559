"""Rate decks: all-or-nothing import, every bad line named, longest prefix, effective dates."""

from decimal import Decimal

import pytest

from billing.decks import PrefixIndex, deck_in_force, import_deck, load_index, parse_deck
from billing.money import from_micros
from billing.rating import Tariff
from campaigns.store import create_account
from core.errors import InputError
from core.timeutil import to_iso, parse_instant
from billing_fixtures import BILLING_TABLES, NOW, dump, write_deck


@pytest.fixture
def acme(store):
    return create_account(store, "acme", NOW, "t")


def at(text):
    return to_iso(parse_instant(text))


def test_import_and_longest_prefix(store, acme, tmp_path):
    f = write_deck(tmp_path / "d.csv", ["44,United Kingdom,0.01,1,1,,,", "4420,London,0.005,60,60,0.001,,",
                                        "447,UK mobile,0.03,6,6,,,", "1,NANP,0.002,6,6,,,"])
    out = import_deck(store, f, "carrier-a", NOW, "t")
    assert out["rows"] == 4 and out["prefixes"] == 4 and out["scope"] == "default" and out["replaces"] is None
    index = load_index(store, acme["id"])
    t0 = at("2026-03-01T00:00:00Z")
    assert index.tariff("442071234567", t0)[:2] == ("4420", "London")
    assert index.tariff("447700900123", t0)[:2] == ("447", "UK mobile")
    assert index.tariff("441612345678", t0)[:2] == ("44", "United Kingdom")
    assert index.tariff("12125550100", t0)[:2] == ("1", "NANP")
    assert index.tariff("33123456789", t0) is None
    prefix, name, tariff = index.tariff("442071234567", t0)
    assert tariff == Tariff(5000, 60, 60, 1000)
    assert from_micros(tariff.rate_micros) == Decimal("0.005")


def test_the_row_in_force_at_the_calls_start_half_open(store, acme, tmp_path):
    f = write_deck(tmp_path / "d.csv", [
        "44,UK old,0.010,1,1,,,2026-03-01",           # until 1 March (excluded)
        "44,UK march,0.020,1,1,,2026-03-01,2026-04-01T00:00:00Z",
        "44,UK april,0.030,1,1,,2026-04-01,",          # from 1 April, open-ended
        "4420,London new,0.040,1,1,,2026-03-15T12:00:00Z,",  # a longer prefix that starts later
    ])
    import_deck(store, f, "d", NOW, "t")
    index = load_index(store, acme["id"])

    def rated(when, number="442071234567"):
        hit = index.tariff(number, at(when))
        return hit[1] if hit else None

    assert rated("2026-02-28T23:59:59.999Z") == "UK old"
    assert rated("2026-03-01T00:00:00.000Z") == "UK march"       # the boundary instant belongs to the new row
    assert rated("2026-03-15T11:59:59.999Z") == "UK march"       # 4420 not yet in force: the shorter prefix
    assert rated("2026-03-15T12:00:00.000Z") == "London new"
    assert rated("2026-03-31T23:59:59.999Z", "441612345678") == "UK march"
    assert rated("2026-04-01T00:00:00.000Z", "441612345678") == "UK april"
    assert rated("2030-01-01T00:00:00.000Z", "441612345678") == "UK april"


def test_an_open_row_ends_where_the_prefix_next_row_starts(store, acme, tmp_path):
    # the reference: a new row with a later effective date replaces the old one from that date
    f = write_deck(tmp_path / "d.csv", ["33,France,0.010,1,1,,2026-01-01,", "33,France,0.012,1,1,,2026-03-10,"])
    import_deck(store, f, "d", NOW, "t")
    index = load_index(store, acme["id"])
    assert index.tariff("33123", at("2026-03-09T23:59:59.999Z"))[2].rate_micros == 10_000
    assert index.tariff("33123", at("2026-03-10T00:00:00.000Z"))[2].rate_micros == 12_000
    assert index.tariff("33123", at("2025-12-31T23:59:59.999Z")) is None  # before its first row


def test_an_accounts_own_deck_takes_precedence_as_a_whole(store, acme, tmp_path):
    other = create_account(store, "other", NOW, "t")
    import_deck(store, write_deck(tmp_path / "a.csv", ["44,UK,0.01,1,1,,,", "1,US,0.002,1,1,,,"]), "default", NOW,
                "t")
    import_deck(store, write_deck(tmp_path / "b.csv", ["44,UK special,0.008,1,1,,,"]), "acme-special", NOW, "t",
                account="acme")
    t0 = at("2026-03-01T00:00:00Z")
    acme_index, other_index = load_index(store, acme["id"]), load_index(store, other["id"])
    assert acme_index.deck["name"] == "acme-special" and other_index.deck["name"] == "default"
    assert acme_index.tariff("4420", t0)[1] == "UK special"
    assert acme_index.tariff("1212", t0) is None      # not priced at the default deck's rate
    assert other_index.tariff("4420", t0)[1] == "UK"


def test_a_new_deck_replaces_the_one_in_force_of_its_scope(store, acme, tmp_path):
    first = import_deck(store, write_deck(tmp_path / "a.csv", ["44,UK,0.01,1,1,,,"]), "v1", NOW, "t")
    second = import_deck(store, write_deck(tmp_path / "b.csv", ["44,UK,0.02,1,1,,,"]), "v2", NOW, "t")
    assert second["replaces"] == {"deck_id": first["deck_id"], "deck": "v1"}
    assert deck_in_force(store, acme["id"])["name"] == "v2"
    assert [r["name"] for r in store.query("SELECT name FROM rate_decks WHERE replaced_at IS NOT NULL")] == ["v1"]
    assert store.query_one("SELECT COUNT(*) AS n FROM audit_log WHERE action = 'billing.deck.import'")["n"] == 2


BAD_DECKS = [
    # (rows after the header, the line named, what the message says)
    (["44,UK,0.01,1,1,,,", "44,UK again,0.02,1,1,,,"], 3, "line 3: duplicate prefix 44 (line 2 has it"),
    (["44,UK,0.01,1,1,,2026-01-01,2026-03-01", "33,FR,0.01,1,1,,,", "44,UK,0.02,1,1,,2026-02-01,"], 4,
     "line 4: prefix 44 from 2026-02-01T00:00:00.000Z overlaps line 2"),
    (["44,UK,-0.01,1,1,,,"], 2, "line 2: rate '-0.01' is negative"),
    (["44,UK,abc,1,1,,,"], 2, "line 2: rate 'abc' is not a number"),
    (["44,UK,1e-3,1,1,,,"], 2, "line 2: rate '1e-3' is not a number"),
    (["44,UK,NaN,1,1,,,"], 2, "line 2: rate 'NaN' is not a number"),
    (["44,UK,0.0000001,1,1,,,"], 2, "line 2: rate '0.0000001' has more than 6 decimal places"),
    (["44,UK,0.01,1,1,-0.5,,"], 2, "line 2: connect_fee '-0.5' is negative"),
    (["44,UK,0.01,1,0,,,"], 2, "line 2: increment '0' is not a whole number of seconds"),
    (["44,UK,0.01,x,1,,,"], 2, "line 2: initial 'x' is not a whole number of seconds"),
    (["33,FR,0.01,1,1,,,", "this is junk"], 3, "line 3: 1 cells where the header has 8"),
    (["UK,UK,0.01,1,1,,,"], 2, "line 2: prefix 'UK' is not 1 to 15 digits"),
    (["44,UK,0.01,1,1,,2026-13-01,"], 2, "line 2: effective_from '2026-13-01' is not an ISO 8601 time"),
    (["44,UK,0.01,1,1,,2026-03-01,2026-02-01"], 2, "line 2: effective_to 2026-02-01 is not after effective_from"),
]


@pytest.mark.parametrize("rows,line,message", BAD_DECKS)
def test_bad_decks_are_refused_with_the_line_and_nothing_changes(store, acme, tmp_path, rows, line, message):
    import_deck(store, write_deck(tmp_path / "good.csv", ["44,UK,0.01,1,1,,,"]), "good", NOW, "t")
    before = dump(store, *BILLING_TABLES)
    with pytest.raises(InputError) as e:
        import_deck(store, write_deck(tmp_path / "bad.csv", rows), "bad", NOW, "t")
    assert message in str(e.value)
    assert "nothing was imported and the deck in force stays in force" in str(e.value)
    assert dump(store, *BILLING_TABLES) == before
    assert deck_in_force(store, acme["id"])["name"] == "good"


def test_every_problem_is_reported_in_one_error(tmp_path):
    f = write_deck(tmp_path / "bad.csv", ["44,UK,0.01,1,1,,,", "junk", "33,FR,-1,1,1,,,", "44,UK,0.01,1,1,,,",
                                          "1,US,x,1,1,,,"])
    with pytest.raises(InputError) as e:
        parse_deck(f)
    text = str(e.value)
    assert text.startswith(f"rate deck {f}: 4 problem(s)")
    lines = text.splitlines()[1:]
    assert [x.split(":")[0].strip() for x in lines] == ["line 3", "line 4", "line 5", "line 6"]


def test_many_problems_are_counted_and_the_first_listed(tmp_path):
    f = write_deck(tmp_path / "bad.csv", [f"{i},X,bad,1,1,,," for i in range(1, 101)])
    with pytest.raises(InputError) as e:
        parse_deck(f)
    assert "100 problem(s)" in str(e.value) and "... and 80 more" in str(e.value)


@pytest.mark.parametrize("content,message", [
    ("", "is empty"),
    ("prefix,rate\n44,0.01\n", "missing column(s) initial, increment"),
    ("prefix,rate,initial,increment,colour\n44,0.01,1,1,red\n", "unknown column(s) 'colour'"),
    ("prefix,rate,initial,increment,rate\n", "column(s) named twice: rate"),
    ("prefix,rate,initial,increment\n", "no rates after the header"),
])
def test_bad_files(tmp_path, content, message):
    f = tmp_path / "d.csv"
    f.write_text(content)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_deck(f)


def test_not_utf8_and_missing_files(tmp_path):
    f = tmp_path / "d.csv"
    f.write_bytes(b"prefix,rate,initial,increment\n44,0.01,1,1\n33,\xff,1,1\n")
    with pytest.raises(InputError, match="line 3 is not UTF-8"):
        parse_deck(f)
    with pytest.raises(InputError, match="cannot read rate deck"):
        parse_deck(tmp_path / "missing.csv")


def test_columns_in_any_order_optional_ones_absent_a_bom_and_a_plus(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("\ufeffIncrement,Rate,Prefix,Initial\n6,0.0188,+44,30\n\n", encoding="utf-8")
    rows, _sha = parse_deck(f)
    assert rows == [{"line": 2, "prefix": "44", "destination": "", "rate_micros": 18_800, "initial_s": 30,
                     "increment_s": 6, "connect_micros": 0, "effective_from": None, "effective_to": None}]


def test_a_deck_import_failing_midway_stores_nothing(store, acme, tmp_path, monkeypatch):
    import_deck(store, write_deck(tmp_path / "good.csv", ["44,UK,0.01,1,1,,,"]), "good", NOW, "t")
    before = dump(store, *BILLING_TABLES)
    from core import audit

    def broken(*a, **kw):
        raise RuntimeError("disk full")
    monkeypatch.setattr(audit, "append", broken)
    with pytest.raises(RuntimeError):
        import_deck(store, write_deck(tmp_path / "new.csv", ["44,UK,0.02,1,1,,,"]), "new", NOW, "t")
    assert dump(store, *BILLING_TABLES) == before
    assert deck_in_force(store, acme["id"])["name"] == "good"


def test_prefix_index_tries_only_the_lengths_the_deck_has():
    rows = [("4420", "London", 1, 1, 1, 0, None, None), ("44", "UK", 2, 1, 1, 0, None, None)]
    index = PrefixIndex({"id": 1, "name": "x"}, rows)
    assert index._lengths == [4, 2]
    assert index.lookup("4420", "2026")[0] == "4420" and index.lookup("442", "2026")[0] == "44"
    assert index.lookup("4", "2026") is None
