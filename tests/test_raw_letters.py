"""Raw dead letters (``Ingest.keep_raw`` and ``SourceType.redrive``), in process on a real log:
input a source type could not turn into messages is kept whole with its arrival, booked as one
dead-lettered message, and on redrive becomes the messages its source type now makes of it, in
one commit that takes the letter out of the dead letters and out of ``dead_lettered``; a
redrive that still fails (or gives back a call the core rejects) stores nothing and holds it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from quart import Blueprint

from gateway import Arrival, Candidate, ComponentConfig, Ingest, Source, SourceType, hookimpl
from gateway.config import parse_config
from gateway.ingest.hub import IngestHub
from gateway.ingest.raw import open_raw_letter, raw_letter_body
from gateway.ingest.redrive import redrive_source_letters
from gateway.log import open_log
from gateway.ops.audit import audit
from gateway.testing import plugin_registry


class Parser:
    """The source type's "function": turns a payload (JSON list of events) into calls, or fails."""

    def __init__(self) -> None:
        self.broken = True

    def calls(self, payload: bytes) -> list[Candidate]:
        if self.broken:
            raise RuntimeError("cannot parse this yet")
        return [Candidate(event, "track") for event in msgspec.json.decode(payload)]


PARSER = Parser()


async def redrive(ingest: Ingest, source: Source, payload: bytes) -> Sequence[Candidate]:
    return PARSER.calls(payload)


class HooksConfig(ComponentConfig):
    """No options."""


class HooksPlugin:
    @hookimpl
    def gateway_source_types(self) -> list[SourceType]:
        return [
            SourceType(
                name="hooks",
                config_type=HooksConfig,
                blueprint=lambda ingest: Blueprint("hooks", __name__),
                redrive=redrive,
            )
        ]


@pytest.fixture
def registry() -> Any:
    return plugin_registry(plugins=[HooksPlugin()], entry_points=False)


def config_for(tmp_path: Path, registry: Any) -> Any:
    return parse_config(
        f'[server]\ndata_dir = "{tmp_path}"\n[sources.hooks]\ntype = "hooks"\nwrite_key = "hooks-key"\n', registry
    )


def track(message_id: str, **fields: Any) -> dict[str, Any]:
    return {"userId": "u", "event": "Paid", "messageId": message_id, **fields}


def test_a_raw_letter_keeps_its_payload_and_arrival() -> None:
    arrival = Arrival.now("192.0.2.7")
    for payload in (b'{"a": "\xc3\xa9"}', b"\xff\xfe binary"):
        assert open_raw_letter(raw_letter_body(payload, arrival)) == (payload, arrival)


async def test_a_raw_letter_is_redriven_into_messages_and_the_books_follow(tmp_path: Path, registry: Any) -> None:
    config = config_for(tmp_path, registry)
    PARSER.broken = True
    async with open_log(config.log, config.data_dir) as log:
        hub = IngestHub(log, config, {})
        source = hub.source("hooks", "hooks")
        assert source is not None
        arrival = Arrival.now("192.0.2.7")
        payload = msgspec.json.encode([track("m1"), track("m2", properties={"n": 1})])
        await hub.keep_raw(source, payload, arrival, "RuntimeError: cannot parse this yet")

        [letter] = await log.dead_letters()
        assert (letter.destination, letter.stage, letter.source) == ("source:hooks", "raw", "hooks")
        assert open_raw_letter(letter.body) == (payload, arrival)
        [books] = audit(await log.books()).sources
        assert (books.received, books.dead_lettered, books.stored) == (1, 1, 0)

        # Still broken: the letter is held again with the new error, nothing is stored.
        assert await log.change_dead_letters("redrive", destination="source:hooks") == 1
        assert await redrive_source_letters(hub, registry.sources) == 0
        [held] = await log.dead_letters()
        assert (held.id, held.state, held.attempts) == (letter.id, "dead", 2)
        assert held.error == "RuntimeError: cannot parse this yet"
        assert log.head() == 0

        PARSER.broken = False
        assert await log.change_dead_letters("redrive", destination="source:hooks") == 1
        assert await redrive_source_letters(hub, registry.sources) == 1
        assert (await log.dead_letters()) == []
        records = await log.read(0, max_records=10, max_bytes=10**6)
        messages = [record.message() for record in records]
        assert [m["messageId"] for m in messages] == ["m1", "m2"]
        # Checked and completed by the core with the letter's own arrival.
        assert {(m["receivedAt"], m["context"]["ip"], m["type"]) for m in messages} == {
            (arrival.text, "192.0.2.7", "track")
        }
        [books] = audit(await log.books()).sources  # the letter stood for one message; now its two are stored
        assert (books.received, books.dead_lettered, books.stored, books.duplicates) == (2, 0, 2, 0)

        # The same delivery kept twice (the sender retried while it failed) is stored once.
        await hub.keep_raw(source, payload, arrival, "kept again")
        assert await log.change_dead_letters("redrive", destination="source:hooks") == 1
        assert await redrive_source_letters(hub, registry.sources) == 1
        [books] = audit(await log.books()).sources
        assert (books.received, books.dead_lettered, books.stored, books.duplicates) == (4, 0, 2, 2)


async def test_a_redrive_with_a_rejected_call_stores_nothing(tmp_path: Path, registry: Any) -> None:
    config = config_for(tmp_path, registry)
    PARSER.broken = False
    async with open_log(config.log, config.data_dir) as log:
        hub = IngestHub(log, config, {})
        source = hub.source("hooks", "hooks")
        assert source is not None
        payload = msgspec.json.encode([track("ok"), {"userId": "u", "messageId": "no-event"}])
        await hub.keep_raw(source, payload, Arrival.now(None), "first failure")
        assert await log.change_dead_letters("redrive", destination="source:hooks") == 1
        assert await redrive_source_letters(hub, registry.sources) == 0
        [held] = await log.dead_letters()
        assert held.error.startswith("rejected on redrive: call 1: event_not_defined"), held.error
        assert log.head() == 0
        [books] = audit(await log.books()).sources
        assert (books.received, books.dead_lettered) == (1, 1)


async def test_a_source_type_without_redrive_holds_its_raw_letters(tmp_path: Path, registry: Any) -> None:
    config = config_for(tmp_path, registry)
    async with open_log(config.log, config.data_dir) as log:
        hub = IngestHub(log, config, {})
        source = hub.source("hooks", "hooks")
        assert source is not None
        await hub.keep_raw(source, b"{}", Arrival.now(None), "failed")
        assert await log.change_dead_letters("redrive", destination="source:hooks") == 1
        assert await redrive_source_letters(hub, {}) == 0
        [held] = await log.dead_letters()
        assert held.error == "source type 'hooks' cannot redrive raw letters"
