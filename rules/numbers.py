"""Phone numbers: normalisation to E.164 and the facts the rules need.

Facts (validity, type, zones, state) are computed once per number. For NANP
numbers (+1) every fact libphonenumber gives depends only on the country code,
area code and exchange (+1 NPA NXX), so they are computed once per exchange and
shared; tests check this against direct computation on random numbers.
"""

import functools
import re
import unicodedata
from dataclasses import dataclass, field

import phonenumbers
from phonenumbers import geocoder, shortnumberinfo, timezone as pn_timezone
from phonenumbers import PhoneNumberType

_UNKNOWN_ZONE = "Etc/Unknown"

# phonenumbers' number types by our lower-case names (used in rule sets)
TYPE_NAMES = {
    PhoneNumberType.FIXED_LINE: "fixed_line",
    PhoneNumberType.MOBILE: "mobile",
    PhoneNumberType.FIXED_LINE_OR_MOBILE: "fixed_line_or_mobile",
    PhoneNumberType.TOLL_FREE: "toll_free",
    PhoneNumberType.PREMIUM_RATE: "premium_rate",
    PhoneNumberType.SHARED_COST: "shared_cost",
    PhoneNumberType.VOIP: "voip",
    PhoneNumberType.PERSONAL_NUMBER: "personal_number",
    PhoneNumberType.PAGER: "pager",
    PhoneNumberType.UAN: "uan",
    PhoneNumberType.VOICEMAIL: "voicemail",
    PhoneNumberType.UNKNOWN: "unknown",
}

US_STATES = {
    "Alabama": "AL", "Alaska": "AK", "Arizona": "AZ", "Arkansas": "AR", "California": "CA",
    "Colorado": "CO", "Connecticut": "CT", "Delaware": "DE", "District of Columbia": "DC",
    "Washington D.C.": "DC", "Washington DC": "DC", "Florida": "FL", "Georgia": "GA", "Hawaii": "HI",
    "Idaho": "ID", "Illinois": "IL", "Indiana": "IN", "Iowa": "IA", "Kansas": "KS", "Kentucky": "KY",
    "Louisiana": "LA", "Maine": "ME", "Maryland": "MD", "Massachusetts": "MA", "Michigan": "MI",
    "Minnesota": "MN", "Mississippi": "MS", "Missouri": "MO", "Montana": "MT", "Nebraska": "NE",
    "Nevada": "NV", "New Hampshire": "NH", "New Jersey": "NJ", "New Mexico": "NM", "New York": "NY",
    "North Carolina": "NC", "North Dakota": "ND", "Ohio": "OH", "Oklahoma": "OK", "Oregon": "OR",
    "Pennsylvania": "PA", "Rhode Island": "RI", "South Carolina": "SC", "South Dakota": "SD",
    "Tennessee": "TN", "Texas": "TX", "Utah": "UT", "Vermont": "VT", "Virginia": "VA",
    "Washington": "WA", "West Virginia": "WV", "Wisconsin": "WI", "Wyoming": "WY",
}
STATE_CODES = frozenset(US_STATES.values())

_STRIP = str.maketrans("", "", " -.()/\t\u00a0")
_ALLOWED = frozenset("0123456789+")


class NumberError(ValueError):
    pass


@dataclass(slots=True, eq=False)
class NumberFacts:
    """What is known about one dialled string. ``e164`` is None when it is not a
    subscriber number (short codes, invalid input); ``error`` says why.
    Treat as immutable (not frozen only because frozen construction costs 2x on
    the screening hot path)."""

    input: str
    e164: object = None  # "+12125550100" or None
    value: object = None  # 12125550100 (int of the E.164 digits) or None
    region: object = None  # "US", "GB", ... or None
    kind: str = "invalid"  # one of TYPE_NAMES' values, "short_code" or "invalid"
    zones: tuple = ()  # IANA zones of the number's area; () when unknown
    state: object = None  # US state (two letters) of the area code, or None
    emergency: bool = False  # is or connects to an emergency number
    short_code: object = None  # the short code digits ("911", "211") when it is one
    error: object = None  # why the input is not a valid number
    # what numbers of the same exchange share (region, kind, zones, state): the engine
    # caches its per-exchange work under it. None: derive it from those fields.
    profile: object = field(default=None, compare=False, repr=False)

    @property
    def valid(self):
        return self.e164 is not None

    @property
    def exchange(self):
        """Digits of the number without its last four (NPA-NXX for NANP), or None."""
        return self.e164[1:-4] if self.e164 else None

    @property
    def line(self):
        return int(self.e164[-4:]) if self.e164 else None


def _nanp_region_of(cc_digits):
    return phonenumbers.region_code_for_country_code(int(cc_digits))


