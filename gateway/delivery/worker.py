"""Delivery: one worker per destination, reading the log through the destination's own cursor.

The worker batches records (max messages, max bytes, max wait), runs the destination's filters,
and keeps up to ``concurrency`` batches in flight. The cursor advances only over a contiguous run
of finished batches, so a crash at any point re-sends, never skips (at least once). Retryable
failures back off exponentially with jitter and honour ``Retry-After``; permanent ones, and
retryable ones past ``max_attempts``, go to the dead-letter table. The backlog of a slow or dead
destination stays in the log on disk: the worker holds at most ``concurrency`` batches in flight
and the next one, read ahead while it waits for a slot, in memory.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import msgspec
import structlog
import trio

from gateway.components import (
    Destination,
    Exchange,
    Filter,
    FilterChain,
    FilterContext,
    FilterErrorLog,
    Record,
    SendResult,
    apply_filters,
)
from gateway.config import DestinationConfig
from gateway.config.secrets import redact_text
from gateway.delivery.acks import Acks
from gateway.delivery.replay import Replay
from gateway.delivery.routing import INTEGRATIONS_REASON, backoff_delay, integrations_allow
from gateway.errors import CursorLostError, DeliveryError, LogUnavailableError
from gateway.log import FILTER_STAGE, SEND_STAGE, IngestLog, mentions_user
from gateway.log.series import SeriesRecorder
from gateway.metrics import Metrics
from gateway.privacy.classifier import Classifier, apply_policy
from gateway.telemetry import ThrottledWarning

log = structlog.get_logger("gateway.delivery")

#: How often a worker looks for dead letters an operator marked for redrive.
REDRIVE_POLL_SECS = 2.0
#: Outcome of a tombstone: a message removed by a deletion request whose row had to stay.
DELETED_REASON = "deleted"
_TOMBSTONE_MARK = b'"type":"deleted"'
_encode = msgspec.json.Encoder().encode


class DestinationStatistics(msgspec.Struct, frozen=True):
    """Counters of one destination worker since it started."""

    cursor: int
    delivered: int
    filtered: int
    dead_lettered: int
    retries: int
    in_flight_batches: int
    last_error: str | None


class ErrorSample(msgspec.Struct, frozen=True):
    """The errors of one kind a destination reported since its worker started: how many, and
    the latest one with its request and answer (credentials redacted by the plugin)."""

    kind: str
    count: int
    last_error: str
    last_at: float
    retryable: bool
    exchange: Exchange | None = None


#: Kinds of error kept per destination; past it, new kinds are counted under ``other``.
MAX_ERROR_KINDS = 32
#: The event kept with an error sample ("what you sent") is cut here.
MAX_SENT_SAMPLE_BYTES = 16 * 1024


@dataclass
class _Counters:
    delivered: int = 0
    filtered: int = 0
    dead_lettered: int = 0
    retries: int = 0
    last_error: str | None = None


class DestinationWorker:
    """Moves records from the log to one destination. Run with ``nursery.start(worker.run)``."""

    def __init__(
        self,
        destination_id: str,
        config: DestinationConfig,
        destination: Destination,
        ingest_log: IngestLog,
        filters: Sequence[tuple[str, Filter]] = (),
        metrics: Metrics | None = None,
        classifier: Classifier | None = None,
        *,
        replay: Replay | None = None,
        series: SeriesRecorder | None = None,
        secrets: Collection[str] = (),
    ) -> None:
        self.id = destination_id
        #: The destination's secrets in the config (a URL given as a reference, a key): never
        #: in an error, a sample or a dead letter, which the console and the admin API show.
        self.secrets = frozenset(secrets)
        #: Where Event Delivery's per-minute counts go (a replay's count as its destination's).
        self._series = series
        self.replay = replay
        # A replay reads through a cursor of its own; everything else (dead letters, metrics,
        # the destination) is the destination's.
        self._cursor_name = replay.name if replay is not None else destination_id
        self._config = config
        self._destination = destination
        self._log = ingest_log
        self._filters = FilterChain(filters)
        self._filter_errors = FilterErrorLog(log)
        self._metrics = metrics or Metrics()
        self._classifier = classifier
        self._counters = _Counters()
        self._acks = Acks(cursor=0)
        self._reading = trio.CancelScope()
        self._redriving = trio.CancelScope()
        self._holding = trio.CancelScope()  # the wait for the cursor (another gateway holds it)
        self._held = trio.CancelScope()  # delivery while this gateway holds the cursor
        self._stopped = False
        self._lost = False
        self._persisting = trio.Lock()
        self._saved_cursor = 0
        # Sends in progress by the log's deletion count when they started (their records were
        # checked against every deletion before it), so a deletion can wait for older ones.
        self._sends: Counter[int] = Counter()
        self._sends_changed = trio.Event()
        self._errors: dict[str, ErrorSample] = {}
        self._redrive_asked = trio.Event()  # an operator asked: look now, not at the next poll
        self._redrive_passed = trio.Event()  # set (and replaced) as each look ends
        self._redrive_passes = 0
        self._redrive_pass_running = False
        self._cursor_saved = trio.Event()  # set (and replaced) each time the cursor is saved
        self._filling = trio.CancelScope()  # the wait for a batch to fill up
        self._flush_upto = 0  # send what is stored up to here without waiting for a full batch
        self._forward_warning = ThrottledWarning(structlog.get_logger("gateway.delivery"), "forward_ignored")
        self._send_result_warning = ThrottledWarning(log, "send_result_names_unknown_records")

    def set_filters(self, filters: Sequence[tuple[str, Filter]], classifier: Classifier | None = None) -> None:
        """Use other filters (and classifier) from the next batch on (a reload that changed only those)."""
        self._filters = FilterChain(filters)
        self._filter_errors = FilterErrorLog(log)
        if classifier is not None:
            self._classifier = classifier

    def stop(self) -> None:
        """Stop reading new batches; :meth:`run` returns once the batches in flight are done and
        recorded, so a worker started after it resumes exactly where this one stopped."""
        self._stopped = True
        self._reading.cancel()
        self._redriving.cancel()
        self._holding.cancel()

    def error_samples(self) -> list[ErrorSample]:
        """The errors this worker met, one sample per kind, most recent first."""
        return sorted(self._errors.values(), key=lambda sample: sample.last_at, reverse=True)

    def forget_samples_of(self, spellings: tuple[bytes, ...]) -> None:
        """Drop the request and answer of the error samples that hold a deleted user's data
        (:func:`gateway.log.user_spellings`); their counts stay."""
        for kind, sample in list(self._errors.items()):
            if sample.exchange is not None and mentions_user(_encode(sample.exchange), spellings):
                self._errors[kind] = msgspec.structs.replace(sample, exchange=None)

    def _note_error(
        self, kind: str, error: str, *, retryable: bool, exchange: Exchange | None = None, sent: bytes | None = None
    ) -> None:
        error = self._redact(error)
        if exchange is not None:
            exchange = Exchange(request=self._redact(exchange.request), response=self._redact(exchange.response))
        self._counters.last_error = error
        if kind not in self._errors and len(self._errors) >= MAX_ERROR_KINDS:
            kind = "other"
        earlier = self._errors.get(kind)
        sample = self._errors[kind] = ErrorSample(
            kind=kind,
            count=(earlier.count if earlier else 0) + 1,
            last_error=error,
            last_at=time.time(),
            retryable=retryable,
            exchange=exchange or (earlier.exchange if earlier else None),
        )
        if self._series is not None:
            self._series.count(self.id, f"error:{kind}")
            # With "what you sent" (the first event of the batch, as handed to the destination).
            text = sent[:MAX_SENT_SAMPLE_BYTES].decode("utf-8", "replace") if sent is not None else None
            self._series.sample(self.id, kind, _encode({**msgspec.to_builtins(sample), "sent": text}))

    def _redact(self, text: str) -> str:
        return redact_text(text, self.secrets)

    def flush(self) -> int:
        """Send what is stored now without waiting for a batch to fill up (``gateway
        destinations flush``: a warehouse loads now); returns the seq to wait for with
        :meth:`wait_cursor`."""
        self._flush_upto = max(self._flush_upto, self._log.head())
        self._filling.cancel()
        return self._flush_upto

    async def wait_cursor(self, seq: int) -> None:
        """Return once this worker's saved cursor is at ``seq`` or past it: every record up to
        there was delivered, filtered or dead-lettered, and booked."""
        while self._saved_cursor < seq:
            await self._cursor_saved.wait()

    def statistics(self) -> DestinationStatistics:
        c = self._counters
        return DestinationStatistics(
            cursor=self._saved_cursor,
            delivered=c.delivered,
            filtered=c.filtered,
            dead_lettered=c.dead_lettered,
            retries=c.retries,
            in_flight_batches=len(self._acks.in_flight),
            last_error=c.last_error,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        replay = self.replay
        with structlog.contextvars.bound_contextvars(destination=self.id, replay=replay and replay.name):
            position = await self._log.cursor(self._cursor_name, start_ms=self._config.start_at_ms())
            self._acks = Acks(cursor=position)
            self._saved_cursor = position
            task_status.started()
            try:
                while not self._stopped:
                    # A log several gateways share lets one at a time move a cursor: wait for it.
                    with self._holding:
                        held = await self._log.hold(self._cursor_name)
                    if self._stopped:
                        return
                    if held is None:  # the cursor is gone: another gateway finished this replay
                        return
                    if not await self._deliver_while_held(held):
                        return
                    log.warning("destination_taken_over", reason="another gateway holds its cursor now")
            finally:
                with trio.move_on_after(5, shield=True):
                    await self._log.release(self._cursor_name)

    async def _deliver_while_held(self, position: int) -> bool:
        """Deliver from ``position`` until stopped; True when another gateway took the cursor
        over (the batches in flight were abandoned: the new holder sends them)."""
        replay = self.replay
        self._acks = Acks(cursor=position)
        self._saved_cursor = position
        self._lost = False
        self._reading, self._redriving, self._held = trio.CancelScope(), trio.CancelScope(), trio.CancelScope()
        slots = trio.Semaphore(self._config.concurrency)
        range_gone = False
        read_failures = 0
        with self._held:
            async with trio.open_nursery() as nursery:
                if replay is None:  # the destination's own worker redrives its dead letters
                    nursery.start_soon(self._redrive_loop)
                with self._reading:
                    while replay is None or position < replay.end_seq:
                        deletions = self._log.deletions
                        try:
                            batch = await self._next_batch(position)
                        except LogUnavailableError as error:  # the log is away: delivery pauses
                            read_failures += 1
                            log.warning("log_read_failed", reason=error.reason, attempt=read_failures)
                            await trio.sleep(min(5.0, 0.1 * 2**read_failures))
                            continue
                        read_failures = 0
                        if replay is not None:
                            batch = [record for record in batch if record.seq <= replay.end_seq]
                            if not batch:  # what is left of the range was deleted
                                range_gone = True
                                break
                        position = batch[-1].seq
                        await slots.acquire()
                        self._acks.start(position)
                        nursery.start_soon(self._deliver, batch, slots, deletions)
        if self._lost:
            return True
        if range_gone and replay is not None:
            # Every batch in flight has landed (the nursery waited): past the deleted tail.
            await self._persist_cursor_at(replay.end_seq)
        return False

    def sending_from_before(self, deletions: int) -> bool:
        """Whether a send that started before the log's ``deletions``-th deletion is still running."""
        return any(started < deletions for started in self._sends)

    async def wait_sends_from_before(self, deletions: int) -> None:
        """Return once no send that started before the log's ``deletions``-th deletion is still
        running. Later sends, and later attempts of earlier batches, leave out what a deletion
        removed, so after this the destination gets nothing more of a deleted user."""
        while self.sending_from_before(deletions):
            await self._sends_changed.wait()

    async def _next_batch(self, after: int) -> list[Record]:
        """Wait for records after ``after``, then up to ``batch_max_wait_secs`` for a full
        batch, then read it in one go (seqs are never reused, so the head says how many wait,
        at most: a deletion request may have removed some)."""
        cfg = self._config
        await self._log.wait_for_records(after)
        # A replay's records are all there, and a flush asked for what is stored: no waiting for more.
        if self.replay is None and after >= self._flush_upto:
            with trio.move_on_after(cfg.batch_max_wait_secs) as self._filling:
                while self._log.head() - after < cfg.batch_max_messages:
                    await self._log.wait_for_records(self._log.head())
        return await self._log.read(
            after, max_records=cfg.batch_max_messages, max_bytes=cfg.batch_max_bytes, reader=self._cursor_name
        )

    def _filtered(
        self, batch: list[Record], outcomes: Counter[tuple[str, str]], failures: list[tuple[Record, str]]
    ) -> list[Record]:
        """The records to send: tombstones of deleted messages never are; then the integrations
        object, then the destination's filters and privacy policy. Records a filter failed on
        are added to ``failures`` with the error (for the dead-letter table)."""
        cfg = self._config
        names = (cfg.display_name or self.id, *cfg.also_named)
        privacy = cfg.privacy if cfg.privacy.active and self._classifier is not None else None
        contexts: dict[str, FilterContext] = {}
        kept = []
        for record in batch:
            # Most events carry no integrations object: skip decoding them when there is nothing to ask.
            if (
                not self._filters
                and not cfg.opt_in
                and privacy is None
                and b'"integrations"' not in record.body
                and _TOMBSTONE_MARK not in record.body
            ):
                kept.append(record)
                continue
            message = record.message()
            if message.get("type") == DELETED_REASON:
                self._count_filtered(record, DELETED_REASON, outcomes)
                continue
            if not integrations_allow(
                message.get("integrations"), names, opt_in=cfg.opt_in, all_false_applies=cfg.all_false_applies
            ):
                self._count_filtered(record, INTEGRATIONS_REASON, outcomes)
                continue
            if not self._filters and privacy is None:
                kept.append(record)
                continue
            context = contexts.get(record.source)
            if context is None:
                context = contexts[record.source] = FilterContext(record.source, self.id)
            result, reason, failure, forward = apply_filters(self._filters, message, context, self._filter_errors)
            if forward:
                self._forward_warning(reason="forwarding works only in a source's filters")
            if failure is not None:
                failures.append((record, failure))
                continue
            if result is None:
                self._count_filtered(record, reason or "", outcomes)
                continue
            if privacy is not None and self._classifier is not None:
                apply_policy(result, self._classifier, privacy)
            # Stored bodies are msgspec's own encoding, so an untouched message encodes the same.
            try:
                body = _encode(result)
            except (TypeError, ValueError, OverflowError) as error:  # a filter left a value JSON cannot hold
                failures.append((record, f"the filtered message cannot be sent as JSON: {error}"))
                continue
            kept.append(record if body == record.body else msgspec.structs.replace(record, body=body))
        return kept

    def _count_filtered(self, record: Record, reason: str, outcomes: Counter[tuple[str, str]]) -> None:
        self._metrics.filtered.labels("destination", self.id, reason).inc()
        outcomes[(record.source, f"filtered:{reason}")] += 1
        self._counters.filtered += 1
        if self._series is not None:
            self._series.count(self.id, f"filtered:{reason}")

    async def _deliver(self, batch: list[Record], slots: trio.Semaphore, deletions: int) -> None:
        # A slot is held until the cursor has moved past its batch, not just until the batch
        # is sent: while an earlier batch is stuck in retries, later ones may be delivered but
        # not recorded, and a crash re-sends them. Holding the slots bounds that re-send to
        # ``concurrency`` batches (and the memory to as many, and the one read ahead).
        outcomes: Counter[tuple[str, str]] = Counter()
        last_seq = batch[-1].seq
        if self._log.deletions != deletions:
            # A deletion request ran since this batch was read: its user's records are
            # tombstones now (read again), and are never sent.
            deletions = self._log.deletions
            batch = await self._read_again(batch)
        failures: list[tuple[Record, str]] = []
        to_send = self._filtered(batch, outcomes, failures)
        for record, error in failures:
            await self._dead_letter([record], error, 1, outcomes, stage=FILTER_STAGE)
        if to_send:
            await self._send_until_done(to_send, outcomes, deletions)
        passed = self._acks.finish(last_seq, outcomes)
        if passed:
            await self._persist_cursor()
            for _ in range(passed):
                slots.release()

    async def _persist_cursor(self) -> None:
        """Save the cursor with the outcomes of the batches it moved over, in one transaction."""
        attempt = 0
        async with self._persisting:
            while True:
                seq, outcomes = self._acks.cursor, self._acks.unsaved
                if seq == self._saved_cursor and not outcomes:
                    return  # another task saved it meanwhile
                self._acks.unsaved = Counter()
                try:
                    await self._log.set_cursor(self._cursor_name, seq, {key: n for key, n in outcomes.items() if n})
                except CursorLostError:
                    # Another gateway took the destination over: it resends what this one had
                    # in flight (at most ``concurrency`` batches), and books it.
                    self._lost = True
                    self._held.cancel()
                    return
                except LogUnavailableError as error:
                    # Delivered but not recorded: at worst re-sent after a crash. Keep trying.
                    self._acks.unsaved.update(outcomes)
                    attempt += 1
                    log.warning("cursor_not_saved", reason=error.reason, attempt=attempt)
                    await trio.sleep(min(30.0, 0.1 * 2**attempt))
                else:
                    self._saved_cursor = seq
                    self._cursor_saved.set()
                    self._cursor_saved = trio.Event()
                    return

    async def _persist_cursor_at(self, seq: int) -> None:
        """Move the cursor to ``seq`` over records that are gone (a replay's deleted tail)."""
        if not self._acks.in_flight and seq > self._acks.cursor:
            self._acks.cursor = seq
            await self._persist_cursor()

    async def _read_again(self, batch: list[Record]) -> list[Record]:
        """The records of ``batch`` as the log holds them now. A deletion turns the records a
        worker holds into tombstones (and books none of them); a record that is gone was
        deleted and booked by the deletion, so it is left out without a count."""
        fresh = await self._log.read(
            batch[0].seq - 1,
            max_records=batch[-1].seq - batch[0].seq + 1,
            max_bytes=2**62,
            reader=self._cursor_name,
        )
        return [record for record in fresh if record.seq <= batch[-1].seq]

    async def _without_deleted(self, batch: list[Record], outcomes: Counter[tuple[str, str]]) -> list[Record]:
        """``batch`` (already filtered) less the records a deletion request removed since."""
        now = {record.seq: record for record in await self._read_again(batch)}
        kept = []
        for record in batch:
            current = now.get(record.seq)
            if current is None:
                continue
            if _TOMBSTONE_MARK in current.body and current.message().get("type") == DELETED_REASON:
                self._count_filtered(record, DELETED_REASON, outcomes)
                continue
            kept.append(record)
        return kept

    async def _send(self, batch: list[Record]) -> SendResult | None:
        started = self._log.deletions
        self._sends[started] += 1
        try:
            result = await self._destination.send(batch)
            if result is not None and not isinstance(result, SendResult):
                raise TypeError(f"send() returned {type(result).__name__}, not None or a SendResult")
            return result
        finally:
            self._sends[started] -= 1
            if not self._sends[started]:
                del self._sends[started]
            self._sends_changed.set()
            self._sends_changed = trio.Event()

    async def _send_until_done(self, batch: list[Record], outcomes: Counter[tuple[str, str]], deletions: int) -> None:
        """Send until it succeeds; dead-letter on a permanent error or past max_attempts.
        Counts each record as delivered, dead-lettered, or (removed by a deletion request
        meanwhile) ``filtered:deleted``. ``deletions``: the log's deletion count that
        ``batch`` was checked against. Then the destination hears that it may forget what it
        kept for these records' retries (:meth:`Destination.batch_ended`)."""
        seqs = [record.seq for record in batch]
        try:
            await self._attempt_until_done(batch, outcomes, deletions)
        finally:
            try:
                self._destination.batch_ended(seqs)
            except Exception:  # a plugin's bug must not stop delivery
                log.exception("destination_batch_ended_failed", first_seq=seqs[0] if seqs else None)

    async def _attempt_until_done(
        self, batch: list[Record], outcomes: Counter[tuple[str, str]], deletions: int
    ) -> None:
        cfg = self._config
        attempt = 0
        while True:
            while self._log.deletions != deletions:  # no await between this check and the send
                deletions = self._log.deletions
                batch = await self._without_deleted(batch, outcomes)
            if not batch:
                return
            attempt += 1
            retry_after = None
            try:
                with trio.fail_after(cfg.timeout_secs):
                    result = await self._send(batch)
            except DeliveryError as error:
                self._note_error(
                    error.kind, str(error), retryable=error.retryable, exchange=error.exchange, sent=batch[0].body
                )
                if not error.retryable:
                    if error.every_record:  # nothing in the batch is at fault: no record by record
                        await self._dead_letter(batch, str(error), attempt, outcomes)
                    else:
                        await self._permanent_failure(batch, str(error), attempt, outcomes, deletions)
                    return
                retry_after = error.retry_after
            except trio.TooSlowError:
                self._note_error("timeout", f"timed out after {cfg.timeout_secs}s", retryable=True, sent=batch[0].body)
            except Exception as error:  # a plugin bug or an unexpected client error: retry
                self._note_error(
                    type(error).__name__, f"{type(error).__name__}: {error}", retryable=True, sent=batch[0].body
                )
                log.exception("destination_send_crashed", attempt=attempt)
            else:
                if result is not None and result.rejected:
                    batch = await self._dead_letter_rejected(batch, result, attempt, outcomes)
                self._counters.delivered += len(batch)
                self._record_delivery(batch)
                outcomes.update((record.source, "delivered") for record in batch)
                return
            if cfg.max_attempts and attempt >= cfg.max_attempts:
                await self._dead_letter(batch, self._counters.last_error or "failed", attempt, outcomes)
                return
            delay = backoff_delay(
                attempt, initial=cfg.retry_initial_secs, maximum=cfg.retry_max_secs, retry_after=retry_after
            )
            self._counters.retries += 1
            self._metrics.retries.labels(self.id).inc()
            if self._series is not None:
                self._series.count(self.id, "retries")
            log.warning(
                "destination_delivery_failed",
                attempt=attempt,
                retry_in_secs=round(delay, 3),
                records=len(batch),
                first_seq=batch[0].seq,
                error=self._counters.last_error,
            )
            await trio.sleep(delay)

    async def _dead_letter_rejected(
        self, batch: list[Record], result: SendResult, attempt: int, outcomes: Counter[tuple[str, str]]
    ) -> list[Record]:
        """Dead-letter the records a destination refused out of ``batch`` (each with its own
        reason); returns the rest, which it took."""
        by_error: dict[str, list[Record]] = {}
        taken = []
        unknown = set(result.rejected) - {record.seq for record in batch}
        if unknown:  # a plugin's bug: the records it meant stay booked as delivered; say so
            self._send_result_warning(unknown_seqs=sorted(unknown, key=str)[:10], count=len(unknown))
        for record in batch:
            error = result.rejected.get(record.seq)
            if error is None:
                taken.append(record)
            else:
                by_error.setdefault(str(error), []).append(record)
        for error, records in by_error.items():
            self._note_error("rejected", error, retryable=False, exchange=result.exchange, sent=records[0].body)
            await self._dead_letter(records, error, attempt, outcomes)
        return taken

    def _record_delivery(self, batch: list[Record]) -> None:
        self._metrics.delivered.labels(self.id).inc(len(batch))
        now_ms = time.time() * 1000
        latencies = [max(0.0, (now_ms - r.received_at) / 1000) for r in batch if r.received_at]
        self._metrics.delivery_latency.observe_many(self.id, latencies)
        if self._series is not None and batch:
            self._series.count(self.id, "delivered", len(batch))
            self._series.latencies(self.id, (seconds * 1000 for seconds in latencies))

    async def _permanent_failure(
        self, batch: list[Record], error: str, attempt: int, outcomes: Counter[tuple[str, str]], deletions: int
    ) -> None:
        if len(batch) == 1:
            await self._dead_letter(batch, error, attempt, outcomes)
            return
        # One bad record should not take its whole batch down: send them one by one, so only
        # the records the destination really refuses are dead-lettered.
        log.warning("destination_refused_batch", records=len(batch), error=error)
        for record in batch:
            await self._send_until_done([record], outcomes, deletions)

    async def _redrive_loop(self) -> None:
        """Send again, one by one, the dead letters an operator marked for redrive. Letters a
        filter failed on go through the destination's filters again first."""
        with self._redriving:
            while True:
                with trio.move_on_after(REDRIVE_POLL_SECS):
                    await self._redrive_asked.wait()  # or poll: the CLI marks letters in the log
                self._redrive_asked = trio.Event()
                started = self._redrive_passes + 1
                try:
                    await self._redrive_pass()
                finally:
                    self._redrive_passes = started
                    self._redrive_passed.set()
                    self._redrive_passed = trio.Event()

    def redrive_now(self) -> None:
        """Look for letters marked for redrive now rather than at the next poll."""
        self._redrive_asked.set()

    async def wait_redrive_pass(self) -> None:
        """Look for letters marked for redrive now, and return once a look that began after
        this call has ended (what it could send is sent, what was refused is held again)."""
        # A look under way began before this call: wait for it and the next one.
        target = self._redrive_passes + (2 if self._redrive_pass_running else 1)
        self.redrive_now()
        while self._redrive_passes < target:
            await self._redrive_passed.wait()

    async def _redrive_pass(self) -> None:
        self._redrive_pass_running = True
        try:
            await self._redrive_once()
        finally:
            self._redrive_pass_running = False

    async def _redrive_once(self) -> None:
        """One look for letters marked for redrive (at most 100), sent one by one."""
        deletions = self._log.deletions
        letters = await self._log.take_redrive(self.id, 100)
        delivered: list[tuple[int, Record]] = []
        dropped: list[int] = []
        refused: dict[str, list[int]] = {}  # letter ids by the reason each was refused again
        for letter_id, record, stage in letters:
            if self._log.deletions != deletions:
                break  # a deletion request may have removed the rest: take them again
            to_send = [record]
            if stage == FILTER_STAGE:
                failures: list[tuple[Record, str]] = []
                to_send = self._filtered([record], Counter(), failures)
                if failures:
                    refused.setdefault(failures[0][1], []).append(letter_id)
                    continue
                if not to_send:  # the filters drop it now (and counted why): it leaves the dead letters
                    dropped.append(letter_id)
                    continue
            try:
                with trio.fail_after(self._config.timeout_secs):
                    result = await self._send(to_send)
            except DeliveryError as failure:
                if failure.retryable:
                    break  # try the rest at the next poll
                refused.setdefault(self._redact(str(failure)), []).append(letter_id)
            except Exception:  # timeouts and plugin errors: next poll
                break
            else:
                if result is not None and record.seq in result.rejected:
                    refused.setdefault(self._redact(str(result.rejected[record.seq])), []).append(letter_id)
                else:
                    delivered.append((letter_id, record))
        if delivered or refused or dropped:
            # Each letter refused again keeps its own reason (a SendResult gives one per record).
            groups = list(refused.items()) or [("", [])]
            for i, (error, ids) in enumerate(groups):
                await self._log.finish_redrive(
                    self.id, delivered if i == 0 else [], ids, error, dropped=dropped if i == 0 else []
                )
            self._record_delivery([r for _, r in delivered])
            log.info(
                "dead_letters_redriven",
                delivered=len(delivered),
                refused_again=sum(len(ids) for ids in refused.values()),
            )

    async def _dead_letter(
        self,
        batch: list[Record],
        error: str,
        attempts: int,
        outcomes: Counter[tuple[str, str]],
        *,
        stage: str = SEND_STAGE,
    ) -> None:
        error = self._redact(error)
        for record in batch:
            outcomes[(record.source, "dead_lettered")] += 1
        log.error("destination_dead_lettered", records=len(batch), first_seq=batch[0].seq, error=error, stage=stage)
        while True:
            try:
                await self._log.add_dead_letters(self.id, batch, error, attempts, stage=stage)
                break
            except Exception as failure:  # the log is unwritable: keep the batch rather than lose it
                log.warning("dead_letter_not_saved", error=str(failure))
                await trio.sleep(5)
        self._counters.dead_lettered += len(batch)
        self._metrics.dead_lettered.labels(self.id).inc(len(batch))
        if self._series is not None:
            self._series.count(self.id, "dead_lettered", len(batch))
