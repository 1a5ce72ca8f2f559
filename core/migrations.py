"""Schema migrations: decorated functions, applied in order, recorded in a table.

Each migration runs in its own transaction. The SQL is kept portable (TEXT for
times and money, INTEGER ids) except where marked.
"""

import datetime
import sqlite3

from .errors import StoreError

_MIGRATIONS = []


def migration(fn):
    _MIGRATIONS.append((fn.__name__, fn))
    return fn


def foreign_keys_off(fn):
    """Mark a migration that rebuilds a table: the runner turns foreign keys off
    before its transaction, checks ``PRAGMA foreign_key_check`` is empty before
    COMMIT (else rolls back and raises) and turns them on again afterwards."""
    fn.foreign_keys_off = True
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
        fk_off = getattr(fn, "foreign_keys_off", False)
        if fk_off:
            # PRAGMA foreign_keys is a no-op inside a transaction: set it before BEGIN
            # (the table-rebuild procedure of https://sqlite.org/lang_altertable.html)
            conn.execute("PRAGMA foreign_keys=OFF")
        try:
            with store.transaction():
                # re-check under the write lock: another process may have applied it
                if conn.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
                    continue
                fn(conn)
                if fk_off:
                    broken = conn.execute("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise StoreError(f"migration {name} would break {len(broken)} foreign key(s) "
                                         f"(first: table {broken[0][0]} row {broken[0][1]} -> {broken[0][2]}); "
                                         f"nothing was changed")
                conn.execute(
                    "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                    (name, datetime.datetime.now(datetime.timezone.utc).isoformat()),
                )
        finally:
            if fk_off:
                conn.execute("PRAGMA foreign_keys=ON")


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


def known():
    """Every migration's name, in the order they apply."""
    return [name for name, _ in _MIGRATIONS]


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


_CAMPAIGN_COLUMNS = ("id", "account_id", "name", "region", "caller_id", "hours", "state", "created_at", "dial_mode",
                     "power_ratio", "abandon_target", "greeting", "retry_rules", "updated_at", "trunk")


