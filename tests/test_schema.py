"""``dialer db info``: the file described through sqlite-utils' introspection."""

import json

from click.testing import CliRunner

import cli
from core import migrations
from core.schema import describe
from core.store import Store


def test_a_migrated_database_is_described(tmp_path):
    store = Store(tmp_path / "d.db")
    store.execute("INSERT INTO accounts (name, created_at, connection, line_capacity) VALUES ('acme', '2026-01-01', 'fiber', 30)")
    info = describe(store)
    assert info["journal_mode"] == "wal"
    assert info["migrations_pending"] == []
    assert info["migrations_applied"] == [name for name, _ in migrations._MIGRATIONS]
    assert info["quick_check"] == "ok" and info["foreign_key_violations"] == 0
    tables = {t["name"]: t for t in info["tables"]}
    assert tables["accounts"]["rows"] == 1 and tables["campaigns"]["rows"] == 0
    cols = {c["name"]: c for c in tables["campaigns"]["columns"]}
    assert cols["id"]["primary_key"] and cols["account_id"]["not_null"]
    assert {"column": "account_id", "references": "accounts(id)"} in tables["campaigns"]["foreign_keys"]
    # m005 made campaign names unique per account, not across the installation
    assert any(i["unique"] and i["columns"] == ["account_id", "name"] for i in tables["campaigns"]["indexes"])
    store.close()


def test_a_broken_foreign_key_is_counted(tmp_path):
    store = Store(tmp_path / "d.db")
    store.conn.execute("PRAGMA foreign_keys=OFF")
    store.execute("INSERT INTO campaigns (account_id, name, region, created_at) VALUES (99, 'orphan', 'US', '2026-01-01')")
    assert describe(store, counts=False)["foreign_key_violations"] == 1
    assert all(t["rows"] is None for t in describe(store, counts=False)["tables"])
    store.close()


def test_cli_db_info_json(tmp_path):
    out = CliRunner().invoke(cli.main, ["--db", str(tmp_path / "d.db"), "db", "info", "--json"])
    assert out.exit_code == 0, out.output
    info = json.loads(out.output)
    assert info["journal_mode"] == "wal" and "leads" in {t["name"] for t in info["tables"]}
    text = CliRunner().invoke(cli.main, ["--db", str(tmp_path / "d.db"), "db", "info"])
    assert text.exit_code == 0 and "journal mode wal" in text.output and "none pending" in text.output