@functools.lru_cache(maxsize=None)
def _all_country_zones(region):
    return frozenset(pn_timezone._country_level_time_zones_for_number(
        phonenumbers.parse(phonenumbers.format_number(
            phonenumbers.example_number(region), phonenumbers.PhoneNumberFormat.E164))))


def _zones_of(n):
    zones = pn_timezone.time_zones_for_number(n)
    if not zones or zones == (_UNKNOWN_ZONE,) or _UNKNOWN_ZONE in zones:
        return ()
    # the whole-country list (toll-free style numbers, unknown exchanges) says nothing
    region = phonenumbers.region_code_for_number(n)
    if len(zones) > 1 and region and frozenset(zones) >= _all_country_zones(region):
        return ()
    return tuple(sorted(zones))


def _state_of(n, region):
    if region != "US":
        return None
    desc = geocoder.description_for_number(n, "en")
    if not desc:
        return None
    if ", " in desc:
        tail = desc.rsplit(", ", 1)[1]
        if tail in STATE_CODES:
            return tail
    return US_STATES.get(desc)


def _facts_from_parsed(raw, n):
    """Compute facts from a parsed phonenumbers object (slow path)."""
    if not phonenumbers.is_valid_number(n):
        return NumberFacts(input=raw, error="not a valid phone number")
    region = phonenumbers.region_code_for_number(n)
    e164 = phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)
    nsn = phonenumbers.national_significant_number(n)
    emergency = bool(region) and shortnumberinfo.connects_to_emergency_number(nsn, region)
    return NumberFacts(
        input=raw,
        e164=e164,
        value=int(e164[1:]),
        region=region,
        kind=TYPE_NAMES.get(phonenumbers.number_type(n), "unknown"),
        zones=_zones_of(n),
        state=_state_of(n, region),
        emergency=emergency,
    )


@functools.lru_cache(maxsize=1 << 16)
def _nanp_exchange_facts(prefix7):
    """Facts shared by every number of one NANP exchange (``prefix7`` = '1NPANXX')."""
    n = phonenumbers.parse("+" + prefix7 + "0000")
    return _facts_from_parsed("", n)


@functools.lru_cache(maxsize=1 << 18)
def _general_facts(e164_digits):
    try:
        n = phonenumbers.parse("+" + e164_digits)
    except phonenumbers.NumberParseException:
        return NumberFacts(input="", error="not a valid phone number")
    return _facts_from_parsed("", n)


def _short_code_facts(raw, digits, region, special_codes):
    """Short codes: emergency numbers and N11/service codes. ``digits`` as dialled
    in ``region``, without '+'."""
    emergency = bool(region) and (
        shortnumberinfo.is_emergency_number(digits, region)
        or shortnumberinfo.connects_to_emergency_number(digits, region)
    )
    if isinstance(special_codes, dict):
        special_codes = special_codes.get(region, ())
    if emergency or digits in special_codes:
        return NumberFacts(input=raw, kind="short_code", short_code=digits, emergency=emergency,
                           region=region, error="a short code, not a subscriber number")
    return None


@functools.lru_cache(maxsize=None)
def country_code_of(region):
    return phonenumbers.country_code_for_region(region) if region else 0


def _split_country_code(e164_digits):
    for i in (1, 2, 3):
        cc = int(e164_digits[:i])
        if cc in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return e164_digits[:i], phonenumbers.COUNTRY_CODE_TO_REGION_CODE[cc][0]
    return None, None


_NANP_REGIONS = frozenset(phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1])


def normalise(raw, region="US", special_codes=frozenset()):
    """Facts for a number written by a person (see :func:`_normalise`). This wrapper
    is the hot-path shortcut for plain North American numbers, the bulk of lists."""
    if raw.__class__ is str and raw.isascii():
        s = raw.translate(_STRIP_ALL)
        n = len(s)
        if n == 12:
            d = s[1:] if s[0] == "+" and s[1] == "1" else None
        elif n == 10:
            d = "1" + s if region in _NANP_REGIONS else None
        elif n == 11:
            d = s if s[0] == "1" and region in _NANP_REGIONS else None
        else:
            d = None
        if d is not None and d.isdigit() and d[1] in "23456789" and (n == len(raw) or _WELL_FORMED(raw)):
            base = _EXCHANGES.get(d[:7])
            if base is None:
                base = _EXCHANGES[d[:7]] = _nanp_exchange_facts(d[:7])
            if base.e164 is not None:
                return NumberFacts(raw, "+" + d, int(d), base.region, base.kind, base.zones, base.state,
                                   base.emergency, None, None, base)
    return _normalise(raw, region, special_codes)


_STRIP_ALL = str.maketrans("", "", " -.()/\t\u00a0\r\n\v\f")
_EXCHANGES = {}  # '1NPANXX' -> facts, in front of the LRU cache (same objects)

