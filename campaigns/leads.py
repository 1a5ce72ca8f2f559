"""Lead lists: import (mapped, normalised, deduplicated, resumable), the screening
preview, the lead life cycle (outcomes, recycling, callbacks, opt-outs)."""

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shlex
import sqlite3
import stat
import tempfile
import uuid

import pytz

from core.errors import DialerError, InputError, NotFound, StoreError
from core.timeutil import to_iso, utc
from core import audit, outbox
from rules.engine import (NEVER_CATEGORIES, Lead, Screener, business_group, find_runs, is_campaign_wide,
                          next_allowed, run_group)
from rules.numbers import NumberFacts, US_STATES, STATE_CODES, normalise

from . import model
from .store import get_campaign, resolve_account

FIELDS = {
    "phone": ("phone", "phone_number", "number", "telephone", "tel", "mobile", "phone1"),
    "alt_phones": ("alt_phone", "alternate", "alternates", "phone2", "alt_phones", "other_phone"),
    "name": ("name", "full_name", "contact", "contact_name"),
    "first_name": ("first_name", "firstname", "first"),
    "last_name": ("last_name", "lastname", "last", "surname"),
    "business": ("business", "company", "company_name", "business_id", "organisation", "organization"),
    "state": ("state", "st", "province"),
    "postal_code": ("postal_code", "zip", "zipcode", "zip_code", "postcode"),
    "zone": ("zone", "timezone", "time_zone", "tz"),
}
DEDUPE = ("list", "campaign", "account", "none")
CHUNK = 50_000
_STATE_NAMES = {k.lower(): v for k, v in US_STATES.items()}


def _norm_header(h):
    return "_".join(str(h).strip().lower().replace("-", " ").split())


def _one_line(text):
    from .files import one_line
    return one_line(text)


def _columns(names):
    return ", ".join(_one_line(n) for n in names)


def resolve_mapping(header, given=None, source_header=None):
    """Field -> list of column indexes. ``given`` is 'phone=COL,name=COL,...' or a dict;
    unmapped fields are found by common header names. Unknown fields or columns are
    errors, and so is a mapping that would leave a column unnoticed: a field found by
    its name while several columns could be it (two columns called ``phone``, or
    ``Phone`` and ``Mobile``), or a mapped column whose name the file repeats while
    the other copies are not mapped. ``source_header``: the names as the file wrote
    them (:attr:`campaigns.files.Table.source_header`), where duplicates have no
    ``_2`` yet."""
    norm = [_norm_header(h) for h in header]
    if not source_header or len(source_header) != len(header):
        source_header = header
    src = [_norm_header(h) for h in source_header]
    out = {}
    if given:
        items = given.items() if isinstance(given, dict) else \
            [p.split("=", 1) if "=" in p else (p, None) for p in str(given).split(",") if p.strip()]
        for field, col in items:
            field = field.strip()
            if field not in FIELDS:
                raise InputError(f"--map: unknown field {_one_line(field)!r} (fields: {', '.join(FIELDS)})")
            if col is None:
                raise InputError(f"--map: write {field}=COLUMN")
            cols = []
            for c in (col if isinstance(col, (list, tuple)) else str(col).split("+")):
                c = str(c).strip()
                if c in header:
                    cols.append(header.index(c))
                elif _norm_header(c) in norm:
                    cols.append(norm.index(_norm_header(c)))
                else:
                    raise InputError(f"--map {field}={_one_line(c)}: the file has no column {_one_line(c)!r} "
                                     f"(columns: {_columns(header)})")
            out[field] = cols
    used = {i for cols in out.values() for i in cols}

    def twins_message(field, i, twins):
        named = source_header[i]
        cols = sorted([i] + twins)
        other = "alt_phones" if field == "phone" else "FIELD"
        return (f"the file has {len(cols)} columns named {_one_line(named)!r} (columns "
                f"{', '.join(str(j + 1) for j in cols)}, read as {', '.join(repr(_one_line(header[j])) for j in cols)}): "
                f"the {field} would be read from one and the other kept as a custom field unnoticed; map each, "
                f"e.g. --map {field}={_one_line(header[cols[0]])},{other}={_one_line(header[cols[1]])}, "
                "or rename one in the file")

    for field, names in FIELDS.items():
        if field in out:
            continue
        cands = [i for i, n in enumerate(src) if n in names and i not in used]
        if len(cands) > 1:
            if len({src[i] for i in cands}) == 1:
                raise InputError(twins_message(field, cands[0], cands[1:]))
            shown = ", ".join(f"{_one_line(header[i])!r}" for i in cands)
            hint = " (and alt_phones=COLUMN for another)" if field == "phone" else ""
            raise InputError(f"several columns could be the {field}: {shown}; say which with "
                             f"--map {field}=COLUMN{hint}, so that none is taken for a custom field unnoticed")
        if cands:
            out[field] = cands
            used.add(cands[0])
    for field, cols in out.items():
        for i in cols:
            twins = [j for j, n in enumerate(src) if n == src[i] and j != i and j not in used]
            if twins:
                raise InputError(twins_message(field, i, twins))
    if "phone" not in out:
        raise InputError(f"no phone column: map one with --map phone=COLUMN (columns: {_columns(header)})")
    return out


def _clean_state(text, region):
    s = text.strip()
    if not s:
        return None, None
    if region == "US":
        code = s.upper() if s.upper() in STATE_CODES else _STATE_NAMES.get(s.lower())
        if code is None:
            return None, f"{s!r} is not a US state"
        return code, None
    return s.upper(), None


def facts_of(row):
    """NumberFacts from a stored lead row: computed once at import, never again."""
    return NumberFacts(row["phone_raw"], row["phone"], int(row["phone"][1:]), row["region"], row["number_type"],
                       tuple(row["zones"].split(",")) if row["zones"] else (), row["number_state"], False)


def lead_of(row):
    groups = tuple(row["groups"].split(",")) if row.get("groups") else ()
    return Lead(row["phone"], state=row["state"], zone=row["zone"], business=None, region=row["region"],
                facts=facts_of(row), groups=groups)


# ---------------------------------------------------------------------------------
# import
# ---------------------------------------------------------------------------------

OPEN_STATES = ("draft", "running", "paused")  # a list may be added to these; not to a finished campaign
FAIL_ATTEMPTS = 4  # tries to record an import's failure when the database is what failed


class _Snapshot:
    __slots__ = ("file", "sha256", "size", "name")


