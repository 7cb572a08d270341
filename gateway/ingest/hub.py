"""The ingest hub: what source plugins call to authenticate requests and store messages.

It holds the sources of the current config, runs each source's filters, encodes the messages,
and appends them to the log. A source answers its client with a 2xx only after :meth:`ingest`
(or :meth:`store`) returned, because that is when the messages are durable. Ingest is two
steps, :meth:`prepare` (synchronous: privacy, filters, encoding) and :meth:`store` (the commit
wait), so a source can let go of its message dicts before it waits.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import structlog

from gateway.components import FILTER_ERROR_REASON, Filter, FilterContext, FilterErrorLog, Forward, apply_filters
from gateway.config import GatewayConfig, ServerConfig
from gateway.log import Entry, IngestLog, InventoryRow, SourceLetter, source_letters
from gateway.metrics import Metrics
from gateway.privacy.classifier import RANK, Classifier, FieldClass, Finding, PrivacyPolicy, Shape, apply_policy
from gateway.telemetry import ThrottledWarning

log = structlog.get_logger("gateway.ingest")

JSONObject = dict[str, Any]
_encode = msgspec.json.Encoder().encode
#: Outcomes in the sources' books besides ``filtered:<reason>`` (and the log's stored/duplicates).
SUPPRESSED, DEAD_LETTERED = "suppressed", "dead_lettered"
#: For a dead letter, whatever a filter left in the message: what JSON cannot hold is written as its repr.
_encode_for_the_record = msgspec.json.Encoder(enc_hook=repr).encode
BLOCK_RED = PrivacyPolicy(red="block")
_BLOCK_RED_ACTS_ON = BLOCK_RED.acts_on
#: Distinct (source, path) pairs the field inventory holds at most: keys that are data (ids,
#: emails used as keys) must not grow it without bound.
INVENTORY_MAX_PATHS = 10_000
#: Message shapes per source whose last sighting is remembered instead of booked field by field.
INVENTORY_MAX_SHAPES = 1024


@dataclass(frozen=True, slots=True)
class Source:
    """A configured source, as source plugins see it."""

    id: str
    type: str
    options: Any
    filters: tuple[tuple[str, Filter], ...] = ()  # (filter id, filter), in order
    block_red: bool = False
    inventory: bool = False


@dataclass(slots=True)
class _Seen:
    """One inventoried field path: most severe class and matcher hits seen, first and last
    seen (ms), and what was last saved, to find the rows to flush."""

    cls: str
    hits: tuple[str, ...]
    first: int
    last: int
    saved: tuple[str, tuple[str, ...], int] | None = None

    def row(self, source: str, path: str) -> InventoryRow:
        return InventoryRow(source, path, self.cls, self.hits, self.first, self.last)


@dataclass
class _Inventory:
    by_source: dict[str, dict[str, _Seen]] = field(default_factory=dict)
    #: Per source, the message shapes booked already and when one was last seen (ms): a message
    #: of a known shape only refreshes that; its fields' last_seen follow on :meth:`settle`.
    shapes: dict[str, dict[Shape, int]] = field(default_factory=dict)
    size: int = 0
    full_warned: bool = False

    def settle(self) -> None:
        """Carry the shapes' last sightings over to their fields."""
        for source, shapes in self.shapes.items():
            seen = self.by_source.get(source, {})
            for shape, last in shapes.items():
                for path, _, _ in shape.fields:
                    entry = seen.get(path)
                    if entry is not None and entry.last < last:
                        entry.last = last


@dataclass(frozen=True, slots=True)
class Prepared:
    """Messages of one request made ready for the log: encoded entries, dead letters and the
    sources' books. It holds bytes only, no message dicts (see :meth:`IngestHub.prepare`)."""

    entries: list[Entry]
    letters: list[SourceLetter]
    tally: Counter[tuple[str, str]]
    filtered: int


class IngestOutcome(msgspec.Struct, frozen=True):
    """What happened to the messages of one :meth:`IngestHub.ingest` call."""

    stored: int
    duplicates: int
    filtered: int


