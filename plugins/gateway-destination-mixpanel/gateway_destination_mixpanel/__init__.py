"""The ``mixpanel`` destination: Segment calls to Mixpanel's Ingestion API.

Events go to ``/import`` (strict validation, service account or project token), each with an
``$insert_id`` derived from its messageId; identify sets profile properties through
``/engage``, group sets group profiles through ``/groups``; identity follows the project's ID
merge mode (Simplified: ``$user_id`` and ``$device_id`` on events; Original: ``$identify`` and
``$create_alias``). EU and India residency use their own hosts.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import msgspec
import trio

from gateway import (
    ComponentConfig,
    DeliveryError,
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
)
from gateway_destination_mixpanel.mapping import decode_message, items_of, to_mixpanel

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
        check_http_url("api_host", self.api_host)


#: The update endpoints, in the order they are sent after /import.
_UPDATES = (("profiles", "/engage"), ("groups", "/groups"), ("identities", "/track"))


class MixpanelDestination(Destination):
    """Posts a batch's events to ``/import``, and its profile, group and identity updates.

    Updates wait for /import's answer only where it can hold them back: a message whose event
    Mixpanel refuses is dead-lettered whole, so the profile updates of a batch with identify
    events go after /import, while group updates (and profile updates whose messages have no
    event) go side by side with it. ``$create_alias`` (/track) always follows /import.

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
        self._contexts: MappedContexts[Any] = MappedContexts()

    async def send(self, batch: Sequence[Record]) -> SendResult | None:
        # Each item is encoded as soon as it is mapped, so the batch holds bytes, not a dict
        # tree per event: what a message decodes to dies young, and the garbage collector never
        # has to walk a batch's worth of objects.
        parts: dict[str, tuple[list[bytes], list[int]]] = {
            k: ([], []) for k in ("events", "profiles", "groups", "identities")
        }
        config = self._config
        contexts = self._contexts.for_batch()
        for record in batch:
            mapped = items_of(decode_message(record.body), config, record.received_at, contexts)
            if not mapped:
                self._counts["calls_skipped"] += 1
            for kind, item in mapped:
                items, owners = parts[kind]
                items.append(_encode(item))
                owners.append(record.seq)
        rejected: dict[int, str] = {}
        exchanges: list[Exchange] = []
        errors: dict[str, DeliveryError] = {}
        # The updates of a kind none of whose messages has an event in /import cannot be held
        # back by /import's refusals: they go side by side with it (group calls always do).
        # The others wait for its answer, so that a message whose event Mixpanel refused is
        # dead-lettered whole; /track ($create_alias) always follows /import, as it always has.
        with_events = set(parts["events"][1])
        now = [
            (kind, path) for kind, path in _UPDATES if kind != "identities" and with_events.isdisjoint(parts[kind][1])
        ]
        after = [update for update in _UPDATES if update not in now]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._import_then_update, parts, after, rejected, exchanges, errors)
            if any(parts[kind][0] for kind, _ in now):
                nursery.start_soon(self._send_updates, parts, now, rejected, errors)
        for stage in ("events", *(kind for kind, _ in _UPDATES)):  # the order they were sent in, one by one
            if stage in errors:
                raise errors[stage]
        if not rejected:
            return None
        return SendResult(rejected=rejected, exchange=exchanges[-1] if exchanges else None)

    async def _import_then_update(
        self,
        parts: dict[str, tuple[list[bytes], list[int]]],
        updates: list[tuple[str, str]],
        rejected: dict[int, str],
        exchanges: list[Exchange],
        errors: dict[str, DeliveryError],
    ) -> None:
        try:
            for chunk, owners in chunk_encoded(*parts["events"], max_items=MAX_RECORDS, max_bytes=MAX_REQUEST_BYTES):
                await self._import(chunk, owners, rejected, exchanges)
        except DeliveryError as error:
            errors["events"] = error
            return
        await self._send_updates(parts, updates, rejected, errors)

    async def _send_updates(
        self,
        parts: dict[str, tuple[list[bytes], list[int]]],
        updates: list[tuple[str, str]],
        rejected: dict[int, str],
        errors: dict[str, DeliveryError],
    ) -> None:
        for kind, path in updates:
            items, owners = parts[kind]
            if rejected:
                kept = [(item, owner) for item, owner in zip(items, owners, strict=True) if owner not in rejected]
                items, owners = [item for item, _ in kept], [owner for _, owner in kept]
            try:
                for chunk, _ in chunk_encoded(items, owners, max_items=MAX_RECORDS, max_bytes=MAX_REQUEST_BYTES):
                    await self._update(path, chunk)
                    self._counts[f"{kind}_sent"] += len(chunk)
            except DeliveryError as error:
                errors[kind] = error
                return

    async def _import(
        self, events: list[bytes], owners: list[int], rejected: dict[int, str], exchanges: list[Exchange]
    ) -> None:
        response = await self._http.post(
            f"{self._host}/import",
            content=b"[" + b",".join(events) + b"]",
            params=self._import_params,
            headers={"Content-Type": "application/json", "Authorization": self._import_auth},
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

    async def _update(self, path: str, updates: list[bytes]) -> None:
        data = (b"[" + b",".join(updates) + b"]").decode()
        response = await self._http.post(f"{self._host}{path}", form={"data": data}, params={"verbose": "1"})
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