@contextlib.contextmanager
def _snapshot(store, path):
    """The file's bytes, copied once into an anonymous file beside the database and
    hashed on the way: the import reads this copy and nothing else, so a file changed
    during the import cannot mix into the list (a change during the copy itself is
    seen and refused)."""
    from .files import FileError
    name = os.path.basename(str(path).rstrip("/\\")) or str(path)
    try:
        src = open(path, "rb")
    except FileNotFoundError:
        raise FileError(f"{name} does not exist") from None
    except IsADirectoryError:
        raise FileError(f"{name} is a folder, not a file") from None
    except PermissionError:
        raise FileError(f"{name} cannot be read: permission denied") from None
    except OSError as e:
        raise FileError(f"{name} cannot be read: {e.strerror or e}") from None
    snap = None
    try:
        with src:
            before = os.fstat(src.fileno())
            if stat.S_ISDIR(before.st_mode):
                raise FileError(f"{name} is a folder, not a file")
            if not stat.S_ISREG(before.st_mode):
                raise FileError(f"{name} is not a regular file")
            where = None
            if str(store.path) != ":memory:":
                where = store.files_dir / "imports"
                where.mkdir(exist_ok=True)
            snap = tempfile.TemporaryFile(dir=where)  # no name: gone when closed, even after a crash
            h, n = hashlib.sha256(), 0
            try:
                for block in iter(lambda: src.read(1 << 20), b""):
                    h.update(block)
                    snap.write(block)
                    n += len(block)
            except OSError as e:
                raise FileError(f"{name} could not be read to the end: {e.strerror or e}") from None
            after = os.fstat(src.fileno())
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or n != after.st_size:
                raise FileError(f"{name} changed while it was being read (is it still being written?): "
                                "import it once it is complete")
        snap.flush()
        snap.seek(0)
        s = _Snapshot()
        s.file, s.sha256, s.size, s.name = snap, h.hexdigest(), n, name
        yield s
    finally:
        if snap is not None:
            snap.close()


class _Halt(Exception):
    """This run no longer owns its import (cancelled, or taken over by a resume)."""


class _Closed(Exception):
    """The campaign is no longer open."""


def _require_open(camp):
    if camp["state"] not in OPEN_STATES:
        raise InputError(f"campaign {camp['name']!r} is {camp['state']}: lists cannot be added to it")


def _holding(store, campaign_id, sha=None):
    """The imports of a campaign that hold staged rows: running (or interrupted), or
    failed and resumable."""
    sql = ("SELECT * FROM imports WHERE campaign_id = ? AND (status = 'running' OR (status = 'failed' "
           "AND resumable = 1))")
    args = [campaign_id]
    if sha is not None:
        sql += " AND file_sha256 = ?"
        args.append(sha)
    return store.query(sql + " ORDER BY id", args)


def _commands(path, camp_name, account_name, import_id):
    q = shlex.quote
    return (f"resume it with: dialer list import {q(str(path))} --campaign {q(camp_name)} "
            f"--account {q(account_name)} --resume {import_id}; or cancel it with: "
            f"dialer list cancel {import_id} --account {q(account_name)}")


def import_list(store, path, campaign, now, actor, mapping=None, region="US", dedupe="campaign",
                progress=None, resume=None, chunk=CHUNK, account=None):
    """Import a CSV/XLSX list into a campaign. Returns the summary with the screening
    preview. ``campaign``: id, row, or name (within ``account`` when given).

    * The file's bytes are copied once (hashed on the way) and only that copy is read.
    * Rows commit in chunks as *staged* leads (invisible to the hopper and to the lead
      commands) with a checkpoint; the last step makes them dialable in one
      transaction. Each chunk commit checks, under the write lock, that this run still
      owns its import (not cancelled, not taken over by a resume) and that the
      campaign is still open (draft, running, paused).
    * A fresh import of a file that an import of the same campaign still holds
      (running, interrupted, or failed and resumable) is refused, naming that import
      and the commands to resume or cancel it.
    * Dedupe (``campaign``, ``account``): against the leads that are live when the
      import starts, as rows are read, and again at the last step, under the write
      lock, against every lead made live meanwhile (another list imported at the
      same time): two imports never leave the same number dialable twice.
    * Whatever stops an import once it exists ends it ``failed`` with its reason
      (never ``running``): a problem of the file (an unclosed quote at row 800 000,
      a damaged sheet) or a campaign no longer open removes its staged rows; a
      database error or an interruption keeps them and the job is resumable
      (``resume=IMPORT_ID``); the error names the import and the commands. Only a
      killed process leaves ``running`` (resumable too; a second run of the same
      file is refused and names it). ``dialer list cancel ID`` ends any of them.
    """
    from .files import open_table
    if dedupe not in DEDUPE:
        raise InputError(f"--dedupe must be one of {', '.join(DEDUPE)}")
    region = str(region).upper()
    camp = get_campaign(store, campaign, account)
    _require_open(camp)
    acc = resolve_account(store, camp["account_id"])
    with _snapshot(store, path) as snap:
        table = open_table(snap.file, name=snap.name)
        try:
            run = _ImportRun(store, camp, acc, table, snap, path, now, actor, progress, chunk)
            run.start(mapping, region, dedupe, resume)
            return run.go()
        finally:
            table.close()


