"""The ``ga4`` destination: Segment track and page calls to Google Analytics 4's Measurement
Protocol (``/mp/collect`` with ``measurement_id`` and ``api_secret``).

page becomes ``page_view``; Segment's Ecommerce spec events become GA4's recommended ecommerce
events with ``items``; other events keep their names, made valid under GA4's rules. Events go
per client (``client_id`` from the ``_ga`` cookie value or the anonymousId), 25 a request. With
``validate = true`` each request is first checked by GA4's validation server
(``/debug/mp/collect``), and the events it flags are dead-lettered instead of being sent to be
dropped silently.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, Literal, NamedTuple
from urllib.parse import urlencode

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
    Record,
    SendResult,
    __version__,
    check_http_url,
    hookimpl,
)
from gateway_destination_ga4.mapping import INTEGRATION_NAMES, decode_message, event_of, to_ga4, valid_name

__all__ = ["HOSTS", "Ga4Config", "Ga4Destination", "to_ga4", "valid_name"]

#: Measurement Protocol hosts: global, or EU data processing.
HOSTS = {"global": "https://www.google-analytics.com", "eu": "https://region1.google-analytics.com"}
#: GA4's limits: 25 events a request, bodies under 130 kB.
MAX_EVENTS = 25
MAX_BODY_BYTES = 130_000
#: Messages whose settled events are kept for their batch's next attempt, at most (the worker
#: says when it is done with a batch, so this holds its ``concurrency`` batches in flight; the
#: bound is for a core that does not).
REMEMBERED_MESSAGES = 1_000_000
_INDEX = re.compile(r"events\[(\d+)\]|index: \[(\d+)\]")

_encode = msgspec.json.Encoder().encode
_JSON = {"Content-Type": "application/json"}


class Ga4Config(ComponentConfig):
    """``[destinations.<id>]`` keys of a ga4 destination."""

    #: The web data stream's measurement id (``G-XXXXXXX``).
    measurement_id: str
    #: A Measurement Protocol API secret of that stream.
    api_secret: str
    region: Literal["global", "eu"] = "global"
    #: A base URL replacing the region's host (a proxy).
    endpoint: str | None = None
    #: Check every request with GA4's validation server first; dead-letter the events it flags.
    validate: bool = False
    #: Send the userId as ``user_id``.
    send_user_id: bool = True
    #: Lower-case custom event names (GA4 names are case-sensitive).
    lowercase_event_names: bool = False
    #: ``engagement_time_msec`` of every event, so that users count as active.
    engagement_time_msec: int = 1
    #: Requests one batch sends side by side (GA4 takes one client's events per request). With
    #: the two batches in flight of the delivery defaults, 16 requests: the best measured against
    #: a server 30 ms away, near the best against a loopback one (bench/README.md, Destinations).
    parallel_requests: int = 8

    def __post_init__(self) -> None:
        if not self.measurement_id or not self.api_secret:
            raise ValueError("measurement_id and api_secret must not be empty")
        check_http_url("endpoint", self.endpoint)
        if not 1 <= self.parallel_requests <= 64:
            raise ValueError("parallel_requests must be 1 to 64")


class _Request(NamedTuple):
    """One Measurement Protocol request: the body around its events, each event's JSON and
    the seq of its message."""

    head: bytes
    events: list[bytes]
    seqs: list[int]

    def body(self, events: list[bytes] | None = None) -> bytes:
        return self.head + b",".join(self.events if events is None else events) + b"]}"


def _requests(by_client: dict[tuple[str, Any], tuple[list[bytes], list[int]]]) -> list[_Request]:
    """Bodies of at most 25 events and 130 kB, one client (and user) each, from each (client id,
    user id)'s events (their JSON) and the seqs of their messages."""
    requests: list[_Request] = []
    for (client_id, user_id), (events, seqs) in by_client.items():
        head: dict[str, Any] = {"client_id": client_id}
        if user_id:
            head["user_id"] = user_id
        encoded_head = _encode(head)
        # {"client_id": ..., "user_id": ..., "events": [...]}, built around the events' JSON
        prefix = encoded_head[:-1] + b',"events":['
        fits = len(encoded_head) + sum(map(len, events)) + len(events) <= MAX_BODY_BYTES - 500
        if fits and len(events) <= MAX_EVENTS:
            requests.append(_Request(prefix, events, seqs))  # the usual case: one request
            continue
        size = MAX_BODY_BYTES
        for event, seq in zip(events, seqs, strict=True):
            event_size = len(event) + 1
            if size + event_size > MAX_BODY_BYTES - 500 or len(requests[-1].events) >= MAX_EVENTS:
                requests.append(_Request(prefix, [], []))
                size = len(encoded_head)
            requests[-1].events.append(event)
            requests[-1].seqs.append(seq)
            size += event_size
    return requests


