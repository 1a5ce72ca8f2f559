"""Tests for the national DNC registry store (rules/registry.py)."""

from __future__ import annotations

import ast
import hashlib
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rules import registry  # noqa: E402
from rules.registry import (  # noqa: E402
    NumberSet,
    RegistryError,
    parse_registry_file,
    parse_registry_lines,
)

US = 12125550100  # +1 212 555 0100


def nums(lines, cc="1"):
    arr, stats = parse_registry_lines(lines, cc)
    assert arr.dtype == np.uint64
    return arr.tolist(), stats


# --------------------------------------------------------------------------
# parsing: accepted formats
# --------------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    "2125550100",
    "212,5550100",
    "212,5550100,2023-01-05,A",
    '"212","5550100"',
    '"212","5550100","x"',
    "212, 5550100",
    "+12125550100",
    "12125550100",
    "(212) 555-0100",
    "212-555-0100",
    "212.555.0100",
    "212 555 0100",
    "+1 (212) 555-0100",
    "1-212-555-0100",
    "  2125550100  ",
    "\t212,5550100\t",
    '"2125550100"',
])
def test_us_formats(line):
    got, stats = nums([line])
    assert got == [US]
    assert stats["junk"] == 0
    assert stats["numbers"] == 1
    assert stats["lines"] == 1


def test_line_endings_are_stripped():
    got, stats = nums(["2125550100\n", "2125550101\r\n", "212,5550102\r\n"])
    assert got == [US, US + 1, US + 2]
    assert stats["junk"] == 0


@pytest.mark.parametrize("line", [
    "1125550100",        # NPA starting with 1
    "0125550100",        # NPA starting with 0
    "2121550100",        # NXX starting with 1
    "2120550100",        # NXX starting with 0
    "112,5550100",
    "212,1550100",
    "+11125550100",
    "12121550100",
    "(112) 555-0100",
    "212-055-0100",
])
def test_nanp_shape_is_validated(line):
    got, stats = nums([line])
    assert got == []
    assert stats["junk"] == 1


@pytest.mark.parametrize("line", [
    "212555010",          # 9 digits
    "21255501000",        # 11 digits not starting with 1
    "212555010000",       # 12 digits
    "+2125550100",        # + without country code
    "+22125550100",       # other country code in a US file
    "+442079460000",
    "212,555010",         # 6-digit FTC number
    "21,5550100",
    "212;5550100",
    "212,5550100x",
    "2125550100,",        # first CSV field is not an area code
    "21255501OO",         # letters O for zeros
    "abc",
    "212-555-01OO",
    "2125550100 ext 5",
    "٢١٢٥٥٥٠١٠٠",         # non-ASCII digits
])
def test_junk_us(line):
    got, stats = nums(["2125550199", line])
    assert got == [US + 99]
    assert stats["junk"] == 1
    assert stats["junk_examples"] == [{"line": 2, "text": line.strip()}]


def test_junk_counting_and_line_numbers():
    lines = ["2125550100"]
    for i in range(25):
        lines.append(f"junk{i}")
        lines.append(f"21255501{i:02d}")
    got, stats = nums(lines)
    assert stats["junk"] == 25
    assert len(stats["junk_examples"]) == 10
    assert stats["junk_examples"][0] == {"line": 2, "text": "junk0"}
    assert [e["line"] for e in stats["junk_examples"]] == list(range(2, 22, 2))
    assert stats["lines"] == 51
    assert stats["numbers"] == 25
    assert stats["duplicates"] == 1  # 2125550100 twice
    assert stats["header"] == 0


def test_junk_example_text_is_truncated():
    _, stats = nums(["2125550100", "x" * 5000])
    assert stats["junk"] == 1
    assert len(stats["junk_examples"][0]["text"]) <= 200


def test_header_skip():
    got, stats = nums(["AreaCode,PhoneNumber", "212,5550100", "212,5550101"])
    assert got == [US, US + 1]
    assert stats["header"] == 1
    assert stats["junk"] == 0
    assert stats["lines"] == 3