class _ImportRun:
    def __init__(self, store, camp, acc, table, snap, path, now, actor, progress, chunk):
        self.store, self.camp, self.acc, self.table, self.snap = store, camp, acc, table, snap
        self.path, self.now, self.actor, self.progress, self.chunk = path, now, actor, progress, max(1, int(chunk))
        self.token = uuid.uuid4().hex
        self.id = None
        self.last_row = 0

    # -- the job ---------------------------------------------------------------------
    def start(self, mapping, region, dedupe, resume):
        store, camp, table = self.store, self.camp, self.table
        if resume is not None:
            job = store.query_one("SELECT * FROM imports WHERE id = ?", (resume,))
            if job is None or job["campaign_id"] != camp["id"]:
                raise NotFound(f"no import {resume} for campaign {camp['name']!r}")
            fmap = self._stored_mapping(job)
        else:
            fmap = resolve_mapping(table.header, mapping, table.source_header)
        with store.transaction():
            state = store.query_one("SELECT state FROM campaigns WHERE id = ?", (camp["id"],))["state"]
            _require_open({"name": camp["name"], "state": state})
            if resume is not None:
                job = store.query_one("SELECT * FROM imports WHERE id = ?", (resume,))
                if job["status"] == "failed" and not job["resumable"]:
                    raise InputError(f"import {resume} failed ({_one_line(job['reason'] or 'no reason recorded')}) "
                                     "and kept nothing: import the file again")
                if job["status"] not in ("running", "failed"):
                    raise InputError(f"import {resume} is {job['status']}, not resumable")
                if job["file_sha256"] != self.snap.sha256:
                    raise InputError(f"import {resume} was of another file (checksum differs): give the same file "
                                     "to resume")
                store.execute("UPDATE imports SET status = 'running', runner = ?, reason = NULL, resumable = 0, "
                              "finished_at = NULL WHERE id = ?", (self.token, resume))
                self.id, self.rows_done = job["id"], job["rows_done"]
                self.dedupe, self.region = job["dedupe"], job["region"]
                self.counts = {"imported": job["imported"], "rejected": job["rejected"],
                               "duplicates": job["duplicates"]}
            else:
                held = _holding(store, camp["id"], self.snap.sha256)
                if held:
                    j = held[0]
                    raise InputError(
                        f"{self.snap.name} is already being imported into campaign {camp['name']!r} as import "
                        f"{j['id']} ({j['rows_done']} rows read so far; it is running, or it was interrupted"
                        f"{' and failed: ' + _one_line(j['reason']) if j['status'] == 'failed' else ''}): "
                        + _commands(self.path, camp["name"], self.acc["name"], j["id"]))
                cur = store.execute(
                    "INSERT INTO imports (campaign_id, file_name, file_sha256, kind, mapping, region, dedupe, status, "
                    "started_at, actor, account_id, runner) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?)",
                    (camp["id"], self.snap.name, self.snap.sha256, table.kind,
                     json.dumps({k: [table.header[i] for i in v] for k, v in fmap.items()}), region, dedupe,
                     to_iso(self.now), self.actor, camp["account_id"], self.token))
                self.id, self.rows_done = cur.lastrowid, 0
                self.dedupe, self.region = dedupe, region
                self.counts = {"imported": 0, "rejected": 0, "duplicates": 0}
        self.fmap = fmap
        self.resumed = resume is not None
        self.last_row = self.committed_row = self.rows_done

    def _stored_mapping(self, job):
        try:
            stored = json.loads(job["mapping"])
            return {f: [self.table.header.index(h) for h in names] for f, names in stored.items()}
        except (ValueError, TypeError, AttributeError):
            raise InputError(f"import {job['id']}: its column mapping no longer matches the file; "
                             f"cancel it (dialer list cancel {job['id']}) and import the file again") from None

    def _check_owner(self):
        """Inside a write transaction: this run still owns a running import of an open campaign."""
        job = self.store.query_one("SELECT status, runner, reason FROM imports WHERE id = ?", (self.id,))
        if job is None or job["runner"] != self.token or job["status"] != "running":
            if job is not None and job["status"] == "cancelled":
                raise _Halt(f"import {self.id} was cancelled while it ran"
                            f"{' (' + _one_line(job['reason']) + ')' if job['reason'] else ''}; "
                            "nothing of it was kept")
            if job is not None and job["status"] == "running":
                raise _Halt(f"import {self.id} was resumed by another run, which carries on; this run stopped")
            raise _Halt(f"import {self.id} is {job['status'] if job else 'gone'}; this run stopped")
        state = self.store.query_one("SELECT state FROM campaigns WHERE id = ?", (self.camp["id"],))["state"]
        if state not in OPEN_STATES:
            raise _Closed(state)

    def _fail(self, reason, keep):
        """End the import ``failed`` (staged rows kept for a resume, or removed). The
        database may be what failed (locked): the record is tried FAIL_ATTEMPTS times,
        each waiting the store's busy timeout. False when it could not be written (the
        import then stays ``running``, resumable, and a second run of its file is
        refused naming it)."""
        store = self.store
        for _ in range(FAIL_ATTEMPTS):
            try:
                with store.transaction():
                    job = store.query_one("SELECT status, runner FROM imports WHERE id = ?", (self.id,))
                    if job is None or job["runner"] != self.token or job["status"] != "running":
                        return True
                    if not keep:
                        _drop_staged(store, self.camp["id"], self.id)
                    store.execute("UPDATE imports SET status = 'failed', reason = ?, resumable = ?, "
                                  "finished_at = ?, runner = NULL WHERE id = ?",
                                  (_one_line(reason)[:2000], 1 if keep else 0, to_iso(self.now), self.id))
                return True
            except (StoreError, sqlite3.OperationalError):
                continue
        return False

    def go(self):
        from .files import FileError
        try:
            self._read()
            return self._finish()
        except _Halt as h:
            raise InputError(str(h)) from None
        except _Closed as c:
            msg = (f"campaign {self.camp['name']!r} was {c} while import {self.id} ran: lists cannot be added to "
                   "it; nothing of this list was kept")
            self._fail(msg, keep=False)
            raise InputError(msg) from None
        except FileError as e:
            self._fail(str(e), keep=False)
            raise FileError(f"{e}; import {self.id} failed and kept nothing: fix the file and import it "
                            "again") from None
        except StoreError as e:
            marked = self._fail(str(e), keep=True)
            raise StoreError(self._stopped(str(e), marked)) from None
        except DialerError as e:
            self._fail(str(e), keep=False)
            raise
        except sqlite3.Error as e:
            marked = self._fail(f"database error: {e}", keep=True)
            raise StoreError(self._stopped(f"database error: {e}", marked)) from None
        except BaseException as e:
            self._fail(f"interrupted ({type(e).__name__}{': ' + str(e) if str(e) else ''})", keep=True)
            raise

    def _stopped(self, reason, marked):
        state = "it failed" if marked else "it is still marked running (the database could not be written)"
        return (f"import {self.id} of {self.snap.name} stopped after row {self.committed_row}: {_one_line(reason)}; "
                f"{state}, and the rows read so far are kept aside, not dialable: "
                + _commands(self.path, self.camp["name"], self.acc["name"], self.id))

    # -- rows ------------------------------------------------------------------------
    def _read(self):
        from rules.service import load_context, load_recent_history
        store, camp, table, fmap = self.store, self.camp, self.table, self.fmap
        import_id, dedupe, region, counts = self.id, self.dedupe, self.region, self.counts
        ctx = load_context(store, self.now, region, camp["id"])
        special = ctx.special_codes
        # numbers already taken: this import's staged rows, and the campaign's or account's live leads
        # (leads made live while this import runs are caught again at the last step)
        seen = set(r["phone"] for r in store.query(
            "SELECT phone FROM leads WHERE campaign_id = ? AND status = 'staged' AND import_id = ?",
            (camp["id"], import_id)))
        if dedupe == "campaign":
            existing = set(r["phone"] for r in store.query(
                "SELECT phone FROM leads WHERE campaign_id = ? AND status != 'staged'", (camp["id"],)))
        elif dedupe == "account":
            existing = set(r["phone"] for r in store.query(
                "SELECT phone FROM leads WHERE account_id = ? AND status != 'staged'", (camp["account_id"],)))
        else:
            existing = set()
        if dedupe == "none":
            seen = set()
        ts = to_iso(self.now)
        self.tally = None
        if not self.resumed:  # a fresh import screens as it goes; a resumed one re-reads the campaign at the end
            ctx.history = load_recent_history(store, self.now, 720, camp["account_id"])
            self.tally = PreviewTally(ctx, utc(self.now))
        tally = self.tally
        width = len(table.header)
        mapped = {i for cols in fmap.values() for i in cols}
        custom_cols = [(i, h) for i, h in enumerate(table.header) if i not in mapped]
        self.phone_col = phone_col = table.header[fmap["phone"][0]]
        leads, errors = [], []
        rows_done = self.rows_done
        xlsx = table.kind == "xlsx"

        def flush():
            nonlocal leads, errors
            with store.transaction():
                self._check_owner()
                if leads:
                    store.conn.executemany(
                        "INSERT INTO leads (campaign_id, account_id, import_id, row_no, phone, phone_raw, alt_phones, "
                        "name, business, state, postal_code, zone, region, number_state, zones, number_type, groups, "
                        "custom, status, attempts, priority, created_at, updated_at) VALUES "
                        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'staged', 0, 1, ?, ?)", leads)
                if errors:
                    store.conn.executemany(
                        "INSERT INTO import_errors (import_id, row_no, col, value, reason, kind) "
                        "VALUES (?, ?, ?, ?, ?, ?)", errors)
                store.execute("UPDATE imports SET rows_done = ?, imported = ?, rejected = ?, duplicates = ? "
                              "WHERE id = ?", (self.last_row, counts["imported"], counts["rejected"],
                                               counts["duplicates"], import_id))
            self.committed_row = self.last_row
            if self.progress is not None:
                self.progress(self.last_row, table.progress())
            leads, errors = [], []

        cid, aid = camp["id"], camp["account_id"]
        state_col = table.header[fmap["state"][0]] if "state" in fmap else None
        zone_col = table.header[fmap["zone"][0]] if "zone" in fmap else None
        has = {k: k in fmap for k in FIELDS}
        state_cache = {}
        encode = json.JSONEncoder(ensure_ascii=False).encode

        def getter(field):
            """cells -> the field's text (stripped; several columns joined by a space)."""
            cols = fmap.get(field)
            if not cols:
                return lambda cells: ""
            if len(cols) == 1:
                i = cols[0]
                return lambda cells: cells[i].strip()
            return lambda cells: " ".join(cells[i].strip() for i in cols if cells[i].strip())

        get_name, get_first, get_last = getter("name"), getter("first_name"), getter("last_name")
        get_business, get_postal, get_alts = getter("business"), getter("postal_code"), getter("alt_phones")
        get_phone, get_state, get_zone = getter("phone"), getter("state"), getter("zone")
        for row_no, cells in table.rows:
            if row_no <= rows_done:
                continue
            self.last_row = row_no
            if len(cells) > width:
                extra = [(i, c) for i, c in enumerate(cells[width:], width) if c.strip()]
                if extra:
                    if not xlsx:
                        i, c = extra[0]
                        errors.append((import_id, row_no, f"column_{i + 1}", c,
                                       f"the row has {len(cells)} cells but the header has {width} columns: a "
                                       "delimiter inside an unquoted cell shifts the columns (quote that cell)",
                                       "rejected"))
                        counts["rejected"] += 1
                        if len(leads) + len(errors) >= self.chunk:
                            flush()
                        continue
                    from openpyxl.utils import get_column_letter
                    letters = ", ".join(get_column_letter(i + 1) for i, _ in extra[:5]) + \
                        (", ..." if len(extra) > 5 else "")
                    errors.append((import_id, row_no, get_column_letter(extra[0][0] + 1), extra[0][1],
                                   f"{len(extra)} cell(s) beyond the header's {width} columns ({letters}) not "
                                   "imported: they have no column name", "note"))
                del cells[width:]
            raw = get_phone(cells)
            if not raw:
                errors.append((import_id, row_no, phone_col, "", "no phone number", "rejected"))
                counts["rejected"] += 1
                if len(leads) + len(errors) >= self.chunk:
                    flush()
                continue
            f = normalise(raw, region, special)
            problem = None
            col, value = phone_col, raw
            if f.e164 is None:
                problem = (f"{f.short_code} is an emergency number" if f.emergency and f.short_code else
                           f"{f.short_code} is a service code, not a subscriber number" if f.short_code else
                           f.error + (" (it reaches an emergency number)" if f.emergency else ""))
            elif f.emergency:
                problem = "reaches an emergency number"
            state = None
            if has["state"]:
                st_raw = get_state(cells)
                hit = state_cache.get((st_raw, f.region))
                if hit is None:
                    hit = state_cache[(st_raw, f.region)] = _clean_state(st_raw, f.region or region)
                state, serr = hit
                if problem is None and serr:
                    problem, col, value = serr, state_col, st_raw
            zone = None
            if has["zone"]:
                zone = get_zone(cells) or None
                if problem is None and zone and zone not in pytz.all_timezones_set:
                    problem, col, value = (f"{zone!r} is not a time zone name (e.g. America/Chicago)", zone_col,
                                           zone)
            if problem is not None:
                errors.append((import_id, row_no, col, value, problem, "rejected"))
                counts["rejected"] += 1
            elif f.e164 in seen or f.e164 in existing:
                errors.append((import_id, row_no, phone_col, raw,
                               "duplicate in this list" if f.e164 in seen else f"already in this {dedupe}",
                               "duplicate"))
                counts["duplicates"] += 1
            else:
                if dedupe != "none":
                    seen.add(f.e164)
                alts = None
                if has["alt_phones"]:
                    alts = []
                    for a in get_alts(cells).replace(";", ",").split(","):
                        if a.strip():
                            af = normalise(a, region, special)
                            if af.e164 is None or af.emergency:
                                errors.append((import_id, row_no, table.header[fmap["alt_phones"][0]], a,
                                               f"alternate number ignored: {af.error or 'emergency'}", "note"))
                            else:
                                alts.append(af.e164)
                    alts = json.dumps(alts) if alts else None
                if has["name"]:
                    name = get_name(cells)
                elif has["first_name"] or has["last_name"]:
                    first, last = get_first(cells), get_last(cells)
                    name = f"{first} {last}" if first and last else first or last
                else:
                    name = None
                business = get_business(cells) or None
                custom = None
                if custom_cols:
                    c = {h: cells[i] for i, h in custom_cols if cells[i] != ""}
                    if c:
                        custom = encode(c)
                leads.append((cid, aid, import_id, row_no, f.e164, raw, alts, name or None, business, state,
                              get_postal(cells) or None, zone, f.region,
                              f.state, ",".join(f.zones), f.kind, business_group(business) if business else None,
                              custom, ts, ts))
                counts["imported"] += 1
                if tally is not None:
                    tally.add(Lead(f.e164, state=state, zone=zone, region=f.region, facts=f), row_no)
            if len(leads) + len(errors) >= self.chunk:
                flush()
        flush()

    # -- the last step ---------------------------------------------------------------
    def _finish(self):
        store, camp, counts, import_id = self.store, self.camp, self.counts, self.id
        if counts["imported"] + counts["rejected"] + counts["duplicates"] == 0:
            raise InputError(f"{self.snap.name} has no data rows")
        late = 0
        with store.transaction():
            self._check_owner()
            if self.dedupe in ("campaign", "account"):
                late = self._late_duplicates()
            store.execute("UPDATE leads SET status = 'new' WHERE campaign_id = ? AND status = 'staged' "
                          "AND import_id = ?", (camp["id"], import_id))
            n_groups = assign_run_groups(store, camp["id"])
            job = store.query_one("SELECT * FROM imports WHERE id = ?", (import_id,))
            summary = {
                "import_id": import_id, "campaign": camp["name"], "file": job["file_name"],
                "rows": counts["imported"] + counts["rejected"] + counts["duplicates"],
                "imported": counts["imported"], "rejected": counts["rejected"], "duplicates": counts["duplicates"],
                "rejected_by_reason": {r["reason"]: r["n"] for r in store.query(
                    "SELECT reason, COUNT(*) AS n FROM import_errors WHERE import_id = ? AND kind = 'rejected' "
                    "GROUP BY reason ORDER BY n DESC, reason", (import_id,))},
                "notes": store.query_one("SELECT COUNT(*) AS n FROM import_errors WHERE import_id = ? "
                                         "AND kind = 'note'", (import_id,))["n"],
                "multiline_runs": n_groups,
            }
            store.execute("UPDATE imports SET status = 'done', finished_at = ?, summary = ?, runner = NULL, "
                          "imported = ?, duplicates = ? WHERE id = ?",
                          (to_iso(self.now), json.dumps(summary), counts["imported"], counts["duplicates"],
                           import_id))
            audit.append(store, self.now, self.actor, "list.import", f"campaign:{camp['name']}", summary["file"],
                         {k: summary[k] for k in ("import_id", "rows", "imported", "rejected", "duplicates")},
                         account_id=camp["account_id"])
        tally = self.tally
        if tally is not None and late:
            tally = _import_tally(store, camp, import_id, self.now)
        summary["preview"] = tally.result(_group_sizes(store, camp["id"])) if tally is not None else \
            preview(store, camp["id"], self.now)
        return summary

    def _late_duplicates(self):
        """Under the write lock: this import's staged rows whose number became live in the
        campaign (account) while it ran become duplicates. Returns how many."""
        store, camp = self.store, self.camp
        scope_col, scope_id = ("campaign_id", camp["id"]) if self.dedupe == "campaign" else \
            ("account_id", camp["account_id"])
        rows = store.query(
            "SELECT s.id, s.row_no, s.phone_raw FROM leads s WHERE s.campaign_id = ? AND s.status = 'staged' "
            f"AND s.import_id = ? AND EXISTS (SELECT 1 FROM leads l WHERE l.phone = s.phone AND l.{scope_col} = ? "
            "AND l.status != 'staged')", (camp["id"], self.id, scope_id))
        if not rows:
            return 0
        for k in range(0, len(rows), 500):
            part = rows[k:k + 500]
            store.execute(f"DELETE FROM leads WHERE id IN ({','.join('?' * len(part))})", [r["id"] for r in part])
        store.conn.executemany(
            "INSERT INTO import_errors (import_id, row_no, col, value, reason, kind) VALUES (?, ?, ?, ?, ?, ?)",
            [(self.id, r["row_no"], self.phone_col, r["phone_raw"],
              f"already in this {self.dedupe} (another list brought it in while this one was imported)",
              "duplicate") for r in rows])
        self.counts["imported"] -= len(rows)
        self.counts["duplicates"] += len(rows)
        return len(rows)


