"""String helpers of FQL: glob matching and the case conversions.

``match`` follows ``segmentio/glob`` (Go's ``path.Match`` without the ``/`` special case): ``*`` is
any run of characters, ``/`` included; ``?`` one character; ``[abc]``, ``[a-z]``, ``[^...]``
classes; ``\\x`` a literal ``x``; the pattern must match the whole string. ``snakecase`` is a port
of ``segmentio/go-snakecase`` (which merges acronyms: ``URLPath`` -> ``urlpath``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from functools import lru_cache

__all__ = ["GlobError", "compile_glob", "kebabcase", "literal_glob_code", "snakecase", "titlecase"]


class GlobError(ValueError):
    """A malformed glob pattern (an unclosed class, a trailing backslash, ...)."""


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    """One possibly escaped character of a class at ``pattern[i]`` (Go's ``getEsc``)."""
    n = len(pattern)
    if i >= n or pattern[i] in "-]":
        raise GlobError("bad character class")
    if pattern[i] == "\\":
        i += 1
        if i >= n:
            raise GlobError("bad character class")
    char = pattern[i]
    i += 1
    if i >= n:
        raise GlobError("unclosed character class")
    return char, i


def _class(pattern: str, i: int) -> tuple[str, int]:
    """The regex of the class that starts after the ``[`` at ``pattern[i - 1]``."""
    negated = i < len(pattern) and pattern[i] == "^"
    if negated:
        i += 1
    ranges = []
    count = 0
    while True:
        if i < len(pattern) and pattern[i] == "]" and count > 0:
            i += 1
            break
        low, i = _class_char(pattern, i)
        high = low
        if pattern[i] == "-":
            high, i = _class_char(pattern, i + 1)
        count += 1
        if low <= high:  # Go accepts an empty range (it matches nothing); re would refuse it
            ranges.append(re.escape(low) if low == high else f"{re.escape(low)}-{re.escape(high)}")
    if not ranges:
        return ("." if negated else "(?!)"), i
    return f"[{'^' if negated else ''}{''.join(ranges)}]", i


def _translate(pattern: str) -> str:
    """A regex (for ``fullmatch`` with DOTALL) equivalent to the glob ``pattern``.

    Between stars every item matches exactly one character, so the leftmost match of each chunk
    is as good as any: each star but the last becomes an atomic lazy group, which keeps matching
    linear in practice (no catastrophic backtracking on patterns like ``*a*a*a*b``).
    """
    chunks: list[list[str]] = [[]]  # chunks[0] precedes the first star; each later one follows a star
    i = 0
    n = len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            while i < n and pattern[i] == "*":
                i += 1
            chunks.append([])
            continue
        if char == "?":
            chunks[-1].append(".")
            i += 1
        elif char == "[":
            item, i = _class(pattern, i + 1)
            chunks[-1].append(item)
        elif char == "\\":
            if i + 1 >= n:
                raise GlobError("trailing backslash")
            chunks[-1].append(re.escape(pattern[i + 1]))
            i += 2
        else:
            chunks[-1].append(re.escape(char))
            i += 1
    parts = ["".join(chunks[0])]
    starred = chunks[1:]
    for index, chunk in enumerate(starred):
        body = "".join(chunk)
        if index == len(starred) - 1:
            parts.append(f".*{body}")
        else:
            parts.append(f"(?>.*?{body})")
    return "".join(parts)


@lru_cache(maxsize=512)
def compile_glob(pattern: str) -> Callable[[str], bool]:
    """A predicate that is true when the whole string matches ``pattern``.

    Raises:
        GlobError: the pattern is malformed.
    """
    literal = _literal_glob(pattern)
    if literal is not None:
        return literal
    fullmatch = re.compile(_translate(pattern), re.DOTALL).fullmatch

    def matches(text: str) -> bool:
        return fullmatch(text) is not None

    return matches


def _literal_parts(pattern: str) -> list[str] | None:
    """The literal text around the stars of a pattern of literal text and stars at its ends
    only (``test*`` -> ``["test", ""]``, ``*bot*`` -> ``["", "bot", ""]``), or None."""
    if any(char in pattern for char in "?[\\"):
        return None
    parts = re.sub(r"\*+", "*", pattern).split("*")
    if len(parts) <= 2 or (len(parts) == 3 and not parts[0] and not parts[2]):
        return parts
    return None


def _literal_glob(pattern: str) -> Callable[[str], bool] | None:
    """The common patterns of literal text and stars at its ends (``test*``, ``*@example.com``,
    ``*bot*``, ``exact``) as string methods, which answer what the regex answers (its ``.*``
    takes any run of characters, newlines included); None for any other pattern. The same
    expression :func:`literal_glob_code` writes into generated conditions."""
    code = literal_glob_code(pattern, "text")
    if code is None:
        return None
    matches: Callable[[str], bool] = eval(f"lambda text: {code}")  # the pattern enters as repr() of str
    return matches


def literal_glob_code(pattern: str, text: str) -> str | None:
    """What :func:`compile_glob`'s predicate answers for the string named ``text``, as one Python
    expression (string methods with literal arguments), or None for a pattern that needs the regex."""
    parts = _literal_parts(pattern)
    if parts is None:
        return None
    if len(parts) == 1:
        return f"({text} == {pattern!r})"
    if len(parts) == 2:
        prefix, suffix = parts
        tests = [f"len({text}) >= {len(prefix) + len(suffix)}"] if prefix and suffix else []
        tests += [f"{text}.startswith({prefix!r})"] if prefix else []
        tests += [f"{text}.endswith({suffix!r})"] if suffix else []
        return f"({' and '.join(tests)})" if tests else "True"
    return f"({parts[1]!r} in {text})"


# go-snakecase's fast path: a string of these is already snake case.
_ALREADY_SNAKE = re.compile(r"(?:[a-z0-9]|_(?=[a-z0-9]))*")
# One word: a run of capitals and digits, then a run of lowercase letters and digits. Anything
# else matches empty and is skipped, so it only separates words.
_WORD = re.compile(r"[A-Z0-9]*[a-z0-9]*")


def snakecase(s: str) -> str:
    """``segmentio/go-snakecase``: ASCII words joined by ``_``, lowercased; runs of capitals and
    digits stay one word (``URLPath`` -> ``urlpath``, ``iOSVersion`` -> ``i_osversion``); any
    other character (spaces, punctuation, non-ASCII) only separates words."""
    idx = _ALREADY_SNAKE.match(s).end()  # type: ignore[union-attr] # it matches the empty string
    if idx == len(s):
        return s
    if idx > 0 and "0" <= s[idx - 1] <= "9":  # a digit before a capital starts the next word
        idx -= 1
    words = [word.lower() for word in _WORD.findall(s, idx) if word]
    if idx:
        words.insert(0, s[:idx])
    return "_".join(words)


def kebabcase(s: str) -> str:
    """Like :func:`snakecase` with ``-`` between the words (``Test String`` -> ``test-string``)."""
    return snakecase(s).replace("_", "-")


def _separator(c: str) -> bool:
    """Go's ``strings.Title`` word boundary."""
    if c <= "\x7f":
        return not (c.isalnum() or c == "_")
    category = unicodedata.category(c)
    if category[0] == "L" or category == "Nd":
        return False
    return c.isspace()


def titlecase(s: str) -> str:
    """Go's ``strings.Title``: the first letter of every word in title case, the rest untouched
    (``test string`` -> ``Test String``, ``hELLO`` -> ``HELLO``)."""
    out = []
    previous = " "
    for c in s:
        if _separator(previous):
            titled = c.title()
            out.append(titled if len(titled) == 1 else c)
        else:
            out.append(c)
        previous = c
    return "".join(out)
