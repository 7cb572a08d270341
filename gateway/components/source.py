"""The source contract: what a source type provides, and :class:`Ingest`, what the core gives it.

A source type turns its transport's input (a Tracking API request, a pixel, a webhook, a peer
SDK's call) into candidate messages and hands them to :class:`Ingest`. The core owns the rest
of the sequence, the same for every source: decode and size limits, validation of the call,
server fields (messageId, receivedAt, skew-corrected timestamp, context.ip), the source's rate
limit, suppression, privacy at ingest, the source's filters, and the durable append. The source
answers its client from what the core says was accepted and rejected, and only with a 2xx once
:meth:`Ingest.store` returned: that is when the messages are durable.

Input a source type cannot turn into messages now but could later (a webhook whose function
raised) is not lost: :meth:`Ingest.keep_raw` keeps it as a raw dead letter of the source, and an
operator's redrive hands it back to :attr:`SourceType.redrive`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import msgspec

from gateway.components.base import ComponentConfig, JSONObject
from gateway.messages import Arrival, BatchDefaults

if TYPE_CHECKING:
    from quart import Blueprint

    from gateway.components.filter import Filter
    from gateway.http.fastpath import FastPath


class RateLimit(NamedTuple):
    """A source's rate limit: ``events_per_sec`` sustained, bursts up to ``burst`` events."""

    events_per_sec: float
    burst: int


@dataclass(frozen=True, slots=True)
class Source:
    """A configured source, as source plugins see it.

    Attributes:
        id: The key under ``[sources]``.
        type: Its source type's name.
        options: Its validated options (the source type's ``config_type``).
        filters: ``(filter id, filter)`` in order, run by the core before storing.
        block_red: Red fields are removed before storing.
        inventory: The field inventory is kept for it.
        rate_limit: Its rate limit, or None.
    """

    id: str
    type: str
    options: Any
    filters: tuple[tuple[str, Filter], ...] = ()
    block_red: bool = False
    inventory: bool = False
    rate_limit: RateLimit | None = None


class Candidate(NamedTuple):
    """One message a source hands to :meth:`Ingest.check`.

    Attributes:
        payload: The message as JSON bytes (the core decodes it, refusing what is not one JSON
            object, too large or too deeply nested) or as a dict the source decoded itself
            (the same limits apply to its encoding).
        call: The call type when the endpoint fixes it (``/v1/track``); None takes the
            message's own ``type`` (a batch item).
    """

    payload: bytes | msgspec.Raw | JSONObject
    call: str | None = None


class Rejection(msgspec.Struct, frozen=True):
    """A candidate the core refused: its index among the candidates, why (a stable ``code``
    and a ``message`` for the developer who sent it), and how many messages it stands for
    (more than one for the items past a batch's limit)."""

    index: int
    code: str
    message: str
    count: int = 1

    def answer(self) -> dict[str, Any]:
        """The entry the Tracking API lists in ``rejected``."""
        return {"index": self.index, "code": self.code, "message": self.message}


class Checked:
    """What :meth:`Ingest.check` made of a request's candidates: the accepted ones, ready to
    store (encoded, filtered, privacy applied; no message dicts are held), and the rejected."""

    __slots__ = ("_prepared", "accepted", "rejected", "source")

    def __init__(self, prepared: Any, accepted: int, rejected: list[Rejection], source: Source | None) -> None:
        self._prepared = prepared
        #: How many candidates were accepted (they may still be filtered or deduplicated).
        self.accepted = accepted
        #: The refused candidates, in order.
        self.rejected = rejected
        #: The source of the first accepted candidate (None when none was).
        self.source = source


class IngestOutcome(msgspec.Struct, frozen=True):
    """What :meth:`Ingest.store` did: messages stored, skipped as duplicates, and kept out by
    suppression or the source's filters (counted with their reasons in the books)."""

    stored: int
    duplicates: int
    filtered: int


class IngestLimits(msgspec.Struct, frozen=True):
    """The request limits of ``[server]`` a source applies to its transport."""

    max_request_bytes: int
    max_message_bytes: int
    max_batch_messages: int
    retry_after_secs: int


