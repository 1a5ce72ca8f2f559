"""The monthly records export of one account (``dialer records export``): one ZIP
archive with its call records, each call's compliance evidence, its recordings and
a checksum manifest, for the customer's backup at the end of the month.

Layout (every file under one folder, ``records-<account>-<YYYY-MM>/``):

- ``README.txt``: what each file is, the columns, the time conventions;
- ``cdrs.csv``: one row per call that started in the month (a half-open month in the
  account's billing time zone, ``billing.plans.month_bounds``, as the bill run's),
  oldest first: Asterisk's CDR columns (``ASTERISK_COLUMNS``, mapped as in
  ``dialer.cdr.export_csv``; times UTC to the second), then ours (``OUR_COLUMNS``:
  exact UTC instants, the same in the account's time zone, the costs the ledger
  charged, the rule-set version, the recording's file in the archive...);
- ``evidence.jsonl``: one JSON object per call, in the same order
  (``dialer.evidence.evidence_of``: what the dialer recorded when it placed the call);
- ``recordings/<call id>.wav``: the recordings the CDRs reference, when the file is
  there; ``recordings-missing.csv`` lists the ones that are not (call id, path,
  reason): a missing recording is reported, never fatal;
- ``MANIFEST.sha256``: the SHA-256 of every other file, in ``sha256sum`` format
  (``sha256sum -c MANIFEST.sha256`` in the folder checks them).

Every query is bound to the account's id (its CDRs, its campaigns' and users' names,
its ledger): nothing of another account is read. The passes over the month run in
one read transaction (the same calls in each file, whatever the dialer writes
meanwhile) and stream: rows are written as they are read, in batches, and a
recording is copied by chunks, so memory does not grow with the month. The archive
is written beside its destination under a temporary name and renamed when complete;
an existing file is never overwritten.
"""

import csv
import datetime as _dt
import hashlib
import io
import json
import os
import pathlib
import re
import uuid
import zipfile

import pytz

from core.errors import InputError
from core.tenancy import resolve_account
from core.timeutil import to_iso

from .cdr import ASTERISK_COLUMNS, ASTERISK_DISPOSITION
from .evidence import EVIDENCE_VERSION, evidence_of, instant

OUR_COLUMNS = ("call_id", "account", "campaign", "campaign_id", "lead_id", "agent_id", "agent", "call_disposition",
               "abandoned", "opted_out", "agent_disposition", "lead_outcome", "hangup_cause", "hangup_by", "sip_code",
               "sip_reason", "started_at", "answered_at", "bridged_at", "ended_at", "started_local", "answered_local",
               "ended_local", "duration_ms", "ring_ms", "billable_ms", "connect_delay_ms", "trunk", "caller_id",
               "destination", "ruleset", "evidence_version", "recording_file", "recording_ms", "recording_status",
               "rated_prefix", "service_cost", "telecom_cost", "cost")
COLUMNS = ASTERISK_COLUMNS + OUR_COLUMNS
BATCH = 1000
CHUNK = 1 << 20
_E164 = re.compile(r"^\+[0-9]{1,15}$")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")

_CALLS = (
    "SELECT c.*, p.name AS campaign, u.name AS agent, l.service_micros, l.telecom_micros, l.amount_micros, "
    "l.prefix AS rated_prefix FROM cdrs c "
    "LEFT JOIN campaigns p ON p.id = c.campaign_id AND p.account_id = c.account_id "
    "LEFT JOIN users u ON u.id = c.agent_id AND u.account_id = c.account_id "
    # "+l.account_id": found by its call id (the UNIQUE (call_id, seq) index), not by a walk of the
    # account's entries, which SQLite's planner picks otherwise (quadratic: 83 s for 20 000 calls)
    "LEFT JOIN ledger_entries l ON l.call_id = c.call_id AND +l.account_id = c.account_id AND l.kind = 'charge' "
    "AND NOT EXISTS (SELECT 1 FROM ledger_entries n WHERE n.call_id = l.call_id AND n.seq > l.seq) "
    "WHERE c.account_id = ? AND c.started_at >= ? AND c.started_at < ? ORDER BY c.started_at, c.call_id")
