"""National Do-Not-Call registry store.

Numbers are kept as integers of their E.164 digits without the ``+``:
``"+12125550100"`` is ``12125550100``.

The in-memory set is a 64-bit Roaring bitmap (``pyroaring.BitMap64``).  A
national-size US registry (~250 million numbers spread over the ~8e9 NANP
range) is about 2 bytes per number: roughly 0.5 GB, and lookups never touch
disk.

Parsing is vectorised with numpy: the file is read in large binary blocks,
split on newlines, and the dominant fixed-width formats (``2125550100``,
``212,5550100``, ...) are decoded column-wise for a whole block at once.
Only the lines that match no fast template (comments, headers, whitespace
variants, junk) go through the per-line Python parser, which is the
reference implementation of the accepted formats.

On-disk format written by :meth:`NumberSet.save`::

    b"DNCSET\\x00\\x01"            8 bytes magic + format version
    count        uint64 LE        number of elements
    payload_len  uint64 LE        length of the Roaring payload
    payload                       portable 64-bit Roaring serialization
    sha256(header + payload)      32 bytes trailer

The file is written to ``path + ".tmp"``, fsynced, renamed over ``path``
and the directory is fsynced, so a crash never leaves a half-written
registry in place.  ``save`` returns the sha256 of the whole file (the same
value ``sha256sum`` prints), which ``load`` can verify.

This module imports nothing from the rest of the project.
"""

from __future__ import annotations

import array
import hashlib
import json
import operator
import os
import re
import struct
from typing import Callable, Iterable, Optional

import numpy as np
from pyroaring import BitMap64

__all__ = [
    "RegistryError",
    "NumberSet",
    "parse_registry_lines",
    "parse_registry_file",
    "save_list_snapshot",
    "load_list_snapshot",
]


class RegistryError(Exception):
    """A registry file is missing, unreadable, corrupt or fails its checksum."""


# ---------------------------------------------------------------------------
# NumberSet
# ---------------------------------------------------------------------------

_MAGIC = b"DNCSET\x00\x01"
_HEADER = struct.Struct("<8sQQ")  # magic, count, payload length
_DIGEST_LEN = 32
_U64_MAX = (1 << 64) - 1

# Values handed to CRoaring per call when building from an array.  Bounded so
# that the temporary array.array copy stays small (16 Mi values = 128 MiB).
_BUILD_CHUNK = 1 << 24
# contains_many sorts batches at least this big before probing the bitmap:
# probes in key order are more cache friendly.  Measured on 250M numbers:
# batches of 500 gain nothing from sorting (the probes still land in different
# containers), batches of 10k gain ~1.4x and batches of 1M ~3.5x.
_SORT_THRESHOLD = 4096

# Dense layer for national-size North American registries. A Roaring bitmap
# stores a registry of US density (~4 % of each exchange) as sorted 16-bit
# arrays: ~2 bytes a number, but a lookup is ~10 dependent cache misses
# (measured: 0.79 M lookups/s at 250M numbers, 8.8x an indexed SQLite table).
# A numpy bit array over every dialable NANP number (NPA 200-999, NXX 200-999:
# 6.4e9 numbers, 800 MB) answers with one memory access (several M/s single,
# tens of M/s vectorised), at a fixed 800 MB. It is used when the +1 part of
# a set is at least _DENSE_MIN numbers, where Roaring would need >= 100 MB
# anyway; everything else (other countries, unassignable +1 shapes) stays in
# the Roaring bitmap.
_DENSE_MIN = 50_000_000
_NANP_BASE = 10_000_000_000  # the leading "1" of +1 numbers
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
# the lowest number covered is +1 200 200 0000 (12_002_000_000, spelt out in __contains__)


def _set_layout(npa_max=999):
    """The dense layer covers NPA 200..npa_max (tests shrink it to stay small)."""
    global _NPA_MAX, _NANP_HI, _DENSE_BYTES
    _NPA_MAX = npa_max
    _NANP_HI = _NANP_BASE + npa_max * 10_000_000 + 999 * 10_000 + 9_999
    _DENSE_BYTES = (npa_max - 199) * 8_000_000 // 8


_set_layout()
_MAGIC_V2 = b"DNCSET\x00\x02"
_HEADER_V2 = struct.Struct("<8sQQQ")  # magic, count, roaring payload length, dense length


def _dense_index(arr):
    """For a uint64 array: (mask of values the dense layer covers, their bit index)."""
    d = arr.astype(np.int64) - _NANP_BASE
    npa = d // 10_000_000
    rest = d - npa * 10_000_000
    mask = (npa >= 200) & (npa <= _NPA_MAX) & (rest >= 2_000_000)
    idx = (npa[mask] - 200) * 8_000_000 + rest[mask] - 2_000_000
    return mask, idx