class Ingest(Protocol):
    """What the core gives a source type (its ``blueprint`` and ``fast_path`` factories get it).

    Error handling:
        :meth:`check` raises :class:`gateway.Invalid` for a body that is wrong as a whole (not
        JSON, no ``batch`` array) and :class:`gateway.RateLimitedError` when the source's rate
        limit refuses the request (nothing was taken or counted: answer 429 with
        ``Retry-After``). :meth:`store` raises :class:`gateway.LogUnavailableError` when the log
        cannot take writes (nothing was stored: answer 503 with ``Retry-After``). The HTTP app
        answers all three in the standard JSON shape when a route lets them propagate.
    """

    @property
    def limits(self) -> IngestLimits:
        """The current ``[server]`` request limits."""
        ...

    @property
    def data_dir(self) -> Path:
        """The gateway's data folder; a source may keep files of its own under it."""
        ...

    def authenticate(self, write_key: object, source_type: str) -> Source | None:
        """The source of ``source_type`` whose write key this is (any JSON value: only a
        non-empty string can be one), or None. Comparisons take constant time."""
        ...

    def source(self, source_id: str, source_type: str) -> Source | None:
        """The source of ``source_type`` with this id (for transports that name the source in
        the URL and authenticate otherwise, such as signed webhooks), or None."""
        ...

    def sources_of_type(self, source_type: str) -> list[Source]:
        """Every configured source of ``source_type`` (e.g. to answer a CORS preflight, which
        carries no write key)."""
        ...

    def is_trusted_proxy(self, address: str | None) -> bool:
        """Whether ``address`` is in ``server.trusted_proxies``."""
        ...

    def arrival(self, peer: str | None, forwarded_for: str | None = None) -> Arrival:
        """Now, and the client's address: ``peer``, or, when the peer is a trusted proxy, the
        nearest address in ``X-Forwarded-For`` that is not one."""
        ...

    def check(
        self,
        candidates: Sequence[Candidate],
        arrival: Arrival,
        *,
        source: Source | None = None,
        find_source: Callable[[object], Source | None] | None = None,
        defaults: BatchDefaults | None = None,
        strict: bool = False,
    ) -> Checked | None:
        """Decode, validate and complete each candidate, take the accepted ones from the rate
        limit, and prepare them for :meth:`store` (suppression, privacy, filters).

        Args:
            source: The source of every candidate; when None, ``find_source`` is asked with
                each message's ``writeKey`` (a candidate with no source is rejected as
                ``invalid_write_key``).
            defaults: A batch root's ``context``, ``integrations`` and ``sentAt``, merged into
                each message that lacks them (and counted in each one's size).
            strict: All or nothing, for a fast path: None as soon as any candidate is
                rejected, before any side effect (nothing counted, no rate taken).

        Raises:
            RateLimitedError: the source's rate limit refuses the accepted candidates.
        """
        ...

    def check_batch(
        self,
        body: bytes,
        arrival: Arrival,
        *,
        write_key: str | None = None,
        find_source: Callable[[object], Source | None] | None = None,
        strict: bool = False,
    ) -> Checked | None:
        """:meth:`check` for a Segment batch body (``{"batch": [...], "context", "integrations",
        "sentAt", "writeKey"}``): the root's fields apply to every item, and the items past
        ``max_batch_messages`` are rejected as one ``batch_limit_exceeded`` entry. The
        request's key is ``write_key`` (a header's) or the root's ``writeKey``; when there is
        one, ``find_source`` gives the source of every item, else each item's own
        ``writeKey`` does. ``strict`` also declines an empty batch.

        Raises:
            Invalid: the body is not JSON or has no ``batch`` array, or (``invalid_write_key``)
                the request's key is unknown: answer 401.
            RateLimitedError: as for :meth:`check`.
        """
        ...

    async def store(self, checked: Checked) -> IngestOutcome:
        """Append what :meth:`check` accepted to the log, durably, in one commit with the
        source's books; return once it is on disk.

        Raises:
            LogUnavailableError: nothing was stored.
        """
        ...

    async def ingest(
        self,
        candidates: Sequence[Candidate],
        arrival: Arrival,
        *,
        source: Source | None = None,
        find_source: Callable[[object], Source | None] | None = None,
    ) -> tuple[IngestOutcome, list[Rejection]]:
        """:meth:`check` then :meth:`store`, for a source with nothing to do in between."""
        ...

    def count_rejected(self, code: str, count: int = 1) -> None:
        """Count messages a source refused before handing them over (a request it could not
        read), so ``gateway_messages_rejected_total`` covers every refusal."""
        ...

    async def keep_raw(self, source: Source, payload: bytes, arrival: Arrival, error: str) -> None:
        """Keep input the source could not turn into messages (a webhook its function failed
        on) as a dead letter of the source, stage ``raw``, durably: ``payload`` whole (bytes
        the source type chooses: all its ``redrive`` will get back), with ``arrival``.

        The source's books count it as one ``dead_lettered`` message until it is redriven;
        then the messages it becomes are booked where they go instead, so the audit stays
        exact. ``gateway dead-letters redrive`` (``--destination source:<id>``) hands it to
        the source type's :attr:`SourceType.redrive`. Keep no credentials in it (signature
        headers, tokens): dead letters are listed to operators.

        Raises:
            LogUnavailableError: nothing was kept (answer 503 so the sender retries).
        """
        ...


@dataclass(frozen=True, slots=True)
class SourceType:
    """A kind of source: where messages come from.

    Attributes:
        name: The ``type`` value in ``[sources.<id>]``.
        config_type: Validates the source's keys beyond the core ones (``type``, ``write_key``,
            ``filters``, ``block_red``, ``inventory``, ``rate_limit_*``).
        blueprint: Builds the HTTP routes of this source type, once per process, from the
            :class:`Ingest` they authenticate and ingest through.
        description: One line for ``gateway plugins``.
        fast_path: Optional: builds a :class:`gateway.FastPath` that answers this source type's
            hottest plain requests without the web framework; whatever it declines goes to the
            blueprint's routes.
        redrive: Optional, for a source type that keeps raw input with :meth:`Ingest.keep_raw`:
            ``await redrive(ingest, source, payload)`` turns a raw letter's payload into
            candidates again (after the operator fixed what failed), called by the core when
            an operator redrives the letter. The core checks them with the letter's original
            arrival and stores them in one commit that also takes the letter out of the dead
            letters and out of the books' ``dead_lettered``. All or nothing: if it raises
            (say, the function still fails), or the core rejects any candidate it returns,
            nothing is stored and the letter is held again with that error.
    """

    name: str
    config_type: type[ComponentConfig]
    blueprint: Callable[[Ingest], Blueprint]
    description: str = ""
    fast_path: Callable[[Ingest], FastPath] | None = None
    redrive: Callable[[Ingest, Source, bytes], Awaitable[Sequence[Candidate]]] | None = None