def _import_tally(store, camp, import_id, now):
    """The screening preview of one import's leads, read back from the store."""
    from rules.service import load_context, load_recent_history
    ctx = load_context(store, now, camp["region"], camp["id"])
    ctx.history = load_recent_history(store, now, 720, camp["account_id"])
    tally = PreviewTally(ctx, utc(now))
    for row in store.query("SELECT id, row_no, phone, phone_raw, region, number_type, zones, number_state, state, "
                           "zone, groups FROM leads WHERE campaign_id = ? AND import_id = ? AND status = 'new'",
                           (camp["id"], import_id)):
        tally.add(lead_of(row), row["row_no"])
    return tally


def _drop_staged(store, campaign_id, import_id):
    """Remove an import's staged rows (inside the caller's transaction); returns how many."""
    store.execute("DELETE FROM lead_events WHERE lead_id IN (SELECT id FROM leads WHERE campaign_id = ? "
                  "AND status = 'staged' AND import_id = ?)", (campaign_id, import_id))
    return store.execute("DELETE FROM leads WHERE campaign_id = ? AND status = 'staged' AND import_id = ?",
                         (campaign_id, import_id)).rowcount


def cancel_import(store, import_id, now, actor, account=None, reason=""):
    """`dialer list cancel ID`: end an import that holds staged rows (running,
    interrupted, or failed and resumable) of ``account`` (name, id, or None for the
    installation's only account): its staged rows are removed, the job is marked
    ``cancelled`` with the reason, audited. A run still going stops at its next chunk
    and keeps nothing. Its per-row report stays. A finished import is not cancelled
    (its leads are the campaign's)."""
    acc = resolve_account(store, account)
    with store.transaction():
        job = store.query_one("SELECT * FROM imports WHERE id = ? AND account_id = ?", (import_id, acc["id"]))
        if job is None:
            raise NotFound(f"no import {import_id} in account {acc['name']!r}")
        if job["status"] == "done":
            raise InputError(f"import {import_id} is done: its leads are in the campaign, it cannot be cancelled")
        if job["status"] == "cancelled":
            raise InputError(f"import {import_id} is already cancelled")
        if job["status"] == "failed" and not job["resumable"]:
            raise InputError(f"import {import_id} failed ({_one_line(job['reason'] or 'no reason recorded')}) and "
                             "kept nothing: there is nothing to cancel")
        camp = store.query_one("SELECT id, name FROM campaigns WHERE id = ?", (job["campaign_id"],))
        removed = _drop_staged(store, camp["id"], import_id)
        why = (reason or "").strip() or "cancelled"
        store.execute("UPDATE imports SET status = 'cancelled', reason = ?, resumable = 0, runner = NULL, "
                      "finished_at = ? WHERE id = ?", (_one_line(why)[:2000], to_iso(now), import_id))
        audit.append(store, now, actor, "list.cancel", f"campaign:{camp['name']}", reason or "",
                     {"import_id": import_id, "file": job["file_name"], "was": job["status"],
                      "rows_done": job["rows_done"], "staged_removed": removed}, account_id=acc["id"])
    return {"import_id": import_id, "campaign": camp["name"], "file": job["file_name"], "status": "cancelled",
            "was": job["status"], "staged_removed": removed}