def _split_dense(arr, step=1 << 24):
    """(dense bit array or None, numbers in it, the values left for the bitmap).
    Works in slices so the temporaries stay small (a 250M-number array is 2 GB)."""
    covered = 0
    for i in range(0, arr.size, step):
        covered += int(_dense_index(arr[i:i + step])[0].sum())
    if covered < _DENSE_MIN:
        return None, 0, arr
    dense = np.zeros(_DENSE_BYTES, dtype=np.uint8)
    rest = []
    for i in range(0, arr.size, step):
        part = arr[i:i + step]
        mask, idx = _dense_index(part)
        if not mask.all():
            rest.append(part[~mask])
        if not idx.size:
            continue
        idx = np.sort(idx)  # already sorted for sorted input: cheap
        byte = idx >> 3
        bits = np.left_shift(np.uint8(1), (idx & 7).astype(np.uint8))
        starts = np.flatnonzero(np.r_[True, byte[1:] != byte[:-1]])
        dense[byte[starts]] |= np.bitwise_or.reduceat(bits, starts)
    # duplicates in the input would be counted twice: count the set bits instead
    count = 0
    for i in range(0, dense.size, step):
        count += int(_POPCOUNT[dense[i:i + step]].sum(dtype=np.int64))
    left = np.concatenate(rest) if rest else np.empty(0, dtype=np.uint64)
    return dense, count, left


def _write_atomic(path, tmp, parts) -> None:
    """Write ``parts`` to ``tmp``, fsync it, rename it over ``path`` and fsync the
    folder: readers see the old file or the whole new one (``tmp`` removed on failure)."""
    try:
        with open(tmp, "wb") as f:
            for part in parts:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


