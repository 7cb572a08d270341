"""The destination contract: what a destination type provides, what a running destination
promises (at-least-once delivery, error policy, partial refusals, deletion), and the records
and samples that cross the boundary."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from gateway.components.base import ComponentConfig, JSONObject

if TYPE_CHECKING:
    from types import TracebackType

_decode_message = msgspec.json.Decoder(dict[str, Any]).decode


class Record(msgspec.Struct, frozen=True):
    """One accepted message as the ingest log hands it to a destination.

    Attributes:
        seq: Position in the log; increases with every stored message.
        source: The id of the source that accepted it (the key under ``[sources]``).
        body: The stored message, JSON-encoded (UTF-8).
        received_at: When the log stored it, in milliseconds since the epoch.
    """

    seq: int
    source: str
    body: bytes
    received_at: int = 0

    def message(self) -> JSONObject:
        """Decode the stored message (a fresh dict on every call)."""
        return _decode_message(self.body)


class Exchange(msgspec.Struct, frozen=True, kw_only=True):
    """One request a destination made and the answer it got: a sample for operators (the
    console's Event Delivery shows "the request to the destination" and "the destination's
    response" next to the event). Build it with :meth:`of`, which redacts credentials.

    Attributes:
        request: The request as text: method and URL, headers, then the body (truncated).
        response: The answer as text: status, headers, then the body (truncated); empty when
            none came (a timeout, a refused connection).
    """

    request: str
    response: str = ""

    #: Bodies longer than this are cut (the sample is for a human, not a replay).
    MAX_BODY_CHARS: ClassVar[int] = 4096

    @classmethod
    def of(
        cls,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | str = b"",
        status: int | None = None,
        response_headers: Mapping[str, str] | None = None,
        response_body: bytes | str = b"",
        secrets: Sequence[str] = (),
    ) -> Exchange:
        """An exchange with credentials redacted: the values of headers that carry them
        (``Authorization``, ``*key*``, ``*token*``, ``*secret*``...) and every string in
        ``secrets`` (API keys in a URL or a body) become ``***``."""
        redact = [secret for secret in secrets if secret]

        def clean(text: str) -> str:
            for secret in redact:
                text = text.replace(secret, "***")
            return text

        # A secret that starts before the cut ends before the cut plus the longest secret.
        window = cls.MAX_BODY_CHARS + max(map(len, redact), default=0)

        def text_of(data: bytes | str) -> str:
            text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
            if len(text) <= cls.MAX_BODY_CHARS:
                return clean(text)
            # Redacted before it is cut: a secret across the cut would leave its first characters.
            head = clean(text[:window])[: cls.MAX_BODY_CHARS]
            return f"{head}... ({len(text) - cls.MAX_BODY_CHARS} more characters)"

        def header_lines(values: Mapping[str, str] | None) -> list[str]:
            return [
                f"{name}: {'***' if _CREDENTIAL_HEADER.search(name) else clean(value)}"
                for name, value in (values or {}).items()
            ]

        request = "\n".join([f"{method} {clean(url)}", *header_lines(headers), "", text_of(body)])
        response = ""
        if status is not None:
            response = "\n".join([str(status), *header_lines(response_headers), "", text_of(response_body)])
        return cls(request=request, response=response)


_CREDENTIAL_HEADER = re.compile(r"authorization|cookie|key|token|secret|password|credential", re.IGNORECASE)


class SendResult(msgspec.Struct, frozen=True, kw_only=True):
    """What :meth:`Destination.send` returns when the destination took part of a batch and
    refused the rest for good (a 400 that lists the bad events, Mixpanel's ``failed_records``).

    Attributes:
        rejected: The refused records by seq, each with why. Each goes to the dead-letter table
            on its own; every other record of the batch counts as delivered.
        exchange: The request and answer that reported the refusal, as a sample.
    """

    rejected: dict[int, str]
    exchange: Exchange | None = None


class Destination:
    """Base class of a running destination. One instance per ``[destinations.<id>]`` entry.

    The delivery worker opens it with ``async with``, calls :meth:`send` with batches in log
    order, and advances the destination's cursor only after ``send`` returns. Delivery is
    therefore at least once: a crash between a send and the cursor update sends the batch again.

    Error handling:
        Raise :class:`gateway.errors.DeliveryError` with ``retryable=True`` for trouble that may
        pass (the batch is retried with backoff, honouring ``retry_after``) and
        ``retryable=False`` for a batch the destination will never take (it goes to the
        dead-letter table). Any other exception counts as retryable. The worker applies the
        configured timeout around ``send``; do not add one of your own.

    Partial refusals:
        When the destination took some records and refused others for good, return a
        :class:`SendResult` naming the refused ones by seq: only they are dead-lettered. (Raising
        a permanent :class:`DeliveryError` for a batch of several records makes the worker send
        them again one by one to find the bad ones, which costs a request per record.)

    Samples:
        Give :class:`gateway.errors.DeliveryError` (and :class:`SendResult`) an ``exchange``:
        the request and the answer, credentials redacted (:meth:`Exchange.of`). Operators see
        the latest sample of each kind of error.

    Status:
        :meth:`status` (cheap, synchronous) goes into ``gateway status`` under the destination;
        :meth:`describe` (async, may query the destination) answers ``gateway destinations
        describe NAME``, for what a destination can tell about itself (a warehouse's schema).

    Retries:
        A destination that sends a batch in several requests may remember, between attempts,
        which records an attempt settled, and skip them on the next (an API without a dedup
        key would count them twice). :meth:`batch_ended` tells it when the worker is done with
        those records (delivered, refused, dead-lettered or deleted), so the memory can go: a
        replay or a redrive of the same records later is a new delivery.

    Deletion requests:
        ``gateway privacy delete USER_ID`` removes the user from the log, then calls
        :meth:`delete_user` on every running destination, after the batches it had in flight
        have landed. Override it to remove what the destination already holds of that user
        (rewrite files, call a deletion API, send a notice) and return how many items it
        removed or notices it sent. The default does nothing and returns 0. Raise
        :class:`gateway.errors.DeliveryError` when it fails; the command reports the error
        (it is not retried). The destination's ``timeout_secs`` applies.
    """

    async def send(self, batch: Sequence[Record]) -> SendResult | None:
        """Deliver ``batch``; return only once the destination has it (None), or has the
        records a :class:`SendResult` does not list as rejected."""
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        """What this destination reports in ``gateway status`` (JSON-able, cheap to make).
        Optional: the default reports nothing."""
        return {}

    async def describe(self) -> dict[str, Any]:
        """Everything this destination can tell about itself on demand (JSON-able): a
        warehouse's tables and columns, for example. Optional: the default is :meth:`status`."""
        return self.status()

    def batch_ended(self, seqs: Sequence[int]) -> None:
        """The worker is done with the records ``seqs`` (every one of a batch it sent, some
        possibly deleted meanwhile): forget what was kept for their retries. Optional: the
        default does nothing. Cheap and synchronous; it must not raise."""

    async def delete_user(self, user_id: str) -> int:
        """Remove what this destination holds of ``user_id``; returns how many items (lines,
        records, notices) that took. Optional: the default does nothing and returns 0."""
        return 0

    async def aclose(self) -> None:
        """Release what the destination holds (files, connections). Called once, at the end."""

    async def __aenter__(self) -> Destination:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@dataclass(frozen=True, slots=True)
class DestinationContext:
    """What the core tells a destination when it builds it.

    Attributes:
        id: The destination's id (the key under ``[destinations]``).
        data_dir: A folder the destination may use for its own state; created on demand.
    """

    id: str
    data_dir: Path


@dataclass(frozen=True, slots=True)
class DestinationType:
    """A kind of destination: where messages go.

    Attributes:
        name: The ``type`` value in ``[destinations.<id>]``.
        config_type: Validates the destination's own keys (delivery keys such as
            ``batch_max_messages`` belong to the core and are not passed on).
        factory: ``factory(config, context)`` returns a :class:`Destination`.
        description: One line for ``gateway plugins``.
        delivery_defaults: Defaults of the core delivery keys for this type, where the core's
            do not fit (a warehouse loads large batches at long intervals:
            ``{"batch_max_messages": 50_000, "batch_max_wait_secs": 60.0}``), or a function of
            the destination's validated config that returns them (to derive them from a key
            of its own, such as ``sync_interval_secs``). What the config sets still wins.
    """

    name: str
    config_type: type[ComponentConfig]
    factory: Callable[[Any, DestinationContext], Destination]
    description: str = ""
    delivery_defaults: Mapping[str, Any] | Callable[[Any], Mapping[str, Any]] = field(default_factory=dict)
