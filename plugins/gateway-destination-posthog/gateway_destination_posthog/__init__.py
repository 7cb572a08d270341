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

from gateway import (
    ComponentConfig,
    Destination,
    DestinationContext,
    DestinationType,
    HttpDelivery,
    Record,
    SendResult,
    __version__,
    hookimpl,
)
from gateway_destination_posthog.mapping import Refused, to_posthog

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
        if self.host is not None and not self.host.startswith(("http://", "https://")):
            raise ValueError(f"host must be an http:// or https:// URL, got {self.host!r}")


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
        self._sent: Counter[str] = Counter()

    async def send(self, batch: Sequence[Record]) -> SendResult | None:
        items: list[dict[str, Any]] = []
        rejected: dict[int, str] = {}
        for record in batch:
            try:
                items.append(to_posthog(record.message(), self._config, record.received_at))
            except Refused as refusal:
                rejected[record.seq] = str(refusal)
        if items:
            body = {"api_key": self._config.api_key, "historical_migration": self._config.historical_migration}
            response = await self._http.post(self._url, json={**body, "batch": items})
            if response.status_code in (400, 401, 403):
                raise self._http.error(response, retryable=False)
            self._http.raise_for_status(response)
            self._sent.update(item["event"] for item in items)
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