def forwarded_key(from_source: str, message_id: str) -> str:
    """The dedup key of a message a filter of ``from_source`` forwarded: its messageId alone
    would make two sources' forwards of the same id, or a forward and a message sent to the
    target source directly, duplicates of each other, and all but one would be lost. A retry
    of the same forward still has the same key."""
    return f"\x00forwarded\x00{from_source}\x00{message_id}"


def _key_digest(write_key: str) -> bytes:
    return hashlib.sha256(write_key.encode("utf-8", "surrogatepass")).digest()


class IngestHub:
    """Authentication, client addresses and durable ingestion for source plugins.

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
    ) -> None:
        self._log = log
        self.metrics = metrics or Metrics()
        self._inventory = _Inventory()
        self._blocked: dict[str, int] = {}  # messages that had Red fields removed, per source, this call
        self._forward_warning = ThrottledWarning(structlog.get_logger("gateway.ingest"), "forward_refused")
        self.use_config(config, filters, classifier)

    def use_config(
        self, config: GatewayConfig, filters: Mapping[str, Filter], classifier: Classifier | None = None
    ) -> None:
        """Switch to another config; requests already inside :meth:`ingest` finish on the old one."""
        self._filter_errors = FilterErrorLog(log)
        self.server: ServerConfig = config.server
        self.classifier = classifier or Classifier((), config.privacy)
        # Keys are looked up by SHA-256 digest and then compared with compare_digest, so the
        # time a lookup takes says nothing useful about a guessed key.
        self._by_key_digest = {
            _key_digest(entity.core.write_key): (
                entity.core.write_key,
                Source(
                    id=sid,
                    type=entity.core.type,
                    options=entity.options,
                    filters=tuple((f, filters[f]) for f in entity.core.filters),
                    block_red=entity.core.block_red,
                    inventory=entity.core.inventory,
                ),
            )
            for sid, entity in config.sources.items()
        }
        self._by_id = {source.id: source for _, source in self._by_key_digest.values()}
        self._trusted = [ipaddress.ip_network(p, strict=False) for p in config.server.trusted_proxies]

    def count_rejected(self, code: str, count: int = 1) -> None:
        """Count messages refused at ingest (the HTTP answer or a log line says why)."""
        self.metrics.rejected.labels(code).inc(count)

    def sources_of_type(self, source_type: str) -> list[Source]:
        """Every configured source of ``source_type`` (e.g. to answer a CORS preflight, which
        carries no write key)."""
        return [source for _, source in self._by_key_digest.values() if source.type == source_type]

    @property
    def data_dir(self) -> Path:
        """The gateway's data folder; plugins keep their own files under it."""
        return Path(self.server.data_dir)

    def authenticate(self, write_key: str | None, source_type: str) -> Source | None:
        """The source of ``source_type`` whose write key this is, or None."""
        if not write_key:
            return None
        found = self._by_key_digest.get(_key_digest(write_key))
        if found is None:
            return None
        key, source = found
        if not hmac.compare_digest(key.encode("utf-8", "surrogatepass"), write_key.encode("utf-8", "surrogatepass")):
            return None
        return source if source.type == source_type else None

    def is_trusted_proxy(self, address: str | None) -> bool:
        """Whether ``address`` is in ``server.trusted_proxies``."""
        if not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """The client's address: the peer, or, when the peer is a trusted proxy, the nearest
        address in ``X-Forwarded-For`` that is not itself a trusted proxy."""
        try:
            peer = str(ipaddress.ip_address(peer or ""))
        except ValueError:
            return None  # a unix socket or a test client: no address to record
        if not forwarded_for or not self._trusted or not self.is_trusted_proxy(peer):
            return peer
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.is_trusted_proxy(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer  # a forged or garbled header: fall back to what we saw
        return peer

    async def ingest(self, messages: Sequence[tuple[Source, JSONObject]]) -> IngestOutcome:
        """Filter, encode and durably store validated messages (with server fields set):
        :meth:`store` of :meth:`prepare`.

        Raises:
            gateway.errors.LogUnavailableError: nothing was stored; answer 503.
        """
        return await self.store(self.prepare(messages))

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
        for source, message in messages:
            if not self._admit(source, message):
                tally[(source.id, SUPPRESSED)] += 1
                filtered += 1
                continue
            if not source.filters:
                entries.append(Entry(source.id, str(message["messageId"]), _encode(message)))
                continue
            if context is None or context.source != source.id:
                context = FilterContext(source.id)
            entry, reason, failure = self._filter(source, message, context, forwarded)
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
            else:
                tally[(source.id, f"filtered:{reason}")] += 1
        if self._blocked:
            for source_id, count in self._blocked.items():
                self.metrics.fields_blocked.labels(source_id).inc(count)
            self._blocked.clear()
        return Prepared(entries + forwarded if forwarded else entries, letters, tally, filtered)

    async def store(self, prepared: Prepared) -> IngestOutcome:
        """Append what :meth:`prepare` made to the log, in one commit: dead letters and the
        sources' books are durable with the messages, before the client hears 2xx.

        Raises:
            gateway.errors.LogUnavailableError: nothing was stored; answer 503.
        """
        entries = prepared.entries
        result = await self._log.append(entries, letters=prepared.letters, tally=prepared.tally)
        if entries:
            # One request comes from one source in practice; label by the first.
            label = entries[0].source
            self.metrics.accepted.labels(label).inc(result.stored)
            if result.duplicates:
                self.metrics.deduplicated.labels(label).inc(result.duplicates)
        return IngestOutcome(stored=result.stored, duplicates=result.duplicates, filtered=prepared.filtered)

    def _filter(
        self, source: Source, message: JSONObject, context: FilterContext, forwarded: list[Entry]
    ) -> tuple[Entry | None, str | None, str | None]:
        """Run ``source``'s filters on ``message``: ``(entry to store, None, None)``, or
        ``(None, drop reason, failure or None)``. What they forward is added to ``forwarded``."""
        kept, reason, failure, forward = apply_filters(source.filters, message, context, self._filter_errors)
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
        suppressed = self._log.suppressed
        if suppressed and message.get("userId") in suppressed:
            self.metrics.filtered.labels("source", source.id, "suppressed").inc()
            return False
        findings: list[Finding] | None = None
        if source.inventory:
            now_ms = int(time.time() * 1000)
            findings, shape = self.classifier.survey(message, _BLOCK_RED_ACTS_ON)
            shapes = self._inventory.shapes.get(source.id)
            if shapes is not None and shape in shapes:
                shapes[shape] = now_ms  # booked already: only last seen moves
            else:
                self._see_shape(source.id, shape, now_ms)
        if source.block_red and apply_policy(message, self.classifier, BLOCK_RED, findings):
            # Counted per call of ingest, not per message (a metric update costs as much as a check).
            self._blocked[source.id] = self._blocked.get(source.id, 0) + 1
        return True

    def _forward(self, from_source: str, forward: Sequence[Forward], entries: list[Entry]) -> None:
        """Store forwarded messages into their sources (privacy applies there, filters do not)."""
        for item in forward:
            target = self._by_id.get(item.source) if isinstance(item, Forward) else None
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

    async def redrive_letters(self) -> int:
        """Run the source dead letters an operator marked for redrive through their source's
        filters again; returns how many were taken (stored, filtered, or forwarded)."""
        taken = 0
        for source in list(self._by_id.values()):
            destination = source_letters(source.id)
            deletions = self._log.deletions
            letters = await self._log.take_redrive(destination, 100)
            if not letters:
                continue
            done: list[int] = []  # letter ids: stored, or dropped by the filters or a suppression
            refused: list[int] = []
            error = ""
            entries: list[Entry] = []
            # The books move each letter taken from dead_lettered to where it went now.
            tally: Counter[tuple[str, str]] = Counter()
            context = FilterContext(source.id)
            suppressed = self._log.suppressed
            for letter_id, record, _ in letters:
                try:
                    message = record.message()
                except msgspec.DecodeError as problem:
                    refused.append(letter_id)
                    error = f"the dead letter is not a JSON message: {problem}"
                    continue
                if suppressed and message.get("userId") in suppressed:
                    outcome: str | None = SUPPRESSED  # the user asked since: it is never stored
                else:
                    entry, reason, failure = self._filter(source, message, context, entries)
                    if failure is not None:
                        refused.append(letter_id)
                        error = failure
                        continue
                    outcome = None if entry is not None else f"filtered:{reason}"
                    if entry is not None:
                        entries.append(entry)  # the log books it as stored (or a duplicate)
                    else:
                        self.metrics.filtered.labels("source", source.id, reason or "").inc()
                done.append(letter_id)
                tally[(source.id, DEAD_LETTERED)] -= 1
                if outcome is not None:
                    tally[(source.id, outcome)] += 1
            if self._log.deletions != deletions:
                continue  # a deletion request ran meanwhile: take what is left again next time
            # Stored, booked and taken out of the dead letters in one commit: exact across crashes.
            await self._log.append(entries, tally=tally, redriven=done)
            if refused:
                await self._log.finish_redrive(destination, [], refused, error)
            log.info(
                "source_dead_letters_redriven",
                source=source.id,
                taken=len(done),
                refused_again=len(refused),
            )
            taken += len(done)
        return taken

    # -- the privacy field inventory ---------------------------------------------------------

    def _see_shape(self, source_id: str, shape: Shape, now_ms: int) -> None:
        shapes = self._inventory.shapes.get(source_id)
        if shapes is None:
            shapes = self._inventory.shapes[source_id] = {}
        if shape not in shapes:
            if len(shapes) >= INVENTORY_MAX_SHAPES:
                self._inventory.settle()
                shapes.clear()
            self._see(source_id, shape.fields, now_ms)
        shapes[shape] = now_ms

    def _see(self, source_id: str, fields: Iterable[FieldClass], now_ms: int) -> None:
        inventory = self._inventory
        seen = inventory.by_source.get(source_id)
        if seen is None:
            seen = inventory.by_source[source_id] = {}
        for finding in fields:
            entry = seen.get(finding.path)
            if entry is not None:
                entry.last = now_ms
                if finding.cls != entry.cls and RANK[finding.cls] > RANK[entry.cls]:
                    entry.cls = finding.cls
                if finding.hits and finding.hits != entry.hits and not set(finding.hits) <= set(entry.hits):
                    entry.hits = tuple(sorted({*entry.hits, *finding.hits}))
                continue
            if inventory.size >= INVENTORY_MAX_PATHS:
                if not inventory.full_warned:
                    inventory.full_warned = True
                    log.warning("privacy_inventory_full", paths=inventory.size, source=source_id)
                continue
            seen[finding.path] = _Seen(finding.cls, tuple(sorted(finding.hits)), now_ms, now_ms)
            inventory.size += 1
            # The path, never the value.
            log.info(
                "privacy_field_seen",
                source=source_id,
                path=finding.path,
                hits=list(finding.hits),
                **{"class": finding.cls},
            )

    def load_inventory(self, rows: Sequence[InventoryRow]) -> None:
        """Start from the inventory saved by earlier runs (known paths are not logged again)."""
        self._inventory.settle()
        self._inventory.shapes.clear()  # booked against entries about to be replaced
        for row in rows:
            seen = self._inventory.by_source.setdefault(row.source, {})
            if row.path not in seen:
                self._inventory.size += 1
            seen[row.path] = _Seen(
                row.cls, row.hits, row.first_seen, row.last_seen, saved=(row.cls, row.hits, row.last_seen)
            )

    def inventory_changes(self) -> list[InventoryRow]:
        """Inventory rows that are new or changed since they were last saved."""
        self._inventory.settle()
        return [
            entry.row(source, path)
            for source, seen in self._inventory.by_source.items()
            for path, entry in seen.items()
            if entry.saved != (entry.cls, entry.hits, entry.last)
        ]

    def inventory_saved(self, rows: Sequence[InventoryRow]) -> None:
        """Mark ``rows`` (from :meth:`inventory_changes`) as saved, as they were then."""
        for row in rows:
            entry = self._inventory.by_source[row.source][row.path]
            entry.saved = (row.cls, row.hits, row.last_seen)