@migration
@foreign_keys_off
def m005_tenancy(conn):
    """Accounts are the boundary (SQLite; the PostgreSQL backend creates the same
    schema directly).

    * ``campaigns``: the name is unique per account, no longer across the installation
      (``UNIQUE (account_id, name)``). SQLite cannot drop a table constraint, so the
      table is rebuilt (create, copy, drop, rename, recreate its indexes and triggers)
      with foreign keys off; the runner checks ``PRAGMA foreign_key_check`` before
      COMMIT. Every column is kept as m001/m002/m004 made it, ids unchanged.
    * ``account_id`` on the tenant rows that lacked it, backfilled:
      ``call_attempts`` (from its campaign; without one, from the call's CDR; without
      either, the only account when there is exactly one; else NULL: a caller no one
      knows, which the frequency caps of every account count, see
      ``rules.service.load_history``), ``agent_events`` and ``agent_commands`` (from
      the user), ``imports`` and ``dnc_waivers`` (from the campaign), ``audit_log``
      (the account an entry is about; NULL for installation-wide entries: rule sets,
      national registries, life-line numbers). The audit log is append-only, so its
      old rows keep NULL, and their hash is computed as before (``core.audit``
      hashes ``account_id`` only when it is set).
    * The company DNC list is per account: scope ``company`` becomes
      ``account:<id>`` (campaign lists stay ``campaign:<id>``, national registries
      stay shared). An opt-out given before accounts were separated cannot be
      attributed to one account, and a wrongly dropped opt-out is a violation while a
      wrongly kept one is a lost call: when in doubt, block. So every ``company``
      entry is copied to EVERY existing account, then removed. An installation with
      company entries but no account yet keeps them as ``company`` until its first
      account is created, which takes them over (``campaigns.store.create_account``).
    * Indexes for the scoped queries.
    """
    cols = [r[1] for r in conn.execute("PRAGMA table_info(campaigns)")]
    if tuple(cols) != _CAMPAIGN_COLUMNS:
        raise StoreError(f"m005_tenancy: unexpected columns in campaigns ({', '.join(cols)}); nothing was changed")
    keep = [sql for (sql,) in conn.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = 'campaigns' AND type IN ('index', 'trigger') "
        "AND sql IS NOT NULL ORDER BY type, name")]
    col_list = ", ".join(_CAMPAIGN_COLUMNS)
    run_script(conn, f"""
        CREATE TABLE campaigns_new (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            name TEXT NOT NULL,
            region TEXT NOT NULL,
            caller_id TEXT,
            hours TEXT,
            state TEXT NOT NULL DEFAULT 'draft',
            created_at TEXT NOT NULL,
            dial_mode TEXT NOT NULL DEFAULT 'predictive',
            power_ratio TEXT,
            abandon_target TEXT NOT NULL DEFAULT '0.03',
            greeting TEXT,
            retry_rules TEXT,
            updated_at TEXT,
            trunk TEXT,
            UNIQUE (account_id, name)
        );
        INSERT INTO campaigns_new ({col_list}) SELECT {col_list} FROM campaigns;
        DROP TABLE campaigns;
        ALTER TABLE campaigns_new RENAME TO campaigns;
    """)
    for sql in keep:
        conn.execute(sql)
    run_script(conn, """
        ALTER TABLE call_attempts ADD COLUMN account_id INTEGER REFERENCES accounts(id);
        UPDATE call_attempts SET account_id = (SELECT c.account_id FROM campaigns c WHERE c.id = call_attempts.campaign_id)
            WHERE campaign_id IS NOT NULL;
        UPDATE call_attempts SET account_id = (SELECT d.account_id FROM cdrs d WHERE d.call_id = call_attempts.call_id)
            WHERE account_id IS NULL;
        UPDATE call_attempts SET account_id = (SELECT MIN(id) FROM accounts)
            WHERE account_id IS NULL AND (SELECT COUNT(*) FROM accounts) = 1;
        CREATE INDEX call_attempts_account ON call_attempts (account_id, number, started_at);
        CREATE INDEX call_attempts_account_recent ON call_attempts (account_id, started_at);

        ALTER TABLE agent_events ADD COLUMN account_id INTEGER REFERENCES accounts(id);
        UPDATE agent_events SET account_id = (SELECT u.account_id FROM users u WHERE u.id = agent_events.user_id);
        CREATE INDEX agent_events_by_account ON agent_events (account_id, at);

        ALTER TABLE agent_commands ADD COLUMN account_id INTEGER REFERENCES accounts(id);
        UPDATE agent_commands SET account_id = (SELECT u.account_id FROM users u WHERE u.id = agent_commands.user_id);
        CREATE INDEX agent_commands_by_account ON agent_commands (account_id, id);

        ALTER TABLE imports ADD COLUMN account_id INTEGER REFERENCES accounts(id);
        UPDATE imports SET account_id = (SELECT c.account_id FROM campaigns c WHERE c.id = imports.campaign_id);
        CREATE INDEX imports_by_account ON imports (account_id, id);

        ALTER TABLE dnc_waivers ADD COLUMN account_id INTEGER REFERENCES accounts(id);
        UPDATE dnc_waivers SET account_id = (SELECT c.account_id FROM campaigns c WHERE c.id = dnc_waivers.campaign_id);
        CREATE INDEX dnc_waivers_by_campaign ON dnc_waivers (campaign_id, jurisdiction);

        ALTER TABLE audit_log ADD COLUMN account_id INTEGER REFERENCES accounts(id);
        CREATE INDEX audit_log_by_account ON audit_log (account_id, id);

        INSERT INTO dnc_entries (scope, pattern, is_prefix, added_at, added_by, reason)
            SELECT 'account:' || a.id, e.pattern, e.is_prefix, e.added_at, e.added_by, e.reason
            FROM dnc_entries e CROSS JOIN accounts a WHERE e.scope = 'company'
            ON CONFLICT (scope, pattern) DO NOTHING;
        DELETE FROM dnc_entries WHERE scope = 'company' AND EXISTS (SELECT 1 FROM accounts);
    """)


