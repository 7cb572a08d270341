"""What a destination that delivers over HTTP needs from the core: one pooled client that posts a
request, classifies the answer into the core's retryable / permanent failures (``Retry-After``
honoured) and keeps a redacted request/response sample for operators.

    self._http = HttpDelivery(headers={"Authorization": ...}, secrets=[config.api_key])
    response = await self._http.post(url, json=payload)     # transport errors raise DeliveryError
    if response.status_code == 400:
        ...                                                 # the vendor's own partial-refusal body
    self._http.raise_for_status(response)                   # other non-2xx: DeliveryError
"""

from __future__ import annotations

import gzip as _gzip
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode, urlsplit
from urllib.request import getproxies

import httpx
import msgspec

from gateway.components import Exchange
from gateway.errors import DeliveryError
from gateway.kit.http_client import HttpClient, HttpClientError, HttpResponse, SentRequest

#: Statuses that may pass: timeouts and conflicts, throttling, and server trouble except "not
#: implemented" and "version not supported" (as Segment's SDKs decide).
RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 409, 425, 429, 460}) | (frozenset(range(500, 600)) - {501, 505})
#: A ``Retry-After`` longer than this is taken as this (a confused server must not park a destination for days).
MAX_RETRY_AFTER_SECS = 300.0

_encode_json = msgspec.json.Encoder().encode

#: Byte -> its form encoding, as ``urllib.parse.quote_plus`` writes it: letters, digits and
#: ``_.-~`` as they are, space as ``+``, every other byte (of the UTF-8) as ``%XX``.
_FORM_BYTES = [
    chr(byte) if chr(byte).isascii() and (chr(byte).isalnum() or chr(byte) in "_.-~") else f"%{byte:02X}"
    for byte in range(256)
]
_FORM_BYTES[0x20] = "+"


#: The printable ASCII characters quote_plus escapes, in an order in which replacing each in
#: turn gives its result ("%" before the escapes bring it in, "+" before spaces become it).
_PRINTABLE_ESCAPES = sorted(
    ((char, _FORM_BYTES[ord(char)]) for char in map(chr, range(0x20, 0x7F)) if _FORM_BYTES[ord(char)] != char),
    key=lambda pair: {"%": 0, "+": 1, " ": 3}.get(pair[0], 2),
)
#: The bytes of a text that :data:`_PRINTABLE_ESCAPES` quotes entirely.
_PRINTABLE = bytes(range(0x20, 0x7F))


def _form_quote(text: str) -> str:
    """``quote_plus(text)``. Printable ASCII (what msgspec writes for ASCII data: a Mixpanel
    update batch is tens of kB of JSON) by a replace per character to escape that it holds,
    anything else at a table lookup a byte: 125 against 325 µs for 100 profile updates, and
    quote_plus takes 2.5 times as long as the table."""
    if text.isascii() and not text.encode().translate(None, _PRINTABLE):
        for char, escape in _PRINTABLE_ESCAPES:
            if char in text:
                text = text.replace(char, escape)
        return text
    return "".join(map(_FORM_BYTES.__getitem__, text.encode()))


def _urlencode_form(form: Mapping[str, str]) -> str:
    """``urlencode(form)`` for string keys and values."""
    if not all(type(key) is str and type(value) is str for key, value in form.items()):
        return urlencode(form)
    return "&".join(f"{_form_quote(key)}={_form_quote(value)}" for key, value in form.items())


def _proxies_in_environment() -> bool:
    """Whether the environment names an HTTP proxy (which httpx honours, and HttpClient does not)."""
    return any(scheme in getproxies() for scheme in ("http", "https", "all"))


def check_http_url(key: str, value: str | None) -> None:
    """Refuse (``ValueError``, for a config's ``__post_init__``) a ``value`` of the config key
    ``key`` that is not an ``http://`` or ``https://`` URL with a host; None is no URL. Caught
    when the config is read, not at the first send, where the error would carry the URL (and
    any credential in its query) into the log."""
    if value is None:
        return
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{key} must be an http:// or https:// URL with a host, got {value!r}")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (integer seconds or an HTTP date), capped at
    :data:`MAX_RETRY_AFTER_SECS`; None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(MAX_RETRY_AFTER_SECS, max(0.0, seconds))


#: Statuses that refuse a request whatever its records hold: a permanent one dead-letters the
#: batch at once (sending its records one by one would only repeat the refusal per record). A
#: redirect is one: it is not followed, so the endpoint moved for every record alike.
EVERY_RECORD_STATUSES = frozenset({300, 301, 302, 303, 305, 307, 308, 401, 403, 404, 405, 410})


