"""The ``segment`` destination: relays messages to Segment's HTTP Tracking API (``/v1/batch``)
or any Segment-compatible endpoint (another gateway, a peer collector).

The gateway then works as a first-party collector in front of a cloud workspace: each source's
messages go under the write key mapped to it, in batches within the endpoint's limits, with their
messageIds unchanged so the receiver deduplicates what a retry sends twice.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from gateway import (
    ComponentConfig,
    Destination,
    DestinationContext,
    DestinationType,
    HttpDelivery,
    Record,
    SendResult,
    __version__,
    check_http_url,
    hookimpl,
)

__all__ = ["ENDPOINTS", "SegmentConfig", "SegmentDestination"]

#: Segment's regional Tracking API hosts (an EU workspace must use its own: the US host answers
#: 200 and drops the events).
ENDPOINTS = {"us": "https://api.segment.io", "eu": "https://events.eu1.segmentapis.com"}
#: Segment's limits: 32 KB a message, 500 KB a batch request (the SDKs keep 475,000 bytes to
#: leave room for the envelope), 2,500 messages a batch.
MAX_MESSAGE_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 475_000
MAX_BATCH_MESSAGES = 2500


class SegmentConfig(ComponentConfig):
    """``[destinations.<id>]`` keys of a segment destination."""

    #: The write key of messages whose source has none in ``write_keys``.
    write_key: str | None = None
    #: Source id -> write key of the receiving workspace's source.
    write_keys: dict[str, str] = {}
    #: Segment region; ignored when ``endpoint`` is set.
    region: Literal["us", "eu"] = "us"
    #: Base URL of a Segment-compatible endpoint (``/v1/batch`` is appended).
    endpoint: str | None = None
    gzip: bool = False
    #: Messages larger than this (JSON bytes) are dead-lettered instead of sent.
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_request_bytes: int = MAX_REQUEST_BYTES
    max_batch_messages: int = MAX_BATCH_MESSAGES

    def __post_init__(self) -> None:
        if not self.write_key and not self.write_keys:
            raise ValueError("set write_key, write_keys (source id -> write key), or both")
        check_http_url("endpoint", self.endpoint)
        if not 1 <= self.max_batch_messages <= MAX_BATCH_MESSAGES:
            raise ValueError(f"max_batch_messages must be 1 to {MAX_BATCH_MESSAGES}")
        if self.max_message_bytes > self.max_request_bytes - 200:
            raise ValueError("max_message_bytes must leave room in max_request_bytes for the envelope")


def _sent_at() -> bytes:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z").encode()


_top_level = msgspec.json.Decoder(dict[str, msgspec.Raw])
_encode = msgspec.json.encode


def _relayed(body: bytes) -> bytes:
    """A stored message as the relay sends it: without the client's ``sentAt``. Its
    ``timestamp`` is already corrected for the client's clock; with the client's ``sentAt``
    the receiver would correct it again (``receivedAt - (sentAt - timestamp)``), by the
    client's skew plus the time the message waited here. Without it the batch's ``sentAt``,
    the time of sending, applies. Only the top level is parsed: the rest is copied as it is."""
    if b'"sentAt"' not in body:
        return body
    fields = _top_level.decode(body)
    if fields.pop("sentAt", None) is None:
        return body
    return _encode(fields)


class SegmentDestination(Destination):
    """Sends each batch as ``/v1/batch`` requests, one or more per write key.

    Error handling:
        A message over ``max_message_bytes``, or from a source without a write key, is
        dead-lettered alone. A receiver that lists refused items (``{"rejected": [{"index"...}]}``,
        as the gateway answers) gets those dead-lettered alone. 429, 408, 460 and 5xx (not
        501/505), timeouts and connection errors are retried, honouring ``Retry-After``; what was
        already sent is sent again with the same messageIds, which the receiver deduplicates.
        401, 403 and other 4xx are permanent.
    """

    def __init__(self, config: SegmentConfig, context: DestinationContext) -> None:
        self._config = config
        self._url = (config.endpoint or ENDPOINTS[config.region]).rstrip("/") + "/v1/batch"
        secrets = [key for key in (config.write_key, *config.write_keys.values()) if key]
        self._http = HttpDelivery(headers={"User-Agent": f"gateway/{__version__}"}, secrets=secrets)
        self._sent: Counter[str] = Counter()

    def _chunks(self, batch: Sequence[Record], rejected: dict[int, str]) -> list[tuple[str, list[Record]]]:
        """The requests to make: (write key, records), each within the endpoint's limits."""
        config = self._config
        chunks: list[tuple[str, list[Record]]] = []
        open_chunks: dict[str, tuple[list[Record], list[int]]] = {}
        for record in batch:
            key = config.write_keys.get(record.source) or config.write_key
            if not key:
                rejected[record.seq] = f"no write key for source {record.source!r} (write_keys)"
                continue
            if len(record.body) > config.max_message_bytes:
                rejected[record.seq] = f"message of {len(record.body)} bytes, over {config.max_message_bytes}"
                continue
            records, size = open_chunks.get(key, (None, [0]))
            if (
                records is None
                or len(records) >= config.max_batch_messages
                or (size[0] + len(record.body) + 1 > config.max_request_bytes - 200)
            ):
                records, size = [], [0]
                open_chunks[key] = (records, size)
                chunks.append((key, records))
            records.append(record)
            size[0] += len(record.body) + 1
        return chunks

    async def send(self, batch: Sequence[Record]) -> SendResult | None:
        rejected: dict[int, str] = {}
        exchange = None
        for key, records in self._chunks(batch, rejected):
            body = b'{"batch":[' + b",".join(_relayed(r.body) for r in records) + b'],"sentAt":"' + _sent_at() + b'"}'
            auth = base64.b64encode(f"{key}:".encode()).decode()
            response = await self._http.post(
                self._url,
                content=body,
                headers={"Content-Type": "application/json", "Authorization": f"Basic {auth}"},
                gzip=self._config.gzip,
            )
            self._http.raise_for_status(response)
            for index, why in _refused_items(response):
                if 0 <= index < len(records):
                    rejected[records[index].seq] = f"refused by the receiver: {why}"
                    exchange = self._http.exchange(response)
            self._sent.update(record.source for record in records)
        return SendResult(rejected=rejected, exchange=exchange) if rejected else None

    def status(self) -> dict[str, Any]:
        return {"endpoint": self._url, "messages_sent_by_source": dict(self._sent)}

    async def aclose(self) -> None:
        await self._http.aclose()


