"""The admin HTTP API: status, destinations, dead letters, privacy requests (suppression,
deletion), reload, audit, redacted config.

It listens on its own address (loopback by default) and every request must carry
``Authorization: Bearer <admin.token>`` or the console's session cookie (gateway.ops.auth);
without a configured token it is not started at all. The console (gateway.ops.console) is
served under ``/console/``.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from gateway.http.app import error_response, http_error_response, json_response
from gateway.ops.audit import audit
from gateway.ops.auth import REVOKED_SESSIONS_FILE, Sessions, add_security_headers, authenticate
from gateway.ops.console import console_blueprint
from gateway.ops.console_api import add_console_routes
from gateway.ops.status import gateway_status
from gateway.ops.status import struct_dict as _struct_dict

if TYPE_CHECKING:
    from gateway.runtime.gateway import Gateway


def create_admin_app(gateway: Gateway) -> QuartTrio:
    """The admin API of ``gateway``; the token is read from the current config on each request."""
    app = QuartTrio("gateway-admin")
    started = time.time()

    sessions = Sessions(revoked_path=Path(gateway.config.server.data_dir) / REVOKED_SESSIONS_FILE)

    @app.before_request
    async def authenticate_request() -> Response | None:
        return await authenticate(gateway.config.admin.token, sessions)

    app.after_request(add_security_headers)
    app.register_blueprint(console_blueprint(gateway, sessions, started))
    app.register_error_handler(HTTPException, http_error_response)

    @app.errorhandler(ValueError)
    async def bad_request(error: ValueError) -> Response:
        return error_response(400, "bad_request", str(error))

    @app.get("/status")
    async def status() -> Response:
        return json_response(await gateway_status(gateway, started))

    @app.get("/destinations/<did>")
    async def describe_destination(did: str) -> Response:
        running = gateway.destinations.get(did)
        if running is None:
            return error_response(404, "no_such_destination", f"no running destination {did!r}")
        try:
            with trio.fail_after(running.entity.core.timeout_secs):
                details = await running.destination.describe()
        except trio.TooSlowError:
            return error_response(504, "timeout", f"{did} did not describe itself within its timeout_secs")
        except Exception as error:  # a plugin's bug or its backend's trouble: say which
            return error_response(502, "describe_failed", f"{did}: {type(error).__name__}: {error}")
        return json_response(
            {
                "destination": did,
                "type": running.entity.core.type,
                **_struct_dict(running.worker.statistics()),
                "errors": [_struct_dict(sample) for sample in running.worker.error_samples()],
                "details": details,
            }
        )

    @app.post("/destinations/<did>/flush")
    async def flush_destination(did: str) -> Response:
        """Send what is stored now without waiting for a full batch; answer once it is booked
        (or after ``wait_secs``, default 300, with ``done: false``)."""
        running = gateway.destinations.get(did)
        if running is None:
            return error_response(404, "no_such_destination", f"no running destination {did!r}")
        wait_secs = request.args.get("wait_secs", 300.0, type=float)
        upto = running.worker.flush()
        with trio.move_on_after(max(0.0, wait_secs)):
            await running.worker.wait_cursor(upto)
        stats = running.worker.statistics()
        return json_response(
            {"destination": did, "upto_seq": upto, "done": stats.cursor >= upto, **_struct_dict(stats)}
        )

    @app.get("/dead-letters")
    async def dead_letters() -> Response:
        destination = request.args.get("destination") or None
        limit = request.args.get("limit", 100, type=int)
        letters = await gateway.log.dead_letters(destination=destination, limit=limit)
        return json_response(
            [
                {
                    "id": x.id,
                    "destination": x.destination,
                    "seq": x.seq,
                    "source": x.source,
                    "error": x.error,
                    "attempts": x.attempts,
                    "failed_at": x.failed_at,
                    "state": x.state,
                    "stage": x.stage,
                    "message": x.body.decode("utf-8", "replace"),
                }
                for x in letters
            ]
        )

    @app.post("/replays")
    async def replay() -> Response:
        body: dict[str, Any] = await request.get_json(force=True, silent=True) or {}
        destination, since_ms, until_ms = body.get("destination"), body.get("since_ms"), body.get("until_ms")
        if type(destination) is not str or type(since_ms) is not int or type(until_ms) not in (int, type(None)):
            return error_response(400, "bad_request", 'send {"destination": "...", "since_ms": int, "until_ms": int?}')
        try:
            started = await gateway.replay(destination, since_ms, until_ms)
        except KeyError:
            return error_response(404, "no_such_destination", f"no running destination {destination!r}")
        return json_response(
            {"replay": None if started is None else {**msgspec.to_builtins(started), "name": started.name}}
        )

    @app.post("/replays/cancel")
    async def cancel_replays() -> Response:
        body: dict[str, Any] = await request.get_json(force=True, silent=True) or {}
        destination = body.get("destination")
        if type(destination) is not str:
            return error_response(400, "bad_request", 'send {"destination": "..."}')
        cancelled = await gateway.cancel_replays(destination)
        if not cancelled and destination not in gateway.destinations:
            return error_response(404, "no_such_destination", f"no destination {destination!r} and no replay of it")
        return json_response({"cancelled": cancelled})

    async def change(action: str) -> Response:
        body: dict[str, Any] = await request.get_json(force=True, silent=True) or {}
        ids = [int(i) for i in body.get("ids", [])]
        destination = body.get("destination")
        if not ids and not destination:
            return error_response(400, "bad_request", 'send {"ids": [...]} or {"destination": "..."}')
        changed = await gateway.log.change_dead_letters(action, destination=destination, ids=ids)
        if action == "redrive" and changed:  # no need to wait for the workers' next poll
            for did, running in gateway.destinations.items():
                if destination in (None, did):
                    running.worker.redrive_now()
        return json_response({"changed": changed})

    @app.post("/dead-letters/redrive")
    async def redrive() -> Response:
        return await change("redrive")

    @app.post("/dead-letters/discard")
    async def discard() -> Response:
        return await change("discard")

    async def suppression(suppress: bool) -> Response:
        body: dict[str, Any] = await request.get_json(force=True, silent=True) or {}
        user_id = body.get("userId")
        if not isinstance(user_id, str) or not user_id:
            return error_response(400, "bad_request", 'send {"userId": "..."}')
        changed = await gateway.log.set_suppressed(user_id, suppress)
        return json_response({"userId": user_id, "suppressed": suppress, "changed": changed})

    @app.post("/privacy/suppress")
    async def suppress() -> Response:
        return await suppression(True)

    @app.post("/privacy/unsuppress")
    async def unsuppress() -> Response:
        return await suppression(False)

    @app.post("/privacy/delete")
    async def delete() -> Response:
        body: dict[str, Any] = await request.get_json(force=True, silent=True) or {}
        user_id = body.get("userId")
        if not isinstance(user_id, str) or not user_id:
            return error_response(400, "bad_request", 'send {"userId": "...", "keepCollecting": false}')
        keep_collecting = body.get("keepCollecting", False)
        if not isinstance(keep_collecting, bool):
            return error_response(400, "bad_request", "keepCollecting must be true or false")
        result = await gateway.delete_user(user_id, keep_collecting=keep_collecting)
        return json_response(_struct_dict(result))

    @app.get("/privacy/suppressions")
    async def suppressions() -> Response:
        return json_response(sorted(gateway.log.suppressed))

    @app.post("/reload")
    async def reload() -> Response:
        ok = await gateway.reload("admin_api")
        return json_response({"reloaded": ok}, 200 if ok else 422)

    @app.get("/audit")
    async def audit_report() -> Response:
        since = request.args.get("since")
        since_ms = int(datetime.fromisoformat(since).timestamp() * 1000) if since else None
        report = audit(await gateway.log.books(since_ms))
        return json_response(
            {
                "balanced": report.balanced,
                "destinations": [{**_struct_dict(d), "unaccounted": d.unaccounted} for d in report.destinations],
                "sources": [{**_struct_dict(s), "received": s.received} for s in report.sources],
            }
        )

    @app.get("/config")
    async def config() -> Response:
        return json_response(gateway.config.redacted())

    add_console_routes(app, gateway)
    return app
