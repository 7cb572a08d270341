"""Value matching: card numbers (Luhn), IBAN (mod 97), SSN rules, email, phone, IP, MAC, tokens."""

from __future__ import annotations

from typing import Any

import pytest
from gateway_matcher_builtin import build_matchers, normalize_email, normalize_phone
from gateway_matcher_builtin.values import iban_valid, is_credit_card, is_iban, is_ssn, luhn_valid
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import MatcherType

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)

FULLWIDTH_CARD = "".join(chr(0xFF10 + int(d)) for d in "4111111111111111")  # fullwidth digits
FULLWIDTH_SSN = "-".join("".join(chr(0xFF10 + int(d)) for d in part) for part in ("123", "45", "6789"))

VALUES: dict[str, tuple[list[Any], list[Any]]] = {
    "credit_card": (
        ["4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111", 4111111111111111, "4222222222222",
         "5555555555554444", "2223003122003222", "378282246310005", "371449635398431", "6011111111111117",
         "3530111333300000", "30569309025904", "6200000000000005", "4000056655665556"],
        ["4111111111111112", "1700000000000", 1700000000000, 1700000000000000, "0000000000000000",
         "411111111111", "41111111111111111111", "4111  1111 1111 1111", "4111_1111_1111_1111", True,
         4111111111111111.0, "order 4111111111111111", FULLWIDTH_CARD, -4111111111111111, "",
         "7111111111111119"],
    ),
    "iban": (
        ["GB82WEST12345698765432", "GB82 WEST 1234 5698 7654 32", "gb82west12345698765432",
         "DE89370400440532013000", "FR1420041010050500013M02606", "NL91ABNA0417164300", "BE68539007547034",
         "CH9300762011623852957", "NO9386011117947", "MT84MALT011000012345MTLCAST001S",
         "LC55HEMM000100010012001200023015"],
        ["GB82WEST12345698765433", "GB28WEST12345698765432", "GB82WEST1234569876543", "XX82WEST12345698765432",
         "GB82-WEST-1234-5698-7654-32", "GB82  WEST 1234 5698 7654 32", "DE8937040044053201300", 12345,
         "GB00WEST12345698765432", "GBXXWEST12345698765432"],
    ),
    "social_security_number": (
        ["123-45-6789", "123 45 6789", "001-01-0001", "665-99-9999", "899-12-3456", "078-05-1121"],
        ["123456789", 123456789, "000-12-3456", "666-12-3456", "900-12-3456", "999-99-9999", "123-00-4567",
         "123-45-0000", "078-05-1120", "219-09-9999", "123-45 6789", "123-456-789", FULLWIDTH_SSN,
         " 123-45-6789"],
    ),
    "email": (
        ["jane@example.com", "Jane.Doe+tag@mail.example.co.uk", "j@x.io", "o'brien@example.ie", "müller@bücher.de",
         "user@xn--bcher-kva.de", "a_b-c@sub-domain.example.org"],
        ["jane@localhost", "jane@@example.com", "jane doe@example.com", "@example.com", "jane@example.c",
         "jane@-example.com", "jane.@example.com", ".jane@example.com", "jane..doe@example.com", "example.com",
         "mailto:jane@example.com", "x" * 65 + "@example.com", 42, None],
    ),
    "phone": (
        ["+1 415 555 0132", "+14155550132", "(415) 555-0132", "415-555-0132", "415.555.0132", "+44 20 7946 0958",
         "0044 20 7946 0958", "+49 30 901820", "tel:+14155550132", "+1 (415) 555-0132 ext. 12", 14155550132,
         442079460958],
        ["4155550132", 4155550132, "+1 123 456 7890", "555-0132", "2024-01-15", "2024-01-15T10:00:00Z",
         "123-45-6789", "19.99", "1.2.3", "+1", "call me at +14155550132", 1700000000, 1700000000000,
         1700000000000000, True, 14155550132.0, "(415) 555-O132"],
    ),
    "ip": (
        ["192.168.1.1", "8.8.8.8", "10.0.0.255", "2001:db8::1", "::1", "fe80::1%eth0", "::ffff:192.0.2.1",
         "2001:0db8:85a3:0000:0000:8a2e:0370:7334"],
        ["1.2.3", "256.1.1.1", "1.2.3.4.5", "01.02.03.04", "abc", "::", "10:20", "192.168.1.1/24", 3232235777,
         " 8.8.8.8", "2001:db8::g"],
    ),
    "mac": (
        ["00:1A:2B:3C:4D:5E", "00-1a-2b-3c-4d-5e", "001a.2b3c.4d5e", "ff:ff:ff:ff:ff:ff"],
        ["001A2B3C4D5E", "00:1A-2B:3C:4D:5E", "00:1A:2B:3C:4D", "GG:1A:2B:3C:4D:5E", "00:1A:2B:3C:4D:5E:6F",
         "0:1A:2B:3C:4D:5E", 0x001A2B3C4D5E],
    ),
    "token": (
        [JWT, "Bearer abcdefghijklmnop1234", "bearer 0123456789abcdef0123=="],
        ["eyJub3QiOiJqd3QifQ.eyJ4IjoxfQ.sig", "a.b.c", "Bearer short", "eyJ!.x.y", "Basic dXNlcjpwYXNz",
         "eyJhbGciOiJIUzI1NiJ9", "eyJhbGciOiJIUzI1NiJ9x.eyJ4IjoxfQ.sig"],
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def matchers() -> dict[str, MatcherType]:
    return {m.name: m for m in build_matchers()}


def test_value_matchers_are_the_ones_with_a_shape(matchers: dict[str, MatcherType]) -> None:
    with_values = {name for name, m in matchers.items() if m.match_value is not None}
    assert with_values == set(VALUES)


@pytest.mark.parametrize("name", sorted(VALUES))
def test_values_that_match(name: str, matchers: dict[str, MatcherType]) -> None:
    match_value = matchers[name].match_value
    assert match_value is not None
    for value in VALUES[name][0]:
        assert match_value(value) is True, value


@pytest.mark.parametrize("name", sorted(VALUES))
def test_values_that_do_not_match(name: str, matchers: dict[str, MatcherType]) -> None:
    match_value = matchers[name].match_value
    assert match_value is not None
    for value in VALUES[name][1]:
        assert match_value(value) is False, value


def test_no_value_matcher_takes_containers_or_the_values_of_another(matchers: dict[str, MatcherType]) -> None:
    for name, m in matchers.items():
        if m.match_value is None:
            continue
        for container in ([], {}, ["jane@example.com"], {"ip": "8.8.8.8"}, [4111111111111111]):
            assert m.match_value(container) is False, (name, container)
        for other, (positives, _) in VALUES.items():
            if other == name or {name, other} == {"phone", "credit_card"}:
                continue
            for value in positives:
                assert m.match_value(value) is False, (name, other, value)


def test_luhn_edge_cases() -> None:
    assert luhn_valid("79927398713")  # the classic example
    assert not luhn_valid("79927398710")
    assert luhn_valid("00") and luhn_valid("0000000000000000")
    assert not luhn_valid("") and not luhn_valid("0")  # too short to carry a check digit
    assert not luhn_valid("4111 1111 1111 1111")  # digits only
    assert not luhn_valid("٤١١١١١١١١١١١١١١١")  # Arabic-Indic digits are not card digits
    valid = "4539578763621486"
    for i in range(len(valid)):  # every single-digit error is caught
        for d in "0123456789":
            if d != valid[i]:
                assert not luhn_valid(valid[:i] + d + valid[i + 1 :]), (i, d)
    # adjacent transpositions are caught, except 09 <-> 90
    assert not luhn_valid("4539578763621846")
    assert luhn_valid("40907") and luhn_valid("49007")


def test_card_lengths_follow_the_network() -> None:
    assert is_credit_card("378282246310005")  # Amex: 15
    assert not is_credit_card("3782822463100054")  # Amex prefix, 16 digits
    assert is_credit_card("4222222222222")  # Visa: 13
    assert not is_credit_card("42222222222220")  # Visa, 14 digits
    assert not is_credit_card("55555555555544440")  # Mastercard, 17 digits


def test_iban_edge_cases() -> None:
    assert iban_valid("GB82WEST12345698765432")
    assert not iban_valid("GB82 WEST 1234 5698 7654 32")  # electronic form only: is_iban takes groups
    assert is_iban("GB82 WEST 1234 5698 7654 32")
    assert not iban_valid("GB82WEST1234569876543!")
    assert not iban_valid("ÄB82WEST12345698765432")
    # the check digits are the complement to 98 of the rest: every wrong pair fails
    for check in range(100):
        candidate = f"GB{check:02d}WEST12345698765432"
        assert iban_valid(candidate) is (check == 82), check


def test_ssn_area_group_serial_rules() -> None:
    assert is_ssn("772-01-0001")  # randomised era: 7xx areas are issued
    assert not is_ssn("772-01-0000")
    assert not is_ssn("772-00-0001")
    assert not is_ssn("000-01-0001")
    assert not is_ssn("666-01-0001")
    for area in ("900", "950", "999"):
        assert not is_ssn(f"{area}-01-0001")
    assert not is_ssn("772-01-0001\n")


def test_normalised_forms_for_hashing() -> None:
    assert normalize_email("  Jane.Doe@Example.COM ") == "jane.doe@example.com"
    assert normalize_phone("(415) 555-0132") == "+14155550132"
    assert normalize_phone("+44 20 7946 0958") == "+442079460958"
    assert normalize_phone(14155550132) == "+14155550132"
    assert normalize_phone("not a phone") is None
    assert normalize_phone(["+14155550132"]) is None


def test_the_default_phone_region_is_used_for_national_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway_matcher_builtin import values

    assert values.is_phone("(415) 555-0132")
    monkeypatch.setattr(values, "DEFAULT_PHONE_REGION", "GB")
    assert not values.is_phone("(415) 555-0132")
    assert values.is_phone("020 7946 0958")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
shaped_text = st.text(alphabet="0123456789 +-().:/x#@abcdefABCDEF", max_size=40)
digits = st.integers(min_value=-(10**20), max_value=10**20)


@settings(max_examples=300, deadline=None)
@given(key=st.text(max_size=60), value=json_values | shaped_text | digits)
def test_matchers_never_raise(key: str, value: Any) -> None:
    for matcher in build_matchers_once():
        assert matcher.match_key(key) in (True, False)
        if matcher.match_value is not None:
            assert matcher.match_value(value) in (True, False)


_MATCHERS: list[MatcherType] = []


def build_matchers_once() -> list[MatcherType]:
    if not _MATCHERS:
        _MATCHERS.extend(build_matchers())
    return _MATCHERS


def _luhn_by_the_book(digits: str) -> bool:
    """The Luhn check as its definition reads (what luhn_valid computes otherwise)."""
    if len(digits) < 2 or not (digits.isascii() and digits.isdigit()):
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char) * (2 if position % 2 else 1)
        total += digit - 9 if digit > 9 else digit
    return total % 10 == 0


def _card_by_the_book(value: Any) -> bool:
    """is_credit_card with the network found by comparing each range (what a lookup does)."""
    from gateway_matcher_builtin.values import _CARD_RANGES, _CARD_SHAPE

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
    length = len(digits)
    network = any(length in lengths and low <= digits[: len(low)] <= high for low, high, lengths in _CARD_RANGES)
    return 13 <= length <= 19 and network and _luhn_by_the_book(digits)


card_like = st.text(alphabet="0123456789 -٣４", min_size=12, max_size=26) | st.integers(
    min_value=-(10**20), max_value=10**20
)


@settings(max_examples=1000, deadline=None)
@given(value=card_like | st.from_regex(r"[2-6]\d{12,18}", fullmatch=True))
def test_cards_and_luhn_as_their_definitions_say(value: Any) -> None:
    assert is_credit_card(value) is _card_by_the_book(value)
    if isinstance(value, str):
        assert luhn_valid(value) is _luhn_by_the_book(value)
