"""No float on a money path: what billing returns is Decimal (or int), what it binds
to SQL is never a float, its SQL sums run over INTEGER micro-unit columns, what it
stores is integer, and its code has no float(), float literal or true division."""

import ast
import pathlib
import re
import sqlite3
from decimal import Decimal

import pytest

from billing import ledger
from billing.decks import import_deck, show_decks
from billing.plans import set_plan, show_plan
from billing.service import rate_file
from campaigns.store import create_account
from billing_fixtures import NOW, add_cdr, write_deck

BILLING = pathlib.Path(__file__).resolve().parent.parent / "billing"
MONEY_KEYS = {"service", "telecom", "total", "amount", "balance", "floor", "above_floor", "net", "price_per_minute",
              "connect_fee", "min_cost", "max_cost"}
OPTIONAL_MONEY = {"min_cost", "max_cost"}


class FloatBound(AssertionError):
    pass


@pytest.fixture
def no_float_to_sql():
    """Make binding a float to any SQL statement fail. Registering an adapter for a
    base type makes sqlite3 consult the adapters for every parameter of that type."""
    key = (float, sqlite3.PrepareProtocol)
    old = sqlite3.adapters.get(key)

    def refuse(value):
        raise FloatBound(f"a float ({value!r}) was bound to SQL")
    sqlite3.register_adapter(float, refuse)
    try:
        yield
    finally:
        if old is None:
            sqlite3.adapters.pop(key, None)
        else:
            sqlite3.adapters[key] = old


def check_money(obj, path="out"):
    """Assert no float anywhere in ``obj`` and every money field a Decimal; returns how
    many money values were seen. A ledger entry that is not a call's (a payment, a
    credit, interest) has no service/telecom component (None)."""
    seen = 0
    if isinstance(obj, dict):
        for key, value in obj.items():
            where = f"{path}.{key}"
            assert not isinstance(value, float), f"{where} is a float: {value!r}"
            if key in MONEY_KEYS and not isinstance(value, dict):
                if value is None and (key in OPTIONAL_MONEY or (key in ("service", "telecom")
                                                                 and obj.get("kind") in ("payment", "credit",
                                                                                         "interest"))):
                    continue
                assert isinstance(value, Decimal), f"{where} is {type(value).__name__}: {value!r}"
                seen += 1
            seen += check_money(value, where)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            assert not isinstance(value, float), f"{path}[{i}] is a float: {value!r}"
            seen += check_money(value, f"{path}[{i}]")
    return seen


def scenario(store, tmp_path):
    """Every billing entry point, as a user would run them. Returns their results."""
    create_account(store, "acme", NOW, "t")
    outs = [import_deck(store, write_deck(tmp_path / "d.csv", ["44,UK,0.0123,1,1,0.001,,", "1,US,0.002,6,6,,,"]),
                        "d", NOW, "t")]
    a = store.query_one("SELECT id FROM accounts")["id"]
    for i in range(40):
        add_cdr(store, f"c{i}", a, "+442071234567" if i % 2 else "+12125550100", "2026-03-10T10:00:00Z",
                talk_s=7 * i + 1)
    outs.append(set_plan(store, "acme", NOW, "t", price="0.0188", increment="30/6", connect_fee="0.01",
                         min_cost="0.02", max_cost="0.5"))
    outs.append(ledger.topup(store, "acme", "100.10", NOW, "t"))
    outs.append(ledger.post(store, "acme", "interest", "0.5", NOW, "t"))
    outs.append(ledger.bill_run(store, "acme", "2026-03", NOW, "t"))
    import_deck(store, write_deck(tmp_path / "e.csv", ["44,UK,0.0321,1,1,,,", "1,US,0.002,6,6,,,"]), "e", NOW, "t")
    outs.append(ledger.rerate(store, "acme", NOW, "t", period="2026-03"))
    outs.append(ledger.set_floor(store, "acme", "12.34", NOW, "t"))
    outs.append(ledger.balance(store, "acme"))
    outs.append(ledger.entries(store, "acme"))
    outs.append(show_plan(store, "acme"))
    outs.append(show_decks(store, "acme"))
    f = tmp_path / "cdrs.csv"
    f.write_text("call_id,destination,started_at,answered_at,ended_at\n"
                 "w1,+442071234567,2026-03-10T10:00:00Z,2026-03-10T10:00:05Z,2026-03-10T10:00:36Z\n")
    outs.append(rate_file(store, f, "acme"))
    # invoices: February issued (its fee posted), March a draft; a prepayment; the standing
    from billing import invoices, standing
    outs.append(invoices.build(store, "acme", "2026-02", NOW, "t"))
    outs.append(invoices.run(store, "acme", "2026-03", NOW, "t"))
    outs.append(invoices.prepay(store, "acme", "2026-04", NOW, "t"))
    outs.append(invoices.list_invoices(store, "acme"))
    outs.append(standing.show(store, "acme", NOW))
    return outs


