"""The ``http`` destination: POST batches of messages as JSON to a webhook URL.

With ``delete_url`` set, a deletion request (``gateway privacy delete USER_ID``) POSTs
``{"type": "delete", "userId": "..."}`` there.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from gateway import (
    ComponentConfig,
    DeliveryError,
    Destination,
    DestinationContext,
    DestinationType,
    Exchange,
    Record,
    __version__,
    check_http_url,
    hookimpl,
)

#: Statuses worth sending again; everything else that is not 2xx is a permanent refusal.
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429}) | (frozenset(range(500, 600)) - {501, 505})


class HttpConfig(ComponentConfig):
    """``[destinations.<id>]`` keys of an http destination."""

    url: str
    headers: dict[str, str] = {}
    gzip: bool = False
    #: Where deletion requests are sent as ``{"type": "delete", "userId": ...}``; off if unset.
    delete_url: str | None = None

    def __post_init__(self) -> None:
        check_http_url("url", self.url)
        check_http_url("delete_url", self.delete_url)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: an integer or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def batch_body(batch: Sequence[Record]) -> bytes:
    """``{"batch": [...], "sentAt": ...}`` built from the stored bodies without re-encoding them."""
    sent_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return b'{"batch":[' + b",".join(r.body for r in batch) + b'],"sentAt":"' + sent_at.encode() + b'"}'


class HttpDestination(Destination):
    """One pooled HTTP client per destination; the worker applies the timeout."""

    def __init__(self, config: HttpConfig, context: DestinationContext) -> None:
        self._config = config
        headers = {"Content-Type": "application/json", "User-Agent": f"gateway/{__version__}"}
        if config.gzip:
            headers["Content-Encoding"] = "gzip"
        headers.update(config.headers)
        self._client = httpx.AsyncClient(headers=headers, timeout=None, follow_redirects=False)

    async def send(self, batch: Sequence[Record]) -> None:
        plain = batch_body(batch)
        body = gzip.compress(plain, compresslevel=5) if self._config.gzip else plain
        try:
            response = await self._client.post(self._config.url, content=body)
        except httpx.TransportError as error:
            raise DeliveryError(
                f"{type(error).__name__}: {error}", retryable=True, kind="connection", exchange=self._sample(plain)
            ) from error
        status = response.status_code
        if 200 <= status < 300:
            return
        detail = f"HTTP {status} from {self._config.url}: {response.text[:200]}"
        retryable = status in RETRYABLE_STATUSES
        raise DeliveryError(
            detail,
            retryable=retryable,
            retry_after=parse_retry_after(response.headers.get("Retry-After")) if retryable else None,
            kind=f"http_{status}",
            exchange=self._sample(plain, response),
        )

    def _sample(self, body: bytes, response: httpx.Response | None = None) -> Exchange:
        """The request (its body before gzip) and the answer, for the console's Event Delivery;
        the configured headers' values are redacted (they often carry a key)."""
        headers = {**self._client.headers, **self._config.headers}
        return Exchange.of(
            "POST",
            self._config.url,
            headers=headers,
            body=body,
            status=None if response is None else response.status_code,
            response_headers=None if response is None else dict(response.headers),
            response_body=b"" if response is None else response.content,
            secrets=list(self._config.headers.values()),
        )

    async def delete_user(self, user_id: str) -> int:
        """POST a deletion notice to ``delete_url``; 1 once it answered 2xx, 0 without one."""
        url = self._config.delete_url
        if url is None:
            return 0
        body = json.dumps({"type": "delete", "userId": user_id}).encode()
        if self._config.gzip:
            body = gzip.compress(body, compresslevel=5)
        try:
            response = await self._client.post(url, content=body)
        except httpx.TransportError as error:
            raise DeliveryError(f"{type(error).__name__}: {error}", retryable=True) from error
        status = response.status_code
        if 200 <= status < 300:
            return 1
        raise DeliveryError(f"HTTP {status} from {url}: {response.text[:200]}", retryable=status in RETRYABLE_STATUSES)

    async def aclose(self) -> None:
        await self._client.aclose()


@hookimpl
def gateway_destination_types() -> list[DestinationType]:
    return [
        DestinationType(
            name="http",
            config_type=HttpConfig,
            factory=HttpDestination,
            description="POST batches as JSON to a webhook URL",
        )
    ]
