"""Read the lead-list files campaign managers upload: CSV and XLSX.

``open_table(path)`` looks at the file's *content* (not its extension) and returns a
:class:`Table`: a cleaned header plus a lazy iterator of ``(row_number, cells)``.
Every problem a user can cause (empty file, header only, a PDF renamed to .csv, a
damaged workbook, an unknown sheet, an unclosed quote ...) is a :class:`FileError`
whose message names the file and says what is wrong. Because rows are read lazily,
a FileError can also come out of iterating ``table.rows`` (e.g. an unclosed quote
at row 800 000, or a workbook whose XML breaks half-way).

CSV
    * Encoding: a BOM decides (UTF-8, UTF-16 LE/BE, UTF-32 LE/BE). Without a BOM,
      UTF-16 is recognised by its NUL-byte pattern; otherwise the first 1 MB is
      checked as UTF-8; if it is not UTF-8 the file is read as cp1252 (Windows
      Western, the superset of Latin-1 that Excel writes; the five bytes cp1252
      leaves undefined are read as Latin-1). A UTF-8 file that turns out to contain
      stray non-UTF-8 bytes after the sample (a mixed-encoding export) does not fail:
      those bytes are read as cp1252. Other legacy code pages (Cyrillic, Shift-JIS,
      ...) are not guessed; they read as cp1252 mojibake.
    * Decoding streams through ``io.TextIOWrapper``: memory stays constant however
      large the file is, and ``progress()`` is bytes read / file size.
    * Delimiter: one of ``, ; TAB |``, chosen by parsing the first 64 KB with each
      candidate (so quoted delimiters do not count) and keeping the one that splits
      the most records into the same number (> 1) of fields. An Excel ``sep=X``
      first line is honoured. A file no candidate splits is one column (",").
    * Parsing is the csv module's (quotes, doubled quotes, embedded delimiters and
      newlines); spaces right after a delimiter are skipped so ``a, "b, c"`` works.

XLSX
    openpyxl in read-only mode with ``data_only=False``: a formula cell yields its
    formula text (``=HYPERLINK("http://x","y")``) and nothing is ever evaluated.
    Numbers come back as Excel would show them in General format, never with a
    ``.0`` or an exponent (2125550100.0 -> "2125550100"); a whole number formatted
    with a zero-padding format such as ``00000000000`` keeps its leading zeros.
    Dates -> ISO strings ("2024-03-05", or "2024-03-05T14:30:00" when there is a
    time), booleans -> "TRUE"/"FALSE". The first worksheet is read unless ``sheet``
    is given. Trailing empty header cells are dropped (openpyxl pads rows to the
    sheet's declared width, so they are an artefact, not columns).

    Limits, checked before openpyxl reads anything, each refused with one line (a
    workbook is a ZIP archive, and a small upload can inflate to gigabytes or make
    openpyxl pad millions of empty cells):
    * the members' declared uncompressed sizes: ``XLSX_MAX_BYTES`` in all,
      ``XLSX_MAX_PART`` for any part openpyxl reads whole (everything but the
      worksheets and the shared strings), ``XLSX_MAX_SHARED`` for the shared strings,
      and at most ``XLSX_MAX_RATIO`` times the member's compressed size (legitimate
      sheets compress 10-20 times; a deflate bomb about 1000 times). The actual size
      cannot exceed the declared one: zipfile stops there and fails the CRC check.
    * the shared strings and the chosen sheet are scanned (expat, streaming, early
      exit) before openpyxl parses them: a cell longer than ``CELL_MAX_CHARS``
      (32 767, Excel's own limit), a row or column beyond Excel's 1 048 576 rows
      and 16 384 columns (XFD), a cell or row made of too many XML elements, or more
      than ``XLSX_MAX_CELLS`` cells (rows x the last column holding a value, and cell
      elements, empty formatted ones included) is refused. Only columns up to the
      last one holding a value are read: empty formatted cells far to the right
      (column XFD) cost nothing.

Rows
    * Row numbers are 1-based *records* of the file, the header's included (it is
      row 1 in the usual case): the number Excel shows next to the row. Blank records
      (empty lines, lines of only delimiters/whitespace) are not yielded but are
      counted, and a quoted cell spanning several lines is one record, so numbers
      equal physical line numbers unless a quoted cell contains a newline. For XLSX
      the number is the sheet's row number.
    * Blank lines before the header are skipped; the header is the first non-blank
      record.
    * Cells are strings exactly as in the file (not stripped). Rows shorter than the
      header are padded with ""; longer rows keep their extra cells (the importer
      reports them) unless the extra cells are all empty, in which case they are
      dropped (``a,b,`` under a two-column header is not an error).
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import os
import re
import stat
import warnings
import zipfile
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable, Iterator

from core.errors import InputError

__all__ = ["FileError", "Table", "open_table", "neutralise"]

SAMPLE_BYTES = 1 << 20  # encoding and binary checks look at this much of the file
SNIFF_CHARS = 64 * 1024  # delimiter detection looks at this much text
SNIFF_RECORDS = 500
DELIMITERS = (",", ";", "\t", "|")  # in order of preference on a tie
BUFFER_BYTES = 256 * 1024
MAX_COLUMNS = 16_384  # Excel's columns (A..XFD)
MAX_ROWS = 1_048_576  # Excel's rows
CELL_MAX_CHARS = 32_767  # Excel's longest cell
XLSX_MAX_BYTES = 512 << 20  # all members of a workbook, uncompressed
XLSX_MAX_PART = 64 << 20  # a part openpyxl reads whole (styles, workbook, theme, ...)
XLSX_MAX_SHARED = 256 << 20  # the shared strings (held in memory as one list)
XLSX_MAX_RATIO = 100  # uncompressed / compressed, for members over 1 MiB
XLSX_MAX_CELLS = 20_000_000  # rows x last used column, and cell elements
XML_MAX_ELEMENTS = 100_000  # elements in one cell, one shared string or one row

# Characters that make a cell blank (Ctrl-Z ends some old DOS files; NBSP and
# zero-width space come from copy-paste).
_BLANK = " \t\r\n\x0b\x0c\x1a\xa0\ufeff\u200b"


class FileError(InputError):
    """An uploaded lead-list file cannot be read; the message names the file and the problem.

    The message is always one line: control characters that come from the file
    (a sheet or member name with a newline, say) are shown escaped."""

    def __init__(self, message, code=None):
        super().__init__(one_line(message), code)


_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # C0, DEL, C1 (NEL), line/paragraph separators


def one_line(text) -> str:
    """``text`` on one line: control characters (newlines included) escaped."""
    return _CONTROLS.sub(lambda m: repr(m.group())[1:-1], str(text))


@dataclass
class Table:
    """A header and a lazy stream of ``(row_number, cells)``; see the module docstring.

    ``header`` names are unique (a repeated name gets ``_2``, ``_3``...);
    ``source_header`` has the names as the file wrote them (stripped), so a caller
    can tell two columns the file calls ``phone`` from one it calls ``phone_2``."""

    header: list[str]
    rows: Iterator[tuple[int, list[str]]]
    encoding: str | None
    delimiter: str | None
    kind: str
    size_bytes: int
    source_header: list[str] = field(default_factory=list)  # the names before duplicates got a _2
    _progress: Callable[[], float] = field(default=lambda: 0.0, repr=False, compare=False)
    _close: Callable[[], None] = field(default=lambda: None, repr=False, compare=False)

    def progress(self) -> float:
        """Fraction (0..1) of the file consumed so far; 1.0 once ``rows`` is exhausted."""
        return min(1.0, max(0.0, self._progress()))

    def close(self) -> None:
        """Release the file early (it is released by itself when ``rows`` is exhausted)."""
        self._close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------- public


def open_table(path, sheet: str | None = None, name: str | None = None) -> Table:
    """Open a CSV or XLSX lead list (type detected from the content).

    ``path`` is a file name, or an open binary file (seekable, with a file
    descriptor: e.g. the import's snapshot, a :func:`tempfile.TemporaryFile`), which
    is read through duplicated descriptors and left open. ``name`` is what messages
    call the file (default: the base name of ``path``). ``sheet`` picks an XLSX
    worksheet by name (the first worksheet otherwise); it is ignored for CSV. Raises
    :class:`FileError` for anything wrong with the file.
    """
    if hasattr(path, "fileno"):
        source = path
        name = name or os.path.basename(str(getattr(source, "name", "") or "")) or "the file"

        def opener():
            raw = open(os.dup(source.fileno()), "rb", buffering=0)
            raw.seek(0)
            return raw
    else:
        path = os.fspath(path)
        name = name or os.path.basename(path.rstrip("/\\")) or path

        def opener():
            return open(path, "rb", buffering=0)
    try:
        st = os.fstat(path.fileno()) if hasattr(path, "fileno") else os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise FileError(f"{name} is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise FileError(f"{name} is not a regular file")
        with opener() as f:
            head = _read_full(f, SAMPLE_BYTES)
            whole = len(head) < SAMPLE_BYTES or not f.read(1)
    except FileNotFoundError:
        raise FileError(f"{name} does not exist") from None
    except PermissionError:
        raise FileError(f"{name} cannot be read: permission denied") from None
    except OSError as e:
        raise FileError(f"{name} cannot be read: {e.strerror or e}") from None
    size = st.st_size
    if not head:
        raise FileError(f"{name} is empty")
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return _open_xlsx(opener, name, size, sheet)
    return _open_csv(opener, name, size, head, whole)


def _read_full(f, n):
    """Up to ``n`` bytes (a raw file may return fewer per read)."""
    parts, got = [], 0
    while got < n:
        b = f.read(n - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


_TRIGGERS = frozenset("=+-@\uff1d\uff0b\uff0d\uff20")  # incl. full-width = + - @
# Characters a spreadsheet may skip before it looks for a formula, and control
# characters that must not start an exported cell (OWASP: tab, CR; also LF and NUL).
_LEADING = " \t\r\n\x00\x0b\x0c\xa0\u3000\ufeff\u200b"
_CONTROL_START = frozenset("\t\r\n\x00\x0b\x0c")


def neutralise(cell: str) -> str:
    """Make a cell safe for an exported CSV report (CSV/formula injection).

    Following OWASP's CSV injection guidance (and ASVS 1.2.10), a cell gets a single
    quote in front, so spreadsheets show it as text instead of evaluating it, when it
    starts with ``= + - @`` (or their full-width forms, which some spreadsheet locales
    also treat as formulas), when it starts with a tab, CR, LF or NUL, or when such a
    trigger comes after leading blanks (spaces, tabs, CR/LF, no-break spaces: some
    spreadsheets trim them and then see the formula). Quoting the cell's delimiters
    and quotes (RFC 4180) is the CSV writer's job. Anything else is returned
    unchanged. ``None`` becomes "".
    """
    if cell is None:
        return ""
    if not isinstance(cell, str):
        cell = str(cell)
    if cell and (cell[0] in _TRIGGERS or cell[0] in _CONTROL_START or cell.lstrip(_LEADING)[:1] in _TRIGGERS):
        return "'" + cell
    return cell


# ----------------------------------------------------------------------------- common


def _source_names(cells: list[str]) -> list[str]:
    return [(c.replace("\ufeff", "").strip() or f"column_{i}") for i, c in enumerate(cells, 1)]


def _clean_header(cells: list[str]) -> list[str]:
    names = _source_names(cells)
    taken = set(names)
    seen: set[str] = set()
    out = []
    for nm in names:
        if nm in seen:
            k = 2
            while f"{nm}_{k}" in taken:
                k += 1
            nm = f"{nm}_{k}"
            taken.add(nm)
        seen.add(nm)
        out.append(nm)
    return out


class _State:
    __slots__ = ("done", "rows")

    def __init__(self):
        self.done = False
        self.rows = 0


def _shaped(first, records, width, state):
    """Yield ``first`` then ``records``, padded to the header ``width``."""
    pad = [""] * width
    n, row = first
    while True:
        k = len(row)
        if k < width:
            row += pad[k:]
        elif k > width and not "".join(row[width:]).strip(_BLANK):
            del row[width:]
        yield n, row
        try:
            n, row = next(records)
        except StopIteration:
            break
    state.done = True


def _make_table(name, records, close, state, progress, kind, size, encoding=None, delimiter=None,
                empty_msg=None):
    """Read the header and peek the first data row, then hand out the rest lazily."""
    try:
        try:
            _, header = next(records)
        except StopIteration:
            raise FileError(empty_msg or f"{name} is empty") from None
        try:
            first = next(records)
        except StopIteration:
            raise FileError(f"{name} has a header but no data rows") from None
    except BaseException:
        close()
        raise
    if len(header) > MAX_COLUMNS:
        close()
        raise FileError(f"{name}: the header has {len(header)} columns; a list has at most {MAX_COLUMNS} "
                        "(Excel's limit)")
    source = _source_names(header)
    header = _clean_header(header)
    return Table(header=header, rows=_shaped(first, records, len(header), state), encoding=encoding,
                 delimiter=delimiter, kind=kind, size_bytes=size, source_header=source, _progress=progress,
                 _close=close)


# ----------------------------------------------------------------------------- CSV

_MAGIC = (
    (b"%PDF-", "a PDF document"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x7fELF", "a program (ELF executable)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
)
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"

# Control characters that never occur in text (TAB LF VT FF CR and Ctrl-Z allowed),
# plus U+FFFD from undecodable UTF-16/32.
_JUNK = re.compile("[\x00-\x08\x0e-\x19\x1b-\x1f\x7f\ufffd]")

# Well-formed UTF-8 multi-byte sequences.
_UTF8_SEQ = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}"
    rb"|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}"
    rb"|\xf4[\x80-\x8f][\x80-\xbf]{2}"
)
_ASCII = bytes(range(128))

# cp1252, with Latin-1 for the five bytes cp1252 leaves undefined.
_CP1252 = [bytes([b]).decode("cp1252", "ignore") or chr(b) for b in range(256)]


def _cp1252_fallback(exc):
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return "".join(_CP1252[b] for b in exc.object[exc.start:exc.end]), exc.end


codecs.register_error("dialer.cp1252", _cp1252_fallback)


def _detect_encoding(head: bytes, whole: bool):
    """-> (name reported, codec, error handler)."""
    for bom, codec in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                       (codecs.BOM_UTF8, "utf-8-sig"),
                       (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if head.startswith(bom):
            return codec, codec, ("dialer.cp1252" if codec == "utf-8-sig" else "replace")
    # UTF-16 without a BOM: mostly-ASCII text has a NUL in every other byte.
    n = min(len(head), 1 << 16) // 2 * 2
    if n >= 4:
        pairs = n // 2
        even, odd = head[0:n:2].count(0), head[1:n:2].count(0)
        if odd >= 0.3 * pairs and even <= 0.02 * pairs:
            return "utf-16-le", "utf-16-le", "replace"
        if even >= 0.3 * pairs and odd <= 0.02 * pairs:
            return "utf-16-be", "utf-16-be", "replace"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=whole)
        return "utf-8", "utf-8", "dialer.cp1252"
    except UnicodeDecodeError:
        pass
    # Not clean UTF-8: mostly UTF-8 with a few stray bytes, or a legacy 8-bit file?
    seqs = _UTF8_SEQ.findall(head)
    high = len(head.translate(None, _ASCII))
    stray = high - sum(map(len, seqs))
    if len(seqs) > stray:
        return "utf-8", "utf-8", "dialer.cp1252"
    return "cp1252", "cp1252", "dialer.cp1252"


def _check_text(name, head: bytes, text: str):
    for magic, what in _MAGIC:
        if head.startswith(magic):
            raise FileError(f"{name} looks like a binary file, not CSV or XLSX (it is {what})")
    if head.startswith(_OLE2):
        raise FileError(f"{name} looks like a binary file, not CSV or XLSX: it is an old Excel 97-2003 (.xls) "
                        "workbook or a password-protected one; open it in Excel and save it as .xlsx "
                        "(without a password) or as CSV")
    if text and len(_JUNK.findall(text)) > 0.01 * len(text):
        raise FileError(f"{name} looks like a binary file, not CSV or XLSX")
    start = text.lstrip(_BLANK)[:64].lower()
    if start.startswith(("<!doctype html", "<html", "<?xml", "<table", "<head", "<body")):
        raise FileError(f"{name} is a web page or XML file, not CSV or XLSX (some systems export those with "
                        "an .xls name); open it in Excel and save it as .xlsx or CSV")
    if start.startswith("{\\rtf"):
        raise FileError(f"{name} is a rich-text (RTF) document, not CSV or XLSX; save it as CSV")


_SEP_LINE = re.compile(r"\ufeff?sep=(.)(\r\n|\n|\r|$)", re.IGNORECASE)


def _is_blank(row) -> bool:
    for c in row:
        if c and c.strip(_BLANK):
            return False
    return True


def _sniff(text: str, truncated: bool) -> str:
    """The delimiter that splits the sample's records most consistently (see module doc)."""
    text = text[:SNIFF_CHARS] if len(text) > SNIFF_CHARS else text
    if truncated or len(text) == SNIFF_CHARS:
        cut = max(text.rfind("\n"), text.rfind("\r"))
        if cut > 0:
            text = text[:cut + 1]
    best, best_score = ",", None
    for pref, d in enumerate(DELIMITERS):
        counts = []
        try:
            for row in csv.reader(io.StringIO(text, newline=""), delimiter=d, skipinitialspace=True):
                if not _is_blank(row):
                    counts.append(len(row))
                    if len(counts) >= SNIFF_RECORDS:
                        break
        except csv.Error:
            continue
        if not counts:
            continue
        mode = max(set(counts), key=lambda c: (counts.count(c), c))
        if mode < 2:
            continue
        consistency = counts.count(mode) / len(counts)
        score = (round(consistency, 3), counts[0] == mode, mode, -pref)
        if best_score is None or score > best_score:
            best, best_score = d, score
    return best


def _csv_message(name, n, err):
    msg = str(err)
    if "field larger than field limit" in msg:
        return (f"{name}: row {n} has a cell longer than {csv.field_size_limit()} characters; "
                "a quote (\") is probably opened there and never closed")
    return f"{name}: row {n} cannot be read as CSV ({msg})"


def _csv_records(reader, name, close, start=0):
    """Non-blank records as (record number, cells); closes the file when done."""
    n = start
    try:
        for row in reader:
            n += 1
            if row:
                for c in row:
                    if c and c.strip(_BLANK):
                        yield n, row
                        break
    except csv.Error as e:
        raise FileError(_csv_message(name, n + 1, e)) from None
    except UnicodeDecodeError as e:  # only strict codecs raise; ours replace, but be safe
        raise FileError(f"{name}: row {n + 1} is not valid {e.encoding} text") from None
    except OSError as e:
        raise FileError(f"{name} could not be read to the end: {e.strerror or e}") from None
    finally:
        close()


def _open_csv(opener, name, size, head, whole) -> Table:
    # Magic numbers first: a PDF's first kilobyte can be plain ASCII.
    _check_text(name, head, "")
    encoding, codec, errors = _detect_encoding(head, whole)
    text = codecs.getincrementaldecoder(codec)(errors).decode(head, final=whole)
    _check_text(name, head, text)
    if whole and not text.strip(_BLANK):
        raise FileError(f"{name} is empty")

    m = _SEP_LINE.match(text)
    if m and m.group(1) in '"\'':
        m = None
    delimiter = m.group(1) if m else _sniff(text, truncated=not whole)

    try:
        raw = opener()
    except OSError as e:
        raise FileError(f"{name} cannot be read: {e.strerror or e}") from None
    buffered = io.BufferedReader(raw, buffer_size=BUFFER_BYTES)
    stream = io.TextIOWrapper(buffered, encoding=codec, errors=errors, newline="")
    reader = csv.reader(stream, delimiter=delimiter, quotechar='"', doublequote=True, skipinitialspace=True)
    state = _State()
    last = [0]

    def progress():
        if state.done:
            return 1.0
        if not raw.closed:
            try:
                last[0] = raw.tell()
            except (OSError, ValueError):
                pass
        return last[0] / size if size else 0.0

    records = None

    def close():
        if not raw.closed:
            try:
                last[0] = raw.tell()
            except (OSError, ValueError):
                pass
        if records is not None:
            records.close()
        stream.close()

    start = 0
    if m:
        try:
            next(reader)  # the "sep=;" line is record 1
        except (csv.Error, StopIteration):
            pass
        start = 1
    records = _csv_records(reader, name, lambda: stream.close(), start)
    return _make_table(name, records, close, state, progress, "csv", size, encoding=encoding,
                       delimiter=delimiter)


# ----------------------------------------------------------------------------- XLSX


def _zip_problem(name, names: set[str]) -> str | None:
    """A message when the ZIP is not an XLSX workbook, else None."""
    lower = {n.lower() for n in names}
    if "xl/workbook.bin" in lower:
        return (f"{name} is an Excel binary workbook (.xlsb), which cannot be read; "
                "open it in Excel and save it as .xlsx or CSV")
    if "mimetype" in lower and "content.xml" in lower:
        return (f"{name} is an OpenDocument file (LibreOffice/OpenOffice), not XLSX; "
                "save it as .xlsx or CSV")
    if "word/document.xml" in lower:
        return f"{name} is a Word document, not CSV or XLSX"
    if "ppt/presentation.xml" in lower:
        return f"{name} is a PowerPoint presentation, not CSV or XLSX"
    if "[content_types].xml" not in lower or not any(n.startswith("xl/") for n in lower):
        inside = sorted(n for n in names if not n.endswith("/"))
        shown = ", ".join(inside[:3]) + (", ..." if len(inside) > 3 else "")
        return (f"{name} is a ZIP archive, not an XLSX workbook"
                + (f" (it contains {shown})" if inside else " (and it is empty)")
                + "; unzip it and upload the CSV or XLSX file inside")
    return None


def _number_text(v, cell) -> str:
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return str(v)
        if v.is_integer() and abs(v) < 1e15:
            s = str(int(v))
        else:
            s = format(v, ".15g")  # Excel shows 15 significant digits
            if "e" in s:
                s = format(Decimal(s), "f")
            return s
    else:
        s = str(v)
    # A whole number formatted "0000000000" keeps its leading zeros (phone numbers).
    if s.isdigit():
        try:
            fmt = cell.number_format
        except Exception:
            fmt = None
        if fmt and len(fmt) > len(s) and fmt.strip("0") == "":
            s = s.zfill(len(fmt))
    return s


def _cell_text(cell) -> str:
    v = cell.value
    if v is None:
        return ""
    t = type(v)
    if t is str:
        return v
    if t is bool:
        return "TRUE" if v else "FALSE"
    if t is int or t is float:
        return _number_text(v, cell)
    if t is dt.datetime:
        if v.tzinfo is None and v.hour == v.minute == v.second == v.microsecond == 0:
            return v.date().isoformat()
        return v.isoformat()
    if t is dt.date or t is dt.time:
        return v.isoformat()
    if t is dt.timedelta:
        return str(v)
    text = getattr(v, "text", None)  # ArrayFormula
    if isinstance(text, str):
        return text
    if getattr(v, "t", None) == "dataTable":  # what-if table: Excel shows {=TABLE(r1,r2)}
        return f"=TABLE({v.r1 or ''},{v.r2 or ''})"
    return str(v)


def _xlsx_records(ws, name, state, close, width):
    n = 0
    try:
        for cells in ws.iter_rows(max_col=width):
            n += 1
            state.rows = n
            vals = [_cell_text(c) for c in cells]
            while vals and not vals[-1]:
                vals.pop()
            if not _is_blank(vals):
                yield n, vals
    except (FileError, MemoryError, GeneratorExit):
        raise
    except Exception as e:
        raise FileError(f"{name}: row {n + 1} of sheet {ws.title!r} cannot be read; the workbook looks "
                        f"damaged ({type(e).__name__}: {e}); open it in Excel and save it again, "
                        "or export it as CSV") from None
    finally:
        close()


# -- limits, checked before openpyxl reads a part ----------------------------------

_WORKSHEET_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
_SHARED_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"
_COL_LETTERS = re.compile(r"\$?([A-Za-z]{1,3})")


class _Refused(Exception):
    """A limit the scan found crossed (becomes a FileError naming the file)."""


def _local(tag: str) -> str:
    return tag[tag.rfind(":") + 1:]


def _no_dtd(*_):
    raise _Refused("it contains an XML document type declaration (DTD), which no workbook has")


def _expat(member_stream, handlers: dict):
    """Feed a member through expat in 64 KiB pieces; handlers may raise _Refused."""
    from xml.parsers import expat
    p = expat.ParserCreate()
    p.buffer_text = True
    p.StartDoctypeDeclHandler = _no_dtd
    p.EntityDeclHandler = _no_dtd
    for k, v in handlers.items():
        setattr(p, k, v)
    while True:
        data = member_stream.read(1 << 16)
        if not data:
            break
        p.Parse(data, False)
    p.Parse(b"", True)


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}".replace(".0 ", " ")
        n /= 1024


