"""``Stripe-Signature`` verification, exactly as Stripe documents it and as its official
library checks it (``stripe.WebhookSignature.verify_header``): the header is
``t=<unix time>,v1=<hex>,v1=<hex>,v0=<hex>`` (items split on ``,`` and each on ``=``, nothing
trimmed); a ``v1`` signature is the hex HMAC-SHA256, keyed by the endpoint's signing secret, of
``"<t>.<body>"``; any ``v1`` may match (Stripe sends several while an endpoint's secret is being
rolled), other schemes (``v0``, test-mode) are ignored; and ``t`` may not be older than the
tolerance (newer is accepted, as the library does). Our only addition: several secrets may be
configured (while *we* roll ours), and a payload passes when it passes with any of them.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Sequence
from hashlib import sha256

#: Stripe's default tolerance (``stripe.Webhook.DEFAULT_TOLERANCE``), in seconds.
DEFAULT_TOLERANCE_SECS = 300


class SignatureError(Exception):
    """The payload is not signed by Stripe with one of the secrets, or too long ago."""


def _timestamp_and_signatures(header: str) -> tuple[int, list[str]]:
    items = [item.split("=", 2) for item in header.split(",")]
    timestamp = int([item[1] for item in items if item[0] == "t"][0])  # noqa: RUF015 (as Stripe's library)
    return timestamp, [item[1] for item in items if item[0] == "v1"]


def verify(
    payload: bytes, header: str | None, secrets: Sequence[str], tolerance_secs: int, *, now: float | None = None
) -> int:
    """Check ``payload`` against its ``Stripe-Signature`` ``header``; return its timestamp.

    Raises:
        SignatureError: with the reason, in Stripe's words.
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError("the payload is not UTF-8") from None
    if not header:
        raise SignatureError("No Stripe-Signature header value was provided")
    try:
        timestamp, signatures = _timestamp_and_signatures(header)
    except Exception:  # what the library catches: a missing t, an item without "=", t not an integer
        raise SignatureError("Unable to extract timestamp and signatures from header") from None
    if not signatures:
        raise SignatureError("No signatures found with expected scheme v1")
    signed = f"{timestamp:d}.{text}".encode()
    matched = False
    for secret in secrets:  # every secret and signature is compared, in constant time each
        expected = hmac.new(secret.encode("utf-8"), signed, sha256).hexdigest().encode()
        for signature in signatures:
            matched |= hmac.compare_digest(expected, signature.encode("utf-8", "replace"))
    if not matched:
        raise SignatureError("No signatures found matching the expected signature for payload")
    if tolerance_secs and timestamp < (time.time() if now is None else now) - tolerance_secs:
        raise SignatureError(f"Timestamp outside the tolerance zone ({timestamp})")
    return timestamp
