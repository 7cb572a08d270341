"""Key-name normalisation and the Dice coefficient, for matching field names against terms.

The built-in matchers and the custom matchers of ``[privacy.matchers]`` (``precision = "exact" |
"similar"``, which this plugin builds) use the same rule::

    from gateway_matcher_builtin import KeyTerms

    matcher = KeyTerms(["loyalty number", "member number"], similar=True)
    matcher("loyaltyNumber")   # True  (exact after normalisation)
    matcher("loyalty_numbr")   # True  (Dice 0.93 > 0.7)

Normalisation (:func:`normalize_key`) lower-cases a key and splits it into words on separators
(anything that is not a letter or digit: ``_``, ``-``, ``.``, spaces...), on camelCase boundaries
(``firstName``, ``IPAddress``) and between letters and digits (``address1``). ``firstName``,
``first_name``, ``First-Name`` and ``first.name`` all become the words ``("first", "name")``.
Exact comparison uses the words joined without separator, so ``zip_code`` equals ``zipcode``.

Similarity is the Sørensen-Dice coefficient over character bigrams, computed the way Segment's
Privacy Portal does it (``imjasonmiller/godice``): the set of bigrams of each word (no bigram spans
two words), ``2 * |A & B| / (|A| + |B|)``, and a match when the score is *above* 0.7.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Literal, NamedTuple

__all__ = [
    "SIMILARITY_THRESHOLD",
    "KeyMatch",
    "KeyTerms",
    "NormalizedKey",
    "bigrams",
    "dice_coefficient",
    "is_similar",
    "key_similarity",
    "normalize",
    "normalize_key",
]

SIMILARITY_THRESHOLD = 0.7
"""A "similar" key matches a term when their Dice coefficient is strictly above this (Segment's)."""

# camelCase: "firstName" -> "first Name", "IPAddress" -> "IP Address", "userID" -> "user ID".
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
# letters next to digits: "address1" -> "address 1", "ipv4" -> "ipv 4".
_DIGITS = re.compile(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])")
# anything but a letter or digit separates words ("_" counts as a separator).
_SEPARATORS = re.compile(r"[\W_]+")

_NORMALIZE_CACHE_MAX_KEY = 256
"""Keys longer than this are normalised every time rather than cached (bounded memory)."""


class NormalizedKey(NamedTuple):
    """A key reduced to what matching compares.

    Attributes:
        words: Lower-case words, e.g. ``("billing", "address", "1")``.
        core: ``words`` without trailing all-digit words (``address_line_2`` -> ``("address",
            "line")``), so numbered variants of a field match like the field itself.
        compact: ``words`` joined without separator (``"billingaddress1"``).
        core_compact: ``core`` joined without separator.
        bigrams: The Dice bigram set of ``core``.
    """

    words: tuple[str, ...]
    core: tuple[str, ...]
    compact: str
    core_compact: str
    bigrams: frozenset[str]


def normalize_key(key: str) -> str:
    """The normalised form of a key: lower-case words separated by one space.

    >>> normalize_key("firstName"), normalize_key("First-Name"), normalize_key("first_name")
    ('first name', 'first name', 'first name')
    >>> normalize_key("IPAddress"), normalize_key("address_line1")
    ('ip address', 'address line 1')
    """
    return " ".join(normalize(key).words)


def _split_words(key: str) -> tuple[str, ...]:
    text = _DIGITS.sub(" ", _CAMEL.sub(" ", key))
    return tuple(word for word in _SEPARATORS.split(text.casefold()) if word)


def bigrams(words: Iterable[str]) -> frozenset[str]:
    """The set of character bigrams of each word (godice's ``bigramsForWords``)."""
    return frozenset(word[i : i + 2] for word in words for i in range(len(word) - 1))


def _normalize(key: str) -> NormalizedKey:
    words = _split_words(key)
    end = len(words)
    while end > 1 and words[end - 1].isdigit():
        end -= 1
    core = words[:end]
    return NormalizedKey(words, core, "".join(words), "".join(core), bigrams(core))


_normalize_cached = lru_cache(maxsize=8192)(_normalize)


def normalize(key: str, *, cache: bool = True) -> NormalizedKey:
    """Normalise ``key`` (cached for keys up to 256 characters, since keys repeat across events;
    ``cache=False`` computes it afresh)."""
    if not cache or len(key) > _NORMALIZE_CACHE_MAX_KEY:
        return _normalize(key)
    return _normalize_cached(key)