class NumberSet:
    """Immutable set of E.164 numbers (as ints), backed by a Roaring bitmap.

    Build it with :meth:`from_array`, :meth:`from_iterable`, :meth:`empty`,
    :meth:`load` or :func:`parse_registry_file`; it has no mutating methods,
    so it can be shared between threads without locking.

    ``x in s`` accepts any int (negative, >= 2**64 and non-ints are simply
    not members).  For many numbers at once use :meth:`contains_many`.
    """

    __slots__ = ("_bm", "_contains", "_dense", "_dmv", "_dense_count", "_hi")

    def __init__(self, bitmap=None):
        """Wrap a copy of ``bitmap`` (any pyroaring 64-bit bitmap or None).

        Prefer the classmethods; they avoid the copy.
        """
        bm = BitMap64() if bitmap is None else BitMap64(bitmap)
        self._bm = bm
        self._contains = bm.__contains__
        self._dense = self._dmv = None
        self._dense_count = 0
        self._hi = _NANP_HI

    @classmethod
    def _wrap(cls, bm: BitMap64, dense=None, dense_count=0) -> "NumberSet":
        # Takes ownership of ``bm`` (and ``dense``): nothing else may keep a reference.
        self = cls.__new__(cls)
        self._bm = bm
        self._contains = bm.__contains__
        self._dense = dense
        self._dmv = memoryview(dense) if dense is not None else None
        self._dense_count = dense_count
        self._hi = _NANP_HI
        return self

    # -- construction -----------------------------------------------------

    @classmethod
    def empty(cls) -> "NumberSet":
        return cls._wrap(BitMap64())

    @classmethod
    def from_array(cls, values: np.ndarray, allow_dense: bool = True) -> "NumberSet":
        """Build from a numpy array of non-negative integers (ideally uint64).

        Sorted input is fastest (~50 million values/s: 250M numbers in ~5 s),
        but any order and duplicates are accepted.  The values are handed to
        CRoaring's bulk ``add_many`` in ``array.array('Q')`` chunks: pyroaring
        only takes its direct C path for ``array.array``; a numpy array or a
        memoryview goes through its generic sequence path (~1.5-2x slower).
        """
        arr = np.asarray(values)
        if arr.ndim != 1:
            arr = arr.reshape(-1)
        if arr.dtype != np.uint64:
            if arr.size and arr.dtype.kind not in "iu":
                raise TypeError(f"from_array needs an integer array, got {arr.dtype}")
            if arr.size and arr.dtype.kind == "i" and int(arr.min()) < 0:
                raise ValueError("phone numbers cannot be negative")
            arr = arr.astype(np.uint64)
        arr = np.ascontiguousarray(arr)
        dense = None
        dense_count = 0
        if allow_dense and arr.size >= _DENSE_MIN:
            dense, dense_count, arr = _split_dense(arr)
        bm = BitMap64()
        for i in range(0, arr.size, _BUILD_CHUNK):
            buf = array.array("Q")
            buf.frombytes(arr[i:i + _BUILD_CHUNK].view(np.uint8))
            bm.update(buf)
            del buf
        return cls._finish(bm, dense, dense_count)

    @classmethod
    def from_iterable(cls, values: Iterable[int]) -> "NumberSet":
        """Build from any iterable of ints (small sets, tests, tools)."""
        if isinstance(values, np.ndarray):
            return cls.from_array(values)
        items = []
        for v in values:
            v = operator.index(v)
            if v < 0 or v > _U64_MAX:
                raise ValueError(f"not a valid E.164 integer: {v!r}")
            items.append(v)
        return cls.from_array(np.array(items, dtype=np.uint64))

    @classmethod
    def _finish(cls, bm: BitMap64, dense=None, dense_count=0) -> "NumberSet":
        bm.run_optimize()
        bm.shrink_to_fit()
        # Not copied into a FrozenBitMap64: the copy would double peak memory
        # and the freed original stays in the malloc heap (measured: RSS 1.04
        # GB instead of 0.54 GB at 250M numbers).  Immutability is enforced
        # by this class exposing no mutators.
        return cls._wrap(bm, dense, dense_count)

    # -- queries ----------------------------------------------------------

    def __contains__(self, value) -> bool:
        dmv = self._dmv
        if dmv is not None and value.__class__ is int and 12_002_000_000 <= value <= self._hi:
            npa, rest = divmod(value - 10_000_000_000, 10_000_000)
            if rest >= 2_000_000:
                i = npa * 8_000_000 + rest - 1_602_000_000  # (npa - 200) * 8e6 + rest - 2e6
                return dmv[i >> 3] >> (i & 7) & 1 == 1
        if type(value) is not int:
            if isinstance(value, (bool, np.bool_)):
                return False
            try:
                value = operator.index(value)
            except TypeError:
                return False
        try:
            return self._contains(value)
        except OverflowError:  # negative or >= 2**64
            return False

    @property
    def contains_int(self):
        """The fastest membership test for a plain non-negative int below 2**64 (the
        engine's hot path): the bitmap's own C method when there is no dense layer."""
        return self.__contains__ if self._dense is not None else self._contains

    def contains_many(self, values) -> list:
        """Membership of every value, in input order, as a list of bools.

        Accepts a numpy integer array or any sequence of ints.  Large batches
        are sorted first (argsort) so that the bitmap is probed in key order,
        which is several times faster than random-order probing on a
        national-size set; the answers are scattered back to input order.
        """
        if isinstance(values, np.ndarray):
            arr = values.reshape(-1)
        else:
            if not isinstance(values, (list, tuple)):
                values = list(values)
            if not all(type(v) is int for v in values):
                return [self.__contains__(v) for v in values]
            try:
                arr = np.array(values, dtype=np.uint64)
            except (OverflowError, TypeError, ValueError):
                return [self.__contains__(v) for v in values]
            if arr.ndim != 1:
                return [self.__contains__(v) for v in values]
        n = arr.size
        if n == 0:
            return []
        kind = arr.dtype.kind
        if kind not in "iu":
            return [self.__contains__(v) for v in arr.tolist()]
        valid = None
        if kind == "i":
            valid = arr >= 0
            if valid.all():
                valid = None
            arr = arr.astype(np.uint64)  # negatives masked out below
        elif arr.dtype != np.uint64:
            arr = arr.astype(np.uint64)
        if self._dense is not None:
            res = np.zeros(n, dtype=bool)
            mask, idx = _dense_index(arr)
            res[mask] = (self._dense[idx >> 3] >> (idx & 7).astype(np.uint8)) & 1 == 1
            other = np.flatnonzero(~mask)
            if other.size:
                res[other] = [self._contains(int(v)) for v in arr[other].tolist()]
            if valid is not None:
                res &= valid
            return res.tolist()
        contains = self._contains
        if n < _SORT_THRESHOLD:
            out = list(map(contains, arr.tolist()))
        else:
            order = np.argsort(arr, kind="stable")
            found_sorted = np.fromiter(map(contains, arr[order].tolist()),
                                       dtype=bool, count=n)
            res = np.empty(n, dtype=bool)
            res[order] = found_sorted
            if valid is not None:
                res &= valid
                valid = None
            out = res.tolist()
        if valid is not None:
            out = [a and b for a, b in zip(out, valid.tolist())]
        return out

    def __len__(self) -> int:
        return len(self._bm) + self._dense_count

    def __bool__(self) -> bool:
        return bool(self._bm) or self._dense_count > 0

    def __iter__(self):
        if self._dense is None:
            return iter(self._bm)
        return iter(self.to_array().tolist())

    def __eq__(self, other) -> bool:
        if isinstance(other, (set, frozenset)):
            return len(self) == len(other) and all(self.__contains__(v) for v in other)
        if not isinstance(other, NumberSet):
            return NotImplemented
        if self._dense is None and other._dense is None:
            return self._bm == other._bm
        return len(self) == len(other) and np.array_equal(self.to_array(), other.to_array())

    def _dense_values(self):
        """The dense layer's numbers, sorted (uint64)."""
        out = []
        step = 1 << 24
        for start in range(0, self._dense.size, step):
            chunk = self._dense[start:start + step]
            nz = np.flatnonzero(chunk)
            if not nz.size:
                continue
            bits = np.unpackbits(chunk[nz][:, None], axis=1, bitorder="little")
            rows, cols = np.nonzero(bits)
            i = (nz[rows].astype(np.int64) + start) * 8 + cols
            npa = i // 8_000_000
            out.append((_NANP_BASE + (npa + 200) * 10_000_000 + (i - npa * 8_000_000) + 2_000_000).astype(np.uint64))
        return np.concatenate(out) if out else np.empty(0, dtype=np.uint64)

    __hash__ = None  # immutable, but large: hashing it is never what you want

    def __repr__(self) -> str:
        return f"NumberSet(len={len(self)}, memory_bytes={self.memory_bytes()})"

    def to_array(self) -> np.ndarray:
        """All numbers, sorted, as a numpy uint64 array (copy)."""
        rest = np.frombuffer(self._bm.to_array(), dtype=np.uint64).copy()
        if self._dense is None:
            return rest
        return np.sort(np.concatenate([self._dense_values(), rest]))

    def with_changes(self, add=(), remove=()) -> "NumberSet":
        """A new set: this one without ``remove`` and then with ``add`` (iterables of
        non-negative ints). This set is left as it is (it may be in use elsewhere)."""
        add = np.asarray(list(add) if not isinstance(add, np.ndarray) else add, dtype=np.uint64)
        remove = np.asarray(list(remove) if not isinstance(remove, np.ndarray) else remove, dtype=np.uint64)
        if self._dense is not None:  # rare (>= 50M numbers): through the array
            arr = self.to_array()
            if remove.size:
                arr = arr[~np.isin(arr, remove)]
            return NumberSet.from_array(np.concatenate([arr, add]) if add.size else arr)
        bm = BitMap64(self._bm)
        if remove.size:
            bm.difference_update(BitMap64(array.array("Q", remove.tobytes())))
        if add.size:
            buf = array.array("Q")
            buf.frombytes(add.tobytes())
            bm.update(buf)
        return NumberSet._wrap(bm)

    def memory_bytes(self) -> int:
        """Size of the Roaring structure (its portable serialized size).

        This is the container payload plus a small per-container overhead;
        the live process footprint is within a few percent of it (the
        benchmark measures RSS to confirm).
        """
        dense = self._dense.nbytes if self._dense is not None else 0
        return int(self._bm.__sizeof__()) + dense

    # -- persistence ------------------------------------------------------

    def save(self, path) -> str:
        """Atomically write the set to ``path``; return the file's sha256 hex."""
        path = os.fspath(path)
        payload = self._bm.serialize()
        if self._dense is None:
            header = _HEADER.pack(_MAGIC, len(self._bm), len(payload))
            dense = b""
        else:
            header = _HEADER_V2.pack(_MAGIC_V2, len(self), len(payload), self._dense.nbytes)
            dense = memoryview(self._dense)
        h = hashlib.sha256(header)
        h.update(payload)
        h.update(dense)
        trailer = h.digest()
        h.update(trailer)
        file_digest = h.hexdigest()
        _write_atomic(path, path + ".tmp", (header, payload, dense, trailer))
        return file_digest

    @classmethod
    def load(cls, path, expected_sha256: Optional[str] = None) -> "NumberSet":
        """Read a file written by :meth:`save`.

        Raises :class:`RegistryError` if the file is missing or unreadable,
        truncated, not a registry file, fails its internal checksum, or its
        sha256 differs from ``expected_sha256``.
        """
        path = os.fspath(path)
        data = _read_whole(path, "DNC registry file")
        size = len(data)
        if expected_sha256 is not None:
            actual = hashlib.sha256(data).hexdigest()
            if actual != expected_sha256.strip().lower():
                raise RegistryError(
                    f"DNC registry file {path} checksum mismatch: expected sha256 "
                    f"{expected_sha256}, file has {actual}")
        if size < _HEADER.size + _DIGEST_LEN:
            raise RegistryError(
                f"DNC registry file {path} is truncated or not a registry file "
                f"({size} bytes)")
        if data[:8] == _MAGIC_V2:
            return cls._load_v2(path, data)
        magic, count, payload_len = _HEADER.unpack_from(data, 0)
        if magic != _MAGIC:
            raise RegistryError(
                f"{path} is not a DNC registry file (bad magic {magic!r})")
        expected_size = _HEADER.size + payload_len + _DIGEST_LEN
        if size != expected_size:
            raise RegistryError(
                f"DNC registry file {path} is truncated or has trailing data: "
                f"{size} bytes, header says {expected_size}")
        view = memoryview(data)
        body_end = _HEADER.size + payload_len
        digest = hashlib.sha256(view[:body_end]).digest()
        if digest != bytes(view[body_end:]):
            raise RegistryError(
                f"DNC registry file {path} is corrupt (internal checksum mismatch)")
        try:
            bm = BitMap64.deserialize(view[_HEADER.size:body_end])
        except Exception as e:  # pyroaring raises ValueError on bad payloads
            raise RegistryError(
                f"DNC registry file {path} is corrupt: cannot decode bitmap ({e})"
            ) from e
        finally:
            view.release()
        if len(bm) != count:
            raise RegistryError(
                f"DNC registry file {path} is corrupt: header says {count} numbers, "
                f"bitmap holds {len(bm)}")
        return cls._wrap(bm)

    @classmethod
    def _load_v2(cls, path, data) -> "NumberSet":
        """A file with the dense NANP layer (format version 2)."""
        size = len(data)
        if size < _HEADER_V2.size + _DIGEST_LEN:
            raise RegistryError(f"DNC registry file {path} is truncated ({size} bytes)")
        _, count, payload_len, dense_len = _HEADER_V2.unpack_from(data, 0)
        body_end = _HEADER_V2.size + payload_len + dense_len
        if size != body_end + _DIGEST_LEN or dense_len != _DENSE_BYTES:
            raise RegistryError(
                f"DNC registry file {path} is truncated or has trailing data: {size} bytes, "
                f"header says {body_end + _DIGEST_LEN}")
        view = memoryview(data)
        try:
            if hashlib.sha256(view[:body_end]).digest() != bytes(view[body_end:]):
                raise RegistryError(f"DNC registry file {path} is corrupt (internal checksum mismatch)")
            try:
                bm = BitMap64.deserialize(view[_HEADER_V2.size:_HEADER_V2.size + payload_len])
            except Exception as e:
                raise RegistryError(f"DNC registry file {path} is corrupt: cannot decode bitmap ({e})") from e
        finally:
            view.release()
        dense = np.frombuffer(data, dtype=np.uint8, count=dense_len, offset=_HEADER_V2.size + payload_len)
        if count < len(bm):
            raise RegistryError(f"DNC registry file {path} is corrupt: header says {count} numbers")
        return cls._wrap(bm, dense, count - len(bm))


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------

