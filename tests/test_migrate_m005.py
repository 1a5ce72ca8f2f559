"""Migration m005 (accounts are the boundary) carries an existing database over: a
file with only m001..m004 applied, filled as the code before m005 wrote it, opened
with ``Store(path)``: every row survives with the right account, the audit chain
still verifies, campaign names become unique per account, the company DNC list
becomes each account's."""

import datetime as dt
import hashlib
import json
import sqlite3

import pytest

from campaigns.store import create_account, create_campaign
from core import migrations
from core.errors import StoreError
from core.store import Store, connect
from core import audit

NOW = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.timezone.utc)
TS = "2026-11-24T17:00:00.000Z"


def _old_hash(prev, at, actor, action, subject, reason, detail):
    """The audit hash exactly as rules/audit.py computed it before m005."""
    payload = json.dumps([prev, at, actor, action, subject, reason, detail], ensure_ascii=False,
                         separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def build_v4(path):
    """A database file with m001..m004 applied, as a pre-m005 installation has it."""
    conn = connect(path)
    conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    names = [name for name, _ in migrations._MIGRATIONS[:4]]
    assert names == ["m001_foundation", "m002_campaigns_and_leads", "m003_cdrs_and_agents",
                     "m004_trunks_commands_journal"]
    for name, fn in migrations._MIGRATIONS[:4]:
        conn.execute("BEGIN")
        fn(conn)
        conn.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, TS))
        conn.execute("COMMIT")
    return conn


def fill_v4(conn, accounts=("acme", "beta")):
    """Rows as the pre-m005 code wrote them."""
    ex = conn.execute
    ex("BEGIN")
    for i, name in enumerate(accounts, start=1):
        ex("INSERT INTO accounts (id, name, created_at, connection, line_capacity) VALUES (?, ?, ?, 'fiber', 30)",
           (i, name, TS))
        ex("INSERT INTO account_numbers (account_id, number, created_at) VALUES (?, ?, ?)", (i, f"+1212555000{i}", TS))
        ex("INSERT INTO users (id, account_id, name, role, created_at, pin_hash, pin_failures) "
           "VALUES (?, ?, 'alice', 'agent', ?, 'scrypt$16384$8$1$00$00', 0)", (i, i, TS))
        ex("INSERT INTO trunks (account_id, name, proxy, created_at) VALUES (?, 'carrier', '10.0.0.1', ?)", (i, TS))
    if accounts:
        # campaign names were unique across the installation
        ex("INSERT INTO campaigns (id, account_id, name, region, caller_id, hours, state, created_at, dial_mode, "
           "power_ratio, abandon_target, greeting, retry_rules, updated_at, trunk) VALUES "
           "(1, 1, 'spring', 'US', '+12125550001', '{\"mon-fri\": [\"09:00-17:00\"]}', 'running', ?, 'power', '1.5', "
           "'0.02', 'greetings/1-abc.wav', '{}', ?, 'carrier')", (TS, TS))
        ex("INSERT INTO campaigns (id, account_id, name, region, state, created_at) VALUES "
           "(2, ?, 'autumn', 'US', 'draft', ?)", (len(accounts), TS))
        for cid in (1, 2):
            aid = 1 if cid == 1 else len(accounts)
            ex("INSERT INTO imports (id, campaign_id, file_name, file_sha256, kind, mapping, region, dedupe, status, "
               "started_at, actor) VALUES (?, ?, 'l.csv', 'x', 'csv', '{}', 'US', 'campaign', 'done', ?, 'bob')",
               (cid, cid, TS))
            ex("INSERT INTO leads (id, campaign_id, account_id, import_id, row_no, phone, phone_raw, zones, "
               "number_type, status, created_at, updated_at) VALUES (?, ?, ?, ?, 2, '+13055550100', '3055550100', "
               "'America/New_York', 'fixed_or_mobile', 'new', ?, ?)", (cid, cid, aid, cid, TS, TS))
            ex("INSERT INTO lead_events (lead_id, at, event, detail) VALUES (?, ?, 'outcome', '{}')", (cid, TS))
        ex("INSERT INTO dnc_waivers (campaign_id, jurisdiction, waived_at, waived_by, reason) "
           "VALUES (2, 'US', ?, 'carol', 'EBR')", (TS,))
        ex("INSERT INTO cdrs (call_id, account_id, campaign_id, destination, started_at, ended_at, duration_ms, "
           "ring_ms, billable_ms, billsec, disposition, abandoned, opted_out, sip_code, sip_reason, hangup_cause, "
           "hangup_by, created_at) VALUES ('adhoc-1', ?, NULL, '+13055550199', ?, ?, 1000, 1000, 0, 0, 'busy', "
           "0, 0, 486, 'Busy Here', 'BUSY', 'callee', ?)", (len(accounts), TS, TS, TS))
        rows = [("c1-a", "+13055550100", 1), ("c1-b", "+13055550100", 1), ("c2-a", "+13055550100", 2),
                ("adhoc-1", "+13055550199", None), ("lost-1", "+13055550198", None)]
        for call_id, number, cid in rows:
            ex("INSERT INTO call_attempts (call_id, number, campaign_id, started_at, outcome) VALUES (?, ?, ?, ?, ?)",
               (call_id, number, cid, TS, "no-answer"))
        for uid in (1, len(accounts)):
            ex("INSERT INTO agent_events (user_id, campaign_id, at, state, prev_state) "
               "VALUES (?, NULL, ?, 'ready', 'logged_out')", (uid, TS))
            ex("INSERT INTO agent_commands (user_id, command, created_at, created_by) VALUES (?, 'pause', ?, 'sup')",
               (uid, TS))
    # company opt-outs, one campaign list entry
    for pattern, prefix in (("12125550100", 0), ("1305", 1)):
        ex("INSERT INTO dnc_entries (scope, pattern, is_prefix, added_at, added_by, reason) "
           "VALUES ('company', ?, ?, ?, 'dave', 'opt-out')", (pattern, prefix, TS))
    if accounts:
        ex("INSERT INTO dnc_entries (scope, pattern, is_prefix, added_at, added_by, reason) "
           "VALUES ('campaign:1', '12125550101', 0, ?, 'dave', 'x')", (TS,))
    # the audit log, hash-chained as before
    prev = "0" * 64
    for action, subject in (("rules.version", "ruleset:US"), ("account.create", "account:acme"),
                            ("dnc.add", "dnc:company")):
        detail = json.dumps({"n": 1}, separators=(",", ":"))
        h = _old_hash(prev, TS, "dave", action, subject, "", detail)
        ex("INSERT INTO audit_log (at, actor, action, subject, reason, detail, prev_hash, hash) "
           "VALUES (?, 'dave', ?, ?, '', ?, ?, ?)", (TS, action, subject, detail, prev, h))
        prev = h
    ex("COMMIT")