def test_header_only_on_line_1():
    got, stats = nums(["212,5550100", "AreaCode,PhoneNumber"])
    assert got == [US]
    assert stats["header"] == 0
    assert stats["junk"] == 1
    assert stats["junk_examples"] == [{"line": 2, "text": "AreaCode,PhoneNumber"}]


def test_line_1_without_letters_is_junk_not_header():
    got, stats = nums(["12345", "2125550100"])
    assert got == [US]
    assert stats["header"] == 0
    assert stats["junk"] == 1


def test_blank_and_comment_lines_are_skipped():
    got, stats = nums(["# DNC list", "", "   ", "2125550100", "#2125550101", "\t"])
    assert got == [US]
    assert stats["junk"] == 0
    assert stats["lines"] == 6
    assert stats["skipped"] == 5


def test_duplicates():
    lines = ["2125550100", "212,5550100", "+12125550100", "(212) 555-0100",
             "2125550101", "2125550101"]
    got, stats = nums(lines)
    assert got == [US, US + 1]
    assert stats["numbers"] == 2
    assert stats["duplicates"] == 4
    assert stats["parsed"] == 6


def test_result_is_sorted_unique():
    rng = random.Random(5)
    values = [10_000_000_000 + rng.randrange(2, 10) * 10**9 + rng.randrange(0, 10**8)
              + rng.randrange(2, 10) * 10**6 for _ in range(5000)]
    values = [v for v in values if str(v)[4] in "23456789"]
    lines = [str(v)[1:] for v in values]
    got, stats = nums(lines)
    assert got == sorted(set(values))
    assert stats["duplicates"] == len(values) - len(set(values))


def test_sorted_unique_in_slices(monkeypatch):
    monkeypatch.setattr(registry, "_UNIQUE_STEP", 7)
    monkeypatch.setattr(registry, "_LINES_BATCH", 13)
    rng = random.Random(3)
    values = [12_125_550_000 + rng.randrange(0, 60) for _ in range(500)]
    got, stats = nums([str(v)[1:] for v in values])
    assert got == sorted(set(values))
    assert stats["duplicates"] == 500 - len(set(values))
    assert stats["lines"] == 500


def test_non_us_country_code():
    lines = [
        "+442079460000",
        "02079460001",
        "+44 20 7946 0002",
        "020 7946 0003",
        "2079460004",      # national number without trunk 0: ambiguous, junk
        "00442079460005",  # international prefix: junk
        "+12125550100",    # another country code
        "+44123",          # too short
        "+4412345678901234",  # 16 digits: too long
        "07700900123",
    ]
    got, stats = nums(lines, cc="44")
    assert got == [442079460000, 442079460001, 442079460002, 442079460003,
                   447700900123]
    assert stats["junk"] == 5
    assert [e["line"] for e in stats["junk_examples"]] == [5, 6, 7, 8, 9]


def test_non_us_length_bounds():
    # E.164 total 7..15 digits including the country code
    got, stats = nums(["+4912345", "+491234", "+491234567890123", "+4912345678901234"], "49")
    assert got == [4912345, 491234567890123]
    assert stats["junk"] == 2


def test_invalid_country_code():
    with pytest.raises(ValueError):
        parse_registry_lines(["2125550100"], country_code="abc")