@migration
def m006_open_calls(conn):
    """Calls on record before their INVITE leaves (``open_calls``: the dialer journals
    one row per call, its CDR removes it; what is left after a crash is what the crash
    interrupted, see dialer.opencalls), and CDRs that met an existing call id with
    different content, kept aside (``cdr_conflicts``) instead of dropped."""
    run_script(conn, """
    CREATE TABLE open_calls (
        call_id TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        campaign_id INTEGER REFERENCES campaigns(id),
        lead_id INTEGER,
        destination TEXT NOT NULL,
        trunk TEXT,
        caller_id TEXT,
        started_at TEXT NOT NULL,
        answered_at TEXT,
        bridged_at TEXT,
        agent_id INTEGER,
        ruleset TEXT,
        verdict TEXT,
        node TEXT NOT NULL,
        consumer TEXT,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX open_calls_by_node ON open_calls (node, call_id);
    CREATE TABLE cdr_conflicts (
        id INTEGER PRIMARY KEY,
        call_id TEXT NOT NULL,
        account_id INTEGER,
        at TEXT NOT NULL,
        cdr TEXT NOT NULL,
        kept TEXT NOT NULL
    );
    CREATE INDEX cdr_conflicts_by_call ON cdr_conflicts (call_id);
""")


@migration
def m009_dnc(conn):
    """Company and campaign DNC lists kept as snapshots (see rules.service.load_dnc):

    * ``dnc_lists``: one row per list (scope ``account:<id>``, ``campaign:<id>``) with
      its ``version``, bumped in the same transaction as every add, remove and import,
      and a random ``token`` that ties snapshot files to this database (a file left
      by another database at the same path is never taken for this list's).
    * ``dnc_entries.version``: the list version that added the entry (0: before this
      migration); the index finds what a snapshot of an older version lacks.
    * ``dnc_removals``: every removal with its version, for the same purpose.

    Every list that has entries starts at version 1."""
    import uuid
    run_script(conn, """
        CREATE TABLE dnc_lists (
            scope TEXT PRIMARY KEY,
            version INTEGER NOT NULL,
            token TEXT NOT NULL
        );
        ALTER TABLE dnc_entries ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX dnc_entries_by_version ON dnc_entries (scope, version);
        CREATE TABLE dnc_removals (
            id INTEGER PRIMARY KEY,
            scope TEXT NOT NULL,
            pattern TEXT NOT NULL,
            is_prefix INTEGER NOT NULL,
            version INTEGER NOT NULL
        );
        CREATE INDEX dnc_removals_by_version ON dnc_removals (scope, version);
    """)
    for (scope,) in conn.execute("SELECT DISTINCT scope FROM dnc_entries ORDER BY scope").fetchall():
        conn.execute("INSERT INTO dnc_lists (scope, version, token) VALUES (?, 1, ?)", (scope, uuid.uuid4().hex))


@migration
def m007_lists(conn):
    """Lead-list imports that end, one way or another (see campaigns.leads):

    * ``imports.reason``: why an import failed or was cancelled; ``imports.resumable``
      (1: a failed import whose staged rows are kept for ``--resume``, 0 otherwise);
      ``imports.runner``: a token naming the run that owns a running import (a resume
      takes it over; the run it replaced stops at its next chunk).
    * ``import_errors.kind``: ``rejected``, ``duplicate`` or ``note`` (a row imported
      with something the report should say, e.g. an alternate number or a cell beyond
      the header); old rows are classified from their reason.
    * An index for the imports of a campaign by status (a second run of the same file,
      ``campaign finish`` during an import)."""
    run_script(conn, """
        ALTER TABLE imports ADD COLUMN reason TEXT;
        ALTER TABLE imports ADD COLUMN resumable INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE imports ADD COLUMN runner TEXT;
        ALTER TABLE import_errors ADD COLUMN kind TEXT NOT NULL DEFAULT 'rejected';
        UPDATE import_errors SET kind = 'duplicate' WHERE reason LIKE 'duplicate%' OR reason LIKE 'already in%';
        UPDATE import_errors SET kind = 'note' WHERE reason LIKE 'alternate%';
        CREATE INDEX imports_by_campaign ON imports (campaign_id, status);
    """)


