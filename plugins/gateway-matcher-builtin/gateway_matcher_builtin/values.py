"""Value checks: does a JSON value have the shape of a card number, an IBAN, an SSN, an email, a
phone number, an IP or MAC address, or a bearer token?

Every check takes any JSON value (str, int, float, bool, None, list, dict) and returns a bool; it
never raises. Containers are never a match: the privacy stage walks into them and checks leaves.
Numbers are checked where a number can carry the data: card numbers and international phone
numbers (E.164 digits without the ``+``). Booleans are never a match.

Checksums are checked where the format has one: Luhn for card numbers (together with the issuer
prefixes and lengths, so that a 13-digit millisecond timestamp is not a card), ISO 7064 mod 97-10
for IBANs. Phone numbers are parsed and validated with ``phonenumbers`` (Google's libphonenumber
metadata), IP addresses with the standard ``ipaddress`` module.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported at the first value shaped like a phone number: it cost every start ~40 ms (issue 19)
    import phonenumbers

__all__ = [
    "DEFAULT_PHONE_REGION",
    "iban_valid",
    "is_credit_card",
    "is_email",
    "is_iban",
    "is_ip",
    "is_mac",
    "is_phone",
    "is_ssn",
    "is_token",
    "luhn_valid",
    "normalize_email",
    "normalize_phone",
]

DEFAULT_PHONE_REGION = "US"
"""Region assumed for a phone number written without an international prefix, e.g.
``(415) 555-0132``. Numbers with ``+`` or ``00`` are parsed for the region they name."""

# --- cards ----------------------------------------------------------------------------------------

_CARD_SHAPE = re.compile(r"\d(?:[ -]?\d){12,18}")

# (lowest prefix, highest prefix, allowed lengths) per card network; prefixes of equal length.
_CARD_RANGES: tuple[tuple[str, str, frozenset[int]], ...] = (
    ("4", "4", frozenset({13, 16, 19})),  # Visa
    ("51", "55", frozenset({16})),  # Mastercard
    ("2221", "2720", frozenset({16})),  # Mastercard 2-series
    ("34", "34", frozenset({15})),  # American Express
    ("37", "37", frozenset({15})),
    ("300", "305", frozenset(range(14, 20))),  # Diners Club
    ("36", "36", frozenset(range(14, 20))),
    ("38", "39", frozenset(range(16, 20))),
    ("3528", "3589", frozenset(range(16, 20))),  # JCB
    ("6011", "6011", frozenset(range(16, 20))),  # Discover
    ("644", "649", frozenset(range(16, 20))),
    ("65", "65", frozenset(range(16, 20))),
    ("62", "62", frozenset(range(16, 20))),  # UnionPay
    ("81", "82", frozenset({16})),  # UnionPay 81, RuPay 82
    ("2200", "2204", frozenset(range(16, 20))),  # Mir
    ("50", "50", frozenset(range(13, 20))),  # Maestro
    ("56", "69", frozenset(range(13, 20))),
    ("9792", "9792", frozenset({16})),  # Troy
)


#: Each of the card ranges' prefixes (1 to 4 digits) with the lengths a number starting so may
#: have: a check is then four lookups, not a comparison per range (issue 19).
def _lengths_by_prefix() -> dict[str, frozenset[int]]:
    by_prefix: dict[str, frozenset[int]] = {}
    for low, high, lengths in _CARD_RANGES:
        for number in range(int(low), int(high) + 1):
            prefix = str(number).zfill(len(low))
            by_prefix[prefix] = by_prefix.get(prefix, frozenset()) | lengths
    return by_prefix


_CARD_LENGTHS = _lengths_by_prefix()
_NO_LENGTHS: frozenset[int] = frozenset()

#: Each digit doubled, its digits summed (Luhn's rule for every second digit from the right).
_LUHN_DOUBLED = str.maketrans("0123456789", "0246813579")


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` (ASCII digits only, at least two) passes the Luhn mod-10 check."""
    if len(digits) < 2 or not (digits.isascii() and digits.isdigit()):
        return False
    # The digits' values summed as their ASCII codes (48 to 57), in C: every second digit from
    # the right doubled (its digits summed) first.
    total = sum(digits[-1::-2].encode()) + sum(digits[-2::-2].translate(_LUHN_DOUBLED).encode())
    return (total - 48 * len(digits)) % 10 == 0


