"""The built-in matchers: Segment's default Privacy Portal list (segment-api.md §6.1) plus ``iban``.

Key rule (see README.md): a matcher is given a field's *own* key (``city`` in
``traits.address.city``), never its path. The key matches when, after normalisation,

1. it is one of the matcher's terms (its name and synonyms): ``firstName`` is ``first name``;
2. or, for matchers marked ``qualified``, it is a term preceded by qualifier words:
   ``billing_city``, ``user_email``, ``access_token`` (not for ``name``: ``page_name``,
   ``product_name`` and ``event_name`` are not personal);
3. or it is "similar" to the matcher's name or a one-word synonym: Dice coefficient over bigrams
   above 0.7 (``passwrd``, ``addresses``), for terms of at least :data:`MIN_SIMILAR_LENGTH`
   letters (``race``/``trace`` and ``gender``/``sender`` score 0.8 and more) and keys of
   comparable length (:data:`MIN_LENGTH_RATIO`: ``credit`` is not ``credit card``).

A similar match only counts when no matcher matched the key exactly or qualified: ``mac_address``
is ``mac`` and not (similar) ``ip``; ``email_address`` is ``email`` and not ``ip``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from gateway import MatcherType
from gateway_matcher_builtin import values
from gateway_matcher_builtin.similarity import KeyMatch, KeyTerms, NormalizedKey, normalize

RED = "red"
YELLOW = "yellow"

MIN_SIMILAR_LENGTH = 7
"""Terms shorter than this many letters/digits match exactly only (see the module docstring)."""

MIN_LENGTH_RATIO = 0.75
"""A similar key has at least 3/4 of the term's length and the term 3/4 of the key's: a typo or a
plural, not a piece of the term (``credit`` for ``credit card``) or the term plus a word
(``address_count``)."""

DEFAULT_KEY_CACHE_SIZE = 8192
"""Distinct keys whose decisions are cached. Keys repeat across events; the bound keeps a stream
of unique keys from growing memory."""

_KEY_CACHE_MAX_LENGTH = 256


@dataclass(frozen=True)
class MatcherSpec:
    """One built-in matcher: its terms and key-matching options, and an optional value check."""

    name: str
    default_class: str
    description: str
    terms: tuple[str, ...]
    similar: bool = True
    qualified: bool = False
    exclude: tuple[str, ...] = ()
    value: Callable[[Any], bool] | None = None
    fuzzy: tuple[str, ...] | None = None
    key_terms: KeyTerms = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        terms = KeyTerms(
            (self.name.replace("_", " "), *self.terms),
            similar=self.similar,
            qualified=self.qualified,
            exclude=self.exclude,
            min_similar_length=MIN_SIMILAR_LENGTH,
            fuzzy_terms=self.fuzzy_terms(),
            min_length_ratio=MIN_LENGTH_RATIO,
        )
        object.__setattr__(self, "key_terms", terms)

    def fuzzy_terms(self) -> tuple[str, ...]:
        """The terms compared by Dice coefficient: ``fuzzy`` when given, else the matcher's name
        and its synonyms that are one word (still subject to :data:`MIN_SIMILAR_LENGTH`)."""
        if self.fuzzy is not None:
            return self.fuzzy
        return (self.name, *(t for t in self.terms if len(normalize(t).words) == 1))


def _spec(
    name: str,
    default_class: str,
    description: str,
    *terms: str,
    similar: bool = True,
    qualified: bool = False,
    exclude: tuple[str, ...] = (),
    value: Callable[[Any], bool] | None = None,
    fuzzy: tuple[str, ...] | None = None,
) -> MatcherSpec:
    return MatcherSpec(name, default_class, description, terms, similar, qualified, exclude, value, fuzzy)


SPECS: tuple[MatcherSpec, ...] = (
    # ---- Red ----
    _spec(
        "social_security_number", RED, "US social security number (key, or value AAA-GG-SSSS with SSA rules)",
        "ssn", "social security", "social security no", "social security num", "social insurance number",
        qualified=True, value=values.is_ssn,
    ),
    _spec(
        "password", RED, "password or passphrase (key)",
        "passwd", "pwd", "passcode", "passphrase", "password hash", "password confirmation", "pass word",
        qualified=True,
    ),
    _spec(
        "visa", RED, "travel or residence visa (key)",
        "visa number", "visa status", "visa type", "visa expiry",
    ),
    _spec(
        "veteran", RED, "veteran or military status (key)",
        "veteran status", "military status", "military service",
        qualified=True,
    ),
    _spec(
        "disability", RED, "disability status (key)",
        "disabilities", "disabled", "handicap", "disability status",
        qualified=True, exclude=("stability",),  # Dice 0.71 with "disability"
    ),
    _spec(
        "credit_card", RED, "payment card number (key, or value: issuer prefix, length and Luhn check)",
        "credit card number", "card number", "cc number", "ccnum", "ccn", "debit card", "debit card number",
        "primary account number", "cvv", "cvv2", "cvc", "card verification code", "card security code",
        qualified=True, exclude=("credit card type", "credit card brand", "card type", "card brand"),
        value=values.is_credit_card,
    ),
    _spec(
        "passport", RED, "passport number (key)",
        "passport number", "passport no", "passport id",
        qualified=True,
    ),
    _spec(
        "token", RED, "access token, API key or secret (key, or value: JWT or 'Bearer ...')",
        "access token", "refresh token", "id token", "auth token", "bearer token", "session token",
        "tokens", "api key", "api secret", "secret", "secret key", "client secret", "private key", "jwt",
        "authorization",
        qualified=True, value=values.is_token,
    ),
    _spec(
        "iban", RED, "international bank account number (key, or value with mod-97 check)",
        "iban number", "bank account", "bank account number",
        qualified=True, value=values.is_iban,
    ),
    # ---- Yellow ----
    _spec(
        "email", YELLOW, "email address (key, or value)",
        "e-mail", "email address", "emails", "mail address",
        qualified=True, value=values.is_email,
    ),
    _spec(
        "phone", YELLOW, "phone number (key, or value parsed with phonenumbers)",
        "phone number", "phones", "telephone", "telephone number", "tel", "mobile number", "mobile phone",
        "cell phone", "cellphone", "cell", "fax", "fax number", "msisdn",
        qualified=True, value=values.is_phone,
    ),
    _spec(
        "address", YELLOW, "postal address (key)",
        "home address", "postal address", "mailing address", "billing address", "shipping address",
        "residential address",
        qualified=True,
        exclude=(
            "ip address", "mac address", "email address", "e-mail address", "mail address", "wallet address",
            "web address", "remote address", "memory address",
        ),
    ),
    _spec(
        "street", YELLOW, "street part of an address (key)",
        "street address", "street name", "street number", "house number", "address line",
        "address line 1", "address line 2", "address1", "address2",
        qualified=True, fuzzy=(),  # "address1" would make "address_count" a street
    ),
    _spec(
        "city", YELLOW, "city or town of an address (key)",
        "town", "hometown",
        qualified=True,
    ),
    _spec(
        "zipcode", YELLOW, "zip or postal code (key)",
        "zip", "zip code", "postal code", "postcode", "post code",
        qualified=True,
    ),
    _spec(
        "name", YELLOW, "a person's name (key; page_name, product_name and the like are not names)",
        "first name", "last name", "full name", "given name", "family name", "middle name", "maiden name",
        "surname", "display name", "nickname", "legal name", "customer name", "contact name",
        "fname", "lname",
    ),
    _spec(
        "birthdate", YELLOW, "date of birth (key)",
        "birthday", "birth date", "date of birth", "dob", "bday", "birth year",
    ),
    _spec(
        "gender", YELLOW, "gender (key)",
        "gender identity",
    ),
    _spec(
        "sex", YELLOW, "sex (key)",
        "sex at birth",
    ),
    _spec(
        "ethnicity", YELLOW, "ethnicity (key)",
        "ethnic", "ethnic group", "ethnic origin", "ethnic background",
    ),
    _spec(
        "race", YELLOW, "race (key)",
        "racial identity",
    ),
    _spec(
        "religion", YELLOW, "religion (key)",
        "religious affiliation", "religious belief", "faith",
    ),
    _spec(
        "citizenship", YELLOW, "citizenship or nationality (key)",
        "citizen", "nationality", "citizenship status", "country of citizenship",
        qualified=True,
    ),
    _spec(
        "ip", YELLOW, "IP address (key, or value: IPv4 or IPv6)",
        "ip address", "ipv4", "ipv6", "ipv4 address", "ipv6 address", "ip addr", "remote addr",
        "remote address", "client ip",
        qualified=True, value=values.is_ip,
    ),
    _spec(
        "mac", YELLOW, "MAC address (key, or value)",
        "mac address", "mac addr", "macaddr", "hardware address",
        qualified=True, value=values.is_mac,
    ),
    _spec(
        "salary", YELLOW, "salary or income (key)",
        "salaries", "income", "annual income", "annual salary", "wage", "wages", "compensation",
        qualified=True,
    ),
    _spec(
        "photo", YELLOW, "photo of a person (key)",
        "photos", "photograph", "avatar", "avatar url", "profile photo", "profile picture", "profile image",
        "picture", "headshot", "selfie", "photo url",
        qualified=True,
    ),
    _spec(
        "license", YELLOW, "driver's or other licence number (key)",
        "licence", "license number", "licence number", "driver license", "drivers license",
        "driving licence", "license plate",
        qualified=True,
    ),
    _spec(
        "serial", YELLOW, "device serial number (key)",
        "serial number", "serial no", "serialnumber",
        qualified=True,
    ),
    _spec(
        "identification", YELLOW, "national or government identification number (key)",
        "identification number", "id number", "national id", "national identification number", "government id",
        "id card", "tax id", "taxpayer id", "national insurance number", "personal id number",
    ),
    _spec(
        "certificate", YELLOW, "certificate number (key)",
        "certificate number", "certificate id", "cert number",
    ),
    _spec(
        "medication", YELLOW, "medication (key)",
        "medications", "medicine", "medicines", "prescription", "prescriptions",
        qualified=True,
        fuzzy=("medication", "medicine"),  # not "prescription": "description" scores 0.86
        exclude=("meditation", "meditations", "dedication"),  # Dice 0.78 and 0.89 with "medication"
    ),
    _spec(
        "allergy", YELLOW, "allergy (key)",
        "allergies", "allergen", "allergens",
        qualified=True,
    ),
    _spec(
        "condition", YELLOW, "medical condition (key; exact only: 'condition' is also a product's)",
        "conditions", "medical condition", "medical conditions", "health condition", "health conditions",
        "pre existing condition", "pre existing conditions",
        similar=False,
    ),
    _spec(
        "diagnosis", YELLOW, "medical diagnosis (key)",
        "diagnoses", "diagnosis code", "icd code", "icd10 code",
        qualified=True, exclude=("diagnostic", "diagnostics"),  # Dice 0.71 with "diagnosis"
    ),
    _spec(
        "procedure", YELLOW, "medical procedure (key; exact only: 'procedure' is a common word)",
        "procedures", "medical procedure", "medical procedures", "surgery", "surgical procedure",
        similar=False,
    ),
    _spec(
        "sexual_orientation", YELLOW, "sexual orientation (key)",
        "sexuality", "sexual preference",
        exclude=("orientation", "screen orientation", "device orientation"),  # "orientation" scores 0.8
    ),
)  # fmt: skip


class KeyIndex:
    """All matchers' key terms, so that a key is normalised once and decided for every matcher.

    ``hits(key)`` is the set of matcher names whose terms match ``key`` (with the rule that a
    similar match counts only when no matcher matched exactly or qualified). The index only finds
    the few candidate matchers for a key (by exact form, qualified suffix and shared bigrams); each
    candidate's :class:`KeyTerms` decides. With ``cache_size`` above 0 the decisions (and key
    normalisations) are cached per key (``functools.lru_cache``); keys longer than 256 characters
    are never cached. ``cache_size=0`` caches nothing.
    """

    def __init__(self, specs: Sequence[MatcherSpec], cache_size: int = DEFAULT_KEY_CACHE_SIZE) -> None:
        self._specs = {spec.name: spec for spec in specs}
        self._exact: dict[str, set[str]] = {}
        self._suffixes: dict[tuple[str, ...], set[str]] = {}
        self._bigrams: dict[str, list[int]] = {}
        self._fuzzy: list[tuple[str, int, float]] = []  # (matcher, bigram count, threshold)
        for spec in specs:
            compacts, suffixes, fuzzy = spec.key_terms.index_entries()
            for compact in compacts:
                self._exact.setdefault(compact, set()).add(spec.name)
            for words in suffixes:
                self._suffixes.setdefault(words, set()).add(spec.name)
            for bigrams, threshold in fuzzy:
                for bigram in bigrams:
                    self._bigrams.setdefault(bigram, []).append(len(self._fuzzy))
                self._fuzzy.append((spec.name, len(bigrams), threshold))
        self._suffix_lengths = sorted({len(words) for words in self._suffixes})
        self._cache_normalized = cache_size > 0
        self._cached: Callable[[str], frozenset[str]] | None = None
        if cache_size > 0:
            self._cached = lru_cache(maxsize=cache_size)(self._decide)

    def _strong_candidates(self, nk: NormalizedKey) -> set[str]:
        names = set(self._exact.get(nk.compact, ()))
        names.update(self._exact.get(nk.core_compact, ()))
        core = nk.core
        for length in self._suffix_lengths:
            if length >= len(core):
                break
            names.update(self._suffixes.get(core[-length:], ()))
        return names

    def _candidates(self, nk: NormalizedKey) -> set[str]:
        names = self._strong_candidates(nk)
        if nk.bigrams:
            shared: dict[int, int] = {}
            for bigram in nk.bigrams:
                for term in self._bigrams.get(bigram, ()):
                    shared[term] = shared.get(term, 0) + 1
            size = len(nk.bigrams)
            for term, count in shared.items():
                name, term_size, threshold = self._fuzzy[term]
                if 2.0 * count / (size + term_size) > threshold:
                    names.add(name)
        return names

    def _normalize(self, key: str | NormalizedKey) -> NormalizedKey:
        return key if isinstance(key, NormalizedKey) else normalize(key, cache=self._cache_normalized)

    def explain(self, key: str | NormalizedKey) -> dict[str, KeyMatch]:
        """Every matcher that matches ``key`` and how (exact, qualified or similar, and the term)."""
        nk = self._normalize(key)
        found = {}
        for name in self._candidates(nk):
            match = self._specs[name].key_terms.match(nk)
            if match is not None:
                found[name] = match
        if any(m.kind != "similar" for m in found.values()):
            found = {name: m for name, m in found.items() if m.kind != "similar"}
        return found

    def strongly_matched(self, key: str | NormalizedKey) -> bool:
        """True when some matcher matches ``key`` exactly or qualified (which voids similar ones)."""
        nk = self._normalize(key)
        for name in self._strong_candidates(nk):
            match = self._specs[name].key_terms.match(nk)
            if match is not None and match.kind != "similar":
                return True
        return False

    def _decide(self, key: str) -> frozenset[str]:
        return frozenset(self.explain(key))

    def hits(self, key: str) -> frozenset[str]:
        """The names of the matchers whose key terms match ``key``."""
        if self._cached is not None and len(key) <= _KEY_CACHE_MAX_LENGTH:
            return self._cached(key)
        return self._decide(key)

    def matches(self, name: str, key: str) -> bool:
        """Whether matcher ``name`` matches ``key``, without the cache: only that matcher's terms
        are compared, plus a check of the others' exact terms when the match is only similar."""
        nk = normalize(key, cache=False)
        match = self._specs[name].key_terms.match(nk)
        if match is None:
            return False
        return match.kind != "similar" or not self.strongly_matched(nk)

    def cache_clear(self) -> None:
        if self._cached is not None:
            self._cached.cache_clear()  # type: ignore[attr-defined]


