"""Stripe as a cloud-app source: its webhooks, verified and mapped to Segment calls.

```toml
[sources.stripe]
type = "stripe"
write_key = "stripe-source"                       # required of every source; Stripe does not use it
signing_secret = { env = "STRIPE_WEBHOOK_SECRET" }  # whsec_...; a list while rolling it
tolerance_secs = 300                              # Stripe's default; 0 turns the age check off
user_id_metadata_key = "user_id"                  # metadata key holding your own user id
# events = ["customer.created", "invoice.paid"]   # default: every mapped type
```

Point a Stripe webhook endpoint at ``https://<gateway>/v1/sources/<id>/stripe``. Every event is
verified as Stripe's library verifies it (:mod:`gateway_source_stripe.signature`); a bad one is
answered 400 and counted (``gateway_messages_rejected_total{code="invalid_signature"}``).
Mapped types become one Segment call each (:mod:`gateway_source_stripe.mapping`) with the
Stripe event id as messageId, so Stripe's retries are stored once; other types are answered
200 and ignored. An event the mapping fails on is kept as a raw dead letter (500: Stripe
retries) and mapped again on ``gateway dead-letters redrive``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import msgspec
import structlog
from quart import Blueprint, Response, request

from gateway import (
    Candidate,
    ComponentConfig,
    Ingest,
    Invalid,
    Source,
    SourceType,
    ThrottledWarning,
    error_response,
    hookimpl,
    json_response,
    read_body,
)

from .mapping import MAPPINGS, segment_call
from .signature import DEFAULT_TOLERANCE_SECS, SignatureError, verify

__all__ = ["StripeConfig", "gateway_source_types"]

TYPE_NAME = "stripe"
log = structlog.get_logger("gateway_source_stripe")


class StripeConfig(ComponentConfig, frozen=True, kw_only=True):
    """``[sources.<id>]`` options of a ``stripe`` source."""

    #: The endpoint's signing secret (``whsec_...``), or several while rolling it: any may match.
    signing_secret: str | list[str]
    #: How old a signature's timestamp may be, in seconds (0: no limit), as Stripe's library.
    tolerance_secs: Annotated[int, msgspec.Meta(ge=0)] = DEFAULT_TOLERANCE_SECS
    #: The metadata key of Stripe objects that holds the app's own user id (the userId).
    user_id_metadata_key: str = "user_id"
    #: The Stripe event types to map (a subset of the mapped ones); None: all of them.
    events: list[str] | None = None

    def __post_init__(self) -> None:
        if not self.secrets or not all(self.secrets):
            raise ValueError("signing_secret: give the endpoint's signing secret (whsec_...)")
        unknown = sorted(set(self.events or ()) - set(MAPPINGS))
        if unknown:
            raise ValueError(f"events: {', '.join(unknown)} not mapped; mapped types: {', '.join(sorted(MAPPINGS))}")

    @property
    def secrets(self) -> list[str]:
        return [self.signing_secret] if isinstance(self.signing_secret, str) else list(self.signing_secret)


def calls_of(payload: bytes, options: StripeConfig) -> list[Candidate]:
    """The Segment call a Stripe event payload maps to (none for an ignored type).

    Raises:
        ValueError, KeyError, TypeError: the payload is not a Stripe event of the shape mapped.
    """
    event = msgspec.json.decode(payload)
    if not isinstance(event, dict):
        raise TypeError("the payload is not a JSON object")
    call = segment_call(event, options)
    return [] if call is None else [Candidate(call, call["type"])]


async def redrive(ingest: Ingest, source: Source, payload: bytes) -> Sequence[Candidate]:
    """``SourceType.redrive``: map a kept event again (its signature was checked on arrival)."""
    return calls_of(payload, source.options)


def make_blueprint(ingest: Ingest) -> Blueprint:
    bp = Blueprint(TYPE_NAME, __name__)
    refused = ThrottledWarning(log, "stripe_signature_refused")
    failed = ThrottledWarning(log, "stripe_mapping_failed")

    @bp.post("/v1/sources/<source_id>/stripe")
    async def webhook(source_id: str) -> Response:
        source = ingest.source(source_id, TYPE_NAME)
        if source is None:
            return error_response(404, "unknown_source", f"no stripe source {source_id!r}")
        options: StripeConfig = source.options
        try:
            payload = await read_body(request, ingest.limits.max_request_bytes)
        except Invalid as error:
            if error.code != "payload_too_large":
                raise
            return error_response(413, error.code, error.message)
        try:
            verify(payload, request.headers.get("Stripe-Signature"), options.secrets, options.tolerance_secs)
        except SignatureError as error:
            ingest.count_rejected("invalid_signature")
            refused(source=source.id, reason=str(error))
            return error_response(400, "invalid_signature", str(error))
        arrival = ingest.arrival(request.remote_addr, request.headers.get("X-Forwarded-For"))
        try:
            candidates = calls_of(payload, options)
            checked = ingest.check(candidates, arrival, source=source)
            assert checked is not None  # not strict
            if checked.rejected:
                raise ValueError("; ".join(f"{r.code}: {r.message}" for r in checked.rejected))
        except (ValueError, KeyError, TypeError) as error:  # msgspec.DecodeError is a ValueError
            # Signed by Stripe, so worth keeping: a fixed mapping can take it on redrive.
            await ingest.keep_raw(source, payload, arrival, f"{type(error).__name__}: {error}")
            failed(source=source.id, error=f"{type(error).__name__}: {error}")
            return error_response(500, "mapping_failed", "the event could not be mapped; it is kept for redrive")
        if not candidates:
            return json_response({"success": True, "stored": 0, "ignored": True})
        outcome = await ingest.store(checked)
        return json_response({"success": True, "stored": outcome.stored, "duplicates": outcome.duplicates})

    return bp


@hookimpl
def gateway_source_types() -> list[SourceType]:
    return [
        SourceType(
            name=TYPE_NAME,
            config_type=StripeConfig,
            blueprint=make_blueprint,
            redrive=redrive,
            description="Stripe webhooks (Stripe-Signature verified): customers, orders, subscriptions",
        )
    ]
