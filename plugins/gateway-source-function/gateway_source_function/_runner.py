"""The webhook route and the function runs behind it: authenticate, read, run the operator's
function within its budget, hand the calls to the core, or keep the delivery for redrive."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from quart import Blueprint, Response, request

from gateway import (
    CALL_TYPES,
    BudgetExceeded,
    Candidate,
    Ingest,
    Invalid,
    Source,
    ThrottledWarning,
    call_within,
    error_response,
    json_response,
    load_callable,
    read_body,
    stable_uuid,
)

from ._signature import signature_valid
from .calls import WebhookRequest

if TYPE_CHECKING:
    from . import FunctionSourceConfig

log = structlog.get_logger("gateway_source_function")

#: Headers never passed to the function nor kept in a dead letter: they are credentials.
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


class FunctionFailed(Exception):
    """The function raised, ran out of time, or returned something that is not Segment calls."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class _Kept(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a raw dead letter of a function source holds: the request as the function saw it."""

    headers: dict[str, str]
    query: dict[str, str]
    body: str | None = None
    body_base64: bytes | None = None


class FunctionSources:
    """The function sources of one gateway: their route, and their functions (imported again
    when a reload gives a source new options, so an edited module is picked up)."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name
        self._loaded: dict[str, tuple[FunctionSourceConfig, Any]] = {}
        self._failures = ThrottledWarning(log, "source_function_failed")
        self._refusals = ThrottledWarning(log, "source_webhook_refused")

    # -- running the function -----------------------------------------------------------------

    def calls(self, source: Source, webhook: WebhookRequest) -> list[Candidate]:
        """Run the source's function on ``webhook``: the calls it returns, as candidates.

        Raises:
            FunctionFailed: it raised, timed out, or returned something else than calls.
        """
        options: FunctionSourceConfig = source.options
        try:
            function = self._function(source)
        except ValueError as error:
            raise FunctionFailed("function_error", str(error)) from None
        args = (options.settings,) if options.settings is not None else ()
        try:
            # A generator runs when it is iterated: inside the budget too.
            result = call_within(options.budget_ms / 1000, _run, function, webhook, *args)
        except BudgetExceeded:
            raise FunctionFailed("function_timeout", f"timed out after {options.budget_ms:g} ms") from None
        except (Exception, SystemExit) as error:  # sys.exit() in a function ends the delivery, not the gateway
            raise FunctionFailed("function_error", f"{type(error).__name__}: {error}") from None
        candidates = []
        for index, call in enumerate(_as_calls(result)):
            if type(call) is not dict or call.get("type") not in CALL_TYPES:
                raise FunctionFailed(
                    "function_error", f"call {index} is not a Segment call (a dict with a type): {call!r:.200}"
                )
            if webhook.delivery_id is not None and "messageId" not in call:
                # The same on every redelivery and redrive of this delivery, so it is stored once.
                call["messageId"] = stable_uuid("webhook", source.id, webhook.delivery_id, index)
            candidates.append(Candidate(call, call["type"]))
        return candidates

    def _function(self, source: Source) -> Any:
        loaded = self._loaded.get(source.id)
        if loaded is None or loaded[0] is not source.options:
            options: FunctionSourceConfig = source.options
            loaded = self._loaded[source.id] = (options, load_callable(options.function, options.path))
        return loaded[1]

    async def redrive(self, ingest: Ingest, source: Source, payload: bytes) -> Sequence[Candidate]:
        """``SourceType.redrive``: the kept delivery through the function as it is now."""
        kept = msgspec.json.decode(payload, type=_Kept)
        body = kept.body.encode("utf-8") if kept.body is not None else kept.body_base64 or b""
        options: FunctionSourceConfig = source.options
        delivery_id = kept.headers.get(options.delivery_id_header.lower()) if options.delivery_id_header else None
        webhook = WebhookRequest(body, kept.headers, kept.query, source.id, delivery_id)
        return self.calls(source, webhook)

    # -- the route --------------------------------------------------------------------------

    def blueprint(self, ingest: Ingest) -> Blueprint:
        bp = Blueprint(f"source_{self.type_name}", __name__)

        @bp.post("/v1/sources/<source_id>/webhook")
        async def webhook(source_id: str) -> Response:
            source = ingest.source(source_id, self.type_name)
            if source is None:
                return error_response(404, "unknown_source", f"no function source {source_id!r}")
            options: FunctionSourceConfig = source.options
            limit = min(options.max_body_bytes or ingest.limits.max_request_bytes, ingest.limits.max_request_bytes)
            try:
                body = await read_body(request, limit)
            except Invalid as error:
                if error.code == "payload_too_large":
                    ingest.count_rejected(error.code)
                    return error_response(413, error.code, error.message)
                raise
            refusal = self._refusal(ingest, source, body)
            if refusal is not None:
                ingest.count_rejected(refusal)
                self._refusals(source=source.id, code=refusal)
                return error_response(401, refusal, "the webhook's token or signature is not this source's")
            secret_headers = _CREDENTIAL_HEADERS | {(options.signature_header or "").lower()}
            headers = {k.lower(): v for k, v in request.headers.items() if k.lower() not in secret_headers}
            query = {k: v for k, v in request.args.items() if k != "token"}
            delivery_id = headers.get(options.delivery_id_header.lower()) if options.delivery_id_header else None
            arrival = ingest.arrival(request.remote_addr, request.headers.get("X-Forwarded-For"))
            try:
                candidates = self.calls(source, WebhookRequest(body, headers, query, source.id, delivery_id))
                checked = ingest.check(candidates, arrival, source=source)
                assert checked is not None  # not strict
                if checked.rejected:
                    problems = "; ".join(f"call {r.index}: {r.code}: {r.message}" for r in checked.rejected)
                    raise FunctionFailed("invalid_calls", f"the core rejected calls the function returned: {problems}")
            except FunctionFailed as failure:
                # Nothing of this delivery is stored: it is kept whole, and the sender retries.
                await ingest.keep_raw(source, _kept(headers, query, body), arrival, f"{options.function}: {failure}")
                self._failures(source=source.id, code=failure.code, error=str(failure))
                return error_response(
                    500, failure.code, "the source function failed on this delivery; it is kept for redrive"
                )
            outcome = await ingest.store(checked)
            return json_response({"success": True, "stored": outcome.stored, "duplicates": outcome.duplicates})

        return bp

    def _refusal(self, ingest: Ingest, source: Source, body: bytes) -> str | None:
        """Why the request may not post to ``source`` (a code), or None when it may."""
        options: FunctionSourceConfig = source.options
        if options.signature_header is not None:
            valid = signature_valid(
                body,
                request.headers.get(options.signature_header),
                options.secrets,
                algorithm=options.signature_algorithm,
                encoding=options.signature_encoding,
                prefix=options.signature_prefix,
            )
            return None if valid else "invalid_signature"
        found = ingest.authenticate(request.args.get("token"), self.type_name)
        return None if found is not None and found.id == source.id else "invalid_token"


def _run(function: Any, *args: Any) -> Any:
    result = function(*args)
    return list(result) if hasattr(result, "__next__") else result


def _as_calls(result: Any) -> Iterable[Any]:
    if result is None:
        return ()
    if isinstance(result, dict):
        return (result,)
    if isinstance(result, (list, tuple)):
        return result
    raise FunctionFailed("function_error", f"returned {type(result).__name__}, not a call, a list of calls or None")


def _kept(headers: dict[str, str], query: dict[str, str], body: bytes) -> bytes:
    try:
        kept = _Kept(headers, query, body=body.decode("utf-8"))
    except UnicodeDecodeError:
        kept = _Kept(headers, query, body_base64=body)
    return msgspec.json.encode(kept)