_RECORDINGS = ("SELECT call_id, recording_path FROM cdrs WHERE account_id = ? AND started_at >= ? AND started_at < ? "
               "AND recording_path IS NOT NULL ORDER BY started_at, call_id")


def _rows(store, sql, params):
    """A query's rows as dicts, fetched in batches."""
    cur = store.execute(sql, params)
    cols = [c[0] for c in cur.description]
    while True:
        batch = cur.fetchmany(BATCH)
        if not batch:
            return
        for r in batch:
            yield dict(zip(cols, r))


def recording_file(store, path):
    """Where a CDR's recording path points: absolute as stored; a relative one under
    the database's files directory (``Store.files_dir``)."""
    p = pathlib.Path(path)
    return p if p.is_absolute() else store.files_dir / p


def _archive_name(call_id, path):
    suffix = pathlib.PurePath(path).suffix.lower()
    return f"recordings/{_SAFE.sub('_', call_id)}{suffix if re.fullmatch(r'[.][a-z0-9]{1,5}', suffix) else '.wav'}"


class _Member:
    """A file of the archive being written, its SHA-256 kept as it goes."""

    def __init__(self, zf, when, name, stored=False):
        when = when or _dt.datetime.now(_dt.timezone.utc)
        info = zipfile.ZipInfo(name, date_time=when.timetuple()[:6])
        info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        self.name = name
        self.raw = zf.open(info, "w", force_zip64=True)
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sha.update(data)
        self.size += len(data)
        self.raw.write(data)

    def close(self):
        self.raw.close()


class _Csv:
    """CSV rows into a member, written in batches (the text buffer never holds more)."""

    def __init__(self, member):
        self.member = member
        self.buf = io.StringIO()
        self.w = csv.writer(self.buf, lineterminator="\r\n")
        self.n = 0

    def row(self, cells):
        self.w.writerow(cells)
        self.n += 1
        if self.n % BATCH == 0:
            self.flush()

    def flush(self):
        self.member.write(self.buf.getvalue())
        self.buf.seek(0)
        self.buf.truncate()


def _num(v):
    from campaigns.files import neutralise
    return v if v and _E164.match(v) else neutralise(v)


def _stamp(iso):
    """Asterisk's 'YYYY-MM-DD HH:MM:SS' (UTC here) from our stored ISO text."""
    return "" if not iso else iso[:10] + " " + iso[11:19]


def _money(m):
    from billing.money import from_micros
    return "" if m is None else str(from_micros(m))


