"""The ``posthog`` destination: Segment calls to PostHog's capture API (``POST /batch/``).

identify becomes ``$identify`` with ``$set`` (and ``$anon_distinct_id``), alias
``$create_alias``, group ``$groupidentify``, page ``$pageview``, screen ``$screen``; track
events keep their names. Each event's ``uuid`` derives from its messageId, so a redelivery is
deduplicated by PostHog.
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
    HttpDelivery,
    MappedContexts,
    Record,
    SendResult,
    __version__,
    check_http_url,
    hookimpl,
)
from gateway_destination_posthog.mapping import Refused, decode_message, item_of, to_posthog

_encode = msgspec.json.Encoder().encode
_JSON = {"Content-Type": "application/json"}

__all__ = ["HOSTS", "PostHogConfig", "PostHogDestination", "to_posthog"]

#: PostHog Cloud's public capture hosts by region.
HOSTS = {"us": "https://us.i.posthog.com", "eu": "https://eu.i.posthog.com"}


class PostHogConfig(ComponentConfig):
    """``[destinations.<id>]`` keys of a posthog destination."""

    #: The project API key (``phc_...``), sent in the body as ``api_key``.
    api_key: str
    #: PostHog Cloud region; ignored when ``host`` is set.
    region: Literal["us", "eu"] = "us"
    #: A self-hosted instance (``https://posthog.example.com``), or a proxy.
    host: str | None = None
    #: ``$group_type`` of group calls and of ``context.groupId`` on events.
    group_type: str = "segment_group"
    #: Send as a backfill (``historical_migration``): in order, no spike detection.
    historical_migration: bool = False

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError("api_key must not be empty")
        check_http_url("host", self.host)


class PostHogDestination(Destination):
    """Posts each batch to ``/batch/`` in one request.

    Error handling:
        Events PostHog would skip (an identify or alias with an id it refuses to merge) are
        refused before sending. 401 (bad ``api_key``) and 400 are permanent: PostHog does not say
        which event was bad, so the core sends the batch again event by event and only the bad
        one is dead-lettered. 429 and 5xx are retried, honouring ``Retry-After``.
    """

    def __init__(self, config: PostHogConfig, context: DestinationContext) -> None:
        self._config = config
        self._url = (config.host or HOSTS[config.region]).rstrip("/") + "/batch/"
        self._http = HttpDelivery(headers={"User-Agent": f"gateway/{__version__}"}, secrets=[config.api_key])
        # The body is {"api_key": ..., "historical_migration": ..., "batch": [...]}, built
        # around the items' JSON.
        self._body_head = (
            b'{"api_key":'
            + _encode(config.api_key)
            + b',"historical_migration":'
            + _encode(config.historical_migration)
            + b',"batch":['
        )
        self._sent: Counter[str] = Counter()
        self._contexts: MappedContexts[dict[str, Any]] = MappedContexts()

    async def send(self, batch: Sequence[Record]) -> SendResult | None:
        # Each item is encoded as soon as it is mapped, so the batch holds bytes, not a dict tree
        # per event: what a message decodes to dies young, and the garbage collector never has
        # to walk a batch's worth of objects (in bench/destinations.py it took up to a quarter of a run).
        items: list[bytes] = []
        names: list[str] = []
        rejected: dict[int, str] = {}
        config = self._config
        contexts = self._contexts.for_batch()
        for record in batch:
            try:
                item = item_of(decode_message(record.body), config, contexts)
            except Refused as refusal:
                rejected[record.seq] = str(refusal)
                continue
            items.append(_encode(item))
            names.append(item["event"])
        if items:
            body = self._body_head + b",".join(items) + b"]}"
            response = await self._http.post(self._url, content=body, headers=_JSON)
            if response.status_code in (400, 401, 403):
                raise self._http.error(response, retryable=False)
            self._http.raise_for_status(response)
            self._sent.update(names)
        return SendResult(rejected=rejected) if rejected else None

    def status(self) -> dict[str, Any]:
        return {"endpoint": self._url, "events_sent": dict(self._sent)}

    async def aclose(self) -> None:
        await self._http.aclose()


def _delivery_defaults(config: PostHogConfig) -> dict[str, Any]:
    # PostHog takes any number of events up to 20 MB a request; stay well inside it.
    return {"display_name": "PostHog", "batch_max_messages": 1000, "batch_max_bytes": 8 * 1024 * 1024, "concurrency": 4}


@hookimpl
def gateway_destination_types() -> list[DestinationType]:
    return [
        DestinationType(
            name="posthog",
            config_type=PostHogConfig,
            factory=PostHogDestination,
            description="PostHog capture API (/batch/)",
            delivery_defaults=_delivery_defaults,
        )
    ]