def dice_coefficient(a: str, b: str) -> float:
    """Dice coefficient of two strings as godice computes it: bigram sets per whitespace-separated
    word, 0.0 when both strings are empty or both one character long, 1.0 when they are equal.

    The strings are compared as given (no normalisation); see :func:`key_similarity` for keys.
    """
    if (not a and not b) or (len(a) == 1 and len(b) == 1):
        return 0.0
    if a == b:
        return 1.0
    return _dice(bigrams(a.split()), bigrams(b.split()))


def _dice(a: frozenset[str], b: frozenset[str]) -> float:
    total = len(a) + len(b)
    if not total:
        return 0.0
    return 2.0 * len(a & b) / total


def key_similarity(key: str, term: str) -> float:
    """Dice coefficient of two keys after normalisation (1.0 when they normalise the same)."""
    nk, nt = normalize(key), normalize(term)
    if nk.core_compact and nk.core_compact == nt.core_compact:
        return 1.0
    return _dice(nk.bigrams, nt.bigrams)


def is_similar(key: str, term: str, threshold: float = SIMILARITY_THRESHOLD) -> bool:
    """True when ``key`` equals ``term`` after normalisation or their Dice coefficient is above
    ``threshold``: Segment's "Similar" precision for one key and one term."""
    return key_similarity(key, term) > threshold


class KeyMatch(NamedTuple):
    """Why a key matched: ``kind`` is ``exact`` (the normalised key is a term), ``qualified``
    (the key is a term with qualifier words before it, e.g. ``billing_city`` for ``city``) or
    ``similar`` (Dice over the threshold); ``term`` is the term that matched; ``score`` its Dice
    coefficient (1.0 for exact and qualified matches)."""

    kind: Literal["exact", "qualified", "similar"]
    term: str
    score: float


class _Term(NamedTuple):
    text: str
    words: tuple[str, ...]
    compact: str
    bigrams: frozenset[str]
    fuzzy: bool
    length: int  # letters and digits, trailing numbers excluded