@migration
def m010_billing(conn):
    """Minute billing (issue 13, see billing/ and docs/billing.md). Money is INTEGER
    micro-units ($0.000001; ``*_micros`` columns), which SUM adds exactly (never REAL,
    never text); instants are ISO 8601 UTC text as everywhere.

    * ``billing_accounts``: an account's service price per minute, its increment
      scheme (initial/increment seconds), connect fee, minimum and maximum cost, the
      time zone its billing periods are cut in, and its balance floor. A row is written
      with the defaults on an account's first billing write (billing.plans).
    * ``rate_decks`` / ``rate_deck_rows``: telecom rate decks imported from CSV, the
      operator's default (``account_id`` NULL) or an account's own; the deck in force
      of a scope is its newest one not ``replaced_at``. Effective instants are
      half-open [from, to); NULL from is "always", NULL to "until the prefix's next row".
    * ``ledger_batches``: who posted what, when, why: one row per bill run, rerate,
      payment, credit or interest posting (its deck, period, actor, reference), so the
      entries (a million a month) do not repeat them.
    * ``ledger_entries``: an account's charges, payments, credits, interest and
      reversals, append-only; the balance is the sum of ``amount_micros`` (payments
      and credits positive, charges and interest negative, a reversal the negation of
      the entry it reverses). ``seq`` numbers a call's entries and ``UNIQUE (call_id,
      seq)`` holds: a call's first charge is seq 1, so rating a CDR twice (or from two
      processes at once) charges it once; a rerate of a call whose last entry is seq n
      adds its reversal (n + 1) and a new charge (n + 2)."""
    run_script(conn, """
        CREATE TABLE billing_accounts (
            account_id INTEGER PRIMARY KEY REFERENCES accounts(id),
            price_micros INTEGER NOT NULL,
            initial_s INTEGER NOT NULL,
            increment_s INTEGER NOT NULL,
            connect_micros INTEGER NOT NULL,
            min_micros INTEGER,
            max_micros INTEGER,
            floor_micros INTEGER NOT NULL,
            time_zone TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            CHECK (price_micros >= 0 AND initial_s >= 0 AND increment_s >= 1 AND connect_micros >= 0),
            CHECK (min_micros IS NULL OR max_micros IS NULL OR min_micros <= max_micros)
        );
        CREATE TABLE rate_decks (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            account_id INTEGER REFERENCES accounts(id),
            source_file TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            rows INTEGER NOT NULL,
            imported_at TEXT NOT NULL,
            actor TEXT NOT NULL,
            replaced_at TEXT
        );
        CREATE INDEX rate_decks_in_force ON rate_decks (account_id, replaced_at, id);
        CREATE TABLE rate_deck_rows (
            id INTEGER PRIMARY KEY,
            deck_id INTEGER NOT NULL REFERENCES rate_decks(id),
            line INTEGER NOT NULL,
            prefix TEXT NOT NULL,
            destination TEXT NOT NULL,
            rate_micros INTEGER NOT NULL,
            initial_s INTEGER NOT NULL,
            increment_s INTEGER NOT NULL,
            connect_micros INTEGER NOT NULL,
            effective_from TEXT,
            effective_to TEXT,
            CHECK (rate_micros >= 0 AND initial_s >= 0 AND increment_s >= 1 AND connect_micros >= 0)
        );
        CREATE INDEX rate_deck_rows_by_deck ON rate_deck_rows (deck_id, prefix);
        CREATE TABLE ledger_batches (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            kind TEXT NOT NULL,
            created_at TEXT NOT NULL,
            actor TEXT NOT NULL,
            reference TEXT,
            period TEXT,
            deck_id INTEGER REFERENCES rate_decks(id),
            CHECK (kind IN ('bill-run', 'rerate', 'payment', 'credit', 'interest'))
        );
        CREATE TABLE ledger_entries (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            batch_id INTEGER NOT NULL REFERENCES ledger_batches(id),
            kind TEXT NOT NULL,
            amount_micros INTEGER NOT NULL,
            at TEXT NOT NULL,
            call_id TEXT,
            seq INTEGER,
            reverses INTEGER REFERENCES ledger_entries(id),
            billsec INTEGER,
            service_seconds INTEGER,
            service_micros INTEGER,
            telecom_seconds INTEGER,
            telecom_micros INTEGER,
            prefix TEXT,
            UNIQUE (call_id, seq),
            -- one CASE, not five CHECKs: SQLite evaluates this one at no measurable cost per
            -- insert, the five separate ones took 1.6 us a row (bench/rating_bench.py)
            CHECK (CASE kind
                   WHEN 'charge' THEN amount_micros <= 0 AND call_id IS NOT NULL AND seq IS NOT NULL
                   WHEN 'reversal' THEN call_id IS NOT NULL AND seq IS NOT NULL AND reverses IS NOT NULL
                   WHEN 'interest' THEN amount_micros < 0 AND call_id IS NULL
                   WHEN 'payment' THEN amount_micros > 0 AND call_id IS NULL
                   WHEN 'credit' THEN amount_micros > 0 AND call_id IS NULL
                   ELSE 0 END)
        );
        CREATE INDEX ledger_entries_by_account ON ledger_entries (account_id, at);
    """)
    # SQLite-specific: the ledger is append-only, as the audit log (PostgreSQL gets its own trigger).
    run_script(conn, """
        CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
        BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only: correct with a reversal'); END;
        CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
        BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only: correct with a reversal'); END;
    """)