def _content_types(zf, name) -> dict:
    """Part name (without the leading /) -> content type, from [Content_Types].xml."""
    info = next((i for i in zf.infolist() if i.filename.lower() == "[content_types].xml"), None)
    if info is None or info.file_size > XLSX_MAX_PART:
        return {}
    out = {}

    def start(tag, attrs):
        if _local(tag) == "Override" and "PartName" in attrs:
            out[attrs["PartName"].lstrip("/")] = attrs.get("ContentType", "")
    _scan(zf, info.filename, name, {"StartElementHandler": start})
    return out


def _check_members(zf, name):
    """Declared sizes and compression ratios of every member, and the shared strings'
    cells; before openpyxl opens anything (it reads every part but the worksheets whole)."""
    infos = zf.infolist()
    total = sum(i.file_size for i in infos)
    if total > XLSX_MAX_BYTES:
        raise FileError(f"{name} would inflate to {_human(total)} when unzipped; a workbook may hold at most "
                        f"{_human(XLSX_MAX_BYTES)}: split the list, or save it as CSV")
    types = _content_types(zf, name)
    shared = {p for p, t in types.items() if t == _SHARED_TYPE}
    sheets = {p for p, t in types.items() if t == _WORKSHEET_TYPE}
    for i in infos:
        if i.file_size > (1 << 20) and i.file_size > XLSX_MAX_RATIO * max(i.compress_size, 1):
            raise FileError(f"{name}: its part {i.filename} inflates {i.file_size // max(i.compress_size, 1)} times "
                            f"(from {_human(i.compress_size)} to {_human(i.file_size)}); a workbook compresses "
                            f"less than {XLSX_MAX_RATIO} times: this one is damaged or built to exhaust memory")
        if i.filename in shared:
            limit = XLSX_MAX_SHARED
        elif i.filename in sheets or i.filename.lower().startswith("xl/worksheets/"):
            continue  # streamed; scanned when its sheet is read
        else:
            limit = XLSX_MAX_PART
        if i.file_size > limit:
            raise FileError(f"{name}: its part {i.filename} is {_human(i.file_size)} unzipped, over the "
                            f"{_human(limit)} such a part may have: the workbook is damaged or built to exhaust "
                            "memory; save it again from Excel, or as CSV")
    for part in sorted(shared):
        _scan_shared_strings(zf, part, name)