# The shape of a written number (ASCII, after _asciify): an optional "+", then digit
# runs and parenthesised groups of digits, separated by spaces, "-", "." or "/".
# Possessive quantifiers: no backtracking, linear on any input.
_ITEM = r"(?:[0-9]++|\([ ]*+[0-9][0-9 ]*+\))"
_SEP = r"[ \t\u00a0./-]"
_WELL_FORMED = re.compile(
    rf"[ \t\u00a0\r\n\v\f]*+(?:\+[ \t\u00a0]*+)?{_ITEM}(?:{_SEP}*+{_ITEM})*+[ \t\u00a0\r\n\v\f]*+\Z").match
_SEPARATORS = frozenset(" \t\u00a0./-")
# characters people paste that mean something ASCII: full-width plus and brackets
_LOOKALIKE = {"\uff0b": "+", "\uff08": "(", "\uff09": ")", "\u2212": "-", "\u00b7": "."}


def _char_name(c):
    return f"{c!r} (U+{ord(c):04X})" if not c.isascii() or not c.isprintable() else repr(c)


def _asciify(s):
    """A number written with other scripts' decimal digits (Arabic-Indic, full-width,
    Devanagari...), Unicode dashes and spaces, as ASCII: (text, None), or (None, why)."""
    out = []
    for c in s:
        if c.isascii():
            out.append(c)
            continue
        d = unicodedata.decimal(c, None)
        if d is not None:
            out.append(str(d))
        elif c in _LOOKALIKE:
            out.append(_LOOKALIKE[c])
        else:
            cat = unicodedata.category(c)
            if cat == "Pd":
                out.append("-")
            elif cat == "Zs":
                out.append(" ")
            elif c.isalpha():
                return None, "letters are not allowed in a phone number"
            else:
                return None, f"unexpected character {_char_name(c)} in a phone number"
    return "".join(out), None


def _malformed(s):
    """Why the stripped ASCII text ``s`` is not written like a phone number (it failed
    _WELL_FORMED). Only called on failure, so it may be slow."""
    for c in s:
        if c.isalpha():
            return "letters are not allowed in a phone number"
    for c in s:
        if not (c.isdigit() or c in _SEPARATORS or c in "()+"):
            return f"unexpected character {_char_name(c)} in a phone number"
    if "+" in s[1:]:
        return "'+' may only come first, before the country code"
    if s[0] == "+":
        rest = s[1:].lstrip(" \t\u00a0")
        if not rest or not (rest[0].isdigit() or rest[0] == "("):
            return "'+' must be followed by the country code"
        s = rest
    if s[0] in _SEPARATORS:
        return f"a phone number cannot start with {s[0]!r}"
    if s[-1] in _SEPARATORS:
        return f"a phone number cannot end with {s[-1]!r}"
    depth = 0
    group = ""
    for c in s:
        if c == "(":
            if depth:
                return "nested parentheses in a phone number"
            depth, group = 1, ""
        elif c == ")":
            if not depth:
                return "')' without its '(' in a phone number"
            if not any(ch.isdigit() for ch in group):
                return "empty parentheses in a phone number"
            if group.strip(" 0123456789"):
                return f"only digits may stand in parentheses, not {group!r}"
            depth = 0
        elif depth:
            group += c
    if depth:
        return "'(' without its ')' in a phone number"
    return "not written like a phone number"


