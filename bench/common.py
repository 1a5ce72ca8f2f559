"""Helpers the benchmarks share (run from bench/: Python puts the script's folder on the path)."""

import os
import tempfile


def pins(n):
    """``n`` distinct agent PINs that ``core.pins.check_pin`` accepts (not easy to guess)."""
    from core.errors import InputError
    from core.pins import check_pin
    out, k = [], 0
    while len(out) < n:
        k += 1
        pin = f"{(7919 * k + 1234) % 90000 + 10000}"
        try:
            out.append(check_pin(pin))
        except InputError:
            continue
    return out


def workdir(name):
    """A benchmark's default scratch folder, under the system's temporary directory."""
    return os.path.join(tempfile.gettempdir(), name)