_JUNK_EXAMPLES = 10
_JUNK_TEXT_MAX = 200
_BLOCK_BYTES = 16 << 20
_LINES_BATCH = 1 << 19
_UNIQUE_STEP = 1 << 24

_NANP_RE = re.compile(
    r"^(?:\+?1[ .-]*)?(?:\((\d{3})\)|(\d{3}))[ .-]*(\d{3})[ .-]*(\d{4})$", re.ASCII)
_FTC_AREA_RE = re.compile(r"^\d{3}$", re.ASCII)
_FTC_NUM_RE = re.compile(r"^\d{7}$", re.ASCII)
_INTL_SEP_RE = re.compile(r"[ .()-]", re.ASCII)
_DIGITS_RE = re.compile(r"^\d+$", re.ASCII)
_ALPHA_RE = re.compile(r"[^\W\d_]")


def _check_cc(country_code) -> str:
    cc = str(country_code).strip().lstrip("+")
    if not cc.isdigit() or not (1 <= len(cc) <= 3) or cc.startswith("0"):
        raise ValueError(f"invalid country code: {country_code!r}")
    return cc


def _nanp_ok(national: str) -> bool:
    return national[0] in "23456789" and national[3] in "23456789"


def _parse_line(text: str, cc: str) -> Optional[int]:
    """Reference parser for one stripped, non-blank, non-comment line.

    Returns the E.164 integer, or None if the line is junk.
    """
    if cc == "1":
        if "," in text:
            fields = text.split(",")
            area = fields[0].strip().strip('"').strip()
            num = fields[1].strip().strip('"').strip()
            if _FTC_AREA_RE.match(area) and _FTC_NUM_RE.match(num):
                national = area + num
                return 10_000_000_000 + int(national) if _nanp_ok(national) else None
            return None
        s = text.strip('"').strip()
        m = _NANP_RE.match(s)
        if m is None:
            return None
        national = (m.group(1) or m.group(2)) + m.group(3) + m.group(4)
        return 10_000_000_000 + int(national) if _nanp_ok(national) else None
    s = _INTL_SEP_RE.sub("", text.strip('"').strip())
    if s.startswith("+"):
        digits = s[1:]
        if not _DIGITS_RE.match(digits) or not digits.startswith(cc):
            return None
    elif s.startswith("0") and len(s) > 1 and s[1] != "0":
        if not _DIGITS_RE.match(s):
            return None
        digits = cc + s[1:]
    elif s.startswith(cc) and _DIGITS_RE.match(s) and len(s) >= len(cc) + 7:
        digits = s  # international form without the "+" (447700900123)
    else:
        return None
    if not 7 <= len(digits) <= 15:
        return None
    return int(digits)