def test_every_money_value_returned_is_decimal_and_no_float_reaches_sql(store, tmp_path, no_float_to_sql):
    # the trap works: a float parameter is refused
    with pytest.raises(FloatBound):
        store.execute("SELECT ?", (0.5,))
    outs = scenario(store, tmp_path)
    assert sum(check_money(o) for o in outs) > 100  # the walk did see the money
    bal = outs[7]
    assert bal["balance"] == Decimal("100.10") - Decimal("0.5") + sum(e["amount"] for e in outs[8]
                                                                      if e["kind"] in ("charge", "reversal"))
    assert outs[5]["rerated"] > 0


def test_sql_sums_run_over_integer_micro_unit_columns(store, tmp_path):
    statements = []
    store.conn.set_trace_callback(statements.append)
    scenario(store, tmp_path)
    store.conn.set_trace_callback(None)
    integer_columns = {}
    for (table,) in store.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
        for _cid, name, decl, *_ in store.execute(f"PRAGMA table_info({table})").fetchall():
            integer_columns.setdefault(name, set()).add(decl.upper())
    sums = []
    for sql in statements:
        assert not re.search(r"\b(TOTAL|AVG)\s*\(|\bREAL\b|\bFLOAT\b|\bDOUBLE\b", sql, re.I), sql
        for arg in re.findall(r"\bSUM\s*\(([^)]*)\)", sql, re.I):
            column = arg.strip().split(".")[-1]
            # money is summed over micro-units; whole seconds (an invoice's minutes) are integers too
            assert column.endswith(("_micros", "_seconds")), f"a SUM over {arg!r}, not a micro-unit column: {sql}"
            assert integer_columns[column] == {"INTEGER"}, f"{column} is declared {integer_columns[column]}"
            sums.append(column)
    assert "amount_micros" in sums  # the balance is a SUM, and it was seen


def test_money_is_stored_as_integers(store, tmp_path):
    scenario(store, tmp_path)
    checked = 0
    for (table,) in store.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
        for _cid, name, decl, *_ in store.execute(f"PRAGMA table_info({table})").fetchall():
            if name.endswith("_micros"):
                assert decl.upper() == "INTEGER", f"{table}.{name} is declared {decl}"
                kinds = {k for (k,) in store.execute(f"SELECT DISTINCT typeof({name}) FROM {table}").fetchall()}
                assert kinds <= {"integer", "null"}, f"{table}.{name} holds {kinds}"
                checked += store.execute(f"SELECT COUNT({name}) FROM {table}").fetchone()[0]
    assert checked > 100
    s = store.execute("SELECT SUM(amount_micros) FROM ledger_entries").fetchone()[0]
    assert type(s) is int


def test_billing_code_has_no_float_conversion_literal_or_true_division():
    found = []
    for path in sorted(BILLING.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("float", "round"):
                found.append(f"{path.name}:{node.lineno}: {node.func.id}()")
            elif isinstance(node, ast.Constant) and isinstance(node.value, float):
                found.append(f"{path.name}:{node.lineno}: float literal {node.value!r}")
            elif isinstance(node, (ast.BinOp, ast.AugAssign)) and isinstance(node.op, ast.Div):
                found.append(f"{path.name}:{node.lineno}: true division (gives a float on ints; use // or Decimal)")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(n in ("math", "statistics", "fractions") for n in names if n):
                    found.append(f"{path.name}:{node.lineno}: imports {names}")
    assert found == []


def test_the_static_check_would_catch_a_float():
    # the check above is not vacuous: the same walk flags each construct
    for src in ("x = float(y)", "x = 0.5", "x = a / 60", "x /= 2", "import math"):
        tree = ast.parse(src)
        assert any((isinstance(n, ast.Call) and getattr(n.func, "id", "") == "float")
                   or (isinstance(n, ast.Constant) and isinstance(n.value, float))
                   or (isinstance(n, (ast.BinOp, ast.AugAssign)) and isinstance(n.op, ast.Div))
                   or isinstance(n, ast.Import) for n in ast.walk(tree)), src