def _cdr_row(r, account, tz, rec_name, rec_status, evidence_version):
    from campaigns.files import neutralise

    def local(iso):
        if not iso:
            return ""
        t = instant(iso).astimezone(tz)
        return f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond // 1000:03d}{t:%z}"

    def opt(v):
        return "" if v is None else v

    return [
        neutralise(account), _num(r["caller_id"]), _num(r["destination"]), neutralise(r["campaign"] or ""),
        _num(r["caller_id"]), neutralise(f"SIP/{r['trunk']}" if r["trunk"] else ""),
        f"agent/{r['agent_id']}" if r["agent_id"] is not None else "", "Dial", _num(r["destination"]),
        _stamp(r["started_at"]), _stamp(r["answered_at"]), _stamp(r["ended_at"]),
        -(-r["duration_ms"] // 1000), r["billsec"], ASTERISK_DISPOSITION.get(r["disposition"], "FAILED"),
        "DOCUMENTATION", neutralise(r["call_id"]), r["disposition"],
        # ours
        neutralise(r["call_id"]), neutralise(account), neutralise(r["campaign"] or ""), opt(r["campaign_id"]),
        opt(r["lead_id"]), opt(r["agent_id"]), neutralise(r["agent"] or ""), r["disposition"],
        int(bool(r["abandoned"])), int(bool(r["opted_out"])), neutralise(r["agent_disposition"] or ""),
        neutralise(r["lead_outcome"] or ""), neutralise(r["hangup_cause"]), neutralise(r["hangup_by"]), r["sip_code"],
        neutralise(r["sip_reason"]), r["started_at"], opt(r["answered_at"]), opt(r["bridged_at"]), r["ended_at"],
        local(r["started_at"]), local(r["answered_at"]), local(r["ended_at"]), r["duration_ms"], r["ring_ms"],
        r["billable_ms"], opt(r["connect_delay_ms"]), neutralise(r["trunk"] or ""), _num(r["caller_id"]),
        _num(r["destination"]), neutralise(r["ruleset"] or ""), opt(evidence_version), rec_name,
        opt(r["recording_ms"]), rec_status, opt(r["rated_prefix"]), _money(r["service_micros"]),
        _money(r["telecom_micros"]), _money(-r["amount_micros"] if r["amount_micros"] is not None else None),
    ]


README = """Call records of account {account}, {month} ({tz}: {lo} .. {hi}, half-open)
Exported {now} by dialer {version}. {calls} call(s).

Files (in this folder):

  cdrs.csv             one row per call that started in the month, oldest first.
                       First Asterisk's CDR columns ({asterisk}):
                       accountcode = the account, src and clid = the caller ID,
                       dst and lastdata = the number called (E.164), dcontext = the
                       campaign, channel = SIP/<trunk>, dstchannel = agent/<user id>
                       when an agent took the call, lastapp = Dial, start/answer/end
                       = UTC 'YYYY-MM-DD HH:MM:SS', duration and billsec = whole
                       seconds (rounded up), disposition = ANSWERED / NO ANSWER /
                       BUSY / CONGESTION / FAILED, amaflags = DOCUMENTATION,
                       uniqueid = the call id, userfield = our disposition.
                       Then ours: {ours}.
                       *_at: UTC instants (ISO 8601, milliseconds); *_local: the
                       same instants in the account's time zone ({tz}) with the
                       offset. service_cost, telecom_cost, cost: what the ledger
                       charges for the call now (empty: not rated yet, or free).
                       recording_status: included / missing / none.
                       Cells that a spreadsheet would read as a formula start with '.
  evidence.jsonl       one JSON object per call, same order: what the dialer
                       recorded when it placed the call (evidence version
                       {ev_version}): the rule-set version that allowed it and when
                       it was checked, the national DNC registry's as-of date and
                       the company/campaign DNC list versions, the callee's zones,
                       local time and calling windows, the campaign's abandon window
                       (live answers, abandons, rate, cap) at the dial. A call placed
                       before evidence was recorded says "not recorded (before
                       evidence v{ev_version})" for what it lacks.
  recordings/          the recordings of these calls (WAV), named by call id.
  recordings-missing.csv  recordings a CDR references whose file was not found.
  MANIFEST.sha256      SHA-256 of every other file; check with:
                       sha256sum -c MANIFEST.sha256
"""


def export_month(store, account, month, out=None, now=None):
    """Write the records archive of ``account`` for ``month`` (YYYY-MM in its billing
    time zone) to ``out`` (default ``records-<account>-<month>.zip`` in the current
    directory; never overwritten). Returns counts, the archive's path and SHA-256."""
    from billing.plans import month_bounds, plan_row
    acc = resolve_account(store, account)
    tz_name = plan_row(store, acc["id"])["time_zone"]
    month = str(month).strip()
    start, end = month_bounds(month, tz_name)
    lo, hi = to_iso(start), to_iso(end)
    folder = f"records-{_SAFE.sub('_', acc['name'])}-{month}"
    path = pathlib.Path(out) if out else pathlib.Path(f"{folder}.zip")
    if path.exists():
        raise InputError(f"{path} exists: give another --out (an export never overwrites a file)")
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: the folder {path.parent} does not exist")
    tz = pytz.timezone(tz_name)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    manifest = []
    counts = {"calls": 0, "recordings": 0, "recordings_missing": 0}
    when = now.astimezone(_dt.timezone.utc) if now is not None else None
    try:
        with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf, store.read_view():
            def finish(m):
                m.close()
                manifest.append((m.sha.hexdigest(), m.name[len(folder) + 1:]))

            n_calls = store.execute("SELECT COUNT(*) FROM cdrs WHERE account_id = ? AND started_at >= ? "
                                    "AND started_at < ?", (acc["id"], lo, hi)).fetchone()[0]
            m = _Member(zf, when, f"{folder}/README.txt")
            m.write(README.format(account=acc["name"], month=month, tz=tz_name, lo=lo, hi=hi,
                                  now=to_iso(now) if now else "-", version=_version(), calls=n_calls,
                                  asterisk=", ".join(ASTERISK_COLUMNS), ours=", ".join(OUR_COLUMNS),
                                  ev_version=EVIDENCE_VERSION).replace("\n", "\r\n"))
            finish(m)

            # cdrs.csv: a recording's status is whether its file is there now
            m = _Member(zf, when, f"{folder}/cdrs.csv")
            w = _Csv(m)
            w.row(COLUMNS)
            for r in _rows(store, _CALLS, (acc["id"], lo, hi)):
                counts["calls"] += 1
                ev = _evidence_version(r["verdict"])
                if r["recording_path"]:
                    name = _archive_name(r["call_id"], r["recording_path"])
                    there = recording_file(store, r["recording_path"]).is_file()
                    rec = (name if there else "", "included" if there else "missing")
                else:
                    rec = ("", "none")
                w.row(_cdr_row(r, acc["name"], tz, rec[0], rec[1], ev))
            w.flush()
            finish(m)

            # evidence.jsonl: the same calls, in the same order
            m = _Member(zf, when, f"{folder}/evidence.jsonl")
            buf = []
            for r in _rows(store, _CALLS, (acc["id"], lo, hi)):
                buf.append(json.dumps(evidence_of(r, acc["name"], r["campaign"], tz_name), ensure_ascii=False,
                                      sort_keys=True, default=str))
                if len(buf) >= BATCH:
                    m.write("\n".join(buf) + "\n")
                    buf = []
            if buf:
                m.write("\n".join(buf) + "\n")
            finish(m)

            # the recordings, by chunks; the missing ones listed
            missing = []
            for r in _rows(store, _RECORDINGS, (acc["id"], lo, hi)):
                src = recording_file(store, r["recording_path"])
                try:
                    f = open(src, "rb")
                except OSError as e:
                    missing.append((r["call_id"], r["recording_path"], e.strerror or str(e)))
                    continue
                with f:
                    m = _Member(zf, when, f"{folder}/{_archive_name(r['call_id'], r['recording_path'])}", stored=True)
                    while True:
                        chunk = f.read(CHUNK)
                        if not chunk:
                            break
                        m.write(chunk)
                    finish(m)
                counts["recordings"] += 1
            m = _Member(zf, when, f"{folder}/recordings-missing.csv")
            w = _Csv(m)
            w.row(("call_id", "recording_path", "reason"))
            from campaigns.files import neutralise
            for call_id, p, why in missing:
                w.row((neutralise(call_id), neutralise(p), neutralise(why)))
            w.flush()
            finish(m)
            counts["recordings_missing"] = len(missing)

            m = _Member(zf, when, f"{folder}/MANIFEST.sha256")
            m.write("".join(f"{h}  {name}\n" for h, name in manifest))
            m.close()
        sha = hashlib.sha256()
        with open(tmp, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                sha.update(chunk)
        size = tmp.stat().st_size
        if path.exists():
            raise InputError(f"{path} appeared while the export was written: give another --out")
        os.replace(tmp, path)
    except OSError as e:  # the archive's folder: not writable, full (a recording that cannot be read is listed)
        raise InputError(f"cannot write {path}: {e.strerror or e}; nothing was written") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return {"account": acc["name"], "month": month, "time_zone": tz_name, "from": lo, "to": hi,
            "archive": str(path), "folder": folder, **counts, "files": len(manifest) + 1, "bytes": size,
            "sha256": sha.hexdigest(), "manifest": [{"file": name, "sha256": h} for h, name in manifest]}


def _evidence_version(verdict):
    if not verdict:
        return None
    try:
        v = json.loads(verdict)
    except ValueError:
        return None
    e = v.get("evidence") if isinstance(v, dict) else None
    return e if isinstance(e, int) else None


def _version():
    try:
        from importlib.metadata import version
        return version("dialer")
    except Exception:  # not installed as a package
        return "(source)"