class _Template:
    """A fixed-width line shape, e.g. ``DDD,DDDDDDD`` (D = national digit)."""

    __slots__ = ("width", "extra_fields", "digit_cols", "lit_cols", "lit_vals",
                 "prefix", "nanp", "no_leading_zero")

    def __init__(self, shape: str, cc: str, extra_fields=False, nanp=False,
                 no_leading_zero=False):
        self.width = len(shape)
        self.extra_fields = extra_fields
        self.digit_cols = np.array([i for i, c in enumerate(shape) if c == "D"],
                                   dtype=np.intp)
        self.lit_cols = np.array([i for i, c in enumerate(shape) if c != "D"],
                                 dtype=np.intp)
        self.lit_vals = np.frombuffer(
            "".join(c for c in shape if c != "D").encode("ascii"), dtype=np.uint8)
        self.prefix = np.uint64(int(cc) * 10 ** len(self.digit_cols))
        self.nanp = nanp
        self.no_leading_zero = no_leading_zero


def _templates_for(cc: str):
    if cc == "1":
        shapes = [
            ("DDDDDDDDDD", False),
            ("DDD,DDDDDDD", True),
            ('"DDD","DDDDDDD"', True),
            ("+1DDDDDDDDDD", False),
            ("1DDDDDDDDDD", False),
            ("DDD-DDD-DDDD", False),
            ("(DDD) DDD-DDDD", False),
        ]
        return [_Template(s, cc, extra_fields=x, nanp=True) for s, x in shapes]
    out = []
    for k in range(max(1, 7 - len(cc)), 15 - len(cc) + 1):
        out.append(_Template("+" + cc + "D" * k, cc))
        out.append(_Template("0" + "D" * k, cc, no_leading_zero=True))
    return out