def import_status(store, import_id, account=None):
    """One import of ``account``: its status, counts, reason."""
    acc = resolve_account(store, account)
    job = store.query_one("SELECT i.id AS import_id, c.name AS campaign, i.file_name AS file, i.status, i.reason, "
                          "i.resumable, i.rows_done, i.imported, i.rejected, i.duplicates, i.started_at, "
                          "i.finished_at FROM imports i JOIN campaigns c ON c.id = i.campaign_id "
                          "WHERE i.id = ? AND i.account_id = ?", (import_id, acc["id"]))
    if job is None:
        raise NotFound(f"no import {import_id} in account {acc['name']!r}")
    job["resumable"] = bool(job["resumable"]) or job["status"] == "running"
    return job


def campaign_imports(store, campaign, account=None):
    """The imports of a campaign (id, or name within ``account``), newest first: id,
    file, status, counts, reason, when."""
    camp = get_campaign(store, campaign, account)
    rows = store.query("SELECT id AS import_id, file_name AS file, status, reason, resumable, rows_done, imported, "
                       "rejected, duplicates, started_at, finished_at FROM imports WHERE campaign_id = ? "
                       "AND account_id = ? ORDER BY id DESC", (camp["id"], camp["account_id"]))
    for r in rows:
        r["resumable"] = bool(r["resumable"]) or r["status"] == "running"
    return rows


def assign_run_groups(store, campaign_id):
    """Runs of near-consecutive numbers across the whole campaign get a group key, so
    the hopper keeps one live call per multi-line business."""
    from rules.service import load_rulesets
    rulesets = load_rulesets(store)
    rows = store.query("SELECT id, phone, region, groups FROM leads WHERE campaign_id + 0 = ? AND status != 'staged'",
                       (campaign_id,))
    by_region = {}
    for r in rows:
        by_region.setdefault(r["region"], []).append(r)
    updates = []
    n_runs = 0
    for region, rs_rows in by_region.items():
        rs = next((x for x in rulesets.values() if region in x.regions), None)
        stride, run = (rs.multiline_stride, rs.multiline_run) if rs else (1, 3)
        values = {int(r["phone"][1:]): r for r in rs_rows}
        runs = find_runs(values.keys(), stride, run)
        n_runs += len({v[0] for v in runs.values()})
        for val, r in values.items():
            old = [g for g in (r["groups"] or "").split(",") if g and not g.startswith("run:")]
            if val in runs:
                old.append(run_group(runs[val][0]))
            new = ",".join(old) or None
            if new != r["groups"]:
                updates.append((new, r["id"]))
    if updates:
        store.conn.executemany("UPDATE leads SET groups = ? WHERE id = ?", updates)
    return n_runs


