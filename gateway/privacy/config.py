"""The privacy settings of the config file: ``[privacy]`` (explicit classes, custom matchers,
the hash salt, how values are checked) and a destination's ``privacy`` policy."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

Class = Literal["red", "yellow", "green"]
Action = Literal["allow", "block", "redact", "hash"]


class _Table(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class CustomMatcher(_Table, frozen=True, kw_only=True):
    """``[privacy.matchers.<name>]``: a matcher of your own."""

    #: The class of a field it matches.
    class_: Class = msgspec.field(name="class")
    #: Key names (any spelling: ``employeeId``, ``employee_id``) and synonyms.
    keys: list[str] = []
    #: ``exact`` (after normalisation) or ``similar`` (Dice coefficient above 0.7, as Segment).
    precision: Literal["exact", "similar"] = "exact"
    #: A regular expression a value must match in full (``pattern = "E\\\\d{6}"``).
    pattern: str | None = None

    def __post_init__(self) -> None:
        if not self.keys and self.pattern is None:
            raise ValueError("a custom matcher needs keys, a pattern, or both")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as error:
                raise ValueError(f"pattern is not a regular expression: {error}") from None


class PrivacyConfig(_Table, frozen=True, kw_only=True):
    """``[privacy]``: how fields are classified."""

    #: Explicit classes by path, winning over every matcher: ``"traits.employee_id" = "red"``.
    classes: dict[str, Class] = {}
    matchers: dict[str, CustomMatcher] = {}
    #: Prepended to values before hashing (write it as ``{ env = "..." }``).
    hash_salt: str = ""
    #: ``learn`` (default): a field path's values are checked by value matchers until the path
    #: has shown LEARN_AFTER clean values in a row, then in one message in SAMPLE_EVERY; a hit
    #: classifies the path for good (field-level classes, as Segment's). ``every``: check every
    #: value of every event (exact; slower: shape plans still serve, their fields' values checked).
    value_checks: Literal["learn", "every"] = "learn"


class PrivacyPolicy(_Table, frozen=True, kw_only=True):
    """What a destination gets of each class, or of given fields (``fields`` wins)."""

    red: Action = "allow"
    yellow: Action = "allow"
    green: Action = "allow"
    fields: dict[Annotated[str, Meta(min_length=1)], Action] = {}

    @property
    def active(self) -> bool:
        return (self.red, self.yellow, self.green) != ("allow", "allow", "allow") or bool(self.fields)

    @property
    def acts_on(self) -> Class:
        """The least class of a finding this policy may change (a scan needs none below)."""
        return "yellow" if self.fields or self.yellow != "allow" else "red"
