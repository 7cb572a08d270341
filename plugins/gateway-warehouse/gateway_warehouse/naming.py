"""Table and column names as Segment makes them (segment-api.md §9.3).

Every name goes through :func:`snakecase`, a byte-for-byte port of ``segmentio/go-snakecase``
(the function Segment's loaders use), then through the rules of the engine it is for
(:class:`Dialect`): a leading ``_`` for reserved words and, where the engine wants it, for
names that start with a digit (Redshift's rule, which Segment documents: ``_open``,
``_101_account_update``), and the engine's identifier length limit. A name longer than the limit
is cut and given a hash of the whole name, so two long names that share a prefix stay apart
(PostgreSQL itself would cut both to the same 63 bytes and load them into one column).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import msgspec

__all__ = ["Dialect", "snakecase"]

_FAST = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*")


def _lower(c: str) -> bool:
    return "a" <= c <= "z"


def _upper(c: str) -> bool:
    return "A" <= c <= "Z"


def _digit(c: str) -> bool:
    return "0" <= c <= "9"


def snakecase(s: str) -> str:
    """``s`` in snake case exactly as ``segmentio/go-snakecase`` makes it: every character that
    is not an ASCII letter or digit separates words (non-ASCII text is dropped), a lowercase to
    uppercase change starts a word, an uppercase run stays one word (``URLPath`` → ``urlpath``),
    and words are joined by one ``_``. Returns ``""`` when ``s`` has no ASCII letter or digit."""
    if _FAST.fullmatch(s):
        return s
    n = len(s)
    idx = 0
    has_lower = has_underscore = lowercase_since_underscore = False
    # The prefix that needs no change: lowercase, digits, and underscores between such characters.
    while idx < n:
        c = s[idx]
        if _lower(c):
            has_lower = True
            if has_underscore:
                lowercase_since_underscore = True
        elif _digit(c):
            pass
        elif c == "_" and 0 < idx < n - 1 and (_lower(s[idx + 1]) or _digit(s[idx + 1])):
            has_underscore = True
            lowercase_since_underscore = False
        else:
            break
        idx += 1
    if idx == n:
        return s
    out = [s[:idx]]
    size = idx
    # An uppercase run right after the prefix joins the prefix's word (go-snakecase's quirk:
    # "5TEst" -> "5test", "edf_6N" -> "edf_6n").
    if _upper(s[idx]) and (not has_lower or (has_underscore and not lowercase_since_underscore)):
        start = idx
        while idx < n and (_upper(s[idx]) or _digit(s[idx])):
            idx += 1
        while idx < n and (_lower(s[idx]) or _digit(s[idx])):
            idx += 1
        out.append(s[start:idx].lower())
        size += idx - start
    while idx < n:
        c = s[idx]
        if not (_lower(c) or _upper(c) or _digit(c)):
            idx += 1
            continue
        if size:
            out.append("_")
        start = idx
        while idx < n and (_upper(s[idx]) or _digit(s[idx])):
            idx += 1
        while idx < n and (_lower(s[idx]) or _digit(s[idx])):
            idx += 1
        out.append(s[start:idx].lower())
        size += idx - start + 1
    return "".join(out)


@dataclass(frozen=True)
class Dialect:
    """What an engine demands of names and tables. One per engine plugin; a third-party loader
    makes its own (Snowflake: ``max_identifier_bytes=255`` and its reserved words).

    Attributes:
        name: The engine (``duckdb``, ``postgres``, ``parquet``).
        max_identifier_bytes: Longest table or column name it takes.
        reserved_words: Names that get a leading ``_`` (lowercase).
        prefix_leading_digit: Whether a name that starts with a digit gets a leading ``_``
            (SQL engines: yes; Segment's data lakes keep ``101_account_update``).
        max_columns: Default per-table column limit (``max_columns_per_table``): the values of
            columns past it go to the discards table.
        object_tables: Whether ``users`` and ``accounts`` (latest state, upserted) are made;
            append-only stores such as a data lake cannot upsert (Segment Data Lakes have none).
        tracks_table: Whether every track call also gets a row in ``tracks`` (Data Lakes: no).
        max_string_bytes: Longest string value a column takes (UTF-8 bytes), None for no limit;
            longer ones go to the discards table.
        text_allows_nul: Whether text may hold U+0000 (PostgreSQL's cannot: such a value goes
            to the discards table, JSON-escaped).
        reserved_schemas: Schema names that get a leading ``_`` besides the reserved words:
            the engine's own schemas (``information_schema``, ``pg_catalog``).
        reserved_schema_prefix: A prefix the engine keeps for its own schemas (PostgreSQL
            refuses ``CREATE SCHEMA pg_...``): such names get a leading ``_`` too.
        max_key_bytes: Longest ``users`` / ``accounts`` id (UTF-8 bytes) the engine's key index
            takes, None for no limit: a longer one is kept in the discards table and its row
            keyed by what :meth:`key` makes of it.
    """

    name: str
    max_identifier_bytes: int = 63
    reserved_words: frozenset[str] = field(default_factory=frozenset)
    prefix_leading_digit: bool = True
    max_columns: int = 1000
    object_tables: bool = True
    tracks_table: bool = True
    max_string_bytes: int | None = None
    text_allows_nul: bool = True
    reserved_schemas: frozenset[str] = field(default_factory=frozenset)
    reserved_schema_prefix: str | None = None
    max_key_bytes: int | None = None

    def identifier(self, name: str) -> str:
        """``name`` (already snake-cased, non-empty) made legal for this engine."""
        if name in self.reserved_words or (self.prefix_leading_digit and name[0].isdigit()):
            name = "_" + name
        return self.fit(name)

    def schema_identifier(self, name: str) -> str:
        """``name`` (already snake-cased, non-empty) made legal as a schema of this engine:
        the rules of :meth:`identifier`, and a leading ``_`` for the engine's own schema names."""
        prefix = self.reserved_schema_prefix
        if name in self.reserved_schemas or (prefix is not None and name.startswith(prefix)):
            name = "_" + name
        return self.identifier(name)

    def fit(self, name: str, suffix: str = "") -> str:
        """``name`` + ``suffix`` cut to the length limit, with 8 hex digits of its hash when cut
        (the cut falls in ``name``: ``suffix`` is kept whole)."""
        whole = name + suffix
        if len(whole.encode()) <= self.max_identifier_bytes:
            return whole
        digest = hashlib.sha1(whole.encode()).hexdigest()[:8]
        keep = self.max_identifier_bytes - len(digest) - 1 - len(suffix.encode())
        return f"{name.encode()[:keep].decode('utf-8', 'ignore').rstrip('_')}_{digest}{suffix}"

    def text(self, text: str) -> str:
        """``text`` as this engine's text holds it: JSON-escaped (quotes included) when it has
        U+0000 and the engine's text cannot hold that, else as it is."""
        if not self.text_allows_nul and "\x00" in text:
            return msgspec.json.encode(text).decode()
        return text

    def key(self, key: str) -> str:
        """The ``users`` / ``accounts`` id the engine keeps for ``key``: :meth:`text`, and past
        ``max_key_bytes`` its start, ``#`` and its SHA-256 (the same key always gets the same
        id, so a replay merges into the same row)."""
        key = self.text(key)
        limit = self.max_key_bytes
        if limit is None or len(key) * 4 <= limit or len(key.encode()) <= limit:
            return key
        digest = hashlib.sha256(key.encode()).hexdigest()
        start = key.encode()[: limit - len(digest) - 1].decode("utf-8", "ignore")
        return f"{start}#{digest}"