def _key_matcher(index: KeyIndex, name: str, cached: bool) -> Callable[[str], bool]:
    if cached:
        decide = index._cached
        assert decide is not None
        hits = index.hits

        def match_key(key: str) -> bool:
            try:
                return name in (decide(key) if len(key) <= _KEY_CACHE_MAX_LENGTH else hits(key))
            except Exception:  # a non-str key from a misbehaving caller: never raise
                return False

    else:
        matches = index.matches

        def match_key(key: str) -> bool:
            try:
                return matches(name, key)
            except Exception:
                return False

    match_key.__name__ = f"match_key_{name}"
    return match_key


def _value_matcher(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def match_value(value: Any) -> bool:
        try:
            return check(value)
        except Exception:
            return False

    match_value.__name__ = f"match_value_{check.__name__}"
    return match_value


def build_matchers(cache_size: int = DEFAULT_KEY_CACHE_SIZE) -> list[MatcherType]:
    """The built-in matchers as :class:`gateway.MatcherType` objects sharing one :class:`KeyIndex`
    (``cache_size=0`` turns the key cache off, e.g. to measure it)."""
    index = KeyIndex(SPECS, cache_size)
    return [
        MatcherType(
            name=spec.name,
            default_class=spec.default_class,
            match_key=_key_matcher(index, spec.name, cached=cache_size > 0),
            match_value=_value_matcher(spec.value) if spec.value is not None else None,
            description=spec.description,
        )
        for spec in SPECS
    ]
