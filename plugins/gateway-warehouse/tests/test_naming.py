"""Names as Segment makes them: go-snakecase byte for byte, and each engine's rules."""

from __future__ import annotations

import re
import string

import pytest
from gateway_warehouse import Dialect, snakecase
from hypothesis import given
from hypothesis import strategies as st

# segmentio/go-snakecase snake_test.go (HEAD), and segment-api.md §9.3's table.
GO_SNAKECASE_CASES = [
    ("@49L0S145_¬fwHƒ0TSLNVp", "49l0s145_fw_h_0tslnvp"),
    ("lk0B@bFmjrLQ_Z6YL", "lk0_b_b_fmjr_lq_z6yl"),
    ("samPLE text", "sam_ple_text"),
    ("sample text", "sample_text"),
    ("sample-text", "sample_text"),
    ("sample_text", "sample_text"),
    ("sample___text", "sample_text"),
    ("sampleText", "sample_text"),
    ("inviteYourCustomersAddInvites", "invite_your_customers_add_invites"),
    ("sample 2 Text", "sample_2_text"),
    ("   sample   2    Text   ", "sample_2_text"),
    ("   $#$sample   2    Text   ", "sample_2_text"),
    ("SAMPLE 2 TEXT", "sample_2_text"),
    ("___$$Base64Encode", "base64_encode"),
    ("FOO:BAR$BAZ", "foo_bar_baz"),
    ("FOO#BAR#BAZ", "foo_bar_baz"),
    ("something.com", "something_com"),
    ("$something%", "something"),
    ("•¶§ƒ˚foo˙∆˚¬", "foo"),
    ("CStringRef", "cstring_ref"),
    ("5test", "5test"),
    ("test5", "test5"),
    ("THE5r", "the5r"),
    ("5TEst", "5test"),
    ("_5TEst", "5test"),
    ("@%#&5TEst", "5test"),
    ("edf_6N", "edf_6n"),
    ("f_pX9", "f_p_x9"),
    ("p_z9Rg", "p_z9_rg"),
    ("2FA Enabled", "2fa_enabled"),
    ("Enabled 2FA", "enabled_2fa"),
    ("URLPath", "urlpath"),
    ("iOSVersion", "i_osversion"),
    ("userID", "user_id"),
    ("Order Completed", "order_completed"),
    ("accountType", "account_type"),
    ("", ""),
    ("名前", ""),
]


@pytest.mark.parametrize(("text", "expected"), GO_SNAKECASE_CASES)
def test_snakecase_matches_go_snakecase(text: str, expected: str) -> None:
    assert snakecase(text) == expected


SNAKE = re.compile(r"(?:[a-z0-9]+(?:_[a-z0-9]+)*)?")
ASCII_ALNUM = set(string.ascii_letters + string.digits)


@given(st.text(max_size=60))
def test_snakecase_output_is_snake_case_and_keeps_every_ascii_letter_and_digit(text: str) -> None:
    out = snakecase(text)
    assert SNAKE.fullmatch(out), out
    assert out.replace("_", "") == "".join(c for c in text if c in ASCII_ALNUM).lower()
    assert snakecase(out) == out  # idempotent


@given(
    st.lists(st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True), min_size=1, max_size=6),
    st.text(alphabet=" -.$#@/:•é_", min_size=1, max_size=3).filter(lambda s: s.strip("_") != ""),
)
def test_any_separator_between_lowercase_words_becomes_one_underscore(words: list[str], sep: str) -> None:
    assert snakecase(sep.join(words)) == "_".join(words)


@given(st.text(alphabet=st.characters(blacklist_characters=list(ASCII_ALNUM)), max_size=20))
def test_text_without_ascii_letters_or_digits_has_no_name(text: str) -> None:
    assert snakecase(text) == ""


POSTGRES_LIKE = Dialect("test", max_identifier_bytes=63, reserved_words=frozenset({"order", "select", "user"}))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("order", "_order"),
        ("orders", "orders"),
        ("3doctors", "_3doctors"),
        ("101_account_update", "_101_account_update"),
    ],
)
def test_reserved_words_and_leading_digits_get_an_underscore(name: str, expected: str) -> None:
    assert POSTGRES_LIKE.identifier(name) == expected


def test_a_data_lake_keeps_a_leading_digit() -> None:
    assert Dialect("lake", prefix_leading_digit=False).identifier("101_account_update") == "101_account_update"


@given(st.from_regex(r"[a-z0-9]+(_[a-z0-9]+)*", fullmatch=True))
def test_identifiers_fit_the_limit_and_are_never_reserved(name: str) -> None:
    out = POSTGRES_LIKE.identifier(name)
    assert len(out.encode()) <= 63
    assert out not in POSTGRES_LIKE.reserved_words
    assert not out[0].isdigit()
    if len(name) <= 62:
        assert out.lstrip("_") == name.lstrip("_") or out == name


@given(st.from_regex(r"[a-z]{70}", fullmatch=True), st.from_regex(r"[a-z]{1,20}", fullmatch=True))
def test_long_names_with_a_common_prefix_stay_apart(prefix: str, tail: str) -> None:
    a, b = POSTGRES_LIKE.identifier(prefix + "_a"), POSTGRES_LIKE.identifier(prefix + "_" + tail + "b")
    assert len(a) <= 63 and len(b) <= 63
    assert a != b  # PostgreSQL would cut both to the same 63 bytes


def test_a_schema_named_as_the_engines_own_gets_an_underscore() -> None:
    dialect = Dialect("pg", reserved_schemas=frozenset({"information_schema"}), reserved_schema_prefix="pg_")
    assert [dialect.schema_identifier(n) for n in ("pg_app", "information_schema", "app", "pgapp")] == [
        "_pg_app",
        "_information_schema",
        "app",
        "pgapp",
    ]


def test_a_key_is_kept_escaped_and_a_long_one_by_a_stable_hash() -> None:
    dialect = Dialect("pg", text_allows_nul=False, max_key_bytes=100)
    assert dialect.key("u1") == "u1"
    assert dialect.key("a\x00b") == '"a\\u0000b"' == dialect.text("a\x00b")
    long_a, long_b = "x" * 200 + "a", "x" * 200 + "b"
    assert len(dialect.key(long_a).encode()) <= 100
    assert dialect.key(long_a) == dialect.key(long_a) != dialect.key(long_b)
    assert Dialect("duck").key(long_a + "\x00") == long_a + "\x00"


def test_the_columns_a_deletion_request_looks_in() -> None:
    from gateway_warehouse import user_columns

    assert user_columns("users", ["id", "email"]) == ["id"]
    assert user_columns("aliases", ["id", "user_id", "previous_id"]) == ["user_id", "previous_id"]
    assert user_columns("tracks", ["id", "user_id", "previous_id"]) == ["user_id"]
    assert user_columns("accounts", ["id", "name"]) == []
