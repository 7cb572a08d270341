"""Source dead letters: messages a source's filter failed on (kept as ``source:<id>``), run
through the source's filters again once an operator marks them for redrive."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import msgspec
import structlog

from gateway.components import FilterContext
from gateway.ingest.hub import DEAD_LETTERED, SUPPRESSED
from gateway.log import Entry, source_letters

if TYPE_CHECKING:
    from gateway.ingest.hub import IngestHub

log = structlog.get_logger("gateway.ingest")


async def redrive_source_letters(hub: IngestHub) -> int:
    """Run the source dead letters an operator marked for redrive through their source's
    filters again; returns how many were taken (stored, filtered, or forwarded)."""
    taken = 0
    for source in list(hub.directory.by_id.values()):
        destination = source_letters(source.id)
        deletions = hub.log.deletions
        letters = await hub.log.take_redrive(destination, 100)
        if not letters:
            continue
        done: list[int] = []  # letter ids: stored, or dropped by the filters or a suppression
        refused: list[int] = []
        error = ""
        entries: list[Entry] = []
        # The books move each letter taken from dead_lettered to where it went now.
        tally: Counter[tuple[str, str]] = Counter()
        context = FilterContext(source.id)
        suppressed = hub.log.suppressed
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
                entry, reason, failure = hub.filter_message(source, message, context, entries)
                if failure is not None:
                    refused.append(letter_id)
                    error = failure
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
        if refused:
            await hub.log.finish_redrive(destination, [], refused, error)
        log.info(
            "source_dead_letters_redriven",
            source=source.id,
            taken=len(done),
            refused_again=len(refused),
        )
        taken += len(done)
    return taken
