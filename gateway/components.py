"""What a plugin provides: the component types (source, filter, matcher, destination) and their contracts.

A plugin returns these from its hooks (see ``gateway.hookspecs``). Each type has a ``name`` that
the config refers to (``type = "file"``), a msgspec ``Config`` type that validates its section of
the config, and a factory that builds the running component from a validated config.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import msgspec
import structlog

from gateway.telemetry import ThrottledWarning

if TYPE_CHECKING:
    from types import TracebackType

    from quart import Blueprint

    from gateway.fastpath import FastPath
    from gateway.ingest import IngestHub

JSONObject = dict[str, Any]

_decode_message = msgspec.json.Decoder(dict[str, Any]).decode


class ComponentConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base of every plugin config type: unknown keys are errors, values are immutable."""


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

        def text_of(data: bytes | str) -> str:
            text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
            if len(text) > cls.MAX_BODY_CHARS:
                text = f"{text[: cls.MAX_BODY_CHARS]}... ({len(text) - cls.MAX_BODY_CHARS} more characters)"
            return clean(text)

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
class FilterContext:
    """Where a filter runs: the source a message came from and, before a send, the destination.

    Attributes:
        source: The id of the message's source.
        destination: The destination's id when the filter is in its ``filters`` list, None
            when the filter runs at the source, before the message is stored.
    """

    source: str
    destination: str | None = None


@dataclass(frozen=True, slots=True)
class Forward:
    """A message a filter sends into another source (e.g. a blocked event, or a ``Violation
    Generated`` report). It is stored in the same commit as the message that caused it,
    acknowledged with it, and delivered like any message of ``source``; the filters of that
    source do not see it (forwarded events are never blocked again). Give it a messageId that
    depends only on what caused it, so a redelivery forwards a duplicate the log drops."""

    source: str
    message: JSONObject


@dataclass(frozen=True, slots=True)
class Verdict:
    """A filter's answer when "the message, or None" says too little.

    Attributes:
        message: The message to pass on, or None when it is dropped.
        reason: Why it was dropped, a short code (``unplanned``, ``sampled``...): counted per
            source and destination, and written into the delivery books as ``filtered:<reason>``.
        failure: The filter failed on this message: it goes to the dead-letter table with this
            error (``gateway dead-letters redrive`` runs it through the filters again later);
            ``message`` is then ignored.
        forward: Messages to store into other sources (see :class:`Forward`).
    """

    message: JSONObject | None = None
    reason: str | None = None
    failure: str | None = None
    forward: tuple[Forward, ...] = ()


class Filter:
    """Base class of a running filter: sees one message, returns it (changed or not) or None.

    Filters listed in a source's ``filters`` run before the message is stored; filters listed in
    a destination's ``filters`` run before it is sent there. Returning None drops the message
    for that stage, counted under :attr:`drop_reason` (or, when that is None, the filter's id).

    A filter that needs to know where it runs, name finer drop reasons, dead-letter a message or
    forward messages to another source overrides :meth:`apply` instead and may return a
    :class:`Verdict`.
    """

    #: The reason counted when :meth:`process` returns None (e.g. ``bot``); None: the filter id.
    drop_reason: str | None = None

    def process(self, message: JSONObject) -> JSONObject | None:
        """Return the message to pass on, or None to drop it."""
        raise NotImplementedError

    def apply(self, message: JSONObject, context: FilterContext) -> JSONObject | Verdict | None:
        """What the core calls: by default :meth:`process`."""
        return self.process(message)

    def statistics(self) -> dict[str, int]:
        """The filter's own counters (exported as ``gateway_filter_events_total``); none by default."""
        return {}


class FilterOutcome(NamedTuple):
    """What a chain of filters made of one message. ``message`` is None when it was dropped
    (``reason`` says why) or failed (``failure`` is the error: dead-letter it; ``reason`` is
    then the kind of failure, e.g. ``function_error``)."""

    message: JSONObject | None
    reason: str | None = None
    failure: str | None = None
    forward: tuple[Forward, ...] = ()


_filter_log = structlog.get_logger("gateway.filters")
_filter_failures: dict[str, ThrottledWarning] = {}
#: The reason counted for a message a filter failed on (raised, or said so without a reason of its own).
FILTER_ERROR_REASON = "filter_error"