def _scan_shared_strings(zf, part, name):
    st = {"in_si": False, "in_t": 0, "chars": 0, "elems": 0, "n": 0}

    def start(tag, attrs):
        t = _local(tag)
        if t == "si":
            st["in_si"], st["chars"], st["elems"] = True, 0, 0
            st["n"] += 1
        elif st["in_si"]:
            st["elems"] += 1
            if st["elems"] > XML_MAX_ELEMENTS:
                raise _Refused(f"shared string {st['n']} is made of more than {XML_MAX_ELEMENTS} XML elements")
            if t == "t":
                st["in_t"] += 1

    def end(tag):
        t = _local(tag)
        if t == "si":
            st["in_si"] = False
        elif t == "t" and st["in_t"]:
            st["in_t"] -= 1

    def chars(data):
        if st["in_t"]:
            st["chars"] += len(data)
            if st["chars"] > CELL_MAX_CHARS:
                raise _Refused(f"shared string {st['n']} is longer than {CELL_MAX_CHARS} characters "
                               "(the longest cell Excel can hold)")

    _scan(zf, part, name, {"StartElementHandler": start, "EndElementHandler": end,
                           "CharacterDataHandler": chars})


def _scan(zf, part, name, handlers):
    try:
        with zf.open(part) as f:
            _expat(f, handlers)
    except _Refused as e:
        raise FileError(f"{name} cannot be read: in its part {part}, {e}; the workbook is damaged or built to "
                        "exhaust memory: save it again from Excel, or export it as CSV") from None
    except FileError:
        raise
    except MemoryError:
        raise
    except Exception as e:  # ExpatError, BadZipFile (bad CRC), zlib.error, EOFError, NotImplementedError, ...
        raise FileError(f"{name} is a damaged XLSX workbook (part {part}: {type(e).__name__}: {e}); open it in "
                        "Excel and save it again, or export it as CSV") from None


