"""The ``mixpanel`` destination: Segment calls to Mixpanel's Ingestion API.

Events go to ``/import`` (strict validation, service account or project token), each with an
``$insert_id`` derived from its messageId; identify sets profile properties through
``/engage``, group sets group profiles through ``/groups``; identity follows the project's ID
merge mode (Simplified: ``$user_id`` and ``$device_id`` on events; Original: ``$identify`` and
``$create_alias``). EU and India residency use their own hosts.
"""

from __future__ import annotations

import base64
import json
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
    Record,
    SendResult,
    __version__,
    hookimpl,
)
from gateway_destination_mixpanel.mapping import Mapped, to_mixpanel

__all__ = ["HOSTS", "MixpanelConfig", "MixpanelDestination", "to_mixpanel"]

#: Ingestion hosts by data residency (an EU or India project ingests nothing sent elsewhere).
HOSTS = {"us": "https://api.mixpanel.com", "eu": "https://api-eu.mixpanel.com", "in": "https://api-in.mixpanel.com"}
#: /import takes 2,000 events a request; its documented 10 MB is not what its 413 says (2 MB).
MAX_RECORDS = 2000
MAX_REQUEST_BYTES = 2 * 1024 * 1024

_encode = msgspec.json.Encoder().encode


class MixpanelConfig(ComponentConfig):
    """``[destinations.<id>]`` keys of a mixpanel destination."""

    #: The project token: ``$token`` of profile and group updates (and /import's auth without a service account).
    project_token: str
    #: Service account (Owner or Admin) for /import, with the project's id.
    service_account_username: str | None = None
    service_account_secret: str | None = None
    project_id: str | None = None
    region: Literal["us", "eu", "in"] = "us"
    #: A base URL replacing the region's host (a proxy).
    api_host: str | None = None
    #: The project's ID merge system: Simplified (the default since April 2024) or Original.
    identity_merge: Literal["simplified", "original"] = "simplified"
    #: The group key of group calls and of ``context.groupId`` on events.
    group_key: str = "$group_id"
    #: One "Product Purchased" event per product of Order Completed.
    purchase_event_per_product: bool = True

    def __post_init__(self) -> None:
        if not self.project_token:
            raise ValueError("project_token must not be empty")
        account = (self.service_account_username, self.service_account_secret, self.project_id)
        if any(account) and not all(account):
            raise ValueError("a service account needs service_account_username, service_account_secret and project_id")
        if self.api_host is not None and not self.api_host.startswith(("http://", "https://")):
            raise ValueError(f"api_host must be an http:// or https:// URL, got {self.api_host!r}")


def _chunks(items: list[Any], owners: list[int]) -> list[tuple[list[Any], list[int]]]:
    chunks: list[tuple[list[Any], list[int]]] = []
    size = MAX_REQUEST_BYTES
    for item, owner in zip(items, owners, strict=True):
        item_size = len(_encode(item)) + 1
        if not chunks or len(chunks[-1][0]) >= MAX_RECORDS or size + item_size > MAX_REQUEST_BYTES - 1000:
            chunks.append(([], []))
            size = 0
        chunks[-1][0].append(item)
        chunks[-1][1].append(owner)
        size += item_size
    return chunks