def test_fast_paths_agree_with_reference_parser():
    """The vectorised templates must accept exactly what _parse_line does."""
    rng = random.Random(1234)
    alphabet = "0123456789" * 6 + ",+-() .\"x1"
    shapes = ["DDDDDDDDDD", "DDD,DDDDDDD", '"DDD","DDDDDDD"', "+1DDDDDDDDDD",
              "1DDDDDDDDDD", "DDD-DDD-DDDD", "(DDD) DDD-DDDD", "DDD,DDDDDDD,xx"]
    lines = []
    for _ in range(20000):
        shape = rng.choice(shapes)
        chars = [rng.choice("0123456789") if c == "D" else c for c in shape]
        if rng.random() < 0.3:  # mutate a character
            chars[rng.randrange(len(chars))] = rng.choice(alphabet)
        if rng.random() < 0.05:
            chars.insert(rng.randrange(len(chars) + 1), rng.choice(alphabet))
        lines.append("".join(chars))
    expected = []
    junk = 0
    for i, line in enumerate(lines, 1):
        v = registry._parse_line(line.strip(), "1")
        if v is None:
            if not (i == 1 and any(c.isalpha() for c in line)):
                junk += 1
        else:
            expected.append(v)
    got, stats = nums(lines)
    assert got == sorted(set(expected))
    assert stats["junk"] == junk
    assert stats["parsed"] == len(expected)


def test_fast_paths_agree_with_reference_parser_non_us():
    rng = random.Random(99)
    lines = []
    for _ in range(5000):
        k = rng.randrange(3, 16)
        body = "".join(rng.choice("0123456789") for _ in range(k))
        lines.append(rng.choice(["+44", "0", "+4", "00", ""]) + body)
    expected = [registry._parse_line(x, "44") for x in lines]
    got, stats = nums(lines, "44")
    assert got == sorted({v for v in expected if v is not None})
    assert stats["junk"] == sum(v is None for v in expected)


# --------------------------------------------------------------------------
# parse_registry_file
# --------------------------------------------------------------------------

def test_parse_file_matches_lines(tmp_path, monkeypatch):
    lines = ["AreaCode,PhoneNumber"]
    rng = random.Random(7)
    for i in range(3000):
        r = rng.random()
        if r < 0.01:
            lines.append(f"bad line {i}")
        elif r < 0.02:
            lines.append("")
        else:
            lines.append(f"{rng.randrange(200, 1000)},{rng.randrange(200, 1000)}{rng.randrange(0, 10000):04d}")
    content = "\r\n".join(lines)  # CRLF and no trailing newline
    p = tmp_path / "dnc.txt"
    p.write_bytes(content.encode())
    # tiny blocks: lines straddle block boundaries
    monkeypatch.setattr(registry, "_BLOCK_BYTES", 97)
    calls = []
    s, stats = parse_registry_file(p, progress=lambda done, total: calls.append((done, total)))
    arr, stats2 = parse_registry_lines(lines)
    assert isinstance(s, NumberSet)
    assert s.to_array().tolist() == arr.tolist()
    assert stats == stats2
    assert stats["lines"] == len(lines)
    assert stats["header"] == 1
    assert calls and calls[-1] == (len(content), len(content))


def test_parse_file_with_bom_and_utf8_junk(tmp_path):
    p = tmp_path / "dnc.txt"
    p.write_bytes("\ufeff2125550100\n2125550101\n\xe9t\xe9\n".encode() + b"\xff\xfe\n")
    s, stats = parse_registry_file(p)
    assert sorted(s) == [US, US + 1]
    assert stats["junk"] == 2
    assert stats["lines"] == 4