def _normalise(raw, region="US", special_codes=frozenset()):
    """Facts for a number written by a person. Never raises for bad input: an
    unusable string gives facts with ``error`` set.

    ``region`` is the default region for numbers written without a country code.
    ``special_codes`` are short codes that the callee's rule set names (N11, 988),
    either one collection or a mapping of region to collection; they are
    recognised bare and with a ``1``/``+1`` (or own country code) in front.
    """
    if raw is None:
        return NumberFacts(input="", error="empty")
    raw_s = str(raw)
    s = raw_s.strip()
    if not s.isascii():
        s, why = _asciify(s)
        if why is not None:
            return NumberFacts(input=raw_s, error=why)
        s = s.strip()
    if not s.translate(_STRIP):
        return NumberFacts(input=raw_s, error="empty")
    if not _WELL_FORMED(s):
        return NumberFacts(input=raw_s, error=_malformed(s))
    s = s.translate(_STRIP)
    if not _ALLOWED.issuperset(s) or "+" in s[1:]:  # unreachable after _WELL_FORMED; kept as a guard
        return NumberFacts(input=raw_s, error="unexpected characters in a phone number")
    plus = s[0] == "+"
    digits = s[1:] if plus else s
    if not digits:
        return NumberFacts(input=raw_s, error="no digits")
    region = (region or "").upper() or None
    cc = country_code_of(region) if region else 0
    if not plus:
        if digits.startswith("00"):
            plus, digits = True, digits[2:]
        elif cc == 1 and digits.startswith("011"):
            plus, digits = True, digits[3:]
        if plus and not digits:
            return NumberFacts(input=raw_s, error="no digits after the international prefix")
    if not plus:
        if len(digits) <= 6:
            f = _short_code_facts(raw_s, digits, region, special_codes)
            if f is None and cc and digits.startswith(str(cc)):
                # 1-911, 1 411: the country code in front of a short code
                f = _short_code_facts(raw_s, digits[len(str(cc)):], region, special_codes)
            return f or NumberFacts(input=raw_s, region=region, error="too short to be a phone number")
        if cc == 1:
            if len(digits) == 10:
                digits = "1" + digits
            elif not (len(digits) == 11 and digits[0] == "1"):
                return NumberFacts(input=raw_s, region=region,
                                   error=f"{len(digits)} digits: a North American number has 10")
        elif cc:
            try:
                n = phonenumbers.parse(digits, region)
            except phonenumbers.NumberParseException as e:
                return NumberFacts(input=raw_s, error=f"not a phone number ({e._msg})")
            digits = str(n.country_code) + str(n.national_number)
        else:
            return NumberFacts(input=raw_s, error="no country code and no default region")
    # digits is now country code + national significant number
    ccs, cc_region = _split_country_code(digits)
    if ccs is None:
        return NumberFacts(input=raw_s, error="unknown country code")
    nsn = digits[len(ccs):]
    if len(nsn) <= 6:
        # a short code written with a country code in front: 1-911, +1 411, +44 999
        return (_short_code_facts(raw_s, nsn, cc_region, special_codes)
                or NumberFacts(input=raw_s, region=cc_region, error="too short to be a phone number"))
    if len(digits) > 15:
        return NumberFacts(input=raw_s, error="too long to be a phone number (E.164 has at most 15 digits)")
    if ccs == "1":
        if len(digits) != 11:
            return NumberFacts(input=raw_s, region=cc_region,
                               error=f"{len(nsn)} digits: a North American number has 10")
        base = _nanp_exchange_facts(digits[:7])
    else:
        base = _general_facts(digits)
    if base.e164 is None:
        # still flag numbers that would reach an emergency service (911-555-...)
        emergency = shortnumberinfo.connects_to_emergency_number(nsn, cc_region) if cc_region != "001" else False
        return NumberFacts(input=raw_s, region=cc_region, emergency=emergency,
                           error=base.error or "not a valid phone number")
    # outside +1, libphonenumber's own E.164: "+44 (0)20 ..." drops its trunk 0 and is the
    # same number (and DNC entry) as "+44 20 ..."
    e164 = "+" + digits if ccs == "1" else base.e164
    return NumberFacts(
        input=raw_s, e164=e164, value=int(e164[1:]), region=base.region, kind=base.kind,
        zones=base.zones, state=base.state, emergency=base.emergency,
        profile=base if digits[0] == "1" else None,
    )


def facts_direct(e164):
    """Facts computed without the exchange cache (used by tests to check the cache)."""
    n = phonenumbers.parse(e164)
    f = _facts_from_parsed(e164, n)
    return f


def split_country_code(e164_digits):
    """(country code digits, its first region) of E.164 digits (without '+'), or
    (None, None) when no country code starts them."""
    if not e164_digits or not e164_digits.isascii() or not e164_digits.isdigit() or e164_digits[0] == "0":
        return None, None
    return _split_country_code(e164_digits)


@functools.lru_cache(maxsize=None)
def national_lengths(cc):
    """The lengths a national significant number of country code ``cc`` (int) may have
    (libphonenumber's possible lengths over every region of the code); () if unknown."""
    out = set()
    for r in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(int(cc), ()):
        md = (phonenumbers.PhoneMetadata.metadata_for_nongeo_region(int(cc)) if r == "001"
              else phonenumbers.PhoneMetadata.metadata_for_region(r))
        if md is not None and md.general_desc is not None:
            out.update(md.general_desc.possible_length or ())
    return tuple(sorted(out))


def prefix_reach(digits):
    """At most how many numbers start with the E.164 prefix ``digits`` (without '+').
    +1: every 11-digit number with that start (10**(11 - len)); elsewhere the sum over
    the country's possible national lengths; without a known country code, every
    number of up to 15 digits."""
    cc, _ = split_country_code(digits)
    if cc == "1":
        return 10 ** max(0, 11 - len(digits))
    lengths = national_lengths(int(cc)) if cc else ()
    if not lengths:
        return sum(10 ** (n - len(digits)) for n in range(max(len(digits), 8), 16))
    rest = len(digits) - len(cc)
    return sum(10 ** (n - rest) for n in lengths if n >= rest) or 1


# the pieces parse_dnc_pattern shares for wildcards (+44 20*)
asciify = _asciify
well_formed = _WELL_FORMED
malformed = _malformed