def snapshot(conn, table):
    cur = conn.execute(f"SELECT * FROM {table} ORDER BY rowid")
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


TABLES = ("accounts", "account_numbers", "users", "trunks", "campaigns", "imports", "leads", "lead_events",
          "dnc_waivers", "cdrs", "call_attempts", "agent_events", "agent_commands", "audit_log")


@pytest.fixture
def old_db(tmp_path):
    path = tmp_path / "v4.db"
    conn = build_v4(path)
    fill_v4(conn)
    before = {t: snapshot(conn, t) for t in TABLES}
    before["dnc_entries"] = snapshot(conn, "dnc_entries")
    conn.close()
    return path, before


def test_every_row_survives_with_its_account(old_db):
    path, before = old_db
    store = Store(path)
    assert "m005_tenancy" in migrations.applied(store)
    after = {t: snapshot(store.conn, t) for t in TABLES}
    for t in TABLES:
        assert len(after[t]) == len(before[t]), t
        for old, new in zip(before[t], after[t]):
            assert {k: new[k] for k in old} == old, t  # every old column, every value, unchanged
    acc = {r["id"]: r["account_id"] for r in after["campaigns"]}
    assert acc == {1: 1, 2: 2}
    got = {r["call_id"]: r["account_id"] for r in after["call_attempts"]}
    # from the campaign; without one from the CDR; with neither and two accounts: unknown
    assert got == {"c1-a": 1, "c1-b": 1, "c2-a": 2, "adhoc-1": 2, "lost-1": None}
    assert [r["account_id"] for r in after["agent_events"]] == [1, 2]
    assert [r["account_id"] for r in after["agent_commands"]] == [1, 2]
    assert [r["account_id"] for r in after["imports"]] == [1, 2]
    assert [r["account_id"] for r in after["dnc_waivers"]] == [2]
    assert [r["account_id"] for r in after["audit_log"]] == [None, None, None]
    # the chain verifies, old rows hash as before, and new rows (with an account) chain on
    assert audit.verify(store)["ok"]
    with store.transaction():
        audit.append(store, NOW, "cli:test", "user.add", "account:acme", "", {"user": "bob"}, account_id=1)
    v = audit.verify(store)
    assert v["ok"] and v["rows"] == 4
    assert [r["action"] for r in audit.entries(store, account_id=1)] == ["user.add"]
    assert store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.conn.execute("PRAGMA foreign_key_check").fetchall() == []
    store.close()