class _Accumulator:
    """Parses newline-terminated byte blocks; keeps numbers and stats."""

    def __init__(self, cc: str):
        self.cc = cc
        self.templates = _templates_for(cc)
        self.chunks: list = []
        self.parsed = 0
        self.lines = 0
        self.junk = 0
        self.header = 0
        self.skipped = 0  # blank and comment lines
        self.junk_examples: list = []

    # ----------------------------------------------------------------- blocks

    def feed(self, block: bytes) -> None:
        """``block`` must be empty or end with ``b"\\n"``."""
        if not block:
            return
        buf = np.frombuffer(block, dtype=np.uint8)
        ends = np.flatnonzero(buf == 10)
        n = ends.size
        starts = np.empty(n, dtype=np.intp)
        starts[0] = 0
        np.add(ends[:-1], 1, out=starts[1:])
        # Drop a trailing \r (CRLF files).
        nonempty = ends > starts
        cr = np.zeros(n, dtype=bool)
        cr[nonempty] = buf[ends[nonempty] - 1] == 13
        ends = ends - cr
        lengths = ends - starts
        line0 = self.lines  # 0-based number of the block's first line
        self.lines += n

        pending = np.ones(n, dtype=bool)
        for t in self.templates:
            w = t.width
            if t.extra_fields:
                cand = np.flatnonzero(pending & (lengths >= w))
                if cand.size:
                    # The char after the shape is the line end or a comma.
                    nxt = buf[starts[cand] + w]
                    cand = cand[(lengths[cand] == w) | (nxt == 44)]
            else:
                cand = np.flatnonzero(pending & (lengths == w))
            if cand.size == 0:
                continue
            ok, vals = self._match(buf, starts[cand], t)
            good = cand[ok]
            if good.size:
                pending[good] = False
                self.chunks.append(vals[ok])
                self.parsed += int(good.size)

        rest = np.flatnonzero(pending)
        if rest.size:
            self._slow_lines(block, starts[rest].tolist(), ends[rest].tolist(),
                             (rest + line0 + 1).tolist())

    @staticmethod
    def _match(buf: np.ndarray, pos: np.ndarray, t: _Template):
        """Vectorised check of template ``t`` at line starts ``pos``."""
        # Gather each candidate line's bytes into an (N, width) matrix: fancy
        # indexing rows of a sliding window view copies `width` contiguous
        # bytes per line.
        win = np.lib.stride_tricks.sliding_window_view(buf, t.width)
        mat = win[pos]
        ok = np.ones(pos.size, dtype=bool)
        if t.lit_cols.size:
            ok &= (mat[:, t.lit_cols] == t.lit_vals).all(axis=1)
        d = mat[:, t.digit_cols]
        d -= 48  # uint8: non-digits wrap to >= 10
        ok &= (d < 10).all(axis=1)
        if t.nanp:
            ok &= (d[:, 0] >= 2) & (d[:, 3] >= 2)
        if t.no_leading_zero:
            ok &= d[:, 0] != 0
        # Horner on 32-bit halves: at most 8 digits fit easily in uint32.
        nd = d.shape[1]
        split = max(0, nd - 8)
        lo = np.zeros(pos.size, dtype=np.uint32)
        for j in range(split, nd):
            lo *= 10
            lo += d[:, j]
        if split:
            hi = np.zeros(pos.size, dtype=np.uint64)
            for j in range(split):
                hi *= 10
                hi += d[:, j]
            vals = hi * np.uint64(10 ** (nd - split))
            vals += lo
        else:
            vals = lo.astype(np.uint64)
        vals += t.prefix
        return ok, vals

    def _slow_lines(self, block: bytes, starts, ends, linenos) -> None:
        cc = self.cc
        out = []
        for s, e, lineno in zip(starts, ends, linenos):
            raw = block[s:e].decode("utf-8", "replace")
            text = raw.strip()
            if lineno == 1:
                text = text.lstrip("\ufeff").strip()
            if not text or text.startswith("#"):
                self.skipped += 1
                continue
            v = _parse_line(text, cc)
            if v is not None:
                out.append(v)
                continue
            if lineno == 1 and _ALPHA_RE.search(text):
                self.header += 1
                continue
            self.junk += 1
            if len(self.junk_examples) < _JUNK_EXAMPLES:
                self.junk_examples.append(
                    {"line": lineno, "text": raw.strip()[:_JUNK_TEXT_MAX]})
        if out:
            self.chunks.append(np.array(out, dtype=np.uint64))
            self.parsed += len(out)

    # ---------------------------------------------------------------- result

    def result(self):
        arr = _sorted_unique(self.chunks)
        self.chunks = []
        stats = {
            "lines": self.lines,
            "numbers": int(arr.size),
            "duplicates": self.parsed - int(arr.size),
            "junk": self.junk,
            "junk_examples": list(self.junk_examples),
            "header": self.header,
            "skipped": self.skipped,
            "parsed": self.parsed,
        }
        return arr, stats


