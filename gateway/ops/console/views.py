"""The console's pages: login and logout, and one route per view. Each page is a frame
rendered here; the numbers in it come from the admin API (see the package docstring)."""

from __future__ import annotations

import hmac
import math
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
import trio
from quart import Blueprint, Response, g, redirect, render_template, request

from gateway.ops.auth import (
    CSRF_FIELD,
    LoginThrottle,
    Sessions,
    clear_session_cookie,
    safe_next,
    set_session_cookie,
)
from gateway.ops.status import gateway_status

if TYPE_CHECKING:
    from gateway.runtime.gateway import Gateway

log = structlog.get_logger()
HERE = Path(__file__).parent
#: A wrong token waits this long before its answer, which slows guessing from one connection.
WRONG_TOKEN_DELAY_SECS = 0.5
#: A destination whose last error is more recent than this is shown as failing.
FAILING_WITHIN_SECS = 300
#: The ranges Event Delivery and Delivery Overview offer (the API's ``range`` values).
RANGES = ("10m", "1h", "24h", "7d")


def console_blueprint(gateway: Gateway, sessions: Sessions, started: float) -> Blueprint:
    """The console's routes for ``gateway``'s admin app (whose API started at ``started``)."""
    console = Blueprint(
        "console",
        __name__,
        url_prefix="/console",
        template_folder=str(HERE / "templates"),
        static_folder=str(HERE / "static"),
        static_url_path="/static",
    )

    def token() -> str:
        return gateway.config.admin.token or ""

    async def page(template: str, http_status: int = 200, **context: Any) -> Response:
        session = g.get("console_session")
        body = await render_template(
            template,
            csrf_token=sessions.csrf_token(token(), session) if session is not None else "",
            logged_in=session is not None,
            source_ids=sorted(gateway.config.sources),
            destination_ids=sorted(gateway.destinations),
            ranges=RANGES,
            csrf_field=CSRF_FIELD,
            **context,
        )
        return Response(body, status=http_status, content_type="text/html; charset=utf-8")

    @console.get("/login")
    async def login_form() -> Response:
        return await page("login.html", next=safe_next(request.args.get("next")), error=None)

    throttle = LoginThrottle()

    @console.post("/login")
    async def login() -> Response:
        form = await request.form
        target = safe_next(form.get("next"))
        client = request.remote_addr or ""
        if (wait := throttle.wait_secs(client)) > 0:
            refused = await page(
                "login.html", http_status=429, next=target, error="Too many wrong tokens: try again in a minute."
            )
            refused.headers["Retry-After"] = str(math.ceil(wait))
            return refused
        given = form.get("token", "")
        if not token() or not hmac.compare_digest(given.encode(), token().encode()):
            throttle.failed(client)
            await trio.sleep(WRONG_TOKEN_DELAY_SECS)
            return await page("login.html", http_status=401, next=target, error="That is not the admin token.")
        cookie, _ = sessions.issue(token())
        response: Response = redirect(target, 303)  # type: ignore[assignment]
        set_session_cookie(response, cookie, sessions.lifetime_secs)
        return response

    @console.post("/logout")
    async def logout() -> Response:
        session = g.get("console_session")
        if session is not None:
            sessions.revoke(session)
            try:
                await trio.to_thread.run_sync(sessions.save)
            except OSError as error:  # revoked in memory still; said, not hidden
                log.warning("console_logout_not_saved", reason=str(error))
        response: Response = redirect("/console/login", 303)  # type: ignore[assignment]
        clear_session_cookie(response)
        return response

    @console.get("/")
    async def overview() -> Response:
        return await page("overview.html", **await health_context())

    @console.get("/fragments/health")
    async def health_fragment() -> Response:
        """The Overview's health panel alone: htmx swaps it in every few seconds."""
        return await page("_health.html", **await health_context())

    async def health_context() -> dict[str, Any]:
        status = msgspec.to_builtins(await gateway_status(gateway, started))
        now = time.time()
        return {
            "status": status,
            "sources": [
                {"id": sid, "type": entity.core.type, "filters": list(entity.core.filters), **source_health(sid)}
                for sid, entity in sorted(gateway.config.sources.items())
            ],
            "destinations": [
                {"id": did, **state, "health": destination_health(state, now)}
                for did, state in sorted(status["destinations"].items())
            ],
        }

    def source_health(sid: str) -> dict[str, Any]:
        """From the debugger's tap (what ``GET /sources/<id>/events`` reads): calls since the
        start, when the last came, and the outcomes of the calls kept."""
        tap = gateway.hub.tap
        kept = tap.recent(sid)
        outcomes = Counter(row[2] for row in kept)
        return {
            "seen": tap.seen(sid),
            "last_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(kept[0][1])) if kept else None,
            "kept": len(kept),
            "outcomes": dict(outcomes),
            "health": {"label": "rejecting", "reason": f"{outcomes['rejected']} of the last {len(kept)} calls refused"}
            if outcomes["rejected"]
            else {"label": "ok" if kept else "quiet", "reason": ""},
        }

    @console.get("/sources/<sid>/debugger")
    async def debugger(sid: str) -> Response:
        if sid not in gateway.config.sources:
            return await not_found(f"no source {sid!r}")
        return await page("debugger.html", source=sid, view="debugger")

    @console.get("/sources/<sid>/")
    async def source_overview(sid: str) -> Response:
        if sid not in gateway.config.sources:
            return await not_found(f"no source {sid!r}")
        return await page("source.html", source=sid, view="source")

    @console.get("/destinations/<did>/")
    async def delivery(did: str) -> Response:
        if did not in gateway.destinations:
            return await not_found(f"no running destination {did!r}")
        return await page(
            "delivery.html", destination=did, view="delivery", type=gateway.destinations[did].entity.core.type
        )

    async def not_found(what: str) -> Response:
        return await page("not_found.html", http_status=404, what=what)

    @console.record_once
    def root_redirect(state: Any) -> None:
        """A browser pointed at the admin listener's root lands on the console."""

        async def root() -> Response:
            response: Response = redirect("/console/", 303)  # type: ignore[assignment]
            return response

        state.app.add_url_rule("/", "console_root", root, methods=["GET"])

    return console


def destination_health(state: dict[str, Any], now: float) -> dict[str, str]:
    """``ok``, ``failing`` (an error within ``FAILING_WITHIN_SECS``) or ``behind`` (a backlog
    but no recent error), with the reason shown next to it."""
    recent = [e for e in state.get("errors", []) if now - float(e.get("last_at", 0)) < FAILING_WITHIN_SECS]
    if recent:
        latest = max(recent, key=lambda e: float(e["last_at"]))
        return {"label": "failing", "reason": f"{latest['kind']}: {latest['last_error']}"}
    if state.get("backlog_messages", 0):
        return {"label": "behind", "reason": f"{state['backlog_messages']} messages waiting"}
    return {"label": "ok", "reason": ""}