def _flagged(answer: Any, count: int) -> tuple[dict[int, str], list[str]]:
    """Event index -> problem, and problems of the request as a whole, from a validation answer."""
    by_index: dict[int, str] = {}
    general: list[str] = []
    messages = answer.get("validationMessages") if isinstance(answer, dict) else None
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict):
            continue
        text = f"{message.get('validationCode', '')}: {message.get('description', '')}"
        match = _INDEX.search(f"{message.get('fieldPath', '')} {message.get('description', '')}")
        index = int(match.group(1) or match.group(2)) if match else None
        if index is not None and 0 <= index < count:
            by_index.setdefault(index, text)
        else:
            general.append(text)
    return by_index, general


class Ga4Destination(Destination):
    """Posts a batch as Measurement Protocol requests, per client, 25 events each.

    Error handling:
        ``/mp/collect`` answers 2xx even for events it drops, so nothing it says is per event:
        with ``validate = true`` the validation server's flags are (each flagged message is
        dead-lettered alone, the rest sent). 429 and 5xx, timeouts and connection errors are
        retried with backoff, honouring ``Retry-After`` (GA4 has no dedup key but a purchase's
        ``transaction_id``); other non-2xx answers are permanent ("don't retry the same request"):
        the refused request's messages are dead-lettered and the other requests' stand (refused
        credentials or endpoint, 401/403/404 or a redirect, dead-letter the batch).
    """

    def __init__(self, config: Ga4Config, context: DestinationContext) -> None:
        self._config = config
        host = (config.endpoint or HOSTS[config.region]).rstrip("/")
        query = urlencode({"measurement_id": config.measurement_id, "api_secret": config.api_secret})
        self._endpoint = f"{host}/mp/collect"
        self._collect = f"{self._endpoint}?{query}"
        self._debug = f"{host}/debug/mp/collect?{query}"
        self._http = HttpDelivery(headers={"User-Agent": f"gateway/{__version__}"}, secrets=[config.api_secret])
        self._counts: Counter[str] = Counter()
        #: Per seq of a message an attempt of its batch settled: None (GA4 took its event) or
        #: why it is refused; kept until the worker is done with the batch (batch_ended).
        self._settled: dict[int, str | None] = {}

    async def send(self, batch: Sequence[Record]) -> SendResult | None:
        # What earlier attempts of this batch settled (GA4 took the event, or validation
        # flagged it): a retry after some of its requests failed sends only the others, so an
        # event GA4 took once is not counted twice (it has no dedup key).
        settled = self._settled
        while len(settled) > REMEMBERED_MESSAGES:
            del settled[next(iter(settled))]
        # Each event is encoded as soon as it is mapped (a batch holds bytes, not a dict tree per
        # event), under its client and user: (events, seqs of their messages).
        by_client: dict[tuple[str, Any], tuple[list[bytes], list[int]]] = {}
        skipped = 0
        config = self._config
        for record in batch:
            seq = record.seq
            if seq in settled:
                continue
            event = event_of(decode_message(record.body), config, record.received_at)
            if event is None:
                skipped += 1
                continue
            client, body = event
            mapped = by_client.get(client)
            if mapped is None:
                mapped = by_client[client] = ([], [])
            mapped[0].append(_encode(body))
            mapped[1].append(seq)
        if skipped:
            self._counts["calls_skipped"] += skipped
        exchanges: list[Exchange] = []
        errors: list[DeliveryError] = []
        # GA4 takes one client's events per request, so a batch makes many small requests:
        # ``parallel_requests`` tasks send them side by side, and the batch's failure is
        # reported once they all ended.
        bodies = _requests(by_client)
        requests = iter(bodies)
        async with trio.open_nursery() as nursery:
            for _ in range(min(self._config.parallel_requests, len(bodies))):
                nursery.start_soon(self._post_each, requests, settled, exchanges, errors)
        if errors:
            retryable = [error for error in errors if error.retryable]
            raise (retryable or errors)[0]
        rejected = {record.seq: why for record in batch if (why := settled.get(record.seq)) is not None}
        if not rejected:
            return None
        return SendResult(rejected=rejected, exchange=exchanges[-1] if exchanges else None)

    def batch_ended(self, seqs: Sequence[int]) -> None:
        settled = self._settled
        for seq in seqs:
            settled.pop(seq, None)

    async def _post_each(
        self,
        requests: Iterator[_Request],
        settled: dict[int, str | None],
        exchanges: list[Exchange],
        errors: list[DeliveryError],
    ) -> None:
        for request in requests:  # shared with the other tasks: each request is taken once
            try:
                await self._post_one(request, settled, exchanges)
            except DeliveryError as error:
                if error.retryable or error.every_record:
                    errors.append(error)
                    continue
                # Refused for good (GA4: "don't retry the same request"): its events are
                # rejected, the other requests' stand. Failing the batch would make the core
                # resend it record by record, and GA4 (no dedup key) count the rest twice.
                if error.exchange is not None:
                    exchanges.append(error.exchange)
                for seq in request.seqs:
                    settled.setdefault(seq, f"GA4 refused the request: {error}")
                self._counts["requests_refused"] += 1

    async def _post_one(self, request: _Request, settled: dict[int, str | None], exchanges: list[Exchange]) -> None:
        """Send one request; once GA4 took it, its events are settled (``None``), and so are
        those validation flagged (with why)."""
        events, seqs = request.events, request.seqs
        if self._config.validate:
            response = await self._http.post(self._debug, content=request.body(), headers=_JSON)
            self._http.raise_for_status(response)
            try:
                answer = response.json()
            except ValueError:
                answer = {}
            by_index, general = _flagged(answer, len(seqs))
            if by_index or general:
                exchanges.append(self._http.exchange(response))
            flagged = {}
            for index, seq in enumerate(seqs):
                problem = by_index.get(index) or ("; ".join(general) if general else None)
                if problem:
                    flagged[seq] = f"GA4 validation: {problem}"
            kept = [i for i in range(len(seqs)) if i not in by_index and not general]
            flagged_events = len(seqs) - len(kept)
            events, seqs = [events[i] for i in kept], [seqs[i] for i in kept]
            if events:
                response = await self._http.post(self._collect, content=request.body(events), headers=_JSON)
                self._http.raise_for_status(response)
            # Counted once settled: a collect that failed is validated again on the retry.
            self._counts["events_flagged"] += flagged_events
            for seq, why in flagged.items():  # a message with a flagged event is refused whole
                settled[seq] = why
        else:
            response = await self._http.post(self._collect, content=request.body(events), headers=_JSON)
            self._http.raise_for_status(response)
        for seq in seqs:
            settled.setdefault(seq, None)
        self._counts["events_sent"] += len(events)

    def status(self) -> dict[str, Any]:
        return {"endpoint": self._endpoint, "validate": self._config.validate, **self._counts}

    async def aclose(self) -> None:
        await self._http.aclose()


def _delivery_defaults(config: Ga4Config) -> dict[str, Any]:
    # Requests are small (25 events of one client): large batches give each client more events
    # per request (bench/destinations.py, 500 users: 5 messages a request at 2,000 a batch, 12 at
    # 5,000), and each batch sends its requests side by side (parallel_requests). A retry sends
    # only what its batch's failed requests held, so a larger batch does not mean more resent.
    return {
        "display_name": INTEGRATION_NAMES[0],
        "also_named": list(INTEGRATION_NAMES[1:]),
        "batch_max_messages": 5000,
        "concurrency": 2,
    }


@hookimpl
def gateway_destination_types() -> list[DestinationType]:
    return [
        DestinationType(
            name="ga4",
            config_type=Ga4Config,
            factory=Ga4Destination,
            description="Google Analytics 4 Measurement Protocol",
            delivery_defaults=_delivery_defaults,
        )
    ]