def import_errors(store, import_id, account=None, after=None, limit=None):
    """The per-row report of an import of ``account`` (name, id, or None for the
    installation's only account), by row: each {id, row, column, value, reason, kind}.
    A page of it: ``limit`` rows after ``after``, the (row, id) of the previous page's
    last row."""
    acc = resolve_account(store, account)
    job = store.query_one("SELECT id FROM imports WHERE id = ? AND account_id = ?", (import_id, acc["id"]))
    if job is None:
        raise NotFound(f"no import {import_id}")
    sql, params = "WHERE import_id = ?", [import_id]
    if after is not None:
        sql += " AND (COALESCE(row_no, 0) > ? OR (COALESCE(row_no, 0) = ? AND id > ?))"
        params += [int(after[0]), int(after[0]), int(after[1])]
    sql += " ORDER BY COALESCE(row_no, 0), id"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    return store.query(f"SELECT id, row_no AS row, col AS column, value, reason, kind FROM import_errors {sql}", params)


def errors_csv(rows):
    """The per-row error report as CSV, cells neutralised against formula injection."""
    import csv
    import io
    from .files import neutralise
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["row", "column", "value", "reason"])
    for r in rows:
        w.writerow([r["row"], neutralise(str(r["column"])), neutralise(str(r["value"])), neutralise(str(r["reason"]))])
    return buf.getvalue()


# ---------------------------------------------------------------------------------
# screening preview
# ---------------------------------------------------------------------------------



def _lead_rows(store, campaign_id, statuses=("new", "retry", "callback")):
    marks = ",".join("?" * len(statuses))
    # "+ 0": a scan in table order beats the (campaign_id, phone) index for a whole campaign
    return store.query(f"SELECT id, row_no, phone, phone_raw, region, number_type, zones, number_state, state, zone, "
                       f"groups FROM leads WHERE campaign_id + 0 = ? AND status IN ({marks})", (campaign_id, *statuses))


class PreviewTally:
    """Counts for the screening preview, one lead at a time: dialable now, later today,
    later, never, blocked campaign-wide (registry, caller ID), by reason, examples."""

    def __init__(self, ctx, at, examples=3):
        self.ctx, self.at, self.examples = ctx, at, examples
        self.sc = Screener(ctx, at)
        self.later_cache = {}
        self.out = {"at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "leads": 0, "dialable_now": 0, "later_today": 0,
                    "later": 0, "never": 0, "blocked_campaign_wide": 0, "by_reason": {}, "examples": {}}

    def add(self, lead, row_no):
        out = self.out
        out["leads"] += 1
        v = self.sc.evaluate(lead)
        if v.allowed:
            out["dialable_now"] += 1
            return
        cats = set()
        wide = listed = False
        for r in v.reasons:
            cats.add(r.category)
            out["by_reason"][r.category] = out["by_reason"].get(r.category, 0) + 1
            ex = out["examples"].setdefault(r.category, [])
            if len(ex) < self.examples:
                ex.append({"phone": v.number or v.input, "row": row_no, "rule": r.rule, "detail": r.detail})
            campaign_wide = is_campaign_wide(r)
            wide = wide or campaign_wide
            listed = listed or (r.category == "dnc" and not campaign_wide)
        if cats & NEVER_CATEGORIES or listed:
            out["never"] += 1
        elif wide:
            out["blocked_campaign_wide"] += 1
        else:
            own_history = lead.facts.value in self.ctx.history
            key = (v.zones, lead.facts.state, lead.state, lead.zone)
            t = None if own_history else self.later_cache.get(key, False)
            if t is False or own_history:
                t = next_allowed(lead, self.at, self.ctx)
                if not own_history:
                    self.later_cache[key] = t
            if t is not None and _same_local_day(self.at, t, v.zones):
                out["later_today"] += 1
            else:
                out["later"] += 1

    def result(self, groups):
        self.out["multiline_groups"], self.out["multiline_leads"] = groups
        return self.out


def _group_sizes(store, campaign_id):
    rows = store.query("SELECT groups FROM leads WHERE campaign_id + 0 = ? AND groups IS NOT NULL "
                       "AND status IN ('new', 'retry', 'callback')", (campaign_id,))
    sizes = {}
    for r in rows:
        for g in r["groups"].split(","):
            sizes[g] = sizes.get(g, 0) + 1
    multi = [n for n in sizes.values() if n > 1]
    return len(multi), sum(multi)


def preview(store, campaign, now, at=None, examples=3, account=None):
    """How many of the campaign's pending leads may be called now, later today, only
    later, never, and why."""
    from rules.service import load_context, load_recent_history
    camp = get_campaign(store, campaign, account)
    at = utc(at or now)
    ctx = load_context(store, now, camp["region"], camp["id"])
    rows = _lead_rows(store, camp["id"])
    ctx.history = load_recent_history(store, at, 720, camp["account_id"])
    tally = PreviewTally(ctx, at, examples)
    for row in rows:
        tally.add(lead_of(row), row["row_no"])
    return tally.result(_group_sizes(store, camp["id"]))


def _same_local_day(a, b, zones):
    zone = pytz.timezone(zones[0]) if zones else pytz.utc
    return a.astimezone(zone).date() == b.astimezone(zone).date()


# ---------------------------------------------------------------------------------
# life cycle
# ---------------------------------------------------------------------------------

def get_lead(store, lead_id, account=None):
    """A lead by id; with ``account`` (name or id), only a lead of that account."""
    row = store.query_one("SELECT * FROM leads WHERE id = ?", (lead_id,))
    if account is not None:
        acc = resolve_account(store, account)
        if row is None or row["account_id"] != acc["id"]:
            raise NotFound(f"no lead {lead_id} in account {acc['name']!r}")
    if row is None:
        raise NotFound(f"no lead {lead_id}")
    return row


def _not_staged(lead):
    """Lead commands leave a lead that is still being imported alone (InputError)."""
    if lead["status"] == "staged":
        raise InputError(f"lead {lead['id']} is not in its campaign yet: import {lead['import_id']} has not "
                         f"finished (resume it, or cancel it with: dialer list cancel {lead['import_id']}); "
                         "nothing was changed")
    return lead


def _event(store, lead_id, at, event, detail):
    store.execute("INSERT INTO lead_events (lead_id, at, event, detail) VALUES (?, ?, ?, ?)",
                  (lead_id, to_iso(at), event, json.dumps(detail, ensure_ascii=False, default=str)))


def record_attempt(store, call_id, number, campaign_id, started_at, outcome, account_id):
    """The one writer of ``call_attempts``, the history the frequency caps and lockouts
    read (per account: per caller). Only calls that were placed are attempts: its
    callers are the CDR path (:func:`dialer.cdr.write_cdr`, directly or through
    :func:`record_outcome` with the call's id). Idempotent by call id: True if the row
    is new."""
    if account_id is None:
        raise InputError(f"call attempt {call_id}: no account (every call is placed by an account)")
    cur = store.execute("INSERT INTO call_attempts (call_id, number, campaign_id, started_at, outcome, account_id) "
                        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (call_id) DO NOTHING",
                        (call_id, number, campaign_id, to_iso(started_at), outcome, int(account_id)))
    return cur.rowcount == 1


