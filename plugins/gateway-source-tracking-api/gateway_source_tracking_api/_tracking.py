"""The HTTP Tracking API routes: single calls, batches and their aliases, client telemetry."""

from __future__ import annotations

from typing import Any

import structlog
from msgspec import Raw
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
from gateway.messages import TYPE_BY_LETTER

from ._common import Routes, unauthorized

log = structlog.get_logger("gateway.source.tracking_api")


def _object_or_none(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def add_tracking_routes(bp: Blueprint, routes: Routes) -> None:
    hub = routes.hub

    async def single(call_type: str) -> Response:
        server = hub.server
        body = await read_body(request, server.max_request_bytes)
        if len(body) > server.max_message_bytes:
            raise Invalid(
                "message_too_large", f"Exceed payload limit: a message may be at most {server.max_message_bytes} bytes"
            )
        message = decode_single(body)
        source = routes.source_for(routes.header_key() or message.get("writeKey"))
        if source is None:
            return unauthorized()
        routes.check_origin(source)
        validate(message, call_type)
        routes.check_rate(source, 1)
        apply_server_fields(message, call_type, Arrival.now(routes.client_ip()))
        await hub.ingest([(source, message)])
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
        defaults = BatchDefaults(
            sent_at=body.sentAt,
            context=_object_or_none(body.context),
            integrations=_object_or_none(body.integrations),
        )
        prepared, rejected = accept_items(body.batch, request_source, defaults, Arrival.now(routes.client_ip()))
        if rejected:
            log.info("messages_rejected", count=len(rejected), codes=sorted({r["code"] for r in rejected}))
            for r in rejected:
                hub.count_rejected(r["code"])
            if len(rejected) == len(body.batch):
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

    def accept_items(
        items: list[Raw], request_source: Source | None, defaults: BatchDefaults, arrival: Arrival
    ) -> tuple[Prepared, list[dict[str, Any]]]:
        """Decode, validate, rate-check and prepare a batch's items: what to store and the
        rejected items by index. The item dicts live only in here, so none is held while the
        commit is awaited (see IngestHub.prepare)."""
        server = hub.server
        accepted = []
        rejected: list[dict[str, Any]] = []
        for index, raw in enumerate(items):
            try:
                if index >= server.max_batch_messages:
                    raise Invalid(
                        "batch_limit_exceeded", f"a batch may hold at most {server.max_batch_messages} messages"
                    )
                if len(raw) > server.max_message_bytes:
                    raise Invalid(
                        "message_too_large",
                        f"Exceed payload limit: a message may be at most {server.max_message_bytes} bytes",
                    )
                item = decode_item(raw)
                source = request_source
                if source is None:
                    source = routes.source_for(item.get("writeKey"))
                    if source is None:
                        raise Invalid("invalid_write_key", "unknown or missing write key")
                    routes.check_origin(source)
                call_type = batch_item_type(item)
                validate(item, call_type)
                apply_server_fields(item, call_type, arrival, defaults)
            except Invalid as error:
                rejected.append({"index": index, "code": error.code, "message": error.message})
            else:
                accepted.append((source, item))
        # A 429 refuses the whole batch before its rejected items are counted: the client sends
        # it all again, and they are counted then.
        for source in {id(s): s for s, _ in accepted}.values():
            routes.check_rate(source, sum(1 for s, _ in accepted if s is source))
        return hub.prepare(accepted), rejected

    @bp.post("/v1/m")
    async def metrics() -> Response:
        await read_body(request, hub.server.max_request_bytes)
        return success_response()
