"""GET-based collection for emails and landing pages: the Pixel API (segment-api.md §3), the
querystring API (§4) with its click redirect, and ``qs.js`` for pages without analytics.js.

An ``<img>`` must never break: bad data still gets the GIF (and a log line and a counter), but
nothing is acknowledged before it is durable, so a log that cannot take writes answers 503.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import unquote_plus, urlsplit

import msgspec
import structlog
from quart import Blueprint, Response, redirect, request

from gateway import CALL_TYPES, Candidate, Invalid, RateLimitedError, Source, error_response

from ._common import Routes

log = structlog.get_logger("gateway.source.tracking_api")

#: Dotted parameters nest at most this deep (the core refuses deeper messages anyway).
MAX_PARAM_DEPTH = 100
# The smallest transparent 1x1 GIF.
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_UNSAFE_URL = re.compile(r"[\x00-\x20\x7f\\]")
_HOST_NAME = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)*")

QS_JS = """(function () {
  /* Sends this page's ajs_* parameters to the gateway, as analytics.js would (segment-api.md §4). */
  var script = document.currentScript;
  if (!script) return;
  var q = location.search;
  if (!q && location.hash.indexOf("?") >= 0) q = location.hash.slice(location.hash.indexOf("?"));
  if (q.indexOf("ajs_") < 0) return;
  var src = new URL(script.src, location.href);
  var params = q.replace(/^\\?/, "").split("&").filter(function (p) { return p.indexOf("ajs_") === 0; });
  var url = src.origin + src.pathname.replace(/qs\\.js$/, "qs") + "?writeKey=" +
    encodeURIComponent(src.searchParams.get("writeKey") || "") + "&" + params.join("&");
  if (!(navigator.sendBeacon && navigator.sendBeacon(url))) new Image().src = url;
})();
"""


def gif_response() -> Response:
    response = Response(GIF, status=200, content_type="image/gif")
    response.headers["Cache-Control"] = "no-cache, no-store, must-revalidate"
    return response


def _b64decode(data: str) -> bytes:
    """Standard or URL-safe base64, padding optional; a ``+`` a query string turned into a space
    is turned back."""
    text = data.strip().replace(" ", "+").replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid("invalid_base64", "data is not base64") from None


def _dotted(params: list[tuple[str, str]]) -> dict[str, Any]:
    """``properties.subject=Hi&userId=u`` as ``{"properties": {"subject": "Hi"}, "userId": "u"}``."""
    message: dict[str, Any] = {}
    for name, value in params:
        *parents, leaf = name.split(".")
        if len(parents) >= MAX_PARAM_DEPTH:
            raise Invalid("nesting_too_deep", f"parameters may nest at most {MAX_PARAM_DEPTH} deep")
        node = message
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise Invalid("invalid_parameters", f"{name} conflicts with another parameter")
            node = child
        if isinstance(node.get(leaf), dict):
            raise Invalid("invalid_parameters", f"{name} conflicts with another parameter")
        node[leaf] = value
    return message


def pixel_message(params: list[tuple[str, str]]) -> dict[str, Any]:
    """The message a pixel request carries: ``data`` (base64 JSON) or the dotted parameters."""
    data = [value for name, value in params if name == "data"]
    if not data:
        return _dotted(params)
    # msgspec, as the core decodes any call: lone surrogates, NaN and numbers out of range are
    # refused (the stdlib's json took them, and the store then failed: 503).
    try:
        message = msgspec.json.decode(_b64decode(data[-1]))
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise Invalid("invalid_json", f"data is not base64-encoded JSON: {error}") from None
    except RecursionError:
        raise Invalid("nesting_too_deep", f"data nests deeper than {MAX_PARAM_DEPTH} levels") from None
    if not isinstance(message, dict):
        raise Invalid("message_not_object", "data must encode a JSON object")
    return message


def raw_params(query: bytes) -> list[tuple[str, str]]:
    """Query parameters as analytics.js reads them: values URI-decoded with ``+`` as space
    (malformed escapes kept), names left as they are."""
    params = []
    for part in query.decode("utf-8", "replace").split("&"):
        if part:
            name, _, value = part.partition("=")
            params.append((name, unquote_plus(value)))
    return params


def querystring_messages(params: list[tuple[str, str]]) -> list[tuple[str, dict[str, Any]]]:
    """The calls analytics.js makes for ``ajs_*`` parameters: anonymousId first, then identify
    with the traits, then track with the properties; the last occurrence of a name wins; empty
    ids do nothing."""
    values: dict[str, str] = {}
    traits: dict[str, str] = {}
    properties: dict[str, str] = {}
    for name, value in params:
        if name.startswith("ajs_trait_"):
            traits[name.removeprefix("ajs_trait_")] = value
        elif name.startswith("ajs_prop_"):
            properties[name.removeprefix("ajs_prop_")] = value
        elif name in ("ajs_aid", "ajs_uid", "ajs_event"):
            values[name] = value
    ids = {}
    if values.get("ajs_aid"):
        ids["anonymousId"] = values["ajs_aid"]
    calls = []
    if values.get("ajs_uid"):
        ids["userId"] = values["ajs_uid"]
        calls.append(("identify", {**ids, "traits": traits}))
    if values.get("ajs_event"):
        calls.append(("track", {**ids, "event": values["ajs_event"], "properties": properties}))
    return calls


def redirect_target(url: str | None, allowlist: list[str]) -> str:
    """``url`` if it is an http(s) URL whose host is on the allowlist; else Invalid. Anything odd
    (backslashes, whitespace, control characters, userinfo, no host) is refused: an open
    redirect is a security bug."""
    if not url or _UNSAFE_URL.search(url):
        raise Invalid("redirect_not_allowed", "url is missing or malformed")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError:
        raise Invalid("redirect_not_allowed", "url is malformed") from None
    host = (parts.hostname or "").lower().rstrip(".")
    if (
        parts.scheme not in ("http", "https")
        or not _HOST_NAME.fullmatch(host)
        or "@" in parts.netloc
        or not url.lower().startswith(f"{parts.scheme}://")
    ):
        raise Invalid("redirect_not_allowed", "url must be an absolute http(s) URL with a plain host name")
    for allowed in allowlist:
        allowed = allowed.lower()
        if host == allowed or (allowed.startswith(".") and (host.endswith(allowed) or host == allowed[1:])):
            return url
    raise Invalid("redirect_not_allowed", f"redirects to {host} are not allowed for this source")


def add_pixel_routes(bp: Blueprint, routes: Routes) -> None:
    ingest = routes.ingest

    def context() -> dict[str, Any]:
        user_agent = request.headers.get("User-Agent")
        return {"userAgent": user_agent} if user_agent else {}

    async def store(kind: str, source: Source, calls: list[tuple[str, dict[str, Any]]]) -> None:
        try:
            checked = ingest.check(
                [Candidate(message, call) for call, message in calls], routes.arrival(), source=source
            )
        except RateLimitedError as error:  # an <img> is never retried: count it, answer the GIF
            # Every call of the request is lost (the rejected counter is of messages).
            ingest.count_rejected("rate_limited", len(calls))
            log.info("ingest_rejected", endpoint=kind, code="rate_limited", error=str(error), count=len(calls))
            return
        assert checked is not None  # not strict
        for rejection in checked.rejected:  # counted by the core; an <img> has no one to tell
            log.info("ingest_rejected", endpoint=kind, code=rejection.code, error=rejection.message)
        await ingest.store(checked)

    def rejected(kind: str, error: Invalid) -> None:
        ingest.count_rejected(error.code)
        log.info("ingest_rejected", endpoint=kind, code=error.code, error=error.message)

    @bp.get("/v1/pixel/<call>")
    async def pixel(call: str) -> Response:
        if call not in CALL_TYPES:
            return error_response(404, "not_found", f"no pixel endpoint /v1/pixel/{call}")
        try:
            message = pixel_message(raw_params(request.query_string))
            source = routes.source_for(routes.header_key() or message.pop("writeKey", None))
            if source is None:
                raise Invalid("invalid_write_key", "unknown or missing write key")
            if isinstance(message.get("context"), dict):
                message["context"] = {**context(), **message["context"]}
            elif "context" not in message and context():
                message["context"] = context()
            await store("pixel", source, [(call, message)])
        except Invalid as error:
            rejected("pixel", error)
        return gif_response()

    async def querystring(*, follow: bool) -> Response:
        params = raw_params(request.query_string)
        named = dict(params)
        source = routes.source_for(routes.header_key() or named.get("writeKey"))
        target = None
        if follow:
            try:
                if source is None:
                    raise Invalid("invalid_write_key", "unknown or missing write key")
                target = redirect_target(named.get("url"), source.options.redirect_allowlist)
            except Invalid as error:
                rejected("qs_redirect", error)
                return error_response(400, error.code, error.message)
        try:
            if source is None:
                raise Invalid("invalid_write_key", "unknown or missing write key")
            calls = querystring_messages(params)
            for _, message in calls:
                if context():
                    message["context"] = context()
            if calls:
                await store("qs", source, calls)
        except Invalid as error:
            rejected("qs", error)
        if target is not None:
            response = redirect(target, 302)
            response.headers["Cache-Control"] = "no-store"
            return response
        return gif_response()

    @bp.route("/v1/qs", methods=["GET", "POST"])
    async def qs() -> Response:
        return await querystring(follow=False)

    @bp.get("/v1/qs/r")
    async def qs_redirect() -> Response:
        return await querystring(follow=True)

    @bp.get("/v1/qs.js")
    async def qs_js() -> Response:
        response = Response(QS_JS, status=200, content_type="application/javascript; charset=utf-8")
        response.headers["Cache-Control"] = "public, max-age=300"
        return response
