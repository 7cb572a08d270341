"""HMAC signatures of webhook bodies, as most senders make them: ``HMAC(secret, body)`` in hex
or base64, in a header the config names, maybe after a prefix (GitHub's ``sha256=``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence


def signature_of(body: bytes, secret: str, algorithm: str, encoding: str) -> str:
    """The signature the sender computes for ``body``."""
    digest = hmac.new(secret.encode("utf-8"), body, getattr(hashlib, algorithm)).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode("ascii")


def signature_valid(
    body: bytes, header: str | None, secrets: Sequence[str], *, algorithm: str, encoding: str, prefix: str
) -> bool:
    """Whether ``header`` holds the signature of ``body`` under one of ``secrets`` (more than one
    while a secret is being rotated). Comparisons take constant time; hex is compared without
    regard to case."""
    if not header or not header.startswith(prefix):
        return False
    given = header[len(prefix) :].strip()
    if encoding == "hex":
        given = given.lower()
    given_bytes = given.encode("utf-8", "replace")
    found = False
    for secret in secrets:  # every secret is tried, so the time does not say which one matched
        expected = signature_of(body, secret, algorithm, encoding).encode("ascii")
        found |= hmac.compare_digest(expected, given_bytes)
    return found