class MixpanelDestination(Destination):
    """Posts a batch's events to ``/import``, then its profile, group and identity updates.

    Error handling:
        /import answers 400 with ``failed_records`` when some events fail validation: the others
        are in, and the messages of the failed ones are dead-lettered (each alone, with
        Mixpanel's message); they are never retried, as Mixpanel asks. 401 and 403 (refused
        credentials) and a 400 without ``failed_records`` are permanent. 413: the request is
        split in half. 429, 5xx, timeouts and connection errors are retried with backoff,
        honouring ``Retry-After`` (``$insert_id`` makes a resent event a duplicate Mixpanel
        drops). /engage, /groups and /track answer 200 even when they refuse an update, so their
        ``verbose`` status is read: a refusal is permanent for the batch, which the core then
        sends message by message.
    """

    def __init__(self, config: MixpanelConfig, context: DestinationContext) -> None:
        self._config = config
        self._host = (config.api_host or HOSTS[config.region]).rstrip("/")
        if config.service_account_username and config.service_account_secret:
            user, password = config.service_account_username, config.service_account_secret
            self._import_params = {"strict": "1", "project_id": str(config.project_id)}
        else:
            user, password = config.project_token, ""
            self._import_params = {"strict": "1"}
        self._import_auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        secrets = [config.project_token, config.service_account_secret or ""]
        self._http = HttpDelivery(headers={"User-Agent": f"gateway/{__version__}"}, secrets=secrets)
        self._counts: Counter[str] = Counter()

    async def send(self, batch: Sequence[Record]) -> SendResult | None:
        parts: dict[str, tuple[list[Any], list[int]]] = {
            k: ([], []) for k in ("events", "profiles", "groups", "identities")
        }
        for record in batch:
            mapped: Mapped = to_mixpanel(record.message(), self._config, record.received_at)
            found = False
            for kind, (items, owners) in parts.items():
                new = getattr(mapped, kind)
                items.extend(new)
                owners.extend([record.seq] * len(new))
                found = found or bool(new)
            if not found:
                self._counts["calls_skipped"] += 1
        rejected: dict[int, str] = {}
        exchanges: list[Exchange] = []
        for chunk, owners in _chunks(*parts["events"]):
            await self._import(chunk, owners, rejected, exchanges)
        for kind, path in (("profiles", "/engage"), ("groups", "/groups"), ("identities", "/track")):
            items, owners = parts[kind]
            kept = [(item, owner) for item, owner in zip(items, owners, strict=True) if owner not in rejected]
            for chunk, _ in _chunks([item for item, _ in kept], [owner for _, owner in kept]):
                await self._update(path, chunk)
                self._counts[f"{kind}_sent"] += len(chunk)
        if not rejected:
            return None
        return SendResult(rejected=rejected, exchange=exchanges[-1] if exchanges else None)

    async def _import(
        self, events: list[dict[str, Any]], owners: list[int], rejected: dict[int, str], exchanges: list[Exchange]
    ) -> None:
        response = await self._http.post(
            f"{self._host}/import",
            json=events,
            params=self._import_params,
            headers={"Authorization": self._import_auth},
        )
        status = response.status_code
        if 200 <= status < 300:
            self._counts["events_imported"] += len(events)
            return
        if status == 413 and len(events) > 1:
            half = len(events) // 2
            await self._import(events[:half], owners[:half], rejected, exchanges)
            await self._import(events[half:], owners[half:], rejected, exchanges)
            return
        if status == 400:
            failed = _failed_records(response)
            if failed:
                exchanges.append(self._http.exchange(response))
                for index, why in failed:
                    if 0 <= index < len(owners):
                        rejected.setdefault(owners[index], f"Mixpanel refused the event: {why}")
                self._counts["events_imported"] += len(events) - len(failed)
                self._counts["events_refused"] += len(failed)
                return
            raise self._http.error(response, retryable=False)
        raise self._http.error(response)

    async def _update(self, path: str, updates: list[dict[str, Any]]) -> None:
        response = await self._http.post(
            f"{self._host}{path}", form={"data": json.dumps(updates)}, params={"verbose": "1"}
        )
        self._http.raise_for_status(response)
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if not isinstance(answer, dict) or answer.get("status") != 1:
            error = answer.get("error") if isinstance(answer, dict) else None
            raise self._http.error(response, f"{path} refused the update: {error}", retryable=False, kind="refused")

    def status(self) -> dict[str, Any]:
        return {"host": self._host, "identity_merge": self._config.identity_merge, **self._counts}

    async def aclose(self) -> None:
        await self._http.aclose()


def _failed_records(response: Any) -> list[tuple[int, str]]:
    """``failed_records`` of an /import 400: (index, field: message) for each."""
    try:
        answer = response.json()
    except ValueError:
        return []
    records = answer.get("failed_records") if isinstance(answer, dict) else None
    failed = []
    for record in records if isinstance(records, list) else []:
        if isinstance(record, dict) and isinstance(record.get("index"), int):
            failed.append((record["index"], f"{record.get('field', '')}: {record.get('message', '')}".strip(": ")))
    return failed


def _delivery_defaults(config: MixpanelConfig) -> dict[str, Any]:
    # Mixpanel recommends batches of 2,000 from 10-20 concurrent clients; an Order Completed
    # becomes several events, so 1,000 messages keep a request near that.
    return {"display_name": "Mixpanel", "batch_max_messages": 1000, "batch_max_bytes": 1_500_000, "concurrency": 4}


@hookimpl
def gateway_destination_types() -> list[DestinationType]:
    return [
        DestinationType(
            name="mixpanel",
            config_type=MixpanelConfig,
            factory=MixpanelDestination,
            description="Mixpanel Ingestion API (/import, /engage, /groups)",
            delivery_defaults=_delivery_defaults,
        )
    ]