def _sorted_unique(chunks: list) -> np.ndarray:
    """Concatenate, sort in place and drop duplicates.

    Avoids ``np.unique``: on numpy 2.4 it is pathologically slow for large
    uint64 arrays (>100 s for 50M values versus ~4 s for sort).
    """
    total = sum(int(c.size) for c in chunks)
    out = np.empty(total, dtype=np.uint64)
    pos = 0
    while chunks:
        c = chunks.pop(0)
        out[pos:pos + c.size] = c
        pos += c.size
        del c
    if total <= 1:
        return out
    out.sort()
    # Compact duplicates in place, a slice at a time: peak memory stays at
    # one array instead of two (2 GB saved at 250M numbers).
    w = 1
    step = _UNIQUE_STEP
    for i in range(1, total, step):
        j = min(i + step, total)
        cur = out[i:j]
        u = cur[cur != out[i - 1:j - 1]]  # copy, so overlapping write is safe
        out[w:w + u.size] = u
        w += u.size
        del cur, u
    return out[:w] if w < total else out


def parse_registry_lines(lines: Iterable[str], country_code="1"):
    """Parse DNC lines (str, with or without line endings).

    Returns ``(numbers, stats)``: a sorted, duplicate-free ``np.uint64`` array
    and a stats dict with ``lines``, ``numbers`` (unique), ``duplicates``,
    ``junk``, ``junk_examples`` (up to 10 ``{"line", "text"}``, 1-based line
    numbers), plus ``header`` (0/1), ``skipped`` (blank/comment lines) and
    ``parsed`` (valid lines, duplicates included).
    """
    cc = _check_cc(country_code)
    acc = _Accumulator(cc)
    batch: list = []
    for line in lines:
        line = line.rstrip("\r\n")
        if "\n" in line:  # keep one input item = one line
            line = line.replace("\n", " ")
        batch.append(line)
        if len(batch) >= _LINES_BATCH:
            acc.feed(("\n".join(batch) + "\n").encode("utf-8", "replace"))
            batch = []
    if batch:
        acc.feed(("\n".join(batch) + "\n").encode("utf-8", "replace"))
    return acc.result()


def parse_registry_file(path, country_code="1",
                        progress: Optional[Callable[[int, int], None]] = None):
    """Parse a DNC file into ``(NumberSet, stats)``; see parse_registry_lines.

    The file is read in 16 MiB binary blocks and parsed block-wise, so memory
    is ~8 bytes per valid number plus one block.  ``progress``, if given, is
    called as ``progress(bytes_done, bytes_total)`` after each block.
    Nothing is written anywhere: persist the result with ``NumberSet.save``
    (atomic), so a crash mid-import leaves the previous registry intact.
    """
    cc = _check_cc(country_code)
    path = os.fspath(path)
    acc = _Accumulator(cc)
    try:
        total = os.path.getsize(path)
        with open(path, "rb") as f:
            done = 0
            tail = b""
            while True:
                chunk = f.read(_BLOCK_BYTES)
                if not chunk:
                    break
                done += len(chunk)
                if tail:
                    chunk = tail + chunk
                cut = chunk.rfind(b"\n")
                if cut < 0:
                    tail = chunk
                    continue
                tail = chunk[cut + 1:]
                acc.feed(chunk[:cut + 1] if cut + 1 < len(chunk) else chunk)
                del chunk
                if progress is not None:
                    progress(done, total)
            if tail:
                acc.feed(tail + b"\n")
                if progress is not None:
                    progress(done, total)
    except FileNotFoundError:
        raise RegistryError(f"DNC source file not found: {path}") from None
    except IsADirectoryError:
        raise RegistryError(f"DNC source path is a directory: {path}") from None
    except PermissionError as e:
        raise RegistryError(f"cannot read DNC source file {path}: {e}") from e
    arr, stats = acc.result()
    numbers = NumberSet.from_array(arr)
    del arr
    return numbers, stats