def _placed_call(store, call_id, lead):
    """The CDR of a placed call to this lead (its account's; of this lead or of none)."""
    row = store.query_one("SELECT call_id, account_id, lead_id, destination FROM cdrs WHERE call_id = ?", (call_id,))
    if row is None or row["account_id"] != lead["account_id"]:
        raise NotFound(f"no call record {call_id!r} of lead {lead['id']}'s account: an outcome with a call id "
                       f"needs the record of a call that was placed")
    if row["lead_id"] is not None and row["lead_id"] != lead["id"]:
        raise InputError(f"call {call_id} was a call to lead {row['lead_id']}, not to lead {lead['id']}")
    return row


def record_outcome(store, lead_id, outcome, at, actor="dialer", call_id=None, callback_at=None, agent=None,
                   started_at=None, account=None):
    """This lead's last contact ended with ``outcome``: count it on the lead, recycle or
    finish the lead, and put an opt-out on the lead's account's company DNC list at once.

    With ``call_id``, the record of a placed call (a CDR of the lead's account, written
    first: :func:`dialer.cdr.write_cdr` does so in the same transaction), the call is
    also kept in ``call_attempts`` at its start (``started_at``, else ``at``): the
    history the frequency caps and lockouts read. Without one it is a *manual* outcome
    (a person recording how a lead stands): no call was placed through the dialer, so
    nothing is added to ``call_attempts``. ``account`` (name or id): only a lead of
    that account."""
    from rules.service import add_dnc
    at = utc(at)
    with store.transaction():
        lead = _not_staged(get_lead(store, lead_id, account))
        cdr = _placed_call(store, call_id, lead) if call_id is not None else None
        camp = store.query_one("SELECT * FROM campaigns WHERE id = ?", (lead["campaign_id"],))
        rules = json.loads(camp["retry_rules"]) if camp["retry_rules"] else model.DEFAULT_RETRY
        attempts = lead["attempts"] + 1
        ch = model.after_outcome(outcome, attempts, at, rules, callback_at=callback_at)
        store.execute(
            "UPDATE leads SET status = ?, disposition = ?, attempts = ?, priority = ?, next_attempt_at = ?, "
            "reserved_by = NULL, reserved_until = NULL, last_attempt_at = ?, callback_at = ?, callback_agent = ?, "
            "updated_at = ? WHERE id = ?",
            (ch.status, ch.disposition, attempts, ch.priority, to_iso(ch.next_attempt_at) if ch.next_attempt_at else None,
             to_iso(at), to_iso(callback_at) if callback_at else None, agent if outcome == "callback" else None,
             to_iso(at), lead_id))
        if cdr is not None:
            record_attempt(store, call_id, cdr["destination"], lead["campaign_id"], started_at or at, outcome,
                           lead["account_id"])
        _event(store, lead_id, at, "outcome", {"outcome": outcome, "attempt": attempts, "status": ch.status,
                                               "next_attempt_at": ch.next_attempt_at, "call_id": call_id,
                                               "agent": agent, **({"manual": True, "by": actor} if cdr is None else {})})
        if ch.add_to_dnc:
            add_dnc(store, [lead["phone"]], at, actor, source="company", account=lead["account_id"],
                    reason=f"opt-out on call {call_id}" if call_id else f"opt-out recorded by {actor}")
        # webhooks (core.outbox): in this transaction, only for the account's subscribers
        def base():
            return {"lead_id": lead_id, "campaign_id": lead["campaign_id"], "campaign": camp["name"],
                    "phone": lead["phone"], "call_id": call_id, "at": to_iso(at), "by": actor, "manual": cdr is None}
        outbox.emit(store, lead["account_id"], "call.disposition", at, lambda: {
            **base(), "outcome": outcome, "status": ch.status, "attempts": attempts, "agent": agent,
            "next_attempt_at": to_iso(ch.next_attempt_at) if ch.next_attempt_at else None,
            "callback_at": to_iso(callback_at) if callback_at else None})
        if ch.add_to_dnc:
            outbox.emit(store, lead["account_id"], "lead.opted_out", at, lambda: {**base(), "dnc_list": "company"})
    return {"lead": lead_id, "status": ch.status, "disposition": ch.disposition, "attempts": attempts,
            "next_attempt_at": ch.next_attempt_at.strftime("%Y-%m-%dT%H:%M:%SZ") if ch.next_attempt_at else None,
            "call_attempt": cdr is not None}


def manual_outcome(store, lead_id, outcome, now, actor, call_id=None, account=None):
    """`dialer lead outcome`: a person records how a lead of ``account`` (name, id, or
    None for the installation's only account) stands. Without ``call_id`` it is not a
    call: the lead is recycled or finished by the campaign's rules (and an opt-out goes
    on the account's DNC list), but no call attempt is written, so frequency caps and
    lockouts are not touched. With the call id of a placed call's record, that call is
    kept as an attempt (once: the dialer may have kept it already)."""
    acc = resolve_account(store, account)
    return record_outcome(store, lead_id, outcome, now, actor, call_id=call_id, account=acc["id"])


