"""The HTTP Tracking API routes: single calls, batches and their aliases, client telemetry.

The core checks and stores (``gateway.Ingest``); these routes read the request, find its
source by write key and origin, and turn what the core accepted and rejected into the answers
the official clients expect.
"""

from __future__ import annotations

from quart import Blueprint, Response, request

from gateway import (
    CALL_TYPES,
    Candidate,
    Invalid,
    error_response,
    json_response,
    read_body,
    success_response,
)

from ._common import Routes, unauthorized

#: analytics.js's short paths: ``/v1/t`` is track, ``/v1/i`` identify...
TYPE_BY_LETTER = {name[0]: name for name in CALL_TYPES}
INVALID_WRITE_KEY = "invalid_write_key"


def add_tracking_routes(bp: Blueprint, routes: Routes) -> None:
    ingest = routes.ingest

    async def single(call_type: str) -> Response:
        body = await read_body(request, ingest.limits.max_request_bytes)
        # The header's write key wins, and an unknown one refuses the request; else the body's.
        header_key = routes.header_key()
        source = None
        if header_key:
            source = routes.source_from_here(header_key)
            if source is None:
                return unauthorized()
        checked = ingest.check(
            [Candidate(body, call_type)], routes.arrival(), source=source, find_source=routes.source_from_here
        )
        assert checked is not None  # not strict
        if checked.rejected:
            [rejection] = checked.rejected
            if rejection.code == INVALID_WRITE_KEY:
                return unauthorized()
            return error_response(400, rejection.code, rejection.message)
        await ingest.store(checked)
        return success_response()

    @bp.post("/v1/<call>")
    async def single_call(call: str) -> Response:
        call_type = TYPE_BY_LETTER.get(call) if len(call) == 1 else call
        if call_type not in CALL_TYPES:
            return error_response(404, "not_found", f"no endpoint /v1/{call}")
        return await single(call_type)

    @bp.post("/v1/batch")
    @bp.post("/v1/import")
    @bp.post("/v1/b")
    async def batch() -> Response:
        body = await read_body(request, ingest.limits.max_request_bytes)
        try:
            checked = ingest.check_batch(
                body, routes.arrival(), write_key=routes.header_key(), find_source=routes.source_from_here
            )
        except Invalid as error:
            if error.code == INVALID_WRITE_KEY:
                return unauthorized()
            raise
        assert checked is not None  # not strict
        rejected = [rejection.answer() for rejection in checked.rejected]
        if rejected and not checked.accepted:
            # Clients drop a whole batch on any 4xx: only a batch with nothing good in it gets one.
            if all(r["code"] == INVALID_WRITE_KEY for r in rejected):
                return unauthorized()
            first = rejected[0]
            return error_response(
                400, first["code"], f"no valid message in the batch: {first['message']}", rejected=rejected
            )
        await ingest.store(checked)
        if rejected:
            return json_response({"success": True, "rejected": rejected})
        return success_response()

    @bp.post("/v1/m")
    async def metrics() -> Response:
        await read_body(request, ingest.limits.max_request_bytes)
        return success_response()
