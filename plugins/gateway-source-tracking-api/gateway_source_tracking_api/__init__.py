"""The Segment HTTP Tracking API as a gateway source: single calls, batches, and their aliases."""

from __future__ import annotations

from typing import Any

import structlog
from quart import Blueprint, Response, request

from gateway import (
    Arrival,
    BatchDefaults,
    ComponentConfig,
    IngestHub,
    Invalid,
    SourceType,
    apply_server_fields,
    basic_auth_user,
    batch_item_type,
    decode_batch,
    decode_item,
    decode_single,
    error_response,
    hookimpl,
    json_response,
    read_body,
    success_response,
    validate,
)
from gateway.messages import TYPE_BY_LETTER

TYPE_NAME = "tracking_api"
log = structlog.get_logger("gateway.source.tracking_api")


class TrackingApiConfig(ComponentConfig):
    """Options of a tracking-API source beyond the core ``write_key`` (none yet)."""


def _unauthorized() -> Response:
    return error_response(
        401,
        "invalid_write_key",
        "unknown or missing write key: send it as the HTTP Basic user or as writeKey in the body",
    )


def _object_or_none(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def make_blueprint(hub: IngestHub) -> Blueprint:
    """The Tracking API routes, bound to ``hub``."""
    bp = Blueprint(TYPE_NAME, __name__)

    def client_ip() -> str | None:
        return hub.client_ip(request.remote_addr, request.headers.get("X-Forwarded-For"))

    async def single(call_type: str) -> Response:
        server = hub.server
        body = await read_body(request, server.max_request_bytes)
        if len(body) > server.max_message_bytes:
            raise Invalid(
                "message_too_large", f"Exceed payload limit: a message may be at most {server.max_message_bytes} bytes"
            )
        message = decode_single(body)
        body_key = message.get("writeKey")
        source = hub.authenticate(
            basic_auth_user(request) or (body_key if isinstance(body_key, str) else None), TYPE_NAME
        )
        if source is None:
            return _unauthorized()
        validate(message, call_type)
        apply_server_fields(message, call_type, Arrival.now(client_ip()))
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
        request_key = basic_auth_user(request) or (body.writeKey if isinstance(body.writeKey, str) else None)
        request_source = hub.authenticate(request_key, TYPE_NAME) if request_key else None
        if request_key and request_source is None:
            return _unauthorized()
        defaults = BatchDefaults(
            sent_at=body.sentAt,
            context=_object_or_none(body.context),
            integrations=_object_or_none(body.integrations),
        )
        arrival = Arrival.now(client_ip())
        accepted = []
        rejected: list[dict[str, Any]] = []
        for index, raw in enumerate(body.batch):
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
                    item_key = item.get("writeKey")
                    source = hub.authenticate(item_key if isinstance(item_key, str) else None, TYPE_NAME)
                    if source is None:
                        raise Invalid("invalid_write_key", "unknown or missing write key")
                call_type = batch_item_type(item)
                validate(item, call_type)
                apply_server_fields(item, call_type, arrival, defaults)
            except Invalid as error:
                rejected.append({"index": index, "code": error.code, "message": error.message})
            else:
                accepted.append((source, item))
        if rejected:
            log.info("messages_rejected", count=len(rejected), codes=sorted({r["code"] for r in rejected}))
            if not accepted:
                if request_source is None and all(r["code"] == "invalid_write_key" for r in rejected):
                    return _unauthorized()
                first = rejected[0]
                return error_response(
                    400, first["code"], f"no valid message in the batch: {first['message']}", rejected=rejected
                )
        await hub.ingest(accepted)
        if rejected:
            return json_response({"success": True, "rejected": rejected})
        return success_response()

    @bp.post("/v1/m")
    async def metrics() -> Response:
        await read_body(request, hub.server.max_request_bytes)
        return success_response()

    return bp


@hookimpl
def gateway_source_types() -> list[SourceType]:
    return [
        SourceType(
            name=TYPE_NAME,
            config_type=TrackingApiConfig,
            blueprint=make_blueprint,
            description="Segment HTTP Tracking API: /v1/{identify,track,page,screen,group,alias,batch}",
        )
    ]