def schedule_callback(store, lead_id, when_local, now, actor, agent=None, zone=None, account=None):
    """A callback at a wall-clock time in the lead's own zone (its list zone, else the
    zone of its number): '2026-03-09 10:00'. DST is resolved by the zone database; a
    time that does not exist or is ambiguous that day is refused. Scheduling is not a
    call: the lead's attempts and the call history (``call_attempts``) are untouched.
    ``account``: name, id, or None for the installation's only account."""
    acc = resolve_account(store, account)
    lead = _not_staged(get_lead(store, lead_id, acc["id"]))
    zone = zone or lead["zone"] or (lead["zones"].split(",")[0] if lead["zones"] else None)
    if not zone:
        raise InputError(f"lead {lead_id} has no known time zone: give --zone")
    try:
        tz = pytz.timezone(zone)
    except pytz.UnknownTimeZoneError:
        raise InputError(f"{zone!r} is not a time zone name") from None
    try:
        naive = _dt.datetime.fromisoformat(str(when_local).strip().replace("T", " "))
    except ValueError:
        raise InputError(f"callback time {when_local!r} is not a local date and time (YYYY-MM-DD HH:MM)") from None
    if naive.tzinfo is not None:
        t = naive.astimezone(_dt.timezone.utc)
    else:
        try:
            t = tz.localize(naive, is_dst=None).astimezone(_dt.timezone.utc)
        except pytz.NonExistentTimeError:
            raise InputError(f"{naive:%H:%M} does not exist on {naive:%Y-%m-%d} in {zone} (clocks go forward)") from None
        except pytz.AmbiguousTimeError:
            raise InputError(f"{naive:%H:%M} happens twice on {naive:%Y-%m-%d} in {zone} (clocks go back): pick another time") from None
    now = utc(now)
    if t <= now:
        raise InputError(f"callback time {when_local} ({zone}) is in the past")
    with store.transaction():
        lead = _not_staged(get_lead(store, lead_id, acc["id"]))
        ch = model.after_outcome("callback", lead["attempts"], now, model.DEFAULT_RETRY, callback_at=t)
        store.execute(
            "UPDATE leads SET status = ?, priority = ?, next_attempt_at = ?, reserved_by = NULL, reserved_until = NULL, "
            "callback_at = ?, callback_agent = ?, updated_at = ? WHERE id = ?",
            (ch.status, ch.priority, to_iso(t), to_iso(t), agent, to_iso(now), lead_id))
        _event(store, lead_id, now, "callback", {"callback_at": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "agent": agent,
                                                 "by": actor})
    return {"lead": lead_id, "status": ch.status, "disposition": lead["disposition"], "attempts": lead["attempts"],
            "next_attempt_at": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "callback_at": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "callback_local": t.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")}


def find_leads(store, number, region="US", account=None):
    """The leads of ``account`` (name, id, or None for the installation's only account)
    with this number."""
    acc = resolve_account(store, account)
    f = normalise(number, region)
    if f.e164 is None:
        raise InputError(f"{number!r} is not a valid phone number: {f.error}")
    rows = store.query("SELECT l.*, c.name AS campaign FROM leads l JOIN campaigns c ON c.id = l.campaign_id "
                       "WHERE l.phone = ? AND l.account_id = ? ORDER BY l.id", (f.e164, acc["id"]))
    if not rows:
        raise NotFound(f"no lead with number {f.e164} in account {acc['name']!r}")
    return rows


def lead_history(store, number, region="US", account=None):
    out = []
    for row in find_leads(store, number, region, account):
        events = store.query("SELECT at, event, detail FROM lead_events WHERE lead_id = ? ORDER BY id", (row["id"],))
        for e in events:
            e["detail"] = json.loads(e["detail"])
        out.append({"lead": row["id"], "campaign": row["campaign"], "phone": row["phone"], "status": row["status"],
                    "attempts": row["attempts"], "events": events})
    return out


# ---------------------------------------------------------------------------------
# lists of leads and callbacks (the JSON API; `dialer lead list`, `dialer lead callbacks`)
# ---------------------------------------------------------------------------------

LISTED_STATUSES = tuple(s for s in model.LEAD_STATUSES if s != "staged")  # staged rows are not in a campaign yet
MAX_PAGE = 1000


def _page_limit(limit):
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InputError(f"limit must be a whole number from 1 to {MAX_PAGE}")
    return limit


def public_lead(row, campaign=None):
    """A lead as the API and `dialer lead list --json` show it (its custom fields decoded)."""
    custom = row.get("custom")
    try:
        custom = json.loads(custom) if custom else {}
    except ValueError:
        custom = {"_raw": custom}
    return {"id": row["id"], "campaign_id": row["campaign_id"], "campaign": campaign if campaign is not None
            else row.get("campaign"), "import_id": row["import_id"], "row": row["row_no"], "phone": row["phone"],
            "phone_raw": row["phone_raw"], "name": row["name"], "business": row["business"], "state": row["state"],
            "postal_code": row["postal_code"], "zone": row["zone"], "region": row["region"],
            "zones": row["zones"].split(",") if row["zones"] else [], "number_type": row["number_type"],
            "custom": custom if isinstance(custom, dict) else {"_value": custom}, "status": row["status"],
            "disposition": row["disposition"], "attempts": row["attempts"],
            "next_attempt_at": row["next_attempt_at"], "callback_at": row["callback_at"],
            "callback_agent": row["callback_agent"], "last_attempt_at": row["last_attempt_at"],
            "created_at": row["created_at"], "updated_at": row["updated_at"]}


def list_leads(store, account, campaign=None, status=None, after=None, limit=100):
    """One page of the leads of ``account`` (name, id, or None for the only account),
    by id: of one campaign (id, or name within the account) when given, of one status
    when given (staged rows of an unfinished import are never listed). ``after``: the
    last id of the previous page. Returns {"items", "next_after"} (None on the last page)."""
    acc = resolve_account(store, account)
    limit = _page_limit(limit)
    where, params = ["l.account_id = ?", "l.status != 'staged'"], [acc["id"]]
    if campaign is not None:
        where.append("l.campaign_id = ?")
        params.append(get_campaign(store, campaign, acc["id"])["id"])
    if status is not None:
        if status not in LISTED_STATUSES:
            raise InputError(f"status must be one of {', '.join(LISTED_STATUSES)}")
        where.append("l.status = ?")
        params.append(status)
    if after is not None:
        where.append("l.id > ?")
        params.append(int(after))
    rows = store.query("SELECT l.*, c.name AS campaign FROM leads l JOIN campaigns c ON c.id = l.campaign_id "
                       f"WHERE {' AND '.join(where)} ORDER BY l.id LIMIT ?", params + [limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [public_lead(r) for r in rows], "next_after": rows[-1]["id"] if more else None}


def show_lead(store, lead_id, account):
    """One lead of ``account`` (NotFound for another account's lead) with its events."""
    acc = resolve_account(store, account)
    row = get_lead(store, lead_id, acc["id"])
    camp = store.query_one("SELECT name FROM campaigns WHERE id = ?", (row["campaign_id"],))
    out = public_lead(row, camp["name"])
    events = store.query("SELECT at, event, detail FROM lead_events WHERE lead_id = ? ORDER BY id", (lead_id,))
    for e in events:
        e["detail"] = json.loads(e["detail"])
    out["events"] = events
    return out


def list_callbacks(store, account, campaign=None, since=None, until=None, after=None, limit=100):
    """One page of the scheduled callbacks of ``account`` (leads waiting in status
    ``callback``), by callback time then lead id, over [since, until) when given.
    ``after``: (callback_at, lead id) of the previous page's last item. Returns
    {"items": [{lead, campaign_id, campaign, phone, name, callback_at, agent}],
    "next_after"}."""
    acc = resolve_account(store, account)
    limit = _page_limit(limit)
    where, params = ["l.account_id = ?", "l.status = 'callback'", "l.callback_at IS NOT NULL"], [acc["id"]]
    if campaign is not None:
        where.append("l.campaign_id = ?")
        params.append(get_campaign(store, campaign, acc["id"])["id"])
    if since is not None:
        where.append("l.callback_at >= ?")
        params.append(to_iso(utc(since)))
    if until is not None:
        where.append("l.callback_at < ?")
        params.append(to_iso(utc(until)))
    if after is not None:
        at, lid = after
        where.append("(l.callback_at > ? OR (l.callback_at = ? AND l.id > ?))")
        params += [at, at, int(lid)]
    rows = store.query("SELECT l.id, l.campaign_id, c.name AS campaign, l.phone, l.name, l.callback_at, "
                       "l.callback_agent AS agent FROM leads l JOIN campaigns c ON c.id = l.campaign_id "
                       f"WHERE {' AND '.join(where)} ORDER BY l.callback_at, l.id LIMIT ?", params + [limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    items = [{"lead": r["id"], "campaign_id": r["campaign_id"], "campaign": r["campaign"], "phone": r["phone"],
              "name": r["name"], "callback_at": r["callback_at"], "agent": r["agent"]} for r in rows]
    return {"items": items, "next_after": (rows[-1]["callback_at"], rows[-1]["id"]) if more else None}
