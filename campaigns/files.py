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

from dialer.errors import InputError

__all__ = ["FileError", "Table", "open_table", "neutralise"]

SAMPLE_BYTES = 1 << 20  # encoding and binary checks look at this much of the file
SNIFF_CHARS = 64 * 1024  # delimiter detection looks at this much text
SNIFF_RECORDS = 500
DELIMITERS = (",", ";", "\t", "|")  # in order of preference on a tie
BUFFER_BYTES = 256 * 1024

# Characters that make a cell blank (Ctrl-Z ends some old DOS files; NBSP and
# zero-width space come from copy-paste).
_BLANK = " \t\r\n\x0b\x0c\x1a\xa0\ufeff\u200b"


class FileError(InputError):
    """An uploaded lead-list file cannot be read; the message names the file and the problem."""


@dataclass
class Table:
    """A header and a lazy stream of ``(row_number, cells)``; see the module docstring."""

    header: list[str]
    rows: Iterator[tuple[int, list[str]]]
    encoding: str | None
    delimiter: str | None
    kind: str
    size_bytes: int
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


def open_table(path: str, sheet: str | None = None) -> Table:
    """Open a CSV or XLSX lead list (type detected from the content).

    ``sheet`` picks an XLSX worksheet by name (the first worksheet otherwise); it is
    ignored for CSV. Raises :class:`FileError` for anything wrong with the file.
    """
    path = os.fspath(path)
    name = os.path.basename(path.rstrip("/\\")) or path
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise FileError(f"{name} is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise FileError(f"{name} is not a regular file")
        with open(path, "rb") as f:
            head = f.read(SAMPLE_BYTES)
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
        return _open_xlsx(path, name, size, sheet)
    return _open_csv(path, name, size, head, whole)


_TRIGGERS = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20")  # incl. full-width = + - @


def neutralise(cell: str) -> str:
    """Make a cell safe for an exported CSV report (CSV/formula injection).

    A cell starting with ``= + - @``, a tab or a carriage return (or the full-width
    forms of ``= + - @``, which some spreadsheet locales also treat as formulas) gets a
    single quote in front, so spreadsheets show it as text instead of evaluating it.
    Anything else is returned unchanged. ``None`` becomes "".
    """
    if cell is None:
        return ""
    if not isinstance(cell, str):
        cell = str(cell)
    if cell and cell[0] in _TRIGGERS:
        return "'" + cell
    return cell


# ----------------------------------------------------------------------------- common


def _clean_header(cells: list[str]) -> list[str]:
    names = [(c.replace("\ufeff", "").strip() or f"column_{i}") for i, c in enumerate(cells, 1)]
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
    header = _clean_header(header)
    return Table(header=header, rows=_shaped(first, records, len(header), state), encoding=encoding,
                 delimiter=delimiter, kind=kind, size_bytes=size, _progress=progress, _close=close)


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


def _open_csv(path, name, size, head, whole) -> Table:
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
        raw = open(path, "rb", buffering=0)
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


def _xlsx_records(ws, name, state, close):
    n = 0
    try:
        for cells in ws.iter_rows():
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


def _open_xlsx(path, name, size, sheet) -> Table:
    try:
        import openpyxl
    except ImportError:  # pragma: no cover - a deployment problem, not the user's
        raise FileError(f"{name} is an XLSX workbook, but the XLSX reader (openpyxl) is not installed") from None
    try:
        f = open(path, "rb")
    except OSError as e:
        raise FileError(f"{name} cannot be read: {e.strerror or e}") from None
    wb = None

    def close():
        if wb is not None:
            try:
                wb.close()
            except Exception:
                pass
        f.close()

    try:
        try:
            with zipfile.ZipFile(f) as zf:
                problem = _zip_problem(name, set(zf.namelist()))
        except MemoryError:
            raise
        except Exception as e:  # BadZipFile, NotImplementedError (odd versions), struct.error, ...
            raise FileError(f"{name} is a damaged XLSX/ZIP file ({e}); open it in Excel and save it again, "
                            "or export it as CSV") from None
        if problem:
            raise FileError(problem)
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

    records = _xlsx_records(ws, name, state, close)

    def close_all():
        records.close()
        close()

    empty = f"{name} is empty: sheet {ws.title!r} has no values"
    if len(names) > 1:
        empty += f" (the workbook's sheets are: {listed})"
    return _make_table(name, records, close_all, state, progress, "xlsx", size, empty_msg=empty)