_FEE_CHECK_AFTER = "WHEN 'credit' THEN amount_micros > 0 AND call_id IS NULL"


@migration
@foreign_keys_off
def m012_invoices_standing(conn):
    """Invoices, the account's standing and its life cycle (issue 13, second part; see
    billing/invoices.py, billing/standing.py and docs/billing.md).

    * ``ledger_entries`` gains the kind ``fee`` (negative, no call id): an invoice's
      account fee and user charges. SQLite cannot change a CHECK, so the table is rebuilt
      from its own stored SQL (every column it has now, ids unchanged) with one more
      branch in its CASE check; its indexes and triggers are recreated as they were.
    * ``invoices`` (one per account and period, ``UNIQUE (account_id, period)``) and
      ``invoice_lines``: a draft is rebuilt until it is issued; an issued invoice and its
      lines are immutable (SQLite triggers refuse UPDATE and DELETE, and new lines).
    * ``prepayments``: a payment entry that pays the account fee of ``months`` periods
      from ``first_period`` in advance.
    * ``account_standing`` (pending, active, notice, suspended, closed; reason and
      since; the notice's deadline; closing, number and record dates) and
      ``account_standing_events`` (every transition, dated; each is also audited).
    * ``number_holds``: the numbers of a closed account, kept until ``keep_until``,
      ported out (date and carrier) or released."""
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'ledger_entries'").fetchone()
    if _FEE_CHECK_AFTER not in sql or "CREATE TABLE ledger_entries (" not in sql:
        raise StoreError("m012_invoices_standing: ledger_entries is not as m010 made it (its CHECK on the credit "
                         "kind was not found); nothing was changed")
    new_sql = sql.replace("CREATE TABLE ledger_entries (", "CREATE TABLE ledger_entries_new (", 1).replace(
        _FEE_CHECK_AFTER, _FEE_CHECK_AFTER + "\n                   WHEN 'fee' THEN amount_micros < 0 AND call_id IS NULL", 1)
    keep = [s for (s,) in conn.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = 'ledger_entries' AND type IN ('index', 'trigger') "
        "AND sql IS NOT NULL ORDER BY type, name")]
    cols = ", ".join(r[1] for r in conn.execute("PRAGMA table_info(ledger_entries)"))
    conn.execute(new_sql)
    conn.execute(f"INSERT INTO ledger_entries_new ({cols}) SELECT {cols} FROM ledger_entries")
    conn.execute("DROP TABLE ledger_entries")
    conn.execute("ALTER TABLE ledger_entries_new RENAME TO ledger_entries")
    for s in keep:
        conn.execute(s)
    run_script(conn, """
        CREATE TABLE invoices (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            period TEXT NOT NULL,
            number TEXT NOT NULL UNIQUE,
            time_zone TEXT NOT NULL,
            period_start TEXT NOT NULL,
            period_end TEXT NOT NULL,
            status TEXT NOT NULL,
            built_at TEXT NOT NULL,
            issued_at TEXT,
            due_at TEXT NOT NULL,
            opening_micros INTEGER NOT NULL,
            charges_micros INTEGER NOT NULL,
            received_micros INTEGER NOT NULL,
            closing_micros INTEGER NOT NULL,
            due_micros INTEGER NOT NULL,
            interest_base_micros INTEGER NOT NULL,
            UNIQUE (account_id, period),
            CHECK (status IN ('draft', 'issued'))
        );
        CREATE TABLE invoice_lines (
            id INTEGER PRIMARY KEY,
            invoice_id INTEGER NOT NULL REFERENCES invoices(id),
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            description TEXT NOT NULL,
            quantity TEXT,
            unit_micros INTEGER,
            amount_micros INTEGER NOT NULL,
            prefix TEXT,
            destination TEXT,
            entry_id INTEGER REFERENCES ledger_entries(id),
            detail TEXT,
            UNIQUE (invoice_id, seq)
        );
        CREATE TABLE prepayments (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            entry_id INTEGER NOT NULL UNIQUE REFERENCES ledger_entries(id),
            first_period TEXT NOT NULL,
            months INTEGER NOT NULL,
            monthly_micros INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            actor TEXT NOT NULL,
            CHECK (months >= 1 AND monthly_micros > 0)
        );
        CREATE INDEX prepayments_by_account ON prepayments (account_id, first_period);
        CREATE TABLE account_standing (
            account_id INTEGER PRIMARY KEY REFERENCES accounts(id),
            state TEXT NOT NULL,
            reason TEXT,
            since TEXT NOT NULL,
            enabled_at TEXT NOT NULL,
            activated_at TEXT,
            notice_at TEXT,
            notice_until TEXT,
            closed_at TEXT,
            closed_by TEXT,
            numbers_until TEXT,
            records_until TEXT,
            updated_at TEXT NOT NULL,
            CHECK (state IN ('pending', 'active', 'notice', 'suspended', 'closed'))
        );
        CREATE TABLE account_standing_events (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            at TEXT NOT NULL,
            effective_at TEXT NOT NULL,
            from_state TEXT,
            to_state TEXT NOT NULL,
            reason TEXT,
            actor TEXT NOT NULL
        );
        CREATE INDEX account_standing_events_by_account ON account_standing_events (account_id, id);
        CREATE TABLE number_holds (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            number TEXT NOT NULL,
            label TEXT,
            closed_at TEXT NOT NULL,
            keep_until TEXT NOT NULL,
            ported_at TEXT,
            ported_to TEXT,
            released_at TEXT,
            UNIQUE (account_id, number)
        );
    """)
    # SQLite-specific: an issued invoice is immutable (PostgreSQL gets its own triggers).
    run_script(conn, """
        CREATE TRIGGER invoices_issued_no_update BEFORE UPDATE ON invoices WHEN OLD.status = 'issued'
        BEGIN SELECT RAISE(ABORT, 'an issued invoice is immutable: correct with a credit or a reversal'); END;
        CREATE TRIGGER invoices_issued_no_delete BEFORE DELETE ON invoices WHEN OLD.status = 'issued'
        BEGIN SELECT RAISE(ABORT, 'an issued invoice is immutable: correct with a credit or a reversal'); END;
        CREATE TRIGGER invoice_lines_issued_no_update BEFORE UPDATE ON invoice_lines
        WHEN (SELECT status FROM invoices WHERE id = OLD.invoice_id) = 'issued'
        BEGIN SELECT RAISE(ABORT, 'an issued invoice is immutable: correct with a credit or a reversal'); END;
        CREATE TRIGGER invoice_lines_issued_no_delete BEFORE DELETE ON invoice_lines
        WHEN (SELECT status FROM invoices WHERE id = OLD.invoice_id) = 'issued'
        BEGIN SELECT RAISE(ABORT, 'an issued invoice is immutable: correct with a credit or a reversal'); END;
        CREATE TRIGGER invoice_lines_issued_no_insert BEFORE INSERT ON invoice_lines
        WHEN (SELECT status FROM invoices WHERE id = NEW.invoice_id) = 'issued'
        BEGIN SELECT RAISE(ABORT, 'an issued invoice is immutable: correct with a credit or a reversal'); END;
    """)


