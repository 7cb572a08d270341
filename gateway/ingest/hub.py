"""The ingest hub: the core's side of :class:`gateway.Ingest`, the one sequence every source
type's messages go through.

A source hands candidates to :meth:`IngestHub.check`: each is decoded and size-checked,
validated as its call type, completed with the server fields, the accepted ones are taken from
the source's rate limit, then :meth:`prepare` runs suppression, privacy at ingest and the
source's filters and encodes what is kept. :meth:`store` appends it to the log in one commit
with the source's books. A source answers its client with a 2xx only after :meth:`store`
returned, because that is when the messages are durable. Check and store are two steps so a
source holds no message dicts while it waits for the commit.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import msgspec
import structlog

from gateway.components import (
    FILTER_ERROR_REASON,
    Candidate,
    Checked,
    Filter,
    FilterChain,
    FilterContext,
    FilterErrorLog,
    Forward,
    IngestLimits,
    IngestOutcome,
    Rejection,
    Source,
    apply_filters,
)
from gateway.config import GatewayConfig
from gateway.errors import RateLimitedError
from gateway.ingest.candidates import BATCH_LIMIT_EXCEEDED, candidate_message, defaults_bytes, open_batch
from gateway.ingest.event_schema import EventSchema
from gateway.ingest.inventory import FieldInventory
from gateway.ingest.ratelimit import RateLimits
from gateway.ingest.raw import raw_letter_body
from gateway.ingest.sources import SourceDirectory
from gateway.ingest.tap import FILTERED, REJECTED, Tap
from gateway.log import RAW_STAGE, Entry, IngestLog, SourceLetter, source_letters
from gateway.log.series import SeriesRecorder, source_series
from gateway.messages import (
    CALL_TYPES,
    NO_DEFAULTS,
    Arrival,
    BatchDefaults,
    Invalid,
    apply_server_fields,
    batch_item_type,
    validate,
)
from gateway.metrics import Metrics
from gateway.privacy.classifier import Classifier, Finding, PrivacyPolicy, block_red
from gateway.telemetry import ThrottledWarning

log = structlog.get_logger("gateway.ingest")

JSONObject = dict[str, Any]
_encode = msgspec.json.Encoder().encode
#: Outcomes in the sources' books besides ``filtered:<reason>`` (and the log's stored/duplicates).
SUPPRESSED, DEAD_LETTERED = "suppressed", "dead_lettered"
#: The tap's code for input a source kept as a raw dead letter (its function failed on it).
RAW_DEAD_LETTERED = "raw_dead_lettered"
#: For a dead letter, whatever a filter left in the message: what JSON cannot hold is written as its repr.
_encode_for_the_record = msgspec.json.Encoder(enc_hook=repr).encode
BLOCK_RED = PrivacyPolicy(red="block")
_BLOCK_RED_ACTS_ON = BLOCK_RED.acts_on


@dataclass(frozen=True, slots=True)
class Prepared:
    """Messages of one request made ready for the log: encoded entries, dead letters and the
    sources' books. It holds bytes only, no message dicts (see :meth:`IngestHub.prepare`)."""

    entries: list[Entry]
    letters: list[SourceLetter]
    tally: Counter[tuple[str, str]]
    filtered: int


def forwarded_key(from_source: str, message_id: str) -> str:
    """The dedup key of a message a filter of ``from_source`` forwarded: its messageId alone
    would make two sources' forwards of the same id, or a forward and a message sent to the
    target source directly, duplicates of each other, and all but one would be lost. A retry
    of the same forward still has the same key."""
    return f"\x00forwarded\x00{from_source}\x00{message_id}"