def _column_number(ref: str) -> int | None:
    m = _COL_LETTERS.match(ref)
    if not m:
        return None
    n = 0
    for ch in m.group(1).upper():
        n = n * 26 + ord(ch) - 64
    return n


def _scan_sheet(zf, part, name, title) -> int:
    """Check a worksheet part against the limits; return the last column holding a value."""
    st = {"row": 0, "col": 0, "width": 0, "cells": 0, "row_elems": 0, "in_c": False, "c_elems": 0,
          "text": 0, "chars": 0, "has": False, "ref": ""}

    def where():
        return st["ref"] or f"row {st['row']}"

    def start(tag, attrs):
        t = _local(tag)
        if t == "c":
            ref = attrs.get("r")
            if ref:
                col = _column_number(ref)
                if col is None:
                    raise _Refused(f"cell reference {ref[:20]!r} is not a cell reference")
            else:
                col = st["col"] + 1
            if col > MAX_COLUMNS:
                raise _Refused(f"cell {ref[:20] if ref else _ref(col, st['row'])} is beyond column XFD "
                               f"({MAX_COLUMNS}), Excel's last column")
            st["col"], st["ref"] = col, (ref[:20] if ref else _ref(col, st["row"]))
            st["in_c"], st["c_elems"], st["chars"], st["has"] = True, 0, 0, False
            st["cells"] += 1
            if st["cells"] > XLSX_MAX_CELLS:
                raise _Refused(f"the sheet has more than {XLSX_MAX_CELLS:,} cells (empty formatted ones count)")
            st["row_elems"] += 1
        elif st["in_c"]:
            st["c_elems"] += 1
            st["row_elems"] += 1
            if st["c_elems"] > XML_MAX_ELEMENTS:
                raise _Refused(f"cell {where()} is made of more than {XML_MAX_ELEMENTS} XML elements")
            if t in ("v", "t", "f"):
                st["text"] += 1
        elif t == "row":
            r = attrs.get("r")
            if r is not None:
                if not (r.isascii() and r.isdigit()):
                    raise _Refused(f"row number {r[:20]!r} is not a number")
                row = int(r)
            else:
                row = st["row"] + 1
            if not 1 <= row <= MAX_ROWS:
                raise _Refused(f"row {row} is beyond Excel's {MAX_ROWS:,} rows")
            st["row"], st["col"], st["row_elems"], st["ref"] = row, 0, 0, ""
            if row * max(st["width"], 1) > XLSX_MAX_CELLS:
                raise _Refused(_too_many(st))
        if st["row_elems"] > XML_MAX_ELEMENTS:
            raise _Refused(f"row {st['row']} is made of more than {XML_MAX_ELEMENTS} XML elements")

    def end(tag):
        t = _local(tag)
        if t == "c":
            st["in_c"] = False
            if st["has"] and st["col"] > st["width"]:
                st["width"] = st["col"]
                if st["row"] * st["width"] > XLSX_MAX_CELLS:
                    raise _Refused(_too_many(st))
        elif st["in_c"] and t in ("v", "t", "f") and st["text"]:
            st["text"] -= 1

    def chars(data):
        if st["in_c"] and st["text"]:
            st["chars"] += len(data)
            if data.strip():
                st["has"] = True
            if st["chars"] > CELL_MAX_CHARS:
                raise _Refused(f"cell {where()} is longer than {CELL_MAX_CHARS} characters (the longest cell "
                               "Excel can hold)")

    try:
        _scan(zf, part, name, {"StartElementHandler": start, "EndElementHandler": end,
                               "CharacterDataHandler": chars})
    except FileError as e:
        raise FileError(str(e).replace(f"in its part {part},", f"sheet {title!r}:", 1)) from None
    return st["width"]