def _refused_items(response: Any) -> list[tuple[int, str]]:
    """Items a Segment-compatible receiver lists as refused in a 2xx answer (the gateway's
    ``{"success": true, "rejected": [{"index", "code", "message"}]}``); Segment itself lists none."""
    try:
        answer = response.json()
    except ValueError:
        return []
    items = answer.get("rejected") if isinstance(answer, dict) else None
    if not isinstance(items, list):
        return []
    refused = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("index"), int):
            refused.append((item["index"], f"{item.get('code', '')}: {item.get('message', '')}".strip(": ")))
    return refused


def _delivery_defaults(config: SegmentConfig) -> dict[str, Any]:
    return {
        "display_name": "Segment",
        # Segment.io is the name analytics.js gives Segment's own collection; a per-event
        # "All": false never blocks it (segment-api.md §2.4): the workspace routes the event.
        "also_named": ["Segment.io"],
        "all_false_applies": False,
        "batch_max_messages": min(1000, config.max_batch_messages),
        "batch_max_bytes": config.max_request_bytes - 200,
        "concurrency": 4,
    }


@hookimpl
def gateway_destination_types() -> list[DestinationType]:
    return [
        DestinationType(
            name="segment",
            config_type=SegmentConfig,
            factory=SegmentDestination,
            description="relay to Segment's HTTP API or any Segment-compatible endpoint",
            delivery_defaults=_delivery_defaults,
        )
    ]