# ---------------------------------------------------------------------------
# Company and campaign list snapshots
# ---------------------------------------------------------------------------

_LIST_MAGIC = b"DNCLIST\x01"
_LIST_HEAD = struct.Struct("<8sI")  # magic, meta length
_LIST_PAYLOAD = struct.Struct("<Q")  # roaring payload length
_META_MAX = 1 << 30


def save_list_snapshot(path, numbers: "NumberSet", prefixes, meta: dict) -> str:
    """Atomically write one DNC list (exact numbers and prefix patterns) with ``meta``
    (JSON-able: which list and version it is) to ``path``; return the file's sha256.

    Layout: magic, meta length (uint32 LE), meta (JSON, with ``prefixes`` and
    ``count`` added), payload length (uint64 LE), the portable 64-bit Roaring
    serialization of the numbers, sha256 of everything before it. Written to a
    temporary file of its own (two processes may save the same list at once),
    fsynced, renamed over ``path``."""
    path = os.fspath(path)
    bm = numbers._bm
    if numbers._dense is not None:
        bm = BitMap64()
        buf = array.array("Q")
        buf.frombytes(numbers.to_array().tobytes())
        bm.update(buf)
    body = dict(meta, prefixes=sorted(prefixes), count=len(bm))
    meta_b = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")
    payload = bm.serialize()
    parts = [_LIST_HEAD.pack(_LIST_MAGIC, len(meta_b)), meta_b, _LIST_PAYLOAD.pack(len(payload)), payload]
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    parts.append(h.digest())
    _write_atomic(path, f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp", parts)
    return hashlib.sha256(b"".join(parts)).hexdigest()


def _read_whole(path, what):
    """A file's bytes, or RegistryError naming ``what`` is missing or unreadable."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise RegistryError(f"{what} not found: {path}") from None
    except OSError as e:
        raise RegistryError(f"cannot read {what} {path}: {e}") from e


def load_list_snapshot(path, expect: Optional[dict] = None):
    """Read a file written by :func:`save_list_snapshot`: ``(NumberSet, prefixes,
    meta)``. Raises :class:`RegistryError` when the file is missing, unreadable,
    truncated, fails its checksum, or its meta differs from ``expect`` on any key
    given there (a snapshot of another list, version or database)."""
    path = os.fspath(path)
    data = _read_whole(path, "DNC list snapshot")
    size = len(data)
    if size < _LIST_HEAD.size + _LIST_PAYLOAD.size + _DIGEST_LEN or data[:8] != _LIST_MAGIC:
        raise RegistryError(f"{path} is not a DNC list snapshot (or is truncated)")
    view = memoryview(data)
    try:
        if hashlib.sha256(view[:size - _DIGEST_LEN]).digest() != bytes(view[size - _DIGEST_LEN:]):
            raise RegistryError(f"DNC list snapshot {path} is corrupt (checksum mismatch)")
        _, meta_len = _LIST_HEAD.unpack_from(data, 0)
        at = _LIST_HEAD.size + meta_len
        if meta_len > _META_MAX or at + _LIST_PAYLOAD.size > size - _DIGEST_LEN:
            raise RegistryError(f"DNC list snapshot {path} is corrupt (bad header)")
        try:
            meta = json.loads(bytes(view[_LIST_HEAD.size:at]).decode("utf-8"))
        except ValueError as e:
            raise RegistryError(f"DNC list snapshot {path} is corrupt (meta: {e})") from None
        (payload_len,) = _LIST_PAYLOAD.unpack_from(data, at)
        at += _LIST_PAYLOAD.size
        if at + payload_len != size - _DIGEST_LEN:
            raise RegistryError(f"DNC list snapshot {path} is corrupt (length mismatch)")
        try:
            bm = BitMap64.deserialize(view[at:at + payload_len])
        except Exception as e:
            raise RegistryError(f"DNC list snapshot {path} is corrupt: cannot decode bitmap ({e})") from e
    finally:
        view.release()
    if not isinstance(meta, dict) or meta.get("count") != len(bm) or not isinstance(meta.get("prefixes"), list):
        raise RegistryError(f"DNC list snapshot {path} is corrupt (count or prefixes)")
    for key, want in (expect or {}).items():
        if meta.get(key) != want:
            raise RegistryError(f"DNC list snapshot {path} is for {key} {meta.get(key)!r}, not {want!r}")
    return NumberSet._wrap(bm), tuple(meta["prefixes"]), meta