class HttpDelivery:
    """A pooled HTTP client for one destination, with the core's error mapping.

    Args:
        headers: Sent with every request (``User-Agent``, auth).
        secrets: Strings never to show in samples or messages (API keys in URLs or bodies);
            header values that carry credentials are redacted anyway.
        retryable_statuses: The statuses :meth:`error` marks retryable.
        transport: An ``httpx`` transport (tests, proxies); the default opens real connections.

    Resource handling:
        One connection pool; close it with :meth:`aclose` (a destination's ``aclose``).
        No timeout of its own: the delivery worker applies ``timeout_secs`` around ``send``.

    Error handling:
        :meth:`post` raises a retryable :class:`DeliveryError` (kind ``connection``) when no
        answer came; it returns every answer that came, whatever its status, so the caller can
        read a vendor's partial refusals first. :meth:`raise_for_status` and :meth:`error`
        turn a status into the core's classification.
    """

    def __init__(
        self,
        *,
        headers: Mapping[str, str] | None = None,
        secrets: Sequence[str] = (),
        retryable_statuses: Collection[int] = RETRYABLE_STATUSES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.secrets = [secret for secret in secrets if secret]
        self.retryable_statuses = frozenset(retryable_statuses)
        self._client: HttpClient | None = None
        self._httpx: httpx.AsyncClient | None = None
        if transport is None and not _proxies_in_environment():
            self._client = HttpClient(dict(headers or {}))
        else:  # httpx knows proxies (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY) and transports
            self._httpx = httpx.AsyncClient(
                headers=dict(headers or {}),
                timeout=None,
                follow_redirects=False,
                transport=transport,
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
            )

    async def post(
        self,
        url: str,
        *,
        json: Any = None,
        form: Mapping[str, str] | None = None,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        gzip: bool = False,
    ) -> HttpResponse:
        """POST one body (``json``: encoded with msgspec; ``form``: urlencoded; ``content``:
        bytes as they are), gzipped on demand; returns the answer, whatever its status.

        Raises:
            DeliveryError: retryable, kind ``connection``: no answer (refused, reset, DNS).
        """
        request_headers = dict(headers or {})
        if json is not None:
            body = _encode_json(json)
            request_headers.setdefault("Content-Type", "application/json")
        elif form is not None:
            body = _urlencode_form(form).encode()
            request_headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        else:
            body = content or b""
        if gzip:
            body = _gzip.compress(body, compresslevel=5)
            request_headers["Content-Encoding"] = "gzip"
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
        try:
            if self._client is not None:
                return await self._client.request("POST", url, request_headers, body)
            return await self._post_with_httpx(url, request_headers, body)
        except (HttpClientError, httpx.TransportError) as error:
            raise DeliveryError(
                f"no answer from {self._redact(url)}: {type(error).__name__}",
                retryable=True,
                kind="connection",
                exchange=self._sample(SentRequest("POST", url, request_headers, body), None),
            ) from None

    async def _post_with_httpx(self, url: str, headers: dict[str, str], body: bytes) -> HttpResponse:
        assert self._httpx is not None
        request = self._httpx.build_request("POST", url, content=body, headers=headers)
        response = await self._httpx.send(request)
        sent = SentRequest("POST", url, dict(request.headers), body)
        return HttpResponse(response.status_code, response.headers, response.content, sent)

    def exchange(self, response: HttpResponse) -> Exchange:
        """A redacted sample of ``response`` and the request that got it."""
        return self._sample(response.request, response)

    def _sample(self, request: SentRequest, response: HttpResponse | None) -> Exchange:
        body = request.content
        if request.headers.get("Content-Encoding") == "gzip":
            body = _gzip.decompress(body)
        headers = dict(request.headers)
        if response is None:
            return Exchange.of(request.method, request.url, headers=headers, body=body, secrets=self.secrets)
        return Exchange.of(
            request.method,
            request.url,
            headers=headers,
            body=body,
            status=response.status_code,
            response_headers=dict(response.headers),
            response_body=response.content,
            secrets=self.secrets,
        )

    def error(
        self,
        response: HttpResponse,
        detail: str = "",
        *,
        retryable: bool | None = None,
        retry_after: float | None = None,
        kind: str | None = None,
        every_record: bool | None = None,
    ) -> DeliveryError:
        """The :class:`DeliveryError` for a non-2xx answer: retryable by status (unless
        ``retryable`` says), waiting ``retry_after`` or the answer's ``Retry-After``, of kind
        ``http_<status>``, with the exchange as a sample and no credential in its message;
        refusing every record by status (unless ``every_record`` says: an API that refuses
        credentials with a 400)."""
        status = response.status_code
        if retryable is None:
            retryable = status in self.retryable_statuses
        if retry_after is None:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
        text = detail or response.text[:300]
        return DeliveryError(
            self._redact(f"HTTP {status}: {text}"),
            retryable=retryable,
            retry_after=retry_after if retryable else None,
            kind=kind or f"http_{status}",
            exchange=self.exchange(response),
            # Refused credentials or a missing endpoint refuse every record alike.
            every_record=status in EVERY_RECORD_STATUSES if every_record is None else every_record,
        )

    def raise_for_status(self, response: HttpResponse) -> None:
        """Return on a 2xx answer; raise :meth:`error` for anything else (a 3xx too: redirects
        are not followed, so nothing was delivered)."""
        if not 200 <= response.status_code < 300:
            raise self.error(response)

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        if self._httpx is not None:
            await self._httpx.aclose()


def chunk_encoded(
    items: list[bytes], owners: list[int], *, max_items: int, max_bytes: int
) -> list[tuple[list[bytes], list[int]]]:
    """Split encoded JSON items (each owned by ``owners[i]``, the index of the record it came
    from) into requests of at most ``max_items`` items whose JSON array fits in ``max_bytes``,
    with 1,000 bytes to spare for the envelope. A record's items may span two requests."""
    if len(items) != len(owners):
        raise ValueError("items and owners differ in length")
    if not items:
        return []
    if len(items) <= max_items and sum(map(len, items)) + len(items) <= max_bytes - 1000:
        return [(list(items), list(owners))]  # all in one request: the usual batch, without a step per item
    chunks: list[tuple[list[bytes], list[int]]] = []
    size = max_bytes
    for item, owner in zip(items, owners, strict=True):
        item_size = len(item) + 1
        if not chunks or len(chunks[-1][0]) >= max_items or size + item_size > max_bytes - 1000:
            chunks.append(([], []))
            size = 0
        chunks[-1][0].append(item)
        chunks[-1][1].append(owner)
        size += item_size
    return chunks
