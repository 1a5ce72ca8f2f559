"""What a database file holds, for the operator: ``dialer db info``.

Read through sqlite-utils' introspection (tables, columns, indexes, foreign keys,
journal mode). This is SQLite-only tooling on purpose: the store's own queries stay
portable SQL (``core.store``), while this report describes the SQLite file itself,
including what a PostgreSQL port must reproduce (the schema the migrations built)."""

import sqlite_utils

from . import migrations


def describe(store, counts=True):
    """The file's schema and health: journal mode (WAL expected), the migrations
    applied and pending, ``PRAGMA quick_check`` and ``foreign_key_check``, and per
    table its columns, indexes, foreign keys and (``counts``) its row count."""
    db = sqlite_utils.Database(store.conn)
    done = migrations.applied(store)
    known = migrations.known()
    tables = []
    for t in db.tables:
        if t.name.startswith("sqlite_"):
            continue
        tables.append({
            "name": t.name,
            "rows": t.count if counts else None,
            "columns": [{"name": c.name, "type": c.type, "not_null": bool(c.notnull), "primary_key": bool(c.is_pk)}
                        for c in t.columns],
            "indexes": [{"name": i.name, "columns": list(i.columns), "unique": bool(i.unique)}
                        for i in t.indexes],  # UNIQUE constraints show as sqlite_autoindex_*
            "foreign_keys": [{"column": fk.column, "references": f"{fk.other_table}({fk.other_column})"}
                             for fk in t.foreign_keys],
        })
    broken = store.conn.execute("PRAGMA foreign_key_check").fetchall()
    return {
        "path": str(store.path),
        "journal_mode": db.journal_mode,
        "migrations_applied": done,
        "migrations_pending": [n for n in known if n not in done],
        "quick_check": store.conn.execute("PRAGMA quick_check").fetchone()[0],
        "foreign_key_violations": len(broken),
        "tables": tables,
    }


def describe_text(info):
    """``describe``'s result as a few lines per table."""
    lines = [f"{info['path']}: journal mode {info['journal_mode']}, quick_check {info['quick_check']}, "
             f"{info['foreign_key_violations']} foreign key violation(s)",
             f"migrations: {len(info['migrations_applied'])} applied"
             + (f", pending: {', '.join(info['migrations_pending'])}" if info["migrations_pending"] else ", none pending")]
    for t in info["tables"]:
        rows = f"{t['rows']} rows, " if t["rows"] is not None else ""
        lines.append(f"{t['name']}: {rows}{len(t['columns'])} columns, {len(t['indexes'])} indexes"
                     + (", references " + ", ".join(sorted({fk['references'].split('(')[0] for fk in t['foreign_keys']}))
                        if t["foreign_keys"] else ""))
    return "\n".join(lines)
