"""The ``amplitude`` destination: Segment calls to Amplitude's HTTP V2 API (``/2/httpapi``, or
the Batch Event Upload API ``/batch``).

identify becomes an ``$identify`` event setting user properties, group an ``$identify`` that
sets the user's group plus a ``$groupidentify`` with the group's properties; Order Completed
and Order Refunded carry revenue fields, with one "Product Purchased" event per product. Each
event's ``insert_id`` is its messageId, so Amplitude drops what a retry sends twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from gateway import (
    ComponentConfig,
    Destination,
    DestinationContext,
    DestinationType,
    Exchange,
    HttpDelivery,
    MappedContexts,
    Record,
    SendResult,
    __version__,
    check_http_url,
    chunk_encoded,
    hookimpl,
    parse_retry_after,
)
from gateway_destination_amplitude.mapping import INTEGRATION_NAMES, decode_message, events_of, to_amplitude

__all__ = ["HOSTS", "AmplitudeConfig", "AmplitudeDestination", "to_amplitude"]

#: Amplitude's hosts by data residency.
HOSTS = {"us": "https://api2.amplitude.com", "eu": "https://api.eu.amplitude.com"}
#: HTTP V2: at most 2,000 events and 1 MB a request (413 past either).
MAX_EVENTS = 2000
MAX_REQUEST_BYTES = 1_000_000
#: Amplitude asks to pause throttled users and devices for 30 s after a 429.
THROTTLE_PAUSE_SECS = 30.0

_encode = msgspec.json.Encoder().encode
_JSON = {"Content-Type": "application/json"}


class AmplitudeConfig(ComponentConfig):
    """``[destinations.<id>]`` keys of an amplitude destination."""

    #: The project's API key, sent in the body as ``api_key``.
    api_key: str
    region: Literal["us", "eu"] = "us"
    #: A base URL replacing the region's host (a proxy).
    endpoint: str | None = None
    #: Send to the Batch Event Upload API (``/batch``: for more than 30 events/s per user or device).
    use_batch_endpoint: bool = False
    #: Shortest user_id or device_id Amplitude accepts (its default is 5).
    min_id_length: int | None = None
    #: Revenue on each "Product Purchased" event instead of the order event (an Order Refunded,
    #: which has no product events, keeps its negative revenue).
    track_revenue_per_product: bool = False
    #: One "Product Purchased" event per product of Order Completed.
    products_as_events: bool = True
    #: Group type of group calls; ``group_type_trait`` / ``group_value_trait`` read them from traits.
    group_type: str = "[Segment] Group"
    group_type_trait: str | None = None
    group_value_trait: str | None = None

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError("api_key must not be empty")
        check_http_url("endpoint", self.endpoint)


#: 400 errors about the request's key or path, not its events (kind of each): every record of
#: the batch is refused alike, so the batch is dead-lettered at once, not sent again record by record.
_REQUEST_REFUSALS = {"invalid api key": "invalid_api_key", "invalid request path": "invalid_request_path"}


def _listed_indices(answer: dict[str, Any]) -> dict[int, list[str]]:
    """Event index -> what was wrong, from a 400's ``events_with_invalid_fields``,
    ``events_with_missing_fields`` and ``silenced_events``."""
    listed: dict[int, list[str]] = {}
    for key, problem in (("events_with_invalid_fields", "invalid"), ("events_with_missing_fields", "missing")):
        fields = answer.get(key)
        if isinstance(fields, dict):
            for field, indices in fields.items():
                for index in indices if isinstance(indices, list) else []:
                    if isinstance(index, int):
                        listed.setdefault(index, []).append(f"{problem} {field}")
    for index in answer.get("silenced_events") or []:
        if isinstance(index, int):
            listed.setdefault(index, []).append("device silenced")
    return listed


class AmplitudeDestination(Destination):
    """Posts each batch as one or more HTTP V2 requests.

    Error handling:
        A 400 that lists invalid, missing or silenced events: the records those events came from
        are dead-lettered (each alone) and the rest is sent again at once, as Amplitude asks.
        A 400 that lists none (a malformed request) and 403 (blocked by Amplitude's firewall)
        are permanent; ``Invalid API key`` and ``Invalid request path`` (400), like a redirect,
        refuse every record alike: the batch is dead-lettered at once. 413: the request is split
        in half and sent again.
        429 is retried after ``Retry-After``, or the 30 s Amplitude asks for; 5xx, timeouts and
        connection errors are retried with backoff (``insert_id`` makes that safe).
    """

    def __init__(self, config: AmplitudeConfig, context: DestinationContext) -> None:
        self._config = config
        path = "/batch" if config.use_batch_endpoint else "/2/httpapi"
        self._url = (config.endpoint or HOSTS[config.region]).rstrip("/") + path
        self._http = HttpDelivery(headers={"User-Agent": f"gateway/{__version__}"}, secrets=[config.api_key])
        options = {"min_id_length": config.min_id_length} if config.min_id_length is not None else None
        # The body is {"api_key": ..., "events": [...], "options": ...}, built around the
        # events' JSON.
        self._body_head = b'{"api_key":' + _encode(config.api_key) + b',"events":'
        self._body_tail = (b',"options":' + _encode(options) if options else b"") + b"}"
        self._counts: Counter[str] = Counter()
        self._contexts: MappedContexts[Any] = MappedContexts()

    async def send(self, batch: Sequence[Record]) -> SendResult | None:
        # Each event is encoded as soon as it is mapped, so the batch holds bytes, not a dict
        # tree per event: what a message decodes to dies young, and the garbage collector never
        # has to walk a batch's worth of objects (in bench/destinations.py it took up to a quarter of a run).
        events: list[bytes] = []
        owners: list[int] = []
        config = self._config
        contexts = self._contexts.for_batch()
        for record in batch:
            mapped = events_of(decode_message(record.body), config, record.received_at, contexts)
            if not mapped:
                self._counts["calls_skipped"] += 1
            for event in mapped:
                events.append(_encode(event))
                owners.append(record.seq)
        rejected: dict[int, str] = {}
        exchanges: list[Exchange] = []
        for chunk, chunk_owners in chunk_encoded(events, owners, max_items=MAX_EVENTS, max_bytes=MAX_REQUEST_BYTES):
            await self._post(chunk, chunk_owners, rejected, exchanges)
        self._counts["events_sent"] += len(events)
        if not rejected:
            return None
        return SendResult(rejected=rejected, exchange=exchanges[-1] if exchanges else None)

    async def _post(
        self, events: list[bytes], owners: list[int], rejected: dict[int, str], exchanges: list[Exchange]
    ) -> None:
        """POST ``events`` (each one's JSON) in as many requests as Amplitude's answers take."""
        if rejected:
            events = [event for event, owner in zip(events, owners, strict=True) if owner not in rejected]
            owners = [owner for owner in owners if owner not in rejected]
        while events:
            body = self._body_head + b"[" + b",".join(events) + b"]" + self._body_tail
            response = await self._http.post(self._url, content=body, headers=_JSON)
            status = response.status_code
            if 200 <= status < 300:
                return
            if status == 413 and len(events) > 1:
                half = len(events) // 2
                await self._post(events[:half], owners[:half], rejected, exchanges)
                await self._post(events[half:], owners[half:], rejected, exchanges)
                return
            if status == 429:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                raise self._http.error(response, retry_after=retry_after or THROTTLE_PAUSE_SECS)
            if status == 400:
                try:
                    answer = response.json()
                except ValueError:
                    answer = {}
                listed = _listed_indices(answer if isinstance(answer, dict) else {})
                listed = {index: why for index, why in listed.items() if 0 <= index < len(events)}
                if not listed:
                    error = str(answer.get("error", "")) if isinstance(answer, dict) else ""
                    kind = _REQUEST_REFUSALS.get(error.strip().lower())
                    raise self._http.error(
                        response, error or response.text[:300], retryable=False, kind=kind, every_record=bool(kind)
                    )
                exchanges.append(self._http.exchange(response))
                for index, problems in listed.items():
                    rejected[owners[index]] = f"Amplitude refused the event: {', '.join(problems)}"
                self._counts["events_refused"] += len(listed)
                keep = [i for i, owner in enumerate(owners) if owner not in rejected]
                events, owners = [events[i] for i in keep], [owners[i] for i in keep]
                continue
            raise self._http.error(response)  # 403 permanent; 5xx retryable

    def status(self) -> dict[str, Any]:
        return {"endpoint": self._url, **self._counts}

    async def aclose(self) -> None:
        await self._http.aclose()


def _delivery_defaults(config: AmplitudeConfig) -> dict[str, Any]:
    # An Order Completed becomes several events: 500 messages stay well under 2,000 events.
    return {
        "display_name": INTEGRATION_NAMES[0],
        "also_named": list(INTEGRATION_NAMES[1:]),
        "batch_max_messages": 500,
        "batch_max_bytes": 900_000,
        "concurrency": 4,
    }


@hookimpl
def gateway_destination_types() -> list[DestinationType]:
    return [
        DestinationType(
            name="amplitude",
            config_type=AmplitudeConfig,
            factory=AmplitudeDestination,
            description="Amplitude HTTP V2 API",
            delivery_defaults=_delivery_defaults,
        )
    ]