@migration
def m014_web_logins(conn):
    """Web logins (issue 14): a user's password (argon2id hash), whether it must be changed at
    the next login (a one-time password from an invitation or a reset), when the user was
    disabled; server-side sessions (only the SHA-256 of the random session id is kept; an
    ended session keeps why it ended, so its browser can be told)."""
    run_script(conn, """
        ALTER TABLE users ADD COLUMN password_hash TEXT;
        ALTER TABLE users ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE users ADD COLUMN disabled_at TEXT;
        CREATE TABLE user_sessions (
            id INTEGER PRIMARY KEY,
            token_hash TEXT NOT NULL UNIQUE,
            user_id INTEGER NOT NULL REFERENCES users(id),
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            csrf_token TEXT NOT NULL,
            source TEXT,
            created_at TEXT NOT NULL,
            last_seen_at TEXT NOT NULL,
            ended_at TEXT,
            end_reason TEXT
        );
        CREATE INDEX user_sessions_open ON user_sessions (user_id, ended_at);
    """)


@migration
def m018_webhooks(conn):
    """Webhooks (issue 14): an account's subscriptions (URL, the event types as
    ``,a,b,``, the signing secret kept to sign with, the one before a rotation until
    ``previous_until``), the outbox of events (written in the transaction of the change
    they report: ``core.outbox``), one delivery per event and subscription (its state,
    attempts, when it is due), and every attempt (the delivery log)."""
    run_script(conn, """
        CREATE TABLE webhook_subscriptions (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            url TEXT NOT NULL,
            label TEXT NOT NULL DEFAULT '',
            events TEXT NOT NULL,
            secret TEXT NOT NULL,
            previous_secret TEXT,
            previous_until TEXT,
            active INTEGER NOT NULL DEFAULT 1,
            failing_since TEXT,
            disabled_reason TEXT,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            removed_at TEXT
        );
        CREATE INDEX webhook_subscriptions_account ON webhook_subscriptions (account_id);
        CREATE TABLE webhook_events (
            id INTEGER PRIMARY KEY,
            event_id TEXT NOT NULL UNIQUE,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            type TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE TABLE webhook_deliveries (
            id INTEGER PRIMARY KEY,
            event_row INTEGER NOT NULL REFERENCES webhook_events(id),
            subscription_id INTEGER NOT NULL REFERENCES webhook_subscriptions(id),
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'cancelled')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT,
            claim TEXT,
            last_status INTEGER,
            last_error TEXT,
            redelivery_of INTEGER REFERENCES webhook_deliveries(id),
            created_at TEXT NOT NULL,
            finished_at TEXT
        );
        CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
        CREATE INDEX webhook_deliveries_subscription ON webhook_deliveries (subscription_id, id);
        CREATE INDEX webhook_deliveries_account ON webhook_deliveries (account_id, id);
        CREATE TABLE webhook_attempts (
            id INTEGER PRIMARY KEY,
            delivery_id INTEGER NOT NULL REFERENCES webhook_deliveries(id),
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            attempt INTEGER NOT NULL,
            at TEXT NOT NULL,
            status_code INTEGER,
            latency_ms INTEGER,
            error TEXT,
            outcome TEXT NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed')),
            next_retry_at TEXT
        );
        CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);
    """)


