"""Agent PINs: only a salted scrypt hash is kept; checking one costs tens of ms, so
the live dialer runs :func:`verify_pin` off the reactor thread."""

import hashlib
import hmac
import secrets

from .errors import InputError

_SCRYPT = (2 ** 14, 8, 1)  # n, r, p: ~16 MiB, tens of ms per check


def hash_pin(pin, salt=None):
    salt = salt if salt is not None else secrets.token_bytes(16)
    n, r, p = _SCRYPT
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def verify_pin(pin, stored):
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(str(pin).encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(digest) // 2)
    except (ValueError, AttributeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def check_pin(pin):
    pin = str(pin or "")
    if not pin.isdigit() or not 4 <= len(pin) <= 12 or not pin.isascii():
        raise InputError("a PIN is 4 to 12 digits")
    if len(set(pin)) == 1 or pin in "01234567890123456789" or pin in "98765432109876543210":
        raise InputError("PIN too easy to guess (one digit repeated or a run like 1234): choose another")
    return pin