def test_company_opt_outs_go_to_every_account(old_db):
    path, before = old_db
    store = Store(path)
    rows = {(r["scope"], r["pattern"], r["is_prefix"], r["added_by"], r["reason"], r["added_at"])
            for r in snapshot(store.conn, "dnc_entries")}
    assert rows == {
        ("account:1", "12125550100", 0, "dave", "opt-out", TS), ("account:1", "1305", 1, "dave", "opt-out", TS),
        ("account:2", "12125550100", 0, "dave", "opt-out", TS), ("account:2", "1305", 1, "dave", "opt-out", TS),
        ("campaign:1", "12125550101", 0, "dave", "x", TS)}
    from rules.service import load_dnc
    for account_id in (1, 2):
        lists = load_dnc(store, account_id=account_id)
        assert lists.company == frozenset({12125550100}) and lists.company_prefixes == ("1305",)
    store.close()


def test_campaign_names_unique_per_account_after(old_db):
    path, _ = old_db
    store = Store(path)
    # beta may now have its own "spring"; acme may not have two
    camp = create_campaign(store, "spring", "beta", NOW, "t")
    assert camp["account_id"] == 2 and camp["id"] == 3
    with pytest.raises(sqlite3.IntegrityError):
        store.execute("INSERT INTO campaigns (account_id, name, region, created_at) VALUES (1, 'spring', 'US', ?)",
                      (TS,))
    schema = {r["name"]: r["sql"] for r in store.query("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL")}
    assert "campaigns_new" not in "".join(schema.values())
    assert "REFERENCES campaigns(id)" in schema["leads"] and "REFERENCES campaigns(id)" in schema["imports"]
    for index in ("call_attempts_account", "call_attempts_account_recent", "agent_events_by_account",
                  "agent_commands_by_account", "imports_by_account", "audit_log_by_account"):
        assert index in schema, index
    plan = " ".join(str(r) for r in store.conn.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM call_attempts WHERE account_id = 1 AND number = '+1' AND started_at > ''"))
    assert "call_attempts_account" in plan or "call_attempts_number" in plan
    store.close()


def test_a_single_account_installation_gets_every_attempt(tmp_path):
    path = tmp_path / "one.db"
    conn = build_v4(path)
    fill_v4(conn, accounts=("acme",))
    conn.close()
    store = Store(path)
    got = {r["call_id"]: r["account_id"] for r in store.query("SELECT call_id, account_id FROM call_attempts")}
    assert set(got.values()) == {1}  # the only account placed every call, "lost-1" included
    store.close()


def test_opt_outs_before_any_account_go_to_the_first_account(tmp_path):
    path = tmp_path / "none.db"
    conn = build_v4(path)
    fill_v4(conn, accounts=())
    conn.close()
    store = Store(path)
    # no account to copy them to: kept, never dropped
    assert {r["scope"] for r in store.query("SELECT scope FROM dnc_entries")} == {"company"}
    acc = create_account(store, "acme", NOW, "t")
    assert {(r["scope"], r["pattern"]) for r in store.query("SELECT scope, pattern FROM dnc_entries")} == {
        (f"account:{acc['id']}", "12125550100"), (f"account:{acc['id']}", "1305")}
    create_account(store, "beta", NOW, "t")
    assert store.query_one("SELECT COUNT(*) AS n FROM dnc_entries")["n"] == 2
    assert audit.entries(store, account_id=acc["id"])[0]["detail"]["dnc_taken_over"] == 2
    assert audit.verify(store)["ok"]
    store.close()


def test_a_rebuild_that_breaks_a_foreign_key_is_rolled_back(tmp_path, monkeypatch):
    """The runner's side of the table-rebuild procedure: foreign keys off around the
    transaction, foreign_key_check before COMMIT, foreign keys on again whatever happens."""
    store = Store(tmp_path / "fk.db")
    create_account(store, "acme", NOW, "t")
    create_campaign(store, "spring", "acme", NOW, "t")

    @migrations.foreign_keys_off
    def m999_bad_rebuild(conn):
        conn.execute("DELETE FROM accounts")  # the campaign now points at nothing

    monkeypatch.setattr(migrations, "_MIGRATIONS", migrations._MIGRATIONS + [("m999_bad_rebuild", m999_bad_rebuild)])
    with pytest.raises(StoreError, match=r"m999_bad_rebuild would break \d+ foreign key.*nothing was changed"):
        migrations.apply(store)
    assert store.query_one("SELECT COUNT(*) AS n FROM accounts")["n"] == 1
    assert "m999_bad_rebuild" not in migrations.applied(store)
    assert store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    store.close()