def test_parse_file_empty_and_missing(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_bytes(b"")
    s, stats = parse_registry_file(p)
    assert len(s) == 0
    assert stats == {"lines": 0, "numbers": 0, "duplicates": 0, "junk": 0,
                     "junk_examples": [], "header": 0, "skipped": 0, "parsed": 0}
    with pytest.raises(RegistryError, match="not found"):
        parse_registry_file(tmp_path / "nope.txt")


def test_parse_file_non_us(tmp_path):
    p = tmp_path / "uk.txt"
    p.write_text("number\n+442079460000\n02079460001\nfoo\n")
    s, stats = parse_registry_file(p, country_code="44")
    assert list(s) == [442079460000, 442079460001]
    assert stats["header"] == 1
    assert stats["junk"] == 1


# --------------------------------------------------------------------------
# NumberSet
# --------------------------------------------------------------------------

def random_mixed_numbers(rng: np.random.Generator, n: int) -> np.ndarray:
    us = 10_000_000_000 + rng.integers(2_000_000_000, 10_000_000_000, n, dtype=np.uint64)
    uk = 440_000_000_000 + rng.integers(1_000_000_000, 9_999_999_999, n // 4, dtype=np.uint64)
    small = rng.integers(0, 2**32, n // 10, dtype=np.uint64)  # below 2**32
    big = rng.integers(2**40, 2**63, n // 10, dtype=np.uint64)
    edge = np.array([0, 2**32 - 1, 2**32, 2**32 + 1, 2**64 - 1], dtype=np.uint64)
    return np.concatenate([us, uk, small, big, edge])


def test_contains_matches_python_set():
    rng = np.random.default_rng(42)
    values = random_mixed_numbers(rng, 20000)
    s = NumberSet.from_array(values)
    ref = set(values.tolist())
    assert len(s) == len(ref)
    # queries: half members, half random (mostly misses), several ranges
    queries = np.concatenate([
        rng.choice(values, 5000),
        random_mixed_numbers(rng, 5000),
        values[:100] + np.uint64(1),
    ])
    ql = queries.tolist()
    expected = [q in ref for q in ql]
    assert 0 < sum(expected) < len(expected)
    assert [q in s for q in ql] == expected
    assert s.contains_many(queries) == expected          # ndarray, big batch
    assert s.contains_many(ql) == expected               # list
    assert s.contains_many(queries[:100]) == expected[:100]  # small batch
    assert s.contains_many(iter(ql[:300])) == expected[:300]  # iterator
    assert s.contains_many(queries.astype(np.int64)[:50]) == [
        q in ref for q in queries.astype(np.int64)[:50].tolist()]
    res = s.contains_many(queries)
    assert all(type(r) is bool for r in res)


def test_contains_odd_inputs():
    s = NumberSet.from_iterable([US, 2**40, 0])
    assert US in s
    assert np.uint64(US) in s
    assert np.int64(US) in s
    assert (US + 1) not in s
    for bad in (-1, -US, 2**64, 2**100, "12125550100", None, 1.5, float(US), True):
        assert bad not in s
    assert s.contains_many([]) == []
    assert s.contains_many(np.array([], dtype=np.uint64)) == []
    assert s.contains_many([US, -1, 2**64, US + 1, 0]) == [True, False, False, False, True]
    assert s.contains_many([US, "x", None, 2**40]) == [True, False, False, True]
    arr = np.array([US, -5, 0] * 2000, dtype=np.int64)  # above sort threshold
    assert s.contains_many(arr) == [True, False, True] * 2000
    assert s.contains_many(arr[:30]) == [True, False, True] * 10
    arr32 = np.array([0, 5], dtype=np.uint32)
    assert s.contains_many(arr32) == [True, False]


def test_from_array_unsorted_duplicates_and_dtypes():
    a = np.array([5, 3, 3, 2**33, 5, 0], dtype=np.uint64)
    s = NumberSet.from_array(a)
    assert len(s) == 4
    assert s.to_array().tolist() == [0, 3, 5, 2**33]
    assert NumberSet.from_array(a.astype(np.int64)) == s
    assert NumberSet.from_array(a.astype(np.int64).tolist()) == s
    with pytest.raises(ValueError):
        NumberSet.from_array(np.array([1, -1], dtype=np.int64))
    with pytest.raises(TypeError):
        NumberSet.from_array(np.array([1.5]))
    with pytest.raises(ValueError):
        NumberSet.from_iterable([-1])


def test_from_array_larger_than_build_chunk(monkeypatch):
    monkeypatch.setattr(registry, "_BUILD_CHUNK", 1000)
    rng = np.random.default_rng(3)
    a = rng.integers(12_000_000_000, 20_000_000_000, 10_500, dtype=np.uint64)
    s = NumberSet.from_array(a)
    assert s.to_array().tolist() == sorted(set(a.tolist()))


def test_empty_and_from_iterable():
    e = NumberSet.empty()
    assert len(e) == 0
    assert not e
    assert US not in e
    assert e.contains_many([US, 1]) == [False, False]
    s = NumberSet.from_iterable(x for x in [US, US, US + 1])
    assert len(s) == 2
    assert sorted(s) == [US, US + 1]
    assert s.memory_bytes() > 0


def test_immutable():
    s = NumberSet.from_iterable([1, 2])
    for name in ("add", "update", "discard", "remove", "clear"):
        assert not hasattr(s, name)
    with pytest.raises(AttributeError):
        s.foo = 1


def test_memory_bytes_is_compact():
    rng = np.random.default_rng(11)
    # national-registry density (~4% of a 5M-number range, like 250M over
    # the ~6.4e9 NANP space): ~2 bytes per number plus container overhead
    a = 12_120_000_000 + rng.integers(0, 5_000_000, 200_000, dtype=np.uint64)
    s = NumberSet.from_array(a)
    assert s.memory_bytes() < 4 * len(s)


# --------------------------------------------------------------------------
# persistence
# --------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    s = NumberSet.from_array(random_mixed_numbers(rng, 5000))
    p = tmp_path / "dnc.bin"
    digest = s.save(p)
    assert digest == hashlib.sha256(p.read_bytes()).hexdigest()
    assert not (tmp_path / "dnc.bin.tmp").exists()
    t = NumberSet.load(p)
    assert t == s
    assert t.to_array().tolist() == s.to_array().tolist()
    assert NumberSet.load(str(p), expected_sha256=digest) == s
    assert NumberSet.load(p, expected_sha256=digest.upper()) == s


def test_save_overwrites_atomically(tmp_path):
    p = tmp_path / "dnc.bin"
    NumberSet.from_iterable([1, 2, 3]).save(p)
    d2 = NumberSet.from_iterable([4]).save(p)
    assert list(NumberSet.load(p, d2)) == [4]
    assert sorted(os.listdir(tmp_path)) == ["dnc.bin"]


def test_save_failure_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "dnc.bin"
    d1 = NumberSet.from_iterable([1, 2, 3]).save(p)

    def boom(*a, **k):
        raise OSError("disk on fire")

    monkeypatch.setattr(registry.os, "replace", boom)
    with pytest.raises(OSError):
        NumberSet.from_iterable([9]).save(p)
    monkeypatch.undo()
    assert list(NumberSet.load(p, d1)) == [1, 2, 3]
    assert not (tmp_path / "dnc.bin.tmp").exists()


def test_empty_set_round_trip(tmp_path):
    p = tmp_path / "e.bin"
    d = NumberSet.empty().save(p)
    assert len(NumberSet.load(p, d)) == 0


def test_load_checksum_mismatch(tmp_path):
    p = tmp_path / "dnc.bin"
    NumberSet.from_iterable([US]).save(p)
    with pytest.raises(RegistryError, match="checksum mismatch"):
        NumberSet.load(p, expected_sha256="0" * 64)


def test_load_truncated(tmp_path):
    p = tmp_path / "dnc.bin"
    NumberSet.from_array(np.arange(1000, dtype=np.uint64) * 7).save(p)
    data = p.read_bytes()
    for cut in (0, 5, 30, len(data) // 2, len(data) - 1):
        p.write_bytes(data[:cut])
        with pytest.raises(RegistryError):
            NumberSet.load(p)


def test_load_corrupt_byte(tmp_path):
    p = tmp_path / "dnc.bin"
    NumberSet.from_array(np.arange(1000, dtype=np.uint64) * 7).save(p)
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x40
    p.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="corrupt"):
        NumberSet.load(p)


def test_load_corrupt_payload_with_matching_checksum(tmp_path):
    """Garbage that passes the internal checksum is still rejected."""
    p = tmp_path / "dnc.bin"
    payload = b"\x07" * 64
    header = registry._HEADER.pack(registry._MAGIC, 3, len(payload))
    p.write_bytes(header + payload + hashlib.sha256(header + payload).digest())
    with pytest.raises(RegistryError, match="corrupt"):
        NumberSet.load(p)


def test_load_missing_and_foreign_files(tmp_path):
    with pytest.raises(RegistryError, match="not found"):
        NumberSet.load(tmp_path / "missing.bin")
    p = tmp_path / "other.bin"
    p.write_bytes(b"hello world, this is not a registry file at all!!!!!!!!!!")
    with pytest.raises(RegistryError, match="not a DNC registry"):
        NumberSet.load(p)
    with pytest.raises(RegistryError):
        NumberSet.load(tmp_path)  # a directory


def test_registry_error_is_exception():
    assert issubclass(RegistryError, Exception)


# --------------------------------------------------------------------------
# module hygiene
# --------------------------------------------------------------------------

def test_registry_imports_no_project_modules():
    tree = ast.parse(Path(registry.__file__).read_text())
    allowed = {"__future__", "array", "hashlib", "json", "operator", "os", "re", "struct",
               "typing", "numpy", "pyroaring"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            mods = [node.module.split(".")[0]]
        else:
            continue
        for m in mods:
            assert m in allowed, m


# ---------------------------------------------------------------------------
# the dense NANP layer (used for national-size +1 registries)
# ---------------------------------------------------------------------------

@pytest.fixture
def small_dense(monkeypatch):
    """The dense layer over NPA 200-209 only (10 MB instead of 800 MB), from one number on."""
    import rules.registry as R
    monkeypatch.setattr(R, "_DENSE_MIN", 1)
    R._set_layout(209)
    yield R
    R._set_layout()


def _dense_values(seed=3, n=50_000):
    rng = np.random.default_rng(seed)
    nanp = (10_000_000_000 + rng.integers(200, 1000, n) * 10_000_000 + rng.integers(200, 1000, n) * 10_000
            + rng.integers(0, 10_000, n)).astype(np.uint64)
    odd = np.array([12000000000, 12001234567, 18002221222, 19999999999, 442079460000, 905321234567],
                   dtype=np.uint64)  # NXX < 200 stays in the bitmap; other countries too
    return np.unique(np.concatenate([nanp, odd]))


def test_dense_layer_membership_matches_a_set(small_dense, tmp_path):
    R = small_dense
    vals = _dense_values()
    ns = R.NumberSet.from_array(vals)
    assert ns._dense is not None and ns._dense_count > 100 and len(ns) == len(vals)
    py = set(vals.tolist())
    probes = np.concatenate([vals, vals + 1, vals - 1, np.array([12002000000, 19999999999], dtype=np.uint64)])
    assert ns.contains_many(probes) == [int(x) in py for x in probes.tolist()]
    assert all((int(x) in ns) == (int(x) in py) for x in probes[:3000].tolist())
    assert -5 not in ns and 2 ** 70 not in ns and "12125550100" not in ns
    assert np.array_equal(ns.to_array(), vals)
    sha = ns.save(str(tmp_path / "d.bin"))
    back = R.NumberSet.load(str(tmp_path / "d.bin"), expected_sha256=sha)
    assert back == ns and back.contains_many(probes[:1000]) == ns.contains_many(probes[:1000])


def test_dense_file_corruption_is_detected(small_dense, tmp_path):
    R = small_dense
    ns = R.NumberSet.from_array(_dense_values(n=1000))
    path = tmp_path / "d.bin"
    ns.save(str(path))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte in the bit array
    path.write_bytes(bytes(data))
    with pytest.raises(R.RegistryError, match="corrupt"):
        R.NumberSet.load(str(path))
    path.write_bytes(bytes(data[:-100]))
    with pytest.raises(R.RegistryError, match="truncated"):
        R.NumberSet.load(str(path))