def _ref(col, row) -> str:
    from openpyxl.utils import get_column_letter
    return f"{get_column_letter(col)}{row}" if 1 <= col <= MAX_COLUMNS else f"column {col} of row {row}"


def _too_many(st) -> str:
    from openpyxl.utils import get_column_letter
    return (f"it is {st['row']:,} rows by {st['width']:,} columns (a value in column "
            f"{get_column_letter(st['width'])}), over the {XLSX_MAX_CELLS:,} cells a list may have; delete the "
            "stray cells far to the right or below, or save the sheet as CSV")


def _open_xlsx(opener, name, size, sheet) -> Table:
    try:
        import openpyxl
    except ImportError:  # pragma: no cover - a deployment problem, not the user's
        raise FileError(f"{name} is an XLSX workbook, but the XLSX reader (openpyxl) is not installed") from None
    try:
        f = io.BufferedReader(opener())
    except OSError as e:
        raise FileError(f"{name} cannot be read: {e.strerror or e}") from None
    wb = None
    zf = None

    def close():
        if wb is not None:
            try:
                wb.close()
            except Exception:
                pass
        if zf is not None:
            zf.close()
        f.close()

    try:
        try:
            zf = zipfile.ZipFile(f)
            problem = _zip_problem(name, set(zf.namelist()))
        except MemoryError:
            raise
        except Exception as e:  # BadZipFile, NotImplementedError (odd versions), struct.error, ...
            raise FileError(f"{name} is a damaged XLSX/ZIP file ({e}); open it in Excel and save it again, "
                            "or export it as CSV") from None
        if problem:
            raise FileError(problem)
        _check_members(zf, name)
        f.seek(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wb = openpyxl.load_workbook(f, read_only=True, data_only=False, keep_links=False)
        except MemoryError:
            raise
        except Exception as e:
            raise FileError(f"{name} is a damaged XLSX workbook ({type(e).__name__}: {e}); open it in Excel "
                            "and save it again, or export it as CSV") from None

        names = list(wb.sheetnames)
        listed = ", ".join(repr(s) for s in names)
        if sheet is None:
            if not wb.worksheets:
                raise FileError(f"{name} has no worksheets (only charts)")
            ws = wb.worksheets[0]
        else:
            match = [s for s in names if s == sheet] or \
                    [s for s in names if s.strip().casefold() == str(sheet).strip().casefold()]
            if not match:
                raise FileError(f"{name} has no sheet named {sheet!r}; its sheets are: {listed}")
            ws = wb[match[0]]
            if not hasattr(ws, "iter_rows"):
                raise FileError(f"sheet {match[0]!r} of {name} is a chart, not a table")
        part = getattr(ws, "_worksheet_path", None)
        if part not in set(zf.namelist()):
            raise FileError(f"{name} is a damaged XLSX workbook (sheet {ws.title!r} has no part); open it in "
                            "Excel and save it again, or export it as CSV")
        width = _scan_sheet(zf, part, name, ws.title)
        declared = ws.max_row if isinstance(ws.max_row, int) and ws.max_row > 0 else None
        ws.reset_dimensions()  # declared dimensions are often wrong; read what is there
    except BaseException:
        close()
        raise

    state = _State()

    def progress():
        if state.done:
            return 1.0
        return min(state.rows / declared, 0.999) if declared else 0.0

    records = _xlsx_records(ws, name, state, close, max(width, 1))

    def close_all():
        records.close()
        close()

    empty = f"{name} is empty: sheet {ws.title!r} has no values"
    if len(names) > 1:
        empty += f" (the workbook's sheets are: {listed})"
    return _make_table(name, records, close_all, state, progress, "xlsx", size, empty_msg=empty)