def _card_network_ok(digits: str) -> bool:
    length = len(digits)
    get = _CARD_LENGTHS.get
    return (
        length in get(digits[:1], _NO_LENGTHS)
        or length in get(digits[:2], _NO_LENGTHS)
        or length in get(digits[:3], _NO_LENGTHS)
        or length in get(digits[:4], _NO_LENGTHS)
    )


def is_credit_card(value: Any) -> bool:
    """A payment card number: 13-19 digits (as a string, optionally grouped with single spaces
    or dashes, or as an integer) with a known issuer prefix and length and a valid Luhn digit."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        if value <= 0:
            return False
        digits = str(value)
    elif isinstance(value, str):
        if not 13 <= len(value) <= 25 or not _CARD_SHAPE.fullmatch(value):
            return False
        digits = value.replace(" ", "").replace("-", "")
    else:
        return False
    return 13 <= len(digits) <= 19 and _card_network_ok(digits) and luhn_valid(digits)


# --- IBAN -----------------------------------------------------------------------------------------

# Length of the IBAN per country (SWIFT IBAN registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip

_IBAN_SHAPE = re.compile(r"[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30}")


def iban_valid(iban: str) -> bool:
    """True for an IBAN in electronic form (no spaces, any case) whose country is known, whose
    length is that country's and whose check digits pass ISO 7064 mod 97-10."""
    if not iban.isascii() or not iban.isalnum():
        return False
    iban = iban.upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban[2:4].isdigit():
        return False
    rearranged = iban[4:] + iban[:4]
    # A=10 ... Z=35; int(char, 36) maps digits to themselves and letters to 10-35.
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def is_iban(value: Any) -> bool:
    """An IBAN, electronic (``GB82WEST12345698765432``) or printed in groups
    (``GB82 WEST 1234 5698 7654 32``)."""
    if not isinstance(value, str) or not 15 <= len(value) <= 42 or not _IBAN_SHAPE.fullmatch(value):
        return False
    return iban_valid(value.replace(" ", ""))


# --- US social security numbers -------------------------------------------------------------------

_SSN_SHAPE = re.compile(r"(\d{3})([- ])(\d{2})\2(\d{4})")
_SSN_NEVER_VALID = frozenset({"078051120", "219099999", "457555462"})  # published sample numbers


def is_ssn(value: Any) -> bool:
    """A US social security number written ``AAA-GG-SSSS`` (or with spaces) that the SSA could
    issue: area not 000, 666 or 900-999, group not 00, serial not 0000, not a published sample.

    Nine bare digits are not matched: too many other identifiers look like that. A field named
    ``ssn`` is found by its key whatever its value looks like."""
    if not isinstance(value, str) or len(value) != 11:
        return False
    match = _SSN_SHAPE.fullmatch(value)
    if match is None or not value.isascii():
        return False
    area, _, group, serial = match.groups()
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return area + group + serial not in _SSN_NEVER_VALID


# A dotted quad: an IPv4 address to ``is_ip``, never a phone number to ``is_phone``.
_IPV4_SHAPE = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")

# --- email ----------------------------------------------------------------------------------------

# Local part: RFC 5322 dot-atoms (no quoted strings); domain: at least two labels, letters (any
# script), digits and inner hyphens, ending in an alphabetic or punycode top-level domain.
_EMAIL = re.compile(
    r"[\w!#$%&'*+/=?^`{|}~-]+(?:\.[\w!#$%&'*+/=?^`{|}~-]+)*"
    r"@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+(?:[^\W\d_]{2,63}|xn--[a-z0-9-]{1,59})"
)


def is_email(value: Any) -> bool:
    """An email address: ``local@domain.tld`` (at most 254 characters, local part at most 64)."""
    if not isinstance(value, str) or not 6 <= len(value) <= 254 or "@" not in value:
        return False
    if _EMAIL.fullmatch(value) is None:
        return False
    return len(value.rpartition("@")[0]) <= 64


def normalize_email(value: str) -> str:
    """The form ad platforms hash: surrounding whitespace removed, lower case."""
    return value.strip().lower()


# --- phone ----------------------------------------------------------------------------------------