class KeyTerms:
    """Matches keys against a set of terms (a matcher's names and synonyms).

    Args:
        terms: Key names, in any spelling (``"date of birth"``, ``"dateOfBirth"``).
        similar: Also match keys whose Dice coefficient with a term is above ``threshold``
            (Segment's "Similar" precision); otherwise only exact (normalised) matches.
        qualified: Also match keys that end with a term after one or more qualifier words
            (``billing_city``, ``user_email``, ``access_token``; the qualifiers must have two
            characters or more). Off for terms that commonly end non-personal compound keys
            (``page_name``, ``product_name``).
        exclude: Keys that must not match even though they would (``ip_address`` for
            ``address``, ``orientation`` for ``sexual orientation``). A key is excluded when its
            words end with an entry's words and no term covers more of its trailing words:
            ``client_ip_address`` is excluded by ``ip address`` (two words) although it ends with
            the term ``address`` (one word); ``user_sexual_orientation`` is not excluded by
            ``orientation`` since it ends with the term ``sexual orientation``.
        threshold: The Dice threshold for ``similar``.
        min_similar_length: Terms shorter than this (in letters and digits) are matched exactly
            only: the Dice coefficient of short words is too coarse (``race`` and ``trace`` score
            0.86). 0 applies the Dice comparison to every term, as Segment's custom matchers do.
        fuzzy_terms: When given, only these of ``terms`` are compared by Dice coefficient (the
            others match exactly or qualified). Multi-word synonyms share generic words with
            unrelated keys (``visa status`` and ``status`` score 0.77), so the built-in matchers
            compare only their one-word terms.
        min_length_ratio: A similar match also needs the shorter of key and term to have at least
            this fraction of the longer one's letters and digits. Dice favours a key that is a
            large piece of the term (``credit``/``credit card`` 0.77, ``dress``/``address`` 0.8,
            ``sport``/``passport`` 0.73) or the term plus a word (``address_count`` 0.75);
            typos and plurals keep their length. 0 (the default) disables the check, as Segment.
    """

    __slots__ = ("_by_length", "_compacts", "_exclude", "_fuzzy", "_min_length_ratio", "_qualified", "_terms")

    def __init__(
        self,
        terms: Iterable[str],
        *,
        similar: bool = True,
        qualified: bool = False,
        exclude: Iterable[str] = (),
        threshold: float = SIMILARITY_THRESHOLD,
        min_similar_length: int = 0,
        fuzzy_terms: Iterable[str] | None = None,
        min_length_ratio: float = 0.0,
    ) -> None:
        fuzzy_only = None if fuzzy_terms is None else {_normalize(t).words for t in fuzzy_terms}
        self._min_length_ratio = min_length_ratio
        self._terms: list[_Term] = []
        self._compacts: dict[str, str] = {}
        for text in terms:
            nt = _normalize(text)
            if not nt.words:
                raise ValueError(f"a key term needs a letter or digit: {text!r}")
            fuzzy = similar and len(nt.core_compact) >= min_similar_length
            if fuzzy_only is not None and nt.words not in fuzzy_only:
                fuzzy = False
            self._terms.append(_Term(text, nt.words, nt.compact, nt.bigrams, fuzzy, len(nt.core_compact)))
            # A key's trailing numbers are dropped before comparing (``email_2`` is ``email``); a
            # term's are kept (``address line 1`` is not ``address line``).
            self._compacts.setdefault(nt.compact, text)
        self._qualified = qualified
        self._by_length: dict[int, dict[tuple[str, ...], str]] = {}
        for term in sorted(self._terms, key=lambda t: -len(t.words)):  # longest suffix first
            self._by_length.setdefault(len(term.words), {}).setdefault(term.words, term.text)
        self._exclude = [w for w in (_split_words(e) for e in exclude) if w]
        self._fuzzy = [(t, threshold) for t in self._terms if t.fuzzy]

    @property
    def terms(self) -> tuple[str, ...]:
        """The terms as given."""
        return tuple(t.text for t in self._terms)

    def index_entries(
        self,
    ) -> tuple[frozenset[str], frozenset[tuple[str, ...]], tuple[tuple[frozenset[str], float], ...]]:
        """What an index over many ``KeyTerms`` needs to find the candidates for a key: the
        compact forms of the terms (exact), the word tuples a qualified key may end with (empty
        unless ``qualified``) and the bigram sets and thresholds of the fuzzy terms. A key can
        only match when its compact form is one of the first, its words end with one of the
        second, or it shares enough bigrams with one of the third."""
        suffixes = (
            frozenset(w for by_words in self._by_length.values() for w in by_words) if self._qualified else frozenset()
        )
        return frozenset(self._compacts), suffixes, tuple((t.bigrams, threshold) for t, threshold in self._fuzzy)

    def __call__(self, key: str) -> bool:
        return self.match(key) is not None

    def _longest_suffix(self, nk: NormalizedKey, suffixes: Iterable[tuple[str, ...]]) -> int:
        return max(
            (len(w) for w in suffixes if nk.words[-len(w) :] == w or nk.core[-len(w) :] == w),
            default=0,
        )

    def _excluded(self, nk: NormalizedKey) -> bool:
        excluded = self._longest_suffix(nk, self._exclude)
        if not excluded:
            return False
        covered = self._longest_suffix(nk, (w for by_words in self._by_length.values() for w in by_words))
        if nk.compact in self._compacts or nk.core_compact in self._compacts:
            covered = len(nk.words)
        return excluded > covered

    def match(self, key: str | NormalizedKey) -> KeyMatch | None:
        """How ``key`` matches, or None. Exact beats qualified beats the best similar term."""
        nk = key if isinstance(key, NormalizedKey) else normalize(key)
        if not nk.words:
            return None
        if self._exclude and self._excluded(nk):
            return None
        term = self._compacts.get(nk.compact) or self._compacts.get(nk.core_compact)
        if term is not None:
            return KeyMatch("exact", term, 1.0)
        if self._qualified:
            core = nk.core
            for length, by_words in self._by_length.items():
                # The qualifier words before the term must amount to a word (2+ characters):
                # "iPhone" splits into "i phone" but is no qualified phone.
                if len(core) > length and sum(map(len, core[:-length])) >= 2:
                    term = by_words.get(core[-length:])
                    if term is not None:
                        return KeyMatch("qualified", term, 1.0)
        best: KeyMatch | None = None
        key_bigrams = nk.bigrams
        size = len(key_bigrams)
        key_length = len(nk.core_compact)
        ratio = self._min_length_ratio
        for t, threshold in self._fuzzy:
            other = len(t.bigrams)
            # Dice <= 2 * min / (a + b): skip terms whose size alone rules a match out.
            if not size or 2.0 * min(size, other) / (size + other) <= threshold:
                continue
            if ratio and min(key_length, t.length) < ratio * max(key_length, t.length):
                continue
            score = _dice(key_bigrams, t.bigrams)
            if score > threshold and (best is None or score > best.score):
                best = KeyMatch("similar", t.text, score)
        return best