class IngestHub:
    """The core's :class:`gateway.Ingest`: sources, rate limits, and durable ingestion.

    Args:
        log: Where accepted messages go.
        config: The validated config.
        filters: Built filters by id, for the sources' ``filters`` lists.
    """

    def __init__(
        self,
        log: IngestLog,
        config: GatewayConfig,
        filters: Mapping[str, Filter],
        metrics: Metrics | None = None,
        classifier: Classifier | None = None,
        *,
        series: SeriesRecorder | None = None,
    ) -> None:
        self.log = log
        #: Where refusals are counted per source and minute (the console's Delivery Overview).
        self.series = series
        self.metrics = metrics or Metrics()
        self.inventory = FieldInventory()
        #: The events of the inventoried sources, for the console's Schema view.
        self.event_schema = EventSchema()
        #: When this hub started counting (epoch seconds): the in-memory counts start here.
        self.started_at = time.time()
        self.rate_limits = RateLimits()
        #: The console's tap: the last calls each source saw, and their live subscribers.
        self.tap = Tap(on_dropped=self.metrics.console_tap_dropped.inc)
        self._blocked: dict[str, int] = {}  # messages that had Red fields removed, per source, this call
        self._forward_warning = ThrottledWarning(structlog.get_logger("gateway.ingest"), "forward_refused")
        self.use_config(config, filters, classifier)

    def use_config(
        self, config: GatewayConfig, filters: Mapping[str, Filter], classifier: Classifier | None = None
    ) -> None:
        """Switch to another config; requests already inside :meth:`check` finish on the old one."""
        self._filter_errors = FilterErrorLog(log)
        server = config.server
        self.limits = IngestLimits(
            max_request_bytes=server.max_request_bytes,
            max_message_bytes=server.max_message_bytes,
            max_batch_messages=server.max_batch_messages,
            retry_after_secs=server.retry_after_secs,
        )
        self.data_dir = Path(server.data_dir)
        self.classifier = classifier or Classifier((), config.privacy)
        self.directory = SourceDirectory(config, filters)

    # -- finding sources -------------------------------------------------------------------

    def authenticate(self, write_key: object, source_type: str) -> Source | None:
        return self.directory.authenticate(write_key, source_type)

    def source(self, source_id: str, source_type: str) -> Source | None:
        found = self.directory.by_id.get(source_id)
        return found if found is not None and found.type == source_type else None

    def sources_of_type(self, source_type: str) -> list[Source]:
        return self.directory.of_type(source_type)

    def is_trusted_proxy(self, address: str | None) -> bool:
        return self.directory.is_trusted_proxy(address)

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str | None:
        return self.directory.client_ip(peer, forwarded_for)

    def arrival(self, peer: str | None, forwarded_for: str | None = None) -> Arrival:
        return Arrival.now(self.directory.client_ip(peer, forwarded_for))

    def count_rejected(self, code: str, count: int = 1) -> None:
        self.metrics.rejected.labels(code).inc(count)

    async def keep_raw(self, source: Source, payload: bytes, arrival: Arrival, error: str) -> None:
        letter = SourceLetter(source_letters(source.id), source.id, raw_letter_body(payload, arrival), error, RAW_STAGE)
        # Booked as one dead-lettered message, in the commit that keeps it (see SourceType.redrive).
        await self.log.append((), letters=[letter], tally={(source.id, DEAD_LETTERED): 1})
        self.metrics.filtered.labels("source", source.id, "raw_dead_lettered").inc()
        self.tap.book(source.id, REJECTED, payload, RAW_DEAD_LETTERED, error)

    # -- checking ----------------------------------------------------------------------------

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
        root_bytes = defaults_bytes(defaults) if defaults is not None else 0
        return self._check(candidates, arrival, source, find_source, defaults, strict, [], root_bytes)

    def check_batch(
        self,
        body: bytes,
        arrival: Arrival,
        *,
        write_key: str | None = None,
        find_source: Callable[[object], Source | None] | None = None,
        strict: bool = False,
    ) -> Checked | None:
        try:
            batch = open_batch(body, self.limits)
        except Invalid as error:
            if not strict and write_key is not None:  # the header names the source: show it the refusal
                known = self.directory.authenticate(write_key, None)
                if known is not None:
                    self._refused(known.id, body, error.code, error.message)
            raise
        if strict and (batch.excess or not batch.items):
            return None
        source = None
        request_key = write_key or batch.write_key
        if request_key is not None:
            source = find_source(request_key) if find_source is not None else None
            if source is None:
                raise Invalid("invalid_write_key", "unknown or missing write key")
        rejected = []
        if batch.excess:  # one entry for all of them: the answer stays small
            limit = self.limits.max_batch_messages
            excess = Rejection(
                limit,
                BATCH_LIMIT_EXCEEDED,
                f"a batch may hold at most {limit} messages: items {limit} to {limit + batch.excess - 1} "
                "were not taken",
                count=batch.excess,
            )
            rejected.append(excess)
            if source is not None:
                self._refused(source.id, None, excess.code, excess.message, excess.count)
        # Each item as (payload, call): the call is the item's own type.
        items = zip(batch.items, repeat(None))
        return self._check(items, arrival, source, find_source, batch.defaults, strict, rejected, batch.root_bytes)

    def _check(
        self,
        candidates: Iterable[tuple[object, str | None]],
        arrival: Arrival,
        source: Source | None,
        find_source: Callable[[object], Source | None] | None,
        defaults: BatchDefaults | None,
        strict: bool,
        rejected_past: list[Rejection],
        root_bytes: int,
    ) -> Checked | None:
        max_bytes = self.limits.max_message_bytes
        defaults = defaults or NO_DEFAULTS
        accepted: list[tuple[Source, JSONObject]] = []
        rejected: list[Rejection] = []
        # The one pass over the messages (it runs once per event: no helper call that the
        # happy path can do without): decoded, their source found, validated, completed.
        for index, (payload, call) in enumerate(candidates):
            item_source = source
            try:
                message = candidate_message(payload, call, max_bytes, root_bytes)
                if item_source is None:
                    item_source = find_source(message.get("writeKey")) if find_source is not None else None
                    if item_source is None:
                        raise Invalid("invalid_write_key", "unknown or missing write key")
                if call is None:
                    call = message.get("type")
                    if call not in CALL_TYPES:
                        call = batch_item_type(message)  # raises the client's error
                validate(message, call)
                apply_server_fields(message, call, arrival, defaults)
            except Invalid as error:
                if strict:
                    return None
                rejected.append(Rejection(index, error.code, error.message))
                if item_source is not None:
                    self._refused(item_source.id, payload, error.code, error.message)
            else:
                accepted.append((item_source, message))
        rejected += rejected_past
        # A 429 refuses the whole request before its rejected items are counted: the client
        # sends it all again, and they are counted then.
        try:
            self._take_rate(accepted, source)
        except RateLimitedError as error:
            if not strict:  # a fast path that declines books nothing: its routes will
                for item_source, message in accepted:
                    self._refused(item_source.id, message, "rate_limited", str(error))
            raise
        if rejected:
            counts: Counter[str] = Counter()
            for rejection in rejected:
                counts[rejection.code] += rejection.count
            for code, count in counts.items():
                self.count_rejected(code, count)
            log.info("messages_rejected", count=sum(counts.values()), codes=sorted(counts))
        first = accepted[0][0] if accepted else None
        return Checked(self.prepare(accepted), len(accepted), rejected, first)

    def _refused(self, source_id: str, payload: object, code: str, reason: str, count: int = 1) -> None:
        """A call of ``source_id`` refused at ingest: shown in the debugger, counted by code."""
        self.tap.book(source_id, REJECTED, payload, code, reason)
        if self.series is not None:
            self.series.count(source_series(source_id), f"rejected:{code}", count)

    def _take_rate(self, accepted: Sequence[tuple[Source, JSONObject]], source: Source | None) -> None:
        """Take ``accepted`` from their sources' rate limits (all of ``source`` when it is given)."""
        limited: dict[str, tuple[Source, int]] = {}
        if source is not None:  # the request's own source: no walk over the messages
            if source.rate_limit is not None and accepted:
                limited[source.id] = (source, len(accepted))
        else:
            for item_source, _ in accepted:
                if item_source.rate_limit is not None:
                    _, count = limited.get(item_source.id, (item_source, 0))
                    limited[item_source.id] = (item_source, count + 1)
        if not limited:
            return
        refusal = self.rate_limits.take([(s.id, s.rate_limit, n) for s, n in limited.values()])
        if refusal is not None:
            wait, source_id = refusal
            limit = limited[source_id][0].rate_limit
            assert limit is not None
            raise RateLimitedError(wait, source_id, limit.events_per_sec)

    async def ingest(
        self,
        candidates: Sequence[Candidate],
        arrival: Arrival,
        *,
        source: Source | None = None,
        find_source: Callable[[object], Source | None] | None = None,
    ) -> tuple[IngestOutcome, list[Rejection]]:
        checked = self.check(candidates, arrival, source=source, find_source=find_source)
        assert checked is not None  # not strict
        return await self.store(checked), checked.rejected

    # -- preparing and storing ---------------------------------------------------------------

    def prepare(self, messages: Iterable[tuple[Source, JSONObject]]) -> Prepared:
        """Run suppression, privacy and each source's filters, and encode what is kept.

        A message a source filter fails on becomes a dead letter (as ``source:<id>``); messages
        filters forward to other sources come after the request's own. Call it apart from
        :meth:`store` when the message dicts can be let go before the commit wait: a batch
        handler that holds them across it keeps thousands of containers alive per request
        under load, the collector promotes them, and full collections then cost more than
        the rest of ingest (bench/ingest.py batch: about 38 against 27 us of CPU per event).
        """
        entries: list[Entry] = []
        forwarded: list[Entry] = []
        letters: list[SourceLetter] = []
        # The sources' books: what became of every message that is not stored (the log adds
        # the stored and duplicate ones), committed with the messages.
        tally: Counter[tuple[str, str]] = Counter()
        filtered = 0
        context: FilterContext | None = None
        suppressed = self.log.suppressed
        for source, message in messages:
            # _admit has nothing to do for a source without inventory or block_red while no
            # user is suppressed (a call per message saved).
            if (suppressed or source.inventory or source.block_red) and not self._admit(source, message):
                tally[(source.id, SUPPRESSED)] += 1
                filtered += 1
                self.tap.book(source.id, FILTERED, message, None, SUPPRESSED)
                continue
            if not source.filters:
                entries.append(Entry(source.id, str(message["messageId"]), _encode(message)))
                continue
            filters = source.filters
            start = filters.first_unsure(message) if type(filters) is FilterChain else None
            if start == len(filters) and type(message.get("messageId")) is str:
                # Every filter passed it (unchanged, or changed in place as its apply would):
                # nothing dropped, nothing forwarded; filter_message's entry, without its calls.
                try:
                    entries.append(Entry(source.id, message["messageId"], _encode(message)))
                    continue
                except (TypeError, ValueError, OverflowError):
                    pass  # filter_message says why, as it would have
            if context is None or context.source != source.id:
                context = FilterContext(source.id)
            entry, reason, failure = self.filter_message(source, message, context, forwarded, start)
            if entry is not None:
                entries.append(entry)
                continue
            filtered += 1
            self.metrics.filtered.labels("source", source.id, reason or "").inc()
            if failure is not None:
                tally[(source.id, DEAD_LETTERED)] += 1
                letters.append(
                    SourceLetter(source_letters(source.id), source.id, _encode_for_the_record(message), failure)
                )
                self.tap.book(source.id, FILTERED, message, reason, failure)
            else:
                tally[(source.id, f"filtered:{reason}")] += 1
                self.tap.book(source.id, FILTERED, message, None, reason)
        if self._blocked:
            for source_id, count in self._blocked.items():
                self.metrics.fields_blocked.labels(source_id).inc(count)
            self._blocked.clear()
        return Prepared(entries + forwarded if forwarded else entries, letters, tally, filtered)

    async def store(self, checked: Checked) -> IngestOutcome:
        """Append what :meth:`check` accepted to the log, in one commit: dead letters and the
        sources' books are durable with the messages, before the client hears 2xx.

        Raises:
            gateway.errors.LogUnavailableError: nothing was stored; answer 503.
        """
        return await self.store_prepared(checked._prepared)

    async def store_messages(self, messages: Sequence[tuple[Source, JSONObject]]) -> IngestOutcome:
        """Prepare and store messages that are complete already (validated, server fields set):
        for the core's own callers and benchmarks, which have no candidates to check."""
        return await self.store_prepared(self.prepare(messages))

    async def store_prepared(self, prepared: Prepared) -> IngestOutcome:
        """:meth:`store` of what :meth:`prepare` made (for callers inside the core)."""
        entries = prepared.entries
        result = await self.log.append(entries, letters=prepared.letters, tally=prepared.tally)
        if entries:
            self.tap.accepted(entries, result.duplicate_positions)
            # One request comes from one source in practice; label by the first.
            label = entries[0].source
            self.metrics.accepted.labels(label).inc(result.stored)
            if result.duplicates:
                self.metrics.deduplicated.labels(label).inc(result.duplicates)
        return IngestOutcome(stored=result.stored, duplicates=result.duplicates, filtered=prepared.filtered)

    def filter_message(
        self,
        source: Source,
        message: JSONObject,
        context: FilterContext,
        forwarded: list[Entry],
        start: int | None = None,
    ) -> tuple[Entry | None, str | None, str | None]:
        """Run ``source``'s filters on ``message``: ``(entry to store, None, None)``, or
        ``(None, drop reason, failure or None)``. What they forward is added to ``forwarded``.
        ``start``: what the chain's ``first_unsure(message)`` returned, when asked already."""
        kept, reason, failure, forward = apply_filters(source.filters, message, context, self._filter_errors, start)
        if forward:
            self._forward(source.id, forward, forwarded)
        if kept is None:
            return None, reason, failure
        try:
            return Entry(source.id, kept["messageId"], _encode(kept)), None, None
        except (TypeError, ValueError, OverflowError) as error:  # a filter left a value JSON cannot hold
            return None, FILTER_ERROR_REASON, f"the filtered message cannot be stored as JSON: {error}"

    def _admit(self, source: Source, message: JSONObject) -> bool:
        """Suppression, the field inventory and ``block_red``: what every message of ``source``
        goes through before its filters (and a message forwarded into it, instead of them).
        False: the message is suppressed (acknowledged, counted, never stored)."""
        suppressed = self.log.suppressed
        if suppressed and message.get("userId") in suppressed:
            self.metrics.filtered.labels("source", source.id, "suppressed").inc()
            return False
        findings: list[Finding] | None = None
        if source.inventory:
            now_ms = int(time.time() * 1000)
            findings, shape = self.classifier.survey(message, _BLOCK_RED_ACTS_ON)
            self.inventory.see(source.id, shape, now_ms)
            call = message.get("type")
            name = message.get("event") if call == "track" else message.get("name")
            self.event_schema.see(source.id, call, name, shape, now_ms)
        if source.block_red and block_red(message, self.classifier, findings):
            # Counted per call of ingest, not per message (a metric update costs as much as a check).
            self._blocked[source.id] = self._blocked.get(source.id, 0) + 1
        return True

    def _forward(self, from_source: str, forward: Sequence[Forward], entries: list[Entry]) -> None:
        """Store forwarded messages into their sources (privacy applies there, filters do not)."""
        for item in forward:
            target = self.directory.by_id.get(item.source) if isinstance(item, Forward) else None
            message = item.message if target is not None else None
            if target is None or type(message) is not dict or type(message.get("messageId")) is not str:
                self._forward_warning(from_source=from_source, problem="no such source, or not a message")
                continue
            if not self._admit(target, message):
                continue  # its user is suppressed
            try:
                body = _encode(message)
            except (TypeError, ValueError, OverflowError) as error:
                self._forward_warning(from_source=from_source, problem=f"not JSON: {error}")
                continue
            self.metrics.forwarded.labels(from_source, target.id).inc()
            entries.append(Entry(target.id, forwarded_key(from_source, message["messageId"]), body))
