"""Schema migrations: decorated functions, applied in order, recorded in a table.

Each migration runs in its own transaction. The SQL is kept portable (TEXT for
times and money, INTEGER ids) except where marked.
"""

import datetime
import sqlite3

_MIGRATIONS = []


def migration(fn):
    _MIGRATIONS.append((fn.__name__, fn))
    return fn


def apply(store):
    conn = store.conn
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = {r[0] for r in conn.execute("SELECT name FROM _migrations")}
    for name, fn in _MIGRATIONS:
        if name in done:
            continue
        with store.transaction():
            # re-check under the write lock: another process may have applied it
            if conn.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
                continue
            fn(conn)
            conn.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                (name, datetime.datetime.now(datetime.timezone.utc).isoformat()),
            )


def run_script(conn, script):
    """Execute statements one by one inside the open transaction (executescript
    would COMMIT first)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            conn.execute(buf)
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete SQL statement in migration: {buf.strip()[:60]}")


def applied(store):
    return [r[0] for r in store.conn.execute("SELECT name FROM _migrations ORDER BY rowid")]


@migration
def m001_foundation(conn):
    run_script(conn, 
        """
        CREATE TABLE accounts (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL
        );
        CREATE TABLE account_numbers (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            number TEXT NOT NULL,
            label TEXT,
            created_at TEXT NOT NULL,
            UNIQUE (account_id, number)
        );
        CREATE TABLE campaigns (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            name TEXT NOT NULL UNIQUE,
            region TEXT NOT NULL,
            caller_id TEXT,
            hours TEXT,
            state TEXT NOT NULL DEFAULT 'draft',
            created_at TEXT NOT NULL
        );
        CREATE TABLE rule_set_versions (
            jurisdiction TEXT NOT NULL,
            version INTEGER NOT NULL,
            data TEXT NOT NULL,
            digest TEXT NOT NULL,
            created_at TEXT NOT NULL,
            author TEXT NOT NULL,
            reason TEXT NOT NULL,
            PRIMARY KEY (jurisdiction, version)
        );
        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            subject TEXT NOT NULL,
            reason TEXT NOT NULL,
            detail TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL UNIQUE
        );
        CREATE TABLE dnc_registries (
            id INTEGER PRIMARY KEY,
            jurisdiction TEXT NOT NULL,
            as_of TEXT NOT NULL,
            imported_at TEXT NOT NULL,
            path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            numbers INTEGER NOT NULL,
            junk INTEGER NOT NULL,
            source_file TEXT NOT NULL,
            actor TEXT NOT NULL
        );
        CREATE INDEX dnc_registries_current ON dnc_registries (jurisdiction, as_of, id);
        CREATE TABLE dnc_entries (
            id INTEGER PRIMARY KEY,
            scope TEXT NOT NULL,
            pattern TEXT NOT NULL,
            is_prefix INTEGER NOT NULL DEFAULT 0,
            added_at TEXT NOT NULL,
            added_by TEXT NOT NULL,
            reason TEXT NOT NULL,
            UNIQUE (scope, pattern)
        );
        CREATE TABLE dnc_waivers (
            id INTEGER PRIMARY KEY,
            campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
            jurisdiction TEXT NOT NULL,
            waived_at TEXT NOT NULL,
            waived_by TEXT NOT NULL,
            reason TEXT NOT NULL,
            revoked_at TEXT,
            revoked_by TEXT
        );
        CREATE TABLE lifeline_numbers (
            id INTEGER PRIMARY KEY,
            number TEXT NOT NULL UNIQUE,
            category TEXT NOT NULL,
            name TEXT NOT NULL,
            source TEXT NOT NULL,
            added_at TEXT NOT NULL
        );
        CREATE TABLE call_attempts (
            call_id TEXT PRIMARY KEY,
            number TEXT NOT NULL,
            campaign_id INTEGER,
            started_at TEXT NOT NULL,
            outcome TEXT NOT NULL
        );
        CREATE INDEX call_attempts_number ON call_attempts (number, started_at);
        """
    )
    # SQLite-specific: the audit log is append-only (PostgreSQL gets its own trigger).
    run_script(conn, 
        """
        CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
        CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
        """
    )


@migration
def m002_campaigns_and_leads(conn):
    run_script(conn, """
        ALTER TABLE accounts ADD COLUMN connection TEXT NOT NULL DEFAULT 'fiber';
        ALTER TABLE accounts ADD COLUMN line_capacity INTEGER NOT NULL DEFAULT 30;
        CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            name TEXT NOT NULL,
            role TEXT NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (account_id, name)
        );
        ALTER TABLE campaigns ADD COLUMN dial_mode TEXT NOT NULL DEFAULT 'predictive';
        ALTER TABLE campaigns ADD COLUMN power_ratio TEXT;
        ALTER TABLE campaigns ADD COLUMN abandon_target TEXT NOT NULL DEFAULT '0.03';
        ALTER TABLE campaigns ADD COLUMN greeting TEXT;
        ALTER TABLE campaigns ADD COLUMN retry_rules TEXT;
        ALTER TABLE campaigns ADD COLUMN updated_at TEXT;
        CREATE TABLE imports (
            id INTEGER PRIMARY KEY,
            campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
            file_name TEXT NOT NULL,
            file_sha256 TEXT NOT NULL,
            kind TEXT NOT NULL,
            mapping TEXT NOT NULL,
            region TEXT NOT NULL,
            dedupe TEXT NOT NULL,
            status TEXT NOT NULL,
            rows_done INTEGER NOT NULL DEFAULT 0,
            imported INTEGER NOT NULL DEFAULT 0,
            rejected INTEGER NOT NULL DEFAULT 0,
            duplicates INTEGER NOT NULL DEFAULT 0,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            actor TEXT NOT NULL,
            summary TEXT
        );
        CREATE TABLE import_errors (
            id INTEGER PRIMARY KEY,
            import_id INTEGER NOT NULL REFERENCES imports(id),
            row_no INTEGER NOT NULL,
            col TEXT NOT NULL,
            value TEXT NOT NULL,
            reason TEXT NOT NULL
        );
        CREATE INDEX import_errors_by_import ON import_errors (import_id, row_no);
        CREATE TABLE leads (
            id INTEGER PRIMARY KEY,
            campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
            account_id INTEGER NOT NULL,
            import_id INTEGER,
            row_no INTEGER,
            phone TEXT NOT NULL,
            phone_raw TEXT NOT NULL,
            alt_phones TEXT,
            name TEXT,
            business TEXT,
            state TEXT,
            postal_code TEXT,
            zone TEXT,
            region TEXT,
            number_state TEXT,
            zones TEXT NOT NULL,
            number_type TEXT NOT NULL,
            groups TEXT,
            custom TEXT,
            status TEXT NOT NULL,
            disposition TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            priority INTEGER NOT NULL DEFAULT 1,
            next_attempt_at TEXT,
            reserved_by TEXT,
            reserved_until TEXT,
            callback_at TEXT,
            callback_agent TEXT,
            last_attempt_at TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX leads_hot ON leads (campaign_id, priority, id) WHERE status = 'new';
        CREATE INDEX leads_status ON leads (campaign_id, status, next_attempt_at);
        CREATE INDEX leads_phone ON leads (phone);
        CREATE TABLE lead_events (
            id INTEGER PRIMARY KEY,
            lead_id INTEGER NOT NULL REFERENCES leads(id),
            at TEXT NOT NULL,
            event TEXT NOT NULL,
            detail TEXT NOT NULL
        );
        CREATE INDEX lead_events_by_lead ON lead_events (lead_id, id);
    """)


@migration
def m003_cdrs_and_agents(conn):
    """Call detail records (one per call id: writing one twice changes nothing), agent
    PINs (a salted scrypt hash, never the PIN) and agent state changes. Instants are
    ISO 8601 UTC text with milliseconds, durations integer milliseconds, billsec whole
    seconds rounded up; booleans are 0/1 integers."""
    run_script(conn, """
        CREATE TABLE cdrs (
            call_id TEXT PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            campaign_id INTEGER REFERENCES campaigns(id),
            lead_id INTEGER,
            agent_id INTEGER,
            trunk TEXT,
            caller_id TEXT,
            destination TEXT NOT NULL,
            started_at TEXT NOT NULL,
            answered_at TEXT,
            bridged_at TEXT,
            ended_at TEXT NOT NULL,
            duration_ms INTEGER NOT NULL,
            ring_ms INTEGER NOT NULL,
            billable_ms INTEGER NOT NULL,
            billsec INTEGER NOT NULL,
            connect_delay_ms INTEGER,
            disposition TEXT NOT NULL,
            abandoned INTEGER NOT NULL,
            opted_out INTEGER NOT NULL,
            agent_disposition TEXT,
            lead_outcome TEXT,
            sip_code INTEGER NOT NULL,
            sip_reason TEXT NOT NULL,
            hangup_cause TEXT NOT NULL,
            hangup_by TEXT NOT NULL,
            recording_path TEXT,
            recording_ms INTEGER,
            ruleset TEXT,
            verdict TEXT,
            worker_id TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX cdrs_billing ON cdrs (account_id, started_at);
        CREATE INDEX cdrs_campaign ON cdrs (campaign_id, started_at);
        ALTER TABLE users ADD COLUMN pin_hash TEXT;
        ALTER TABLE users ADD COLUMN pin_failures INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE agent_events (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id),
            campaign_id INTEGER REFERENCES campaigns(id),
            at TEXT NOT NULL,
            state TEXT NOT NULL,
            prev_state TEXT NOT NULL,
            call_id TEXT,
            disposition TEXT,
            reason TEXT
        );
        CREATE INDEX agent_events_by_campaign ON agent_events (campaign_id, at);
        CREATE INDEX agent_events_by_user ON agent_events (user_id, at);
    """)


@migration
def m004_trunks_commands_journal(conn):
    """SIP trunks per account (the password is kept because digest authentication
    needs it; it is never printed), their measured registrations, the campaign's
    trunk, commands for running dialers (an agent's wrap-up disposition from the CLI
    or the web console), and the high-water mark of the dialer's write journal (so a
    replay after a crash applies each journalled write exactly once)."""
    run_script(conn, """
        CREATE TABLE trunks (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            name TEXT NOT NULL,
            proxy TEXT NOT NULL,
            username TEXT,
            password TEXT,
            realm TEXT,
            register INTEGER NOT NULL DEFAULT 0,
            cps TEXT NOT NULL DEFAULT '10',
            caller_id TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT,
            UNIQUE (account_id, name)
        );
        CREATE TABLE trunk_registrations (
            id INTEGER PRIMARY KEY,
            trunk_id INTEGER NOT NULL REFERENCES trunks(id),
            at TEXT NOT NULL,
            worker TEXT,
            code INTEGER NOT NULL,
            reason TEXT NOT NULL,
            ms REAL,
            alert INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX trunk_registrations_by_trunk ON trunk_registrations (trunk_id, at);
        ALTER TABLE campaigns ADD COLUMN trunk TEXT;
        CREATE TABLE agent_commands (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id),
            command TEXT NOT NULL,
            disposition TEXT,
            reason TEXT,
            created_at TEXT NOT NULL,
            created_by TEXT,
            taken_at TEXT,
            result TEXT
        );
        CREATE INDEX agent_commands_open ON agent_commands (taken_at, id);
        CREATE TABLE journal_state (
            name TEXT PRIMARY KEY,
            applied_seq INTEGER NOT NULL
        );
    """)