@migration
def m015_account_operator(conn):
    """The installation's operator (issue 14, compliance screens): rule sets, life-line
    numbers and national registries are the installation's, shared by every account, so
    only the compliance officers and owners of an account marked ``operator`` (from the
    terminal: ``dialer account operator NAME``) may change them in the browser. 0 or 1."""
    run_script(conn, """
        ALTER TABLE accounts ADD COLUMN operator INTEGER NOT NULL DEFAULT 0;
    """)


@migration
def m017_api_tokens(conn):
    """API tokens (issue 14, the JSON API): per account, each scoped to one role, made by an
    owner and shown once. Only the SHA-256 of the token's 256-bit secret is kept; the token's
    public id part (``dk_<public_id>_<secret>``) finds the row, so the secret is compared
    in constant time against one hash. ``last_used_at`` is written at most once a minute;
    a revoked token keeps when and by whom it was revoked."""
    run_script(conn, """
        CREATE TABLE api_tokens (
            id INTEGER PRIMARY KEY,
            public_id TEXT NOT NULL UNIQUE,
            secret_hash TEXT NOT NULL,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            name TEXT NOT NULL,
            role TEXT NOT NULL,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            last_used_at TEXT,
            revoked_at TEXT,
            revoked_by TEXT
        );
        CREATE INDEX api_tokens_account ON api_tokens (account_id, name);
    """)
