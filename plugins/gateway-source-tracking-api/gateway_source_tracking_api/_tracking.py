"""The HTTP Tracking API routes: single calls, batches and their aliases, client telemetry."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog
from quart import Blueprint, Response, request

from gateway import (
    Arrival,
    BatchDefaults,
    Invalid,
    Prepared,
    Source,
    apply_server_fields,
    batch_item_type,
    decode_batch,
    decode_item,
    decode_single,
    error_response,
    json_response,
    read_body,
    success_response,
    validate,
)
from gateway.messages import TYPE_BY_LETTER, BatchBody, encode

from ._common import Routes, unauthorized

log = structlog.get_logger("gateway.source.tracking_api")


def _object_or_none(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def add_tracking_routes(bp: Blueprint, routes: Routes) -> None:
    hub = routes.hub

    def source_from_here(write_key: object) -> Source | None:
        """The source of a write key, refused (403) when this request's origin may not use it."""
        source = routes.source_for(write_key)
        if source is not None:
            routes.check_origin(source)
        return source

    async def single(call_type: str) -> Response:
        body = await read_body(request, hub.server.max_request_bytes)
        arrival = Arrival.now(routes.client_ip())
        prepared = prepare_single(
            routes, body, call_type, routes.header_key(), arrival, source_from_here, declining=False
        )
        if prepared is None:
            return unauthorized()
        await hub.store(prepared)
        return success_response()

    @bp.post("/v1/<call>")
    async def single_call(call: str) -> Response:
        call_type = TYPE_BY_LETTER.get(call) if len(call) == 1 else call
        if call_type not in TYPE_BY_LETTER.values():
            return error_response(404, "not_found", f"no endpoint /v1/{call}")
        return await single(call_type)

    @bp.post("/v1/batch")
    @bp.post("/v1/import")
    @bp.post("/v1/b")
    async def batch() -> Response:
        server = hub.server
        body = decode_batch(await read_body(request, server.max_request_bytes))
        request_key = routes.header_key() or (body.writeKey if isinstance(body.writeKey, str) else None)
        request_source = routes.source_for(request_key) if request_key else None
        if request_key and request_source is None:
            return unauthorized()
        if request_source is not None:
            routes.check_origin(request_source)
        prepared, rejected = accept_items(
            routes, body, request_source, Arrival.now(routes.client_ip()), source_from_here, declining=False
        )
        assert prepared is not None
        if rejected:
            # One entry stands for all the items past the batch limit.
            excess = max(0, len(body.batch) - server.max_batch_messages)
            counts = [excess if r["code"] == BATCH_LIMIT_EXCEEDED else 1 for r in rejected]
            log.info("messages_rejected", count=sum(counts), codes=sorted({r["code"] for r in rejected}))
            for r, count in zip(rejected, counts, strict=True):
                hub.count_rejected(r["code"], count)
            if sum(counts) == len(body.batch):
                if request_source is None and all(r["code"] == "invalid_write_key" for r in rejected):
                    return unauthorized()
                first = rejected[0]
                return error_response(
                    400, first["code"], f"no valid message in the batch: {first['message']}", rejected=rejected
                )
        await hub.store(prepared)
        if rejected:
            return json_response({"success": True, "rejected": rejected})
        return success_response()

    @bp.post("/v1/m")
    async def metrics() -> Response:
        await read_body(request, hub.server.max_request_bytes)
        return success_response()


BATCH_LIMIT_EXCEEDED = "batch_limit_exceeded"


def accept_items(
    routes: Routes,
    body: BatchBody,
    request_source: Source | None,
    arrival: Arrival,
    item_source: Callable[[object], Source | None],
    *,
    declining: bool,
) -> tuple[Prepared | None, list[dict[str, Any]]]:
    """Decode, validate, rate-check and prepare a batch's items: what to store and the
    rejected items by index. ``declining`` (the fast path): no Prepared when any item is
    rejected, before any side effect. ``item_source`` finds an item's source by its writeKey
    when the request named none. The item dicts live only in here, so none is held while
    the commit is awaited (see IngestHub.prepare).

    Raises:
        Refused: the batch as a whole (an origin the source refuses, or its rate limit).
    """
    server = routes.hub.server
    defaults = BatchDefaults(
        sent_at=body.sentAt,
        context=_object_or_none(body.context),
        integrations=_object_or_none(body.integrations),
    )
    # The batch root's context and integrations are merged into every item that lacks them:
    # the per-message limit counts them, or a small request could store thousands of copies of
    # a root as large as the request.
    root_bytes = sum(len(encode(part)) for part in (defaults.context, defaults.integrations) if part)
    limit = server.max_batch_messages
    accepted = []
    rejected: list[dict[str, Any]] = []
    for index, raw in enumerate(body.batch[:limit]):
        try:
            if len(raw) + root_bytes > server.max_message_bytes:
                raise Invalid(
                    "message_too_large",
                    f"Exceed payload limit: a message may be at most {server.max_message_bytes} bytes",
                )
            item = decode_item(raw)
            source = request_source
            if source is None:
                source = item_source(item.get("writeKey"))
                if source is None:
                    raise Invalid("invalid_write_key", "unknown or missing write key")
            call_type = batch_item_type(item)
            validate(item, call_type)
            apply_server_fields(item, call_type, arrival, defaults)
        except Invalid as error:
            if declining:
                return None, [{"index": index, "code": error.code, "message": error.message}]
            rejected.append({"index": index, "code": error.code, "message": error.message})
        else:
            accepted.append((source, item))
    if len(body.batch) > limit:  # one entry for all of them: the answer stays small
        excess = {
            "index": limit,
            "code": BATCH_LIMIT_EXCEEDED,
            "message": f"a batch may hold at most {limit} messages: "
            f"items {limit} to {len(body.batch) - 1} were not taken",
        }
        if declining:
            return None, [excess]
        rejected.append(excess)
    # A 429 refuses the whole batch before its rejected items are counted: the client sends
    # it all again, and they are counted then.
    sources = {id(source): source for source, _ in accepted}
    counts = Counter(id(source) for source, _ in accepted)
    routes.check_rate([(sources[key], n) for key, n in counts.items()])
    return routes.hub.prepare(accepted), rejected


def prepare_single(
    routes: Routes,
    body: bytes,
    call_type: str,
    header_key: str | None,
    arrival: Arrival,
    find_source: Callable[[object], Source | None],
    *,
    declining: bool,
) -> Prepared | None:
    """Decode, authenticate, validate, rate-check and prepare a single call's body; None when
    the write key (from the header, else the body) is unknown. ``declining`` (the fast path):
    every check that can fail runs before any side effect.

    Raises:
        Invalid: the message is bad (400).
        Refused: the request as a whole (an origin the source refuses, or its rate limit).
    """
    server = routes.hub.server
    if len(body) > server.max_message_bytes:
        raise Invalid(
            "message_too_large", f"Exceed payload limit: a message may be at most {server.max_message_bytes} bytes"
        )
    message = decode_single(body)
    source = find_source(header_key or message.get("writeKey"))
    if source is None:
        return None
    validate(message, call_type)
    if declining:  # the fast path: a bad timestamp must decline before any token is taken
        apply_server_fields(message, call_type, arrival)
        routes.check_rate([(source, 1)])
    else:
        routes.check_rate([(source, 1)])
        apply_server_fields(message, call_type, arrival)
    return routes.hub.prepare([(source, message)])
