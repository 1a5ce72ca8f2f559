"""Globally unique, time-ordered call ids (UUID version 7, RFC 9562).

48 bits of Unix milliseconds, then 74 random bits (with a counter inside one
millisecond so ids made by one process sort in creation order). Two processes,
two restarts or two nodes never make the same id: a restart can no longer reuse
an earlier call's key and lose its record. The instant comes from the caller's
clock (the reactor's), so ids follow the time the dialer runs on.
"""

import os
import threading

_lock = threading.Lock()
_last = [0, 0]  # last millisecond, counter within it


def uuid7(ms):
    """A UUIDv7 string for the instant ``ms`` (epoch milliseconds)."""
    ms = int(ms) & ((1 << 48) - 1)
    with _lock:
        if ms <= _last[0]:
            ms = _last[0]
            _last[1] += 1
        else:
            _last[0], _last[1] = ms, int.from_bytes(os.urandom(2), "big") & 0x3FF
        seq = _last[1] & 0xFFF
        if _last[1] > 0xFFF:  # 4096 ids in one millisecond: borrow the next one
            _last[0], _last[1] = ms + 1, 0
            ms, seq = ms + 1, 0
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