# Only phone characters: an optional "tel:" and "+", digits, spaces, ( ) . - /, and an optional
# extension. Anything else (letters, ":" of times, "," of amounts) is not a phone number.
_PHONE_SHAPE = re.compile(
    r"(?:tel:)?\s*(\+|00)?\s*[\d(][\d ().\-/\u00a0]{5,30}\d(?:\s*(?:ext\.?|x|#)\s*\d{1,7})?", re.IGNORECASE
)
_PHONE_SEPARATORS = re.compile(r"[ ().\-/\u00a0]")


def _parse_phone(value: Any) -> phonenumbers.PhoneNumber | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        # A number cannot carry "+": read 11-15 digits as E.164 with the country code. Ten or fewer
        # digits are ambiguous with ids and timestamps in seconds.
        if not 10**10 <= value < 10**15:
            return None
        text, region = f"+{value}", None
    elif isinstance(value, str):
        if not 7 <= len(value) <= 48:
            return None
        text = value.strip()
        match = _PHONE_SHAPE.fullmatch(text)
        if match is None or _IPV4_SHAPE.fullmatch(text):  # 203.0.113.42 is no phone number
            return None
        if text[:4].lower() == "tel:":
            text = text[4:].lstrip()
        prefix = match.group(1)
        if prefix is None:
            # A national number must be written like one: with separators or parentheses, not as
            # bare digits (order numbers, timestamps, zip+4 codes).
            if not _PHONE_SEPARATORS.search(text):
                return None
            region = DEFAULT_PHONE_REGION
        else:
            region = None
            if prefix == "00":
                text = "+" + text[2:]
    else:
        return None
    import phonenumbers

    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None


def is_phone(value: Any) -> bool:
    """A phone number valid for its region: international (``+44 20 7946 0958``, ``0044...``,
    ``tel:+1...``), national with separators for :data:`DEFAULT_PHONE_REGION` (``(415)
    555-0132``), or an integer of 11-15 digits read as E.164 (``14155550132``)."""
    try:
        return _parse_phone(value) is not None
    except Exception:  # phonenumbers is strict about its own exception, but a matcher never raises
        return False


def normalize_phone(value: Any) -> str | None:
    """The E.164 form ad platforms hash (``+14155550132``), or None when ``value`` is no phone."""
    try:
        number = _parse_phone(value)
    except Exception:
        return None
    if number is None:
        return None
    import phonenumbers

    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# --- network addresses ----------------------------------------------------------------------------


# Cheap gate before ``ipaddress`` (whose failures raise, which costs ~10 us): only the characters
# an IPv6 address can have, two colons at least. ``ipaddress`` decides.
_IPV6_SHAPE = re.compile(r"[0-9A-Fa-f:.]+(?:%[\w.-]+)?")


def is_ip(value: Any) -> bool:
    """An IPv4 (dotted quad) or IPv6 address, as the ``ipaddress`` module reads it."""
    if not isinstance(value, str) or not 3 <= len(value) <= 64:  # "::" (unspecified) is no one's
        return False
    if _IPV4_SHAPE.fullmatch(value) is None and (value.count(":") < 2 or _IPV6_SHAPE.fullmatch(value) is None):
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


_MAC = re.compile(r"[0-9A-Fa-f]{2}([:-])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}|[0-9A-Fa-f]{4}(?:\.[0-9A-Fa-f]{4}){2}")


def is_mac(value: Any) -> bool:
    """A 48-bit MAC address: ``00:1A:2B:3C:4D:5E``, ``00-1a-2b-3c-4d-5e`` or ``001a.2b3c.4d5e``.

    Twelve bare hex digits are not matched (they look like any hex id)."""
    return isinstance(value, str) and len(value) in (14, 17) and _MAC.fullmatch(value) is not None


# --- tokens ---------------------------------------------------------------------------------------

_JWT = re.compile(r"(eyJ[A-Za-z0-9_-]+)\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"Bearer [A-Za-z0-9\-._~+/]{16,}=*", re.IGNORECASE)


def is_token(value: Any) -> bool:
    """A bearer credential: a JSON Web Token (three base64url parts whose header is a JSON object
    naming an ``alg``) or an ``Authorization`` value ``Bearer <token>``."""
    if not isinstance(value, str) or not 20 <= len(value) <= 16384:
        return False
    if _BEARER.fullmatch(value):
        return True
    match = _JWT.fullmatch(value)
    if match is None:
        return False
    header = match.group(1)
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(decoded, dict) and "alg" in decoded