def apply_filters(filters: Sequence[tuple[str, Filter]], message: JSONObject, context: FilterContext) -> FilterOutcome:
    """Run ``filters`` in order, collecting what they forward, until one drops or fails the
    message. A filter that raises, or returns something that is not a message (a dict with a
    string ``messageId``), None or a :class:`Verdict`, fails the message like a Verdict with a
    ``failure``: it is dead-lettered (nothing goes on, nothing is lost, a redrive retries it once
    the filter is fixed), and a broken filter never stops the pipeline."""
    forward: tuple[Forward, ...] = ()
    for filter_id, message_filter in filters:
        try:
            # Most filters only have process(): call it directly (this runs per filter per event).
            result: JSONObject | Verdict | None
            if type(message_filter).apply is _BASE_APPLY:
                result = message_filter.process(message)
            else:
                result = message_filter.apply(message, context)
            if type(result) is dict:
                message = result
                continue
            if result is None:
                return FilterOutcome(None, message_filter.drop_reason or filter_id, None, forward)
            if not isinstance(result, Verdict):
                raise TypeError(f"returned {type(result).__name__}, not a message, None or a Verdict")
            if result.forward:
                forward += tuple(result.forward)
            if result.failure is not None:
                reason = result.reason or FILTER_ERROR_REASON
                return FilterOutcome(None, reason, f"{filter_id}: {result.failure}", forward)
            if result.message is None:
                return FilterOutcome(None, result.reason or message_filter.drop_reason or filter_id, None, forward)
            if type(result.message) is not dict:
                raise TypeError(f"its Verdict holds {type(result.message).__name__}, not a message")
            message = result.message
        except Exception as error:
            warning = _filter_failures.get(filter_id)
            if warning is None:
                warning = _filter_failures[filter_id] = ThrottledWarning(_filter_log, "filter_failed")
            warning(filter=filter_id, error_type=type(error).__name__, error=str(error))
            return FilterOutcome(None, FILTER_ERROR_REASON, f"{filter_id}: {type(error).__name__}: {error}", forward)
    if type(message.get("messageId")) is not str:
        failure = "the filters returned a message without a string messageId"
        return FilterOutcome(None, FILTER_ERROR_REASON, failure, forward)
    return FilterOutcome(message, None, None, forward)


_BASE_APPLY = Filter.apply


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
class SourceType:
    """A kind of source: where messages come from.

    Attributes:
        name: The ``type`` value in ``[sources.<id>]``.
        config_type: Validates the source's keys beyond the core ones (``type``, ``write_key``,
            ``filters``).
        blueprint: Builds the HTTP routes of this source type, once per process. The routes
            authenticate and ingest through the :class:`gateway.ingest.IngestHub` they get.
        description: One line for ``gateway plugins``.
        fast_path: Optional: builds a :class:`gateway.fastpath.FastPath` that answers this
            source type's hottest plain requests without the web framework; whatever it
            declines goes to the blueprint's routes.
    """

    name: str
    config_type: type[ComponentConfig]
    blueprint: Callable[[IngestHub], Blueprint]
    description: str = ""
    fast_path: Callable[[IngestHub], FastPath] | None = None


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


@dataclass(frozen=True, slots=True)
class FilterType:
    """A kind of filter.

    Attributes:
        name: The ``type`` value in ``[filters.<id>]``.
        config_type: Validates the filter's own keys.
        factory: ``factory(config)`` returns a :class:`Filter`.
        description: One line for ``gateway plugins``.
        forward_targets: For filters that forward messages (:class:`Forward`):
            ``forward_targets(config)`` returns the sources a filter with this config forwards
            to, by the config key that names each (``{"forward_violations_to": "protocols"}``).
            The core refuses a config where one is not a source, or where such a filter is in
            a destination's ``filters`` (forwarding happens at ingest only).
    """

    name: str
    config_type: type[ComponentConfig]
    factory: Callable[[Any], Filter]
    description: str = ""
    forward_targets: Callable[[Any], Mapping[str, str]] | None = None


@dataclass(frozen=True, slots=True)
class MatcherType:
    """A kind of privacy matcher: recognises personal data by key name or by value.

    Attributes:
        name: The matcher's name, e.g. ``email``.
        default_class: ``red``, ``yellow`` or ``green``: the class of a field it matches.
        match_key: ``match_key(key)`` is true when a field's name identifies this data.
        match_value: ``match_value(value)`` is true when a value has this data's shape.
        description: One line for ``gateway plugins``.
    """

    name: str
    default_class: str
    match_key: Callable[[str], bool]
    match_value: Callable[[Any], bool] | None = None
    description: str = ""
