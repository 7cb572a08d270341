"""Key normalisation, the Dice coefficient (as godice computes it) and KeyTerms' options."""

from __future__ import annotations

import pytest
from gateway_matcher_builtin.similarity import (
    SIMILARITY_THRESHOLD,
    KeyTerms,
    bigrams,
    dice_coefficient,
    is_similar,
    key_similarity,
    normalize,
    normalize_key,
)


@pytest.mark.parametrize(
    ("key", "normalised"),
    [
        ("firstName", "first name"),
        ("first_name", "first name"),
        ("First-Name", "first name"),
        ("first.name", "first name"),
        ("first name", "first name"),
        ("FIRST_NAME", "first name"),
        ("FirstName", "first name"),
        ("  first__name  ", "first name"),
        ("IPAddress", "ip address"),
        ("userID", "user id"),
        ("ipv4Address", "ipv 4 address"),
        ("address_line1", "address line 1"),
        ("addressLine1", "address line 1"),
        ("$email", "email"),
        ("e-mail", "e mail"),
        ("Straße", "strasse"),
        ("", ""),
        ("___", ""),
    ],
)
def test_normalize_key(key: str, normalised: str) -> None:
    assert normalize_key(key) == normalised


def test_trailing_numbers_are_dropped_from_the_core_only() -> None:
    nk = normalize("address_line_2")
    assert nk.words == ("address", "line", "2")
    assert nk.core == ("address", "line")
    assert nk.compact == "addressline2" and nk.core_compact == "addressline"
    assert normalize("42").core == ("42",)  # a key that is only a number keeps it


def test_bigrams_are_a_set_per_word() -> None:
    assert bigrams(["night"]) == {"ni", "ig", "gh", "ht"}
    assert bigrams(["aaaa"]) == {"aa"}
    assert bigrams(["ab", "cd"]) == {"ab", "cd"}  # no "bc" across the words
    assert bigrams(["a"]) == frozenset()


@pytest.mark.parametrize(
    ("a", "b", "score"),
    [
        # godice's own test cases
        ("George Orwell", "George Orwell", 1.0),
        ("Aldous Huxley", "Isaac Asimov", 0.0),
        ("A", "A", 0.0),
        ("", "", 0.0),
        # textbook values
        ("night", "nacht", 0.25),
        ("nicht", "nacht", 0.5),
        ("password", "passwords", 14 / 15),
        ("race", "trace", 6 / 7),
        ("a", "", 0.0),
    ],
)
def test_dice_coefficient(a: str, b: str, score: float) -> None:
    assert dice_coefficient(a, b) == pytest.approx(score)
    assert dice_coefficient(b, a) == pytest.approx(score)


def test_key_similarity_normalises_first() -> None:
    assert key_similarity("First-Name", "first_name") == 1.0
    assert key_similarity("birth_date", "birthdate") == 1.0  # same without separators
    assert key_similarity("firstname", "first name") == 1.0
    assert dice_coefficient("firstname", "first name") == pytest.approx(14 / 15)  # "tn" is extra


def test_the_threshold_is_strict() -> None:
    # "product condition" vs "condition": 2 * 7 / (13 + 7) = 0.7 exactly: not a match.
    assert key_similarity("product_condition", "condition") == pytest.approx(SIMILARITY_THRESHOLD)
    assert not is_similar("product_condition", "condition")
    assert is_similar("conditions", "condition")
    assert is_similar("product_condition", "condition", threshold=0.69)


def test_key_terms_exact_similar_and_segment_defaults() -> None:
    loyalty = KeyTerms(["loyalty number", "member number"])
    assert loyalty.match("loyaltyNumber") == ("exact", "loyalty number", 1.0)
    m = loyalty.match("loyalty_numbr")
    assert m is not None and m.kind == "similar" and m.score > 0.7
    assert loyalty("Member-Number")
    assert not loyalty("phone_number")
    assert loyalty.terms == ("loyalty number", "member number")
    exact_only = KeyTerms(["loyalty number"], similar=False)
    assert exact_only("loyalty_number") and not exact_only("loyalty_numbr")
    # Segment's plain rule: every term is compared, however short.
    race = KeyTerms(["race"])
    assert race("trace")
    assert not KeyTerms(["race"], min_similar_length=7)("trace")


def test_key_terms_qualified() -> None:
    city = KeyTerms(["city"], qualified=True, similar=False)
    assert city.match("billing_city") == ("qualified", "city", 1.0)
    assert city("shippingCity") and city("home_city_2")
    assert not city("city_id") and not city("velocity")
    assert not KeyTerms(["city"], similar=False)("billing_city")
    assert KeyTerms(["city"])("city_id")  # Segment's plain Dice: 0.86
    phone = KeyTerms(["phone"], qualified=True, similar=False)
    assert not phone("iPhone")  # a one-letter qualifier is no word
    assert phone("myPhone")


def test_key_terms_exclude_and_the_longest_suffix_rule() -> None:
    address = KeyTerms(["address"], qualified=True, exclude=["ip address"])
    assert address("home_address")
    assert not address("ip_address") and not address("client_ip_address")
    orientation = KeyTerms(["sexual orientation"], exclude=["orientation"])
    assert not orientation("orientation")
    assert orientation("sexual_orientation")  # exact wins over the exclusion
    assert orientation("user_sexual_orientation")  # the term covers more of the key


def test_key_terms_fuzzy_terms_and_length_ratio() -> None:
    name = KeyTerms(["name", "given name"], fuzzy_terms=["name"])
    assert not name("event_name")  # "given name" is exact only here
    assert KeyTerms(["name", "given name"])("event_name")  # Dice 0.71 otherwise
    card = KeyTerms(["credit card"])
    assert card("credit")  # Dice 0.77
    assert not KeyTerms(["credit card"], min_length_ratio=0.75)("credit")
    assert KeyTerms(["credit card"], min_length_ratio=0.75)("credit_cards")


def test_a_term_needs_a_letter_or_digit() -> None:
    with pytest.raises(ValueError, match="needs a letter or digit"):
        KeyTerms(["--"])


def test_normalisation_is_cached_for_short_keys_only() -> None:
    assert normalize("someKey") is normalize("someKey")
    long_key = "k" * 300
    assert normalize(long_key) == normalize(long_key)
    assert normalize(long_key) is not normalize(long_key)
