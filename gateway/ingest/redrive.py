"""Source dead letters, kept as ``source:<id>``, once an operator marks them for redrive:
messages a source's filter failed on run through the source's filters again; raw input the
source type could not turn into messages (stage ``raw``) goes back to its ``redrive``."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING

import msgspec
import structlog

from gateway.components import FilterContext, Source, SourceType
from gateway.errors import RateLimitedError
from gateway.ingest.hub import DEAD_LETTERED, SUPPRESSED
from gateway.ingest.raw import open_raw_letter
from gateway.log import RAW_STAGE, Entry, source_letters

if TYPE_CHECKING:
    from gateway.components import Record
    from gateway.ingest.hub import IngestHub

log = structlog.get_logger("gateway.ingest")


async def redrive_source_letters(hub: IngestHub, source_types: Mapping[str, SourceType] | None = None) -> int:
    """Run the source dead letters an operator marked for redrive through their source's
    filters again, and hand raw ones back to their source type (``source_types`` by name);
    returns how many were taken (stored, filtered, or forwarded)."""
    taken = 0
    for source in list(hub.directory.by_id.values()):
        destination = source_letters(source.id)
        deletions = hub.log.deletions
        letters = await hub.log.take_redrive(destination, 100)
        raw = [(letter_id, record) for letter_id, record, stage in letters if stage == RAW_STAGE]
        if raw:
            source_type = (source_types or {}).get(source.type)
            taken += await _redrive_raw(hub, source_type, source, raw)
            letters = [letter for letter in letters if letter[2] != RAW_STAGE]
        if not letters:
            continue
        done: list[int] = []  # letter ids: stored, or dropped by the filters or a suppression
        # Letters refused again, by why: each keeps its own reason for the operator to read.
        refused: defaultdict[str, list[int]] = defaultdict(list)
        entries: list[Entry] = []
        # The books move each letter taken from dead_lettered to where it went now.
        tally: Counter[tuple[str, str]] = Counter()
        context = FilterContext(source.id)
        suppressed = hub.log.suppressed
        for letter_id, record, _ in letters:
            try:
                message = record.message()
            except msgspec.DecodeError as problem:
                refused[f"the dead letter is not a JSON message: {problem}"].append(letter_id)
                continue
            if suppressed and message.get("userId") in suppressed:
                outcome: str | None = SUPPRESSED  # the user asked since: it is never stored
            else:
                entry, reason, failure = hub.filter_message(source, message, context, entries)
                if failure is not None:
                    refused[failure].append(letter_id)
                    continue
                outcome = None if entry is not None else f"filtered:{reason}"
                if entry is not None:
                    entries.append(entry)  # the log books it as stored (or a duplicate)
                else:
                    hub.metrics.filtered.labels("source", source.id, reason or "").inc()
            done.append(letter_id)
            tally[(source.id, DEAD_LETTERED)] -= 1
            if outcome is not None:
                tally[(source.id, outcome)] += 1
        if hub.log.deletions != deletions:
            continue  # a deletion request ran meanwhile: take what is left again next time
        # Stored, booked and taken out of the dead letters in one commit: exact across crashes.
        await hub.log.append(entries, tally=tally, redriven=done)
        for error, ids in refused.items():
            await hub.log.finish_redrive(destination, [], ids, error)
        log.info(
            "source_dead_letters_redriven",
            source=source.id,
            taken=len(done),
            refused_again=sum(map(len, refused.values())),
        )
        taken += len(done)
    return taken


async def _redrive_raw(
    hub: IngestHub, source_type: SourceType | None, source: Source, letters: list[tuple[int, Record]]
) -> int:
    """Hand raw letters back to their source type's ``redrive``, one at a time (each is one
    delivery: all of it is stored, or none of it); returns how many were taken."""
    destination = source_letters(source.id)
    taken = 0
    for letter_id, record in letters:
        if source_type is None or source_type.redrive is None:
            await hub.log.finish_redrive(
                destination, [], [letter_id], f"source type {source.type!r} cannot redrive raw letters"
            )
            continue
        deletions = hub.log.deletions
        try:
            payload, arrival = open_raw_letter(record.body)
            candidates = await source_type.redrive(hub, source, payload)
            checked = hub.check(candidates, arrival, source=source)
        except RateLimitedError:
            return taken  # still marked for redrive: the next round takes it
        except Exception as error:  # the source type's failure (its function still raises): held again
            await hub.log.finish_redrive(destination, [], [letter_id], f"{type(error).__name__}: {error}")
            continue
        assert checked is not None  # not strict
        if checked.rejected:
            problems = "; ".join(f"call {r.index}: {r.code}: {r.message}" for r in checked.rejected)
            await hub.log.finish_redrive(destination, [], [letter_id], f"rejected on redrive: {problems}")
            continue
        if hub.log.deletions != deletions:
            return taken  # a deletion request ran meanwhile: take it again next time
        prepared = checked._prepared
        # The letter stood for one dead-lettered message; its messages are booked where they
        # went (stored, duplicates, filtered, dead-lettered again), in the commit that drops it.
        tally = Counter(prepared.tally)
        tally[(source.id, DEAD_LETTERED)] -= 1
        result = await hub.log.append(prepared.entries, letters=prepared.letters, tally=tally, redriven=[letter_id])
        hub.metrics.accepted.labels(source.id).inc(result.stored)
        log.info(
            "raw_dead_letter_redriven",
            source=source.id,
            letter=letter_id,
            stored=result.stored,
            duplicates=result.duplicates,
            filtered=prepared.filtered,
        )
        taken += 1
    return taken
