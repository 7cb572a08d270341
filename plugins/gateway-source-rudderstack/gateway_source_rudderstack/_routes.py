"""The routes RudderStack's SDKs call: the control plane's ``sourceConfig`` and the data plane's
single calls, batches and beacon batches, with CORS for browsers. The core checks and stores."""

from __future__ import annotations

from typing import Any

import msgspec
from quart import Blueprint, Response, g, request

from gateway import (
    BatchDefaults,
    Candidate,
    Ingest,
    Invalid,
    Source,
    add_cors_headers,
    basic_auth_user,
    error_response,
    json_response,
    origin_allowed,
    read_body,
)

from .events import CALLS, as_segment

#: What RudderStack's data plane answers a request it took.
OK = "OK"


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _decode(body: bytes) -> Any:
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as error:
        raise Invalid("invalid_json", f"the body is not JSON: {error}") from None


def make_blueprint(ingest: Ingest, type_name: str, prefix: str) -> Blueprint:
    bp = Blueprint(f"source_{type_name}", __name__, url_prefix=prefix)

    def source_for(write_key: object) -> Source:
        """The source of the write key, for this request's origin; refuses (401/403) otherwise."""
        source = ingest.authenticate(write_key, type_name)
        if source is None:
            raise _Refused(error_response(401, "invalid_write_key", "unknown or missing write key"))
        g.rudderstack_source = source
        origin = request.headers.get("Origin")
        if origin and not origin_allowed(source.options.allowed_origins, origin):
            raise _Refused(error_response(403, "origin_not_allowed", f"origin {origin} is not allowed for this source"))
        return source

    def request_key(body: Any = None) -> object:
        """The write key: HTTP Basic user (the SDKs), ``?writeKey=`` (beacons and sourceConfig),
        or ``writeKey`` in the body."""
        key = basic_auth_user(request) or request.args.get("writeKey")
        if key is None and isinstance(body, dict):
            key = body.get("writeKey")
        return key

    def arrival() -> Any:
        return ingest.arrival(request.remote_addr, request.headers.get("X-Forwarded-For"))

    @bp.get("/sourceConfig/")
    @bp.get("/sourceConfig")
    async def source_config() -> Response:
        write_key = request_key()
        source = source_for(write_key)
        options = source.options
        # The schema the SDK checks (isValidSourceConfig): source.id, source.config (an object)
        # and source.destinations (an array). No device-mode destinations and no stats
        # collection: the browser loads nothing more and talks to nobody but this gateway.
        return json_response(
            {
                "isHosted": False,
                "source": {
                    "id": source.id,
                    "name": options.name or source.id,
                    "writeKey": write_key,
                    "enabled": True,
                    "workspaceId": "gateway",
                    "config": {"statsCollection": {"errors": {"enabled": False}, "metrics": {"enabled": False}}},
                    "destinations": [],
                },
            }
        )

    @bp.post("/v1/<call>")
    async def single(call: str) -> Response:
        if call == "batch":
            return await batch()
        if call not in CALLS:
            return error_response(404, "not_found", f"no endpoint {prefix}/v1/{call}")
        body = _decode(await read_body(request, ingest.limits.max_request_bytes))
        source = source_for(request_key(body))
        if isinstance(body, dict):
            body.pop("writeKey", None)
        checked = ingest.check([Candidate(as_segment(body), call)], arrival(), source=source)
        assert checked is not None  # not strict
        if checked.rejected:
            [rejection] = checked.rejected
            return error_response(400, rejection.code, rejection.message)
        await ingest.store(checked)
        return Response(OK, status=200, content_type="text/plain")

    @bp.post("/beacon/v1/batch")
    async def batch() -> Response:
        body = _decode(await read_body(request, ingest.limits.max_request_bytes))
        source = source_for(request_key(body))
        items = body.get("batch") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise Invalid("invalid_batch", 'the body must be an object with a "batch" array')
        limit = ingest.limits.max_batch_messages
        if len(items) > limit:
            raise Invalid("batch_limit_exceeded", f"a batch may hold at most {limit} messages")
        context, integrations = body.get("context"), body.get("integrations")
        defaults = BatchDefaults(
            sent_at=body.get("sentAt"),
            context=context if isinstance(context, dict) else None,
            integrations=integrations if isinstance(integrations, dict) else None,
        )
        for item in items:
            if isinstance(item, dict):
                item.pop("writeKey", None)
        candidates = [Candidate(as_segment(item)) for item in items]
        checked = ingest.check(candidates, arrival(), source=source, defaults=defaults)
        assert checked is not None  # not strict
        rejected = [rejection.answer() for rejection in checked.rejected]
        if rejected and not checked.accepted:
            first = rejected[0]
            return error_response(
                400, first["code"], f"no valid event in the batch: {first['message']}", rejected=rejected
            )
        await ingest.store(checked)
        if rejected:
            return json_response({"success": True, "rejected": rejected})
        return Response(OK, status=200, content_type="text/plain")

    @bp.after_request
    async def cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if not origin:
            return response
        source: Source | None = g.get("rudderstack_source")
        sources = [source] if source is not None else ingest.sources_of_type(type_name)  # a preflight: no key
        if any(origin_allowed(s.options.allowed_origins, origin) for s in sources):
            add_cors_headers(
                response,
                origin,
                preflight=request.method == "OPTIONS",
                requested_headers=request.headers.get("Access-Control-Request-Headers"),
            )
        return response

    @bp.errorhandler(_Refused)
    async def refused(error: _Refused) -> Response:
        return error.response

    return bp
