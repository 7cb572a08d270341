"""What the core does with each kind of filter answer, in process on a real log: drops are
counted by reason, failures and malformed answers are dead-lettered (never a 5xx, never lost),
forwards land in their source, and redrives of dead letters honour suppressions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from msgspec import json

from gateway import Filter, FilterContext, Forward, Verdict
from gateway.components import apply_filters
from gateway.config import parse_config
from gateway.ingest.hub import IngestHub
from gateway.ingest.redrive import redrive_source_letters
from gateway.log import open_log
from gateway.ops.audit import audit
from gateway.plugins import Registry
from tests.gatewayproc import WRITE_KEY, config_text


class Answers(Filter):
    """Answers each message with what ``answer(message)`` returns."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def process(self, message: dict[str, Any]) -> Any:
        return self.answer(message)


def event(message_id: str = "m1", **fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": "e", "userId": "u", "messageId": message_id, **fields}


@pytest.mark.parametrize(
    ("answer", "failure"),
    [
        (lambda m: [m], "f: TypeError: returned list, not a message, None or a Verdict"),
        (lambda m: Verdict(message=5), "f: TypeError: its Verdict holds int, not a message"),  # type: ignore[arg-type]
        (lambda m: {"type": "track"}, "the filters returned a message without a string messageId"),
        (lambda m: Verdict(message=m, failure="nope"), "f: nope"),
        (lambda m: 1 / 0, "f: ZeroDivisionError: division by zero"),
    ],
)
def test_malformed_answers_and_errors_fail_the_message(answer: Any, failure: str) -> None:
    outcome = apply_filters([("f", Answers(answer))], event(), FilterContext("web"))
    assert (outcome.message, outcome.failure) == (None, failure)


def test_forwards_given_as_a_list_are_kept() -> None:
    forward = [Forward("other", event("x"))]
    outcome = apply_filters(
        [("f", Answers(lambda m: Verdict(message=m, forward=forward)))],  # type: ignore[arg-type]
        event(),
        FilterContext("web"),
    )
    assert outcome.message == event() and outcome.forward == tuple(forward)


def hub_config(tmp_path: Path, registry: Registry) -> Any:
    """Source ``web`` lists filter ``f`` (its type is a stand-in: the tests give the hub their
    own filter under that id); source ``other`` takes forwards."""
    text = config_text(tmp_path, archive=False).replace(
        f'write_key = "{WRITE_KEY}"', f'write_key = "{WRITE_KEY}"\nfilters = ["f"]'
    )
    return parse_config(text + '\n[sources.other]\nwrite_key = "other-key"\n[filters.f]\ntype = "bots"\n', registry)


async def store_one_of_each(hub: IngestHub, kinds: list[str]) -> Any:
    """Store one event of each kind (its messageId and ``properties.kind``) into source ``web``."""
    web = hub.authenticate(WRITE_KEY, "tracking_api")
    assert web is not None
    return await hub.store_messages([(web, event(kind, properties={"kind": kind})) for kind in kinds])


async def test_at_ingest_every_kind_of_answer_is_stored_counted_or_dead_lettered(
    tmp_path: Path, registry: Registry
) -> None:
    def answer(message: dict[str, Any]) -> Any:
        kind = message["properties"]["kind"]
        if kind == "unencodable":
            message["properties"]["x"] = object()
            return message
        if kind == "forward-junk":
            return Verdict(message=message, forward=(Forward("nope", {}), Forward("other", {"no": "id"})))
        if kind == "forward":
            return Verdict(reason="unplanned", forward=(Forward("other", event("fwd-" + message["messageId"])),))
        if kind == "raise":
            raise RuntimeError("boom")
        return message

    config = hub_config(tmp_path, registry)
    async with open_log(config.log, config.data_dir) as log:
        hub = IngestHub(log, config, {"f": Answers(answer)})
        outcome = await store_one_of_each(hub, ["ok", "unencodable", "forward-junk", "forward", "raise"])
        web = hub.authenticate(WRITE_KEY, "tracking_api")
        assert (outcome.stored, outcome.filtered) == (3, 3)  # ok, forward-junk, fwd-forward
        letters = {x.body: x for x in await log.dead_letters()}
        assert len(letters) == 2
        assert {x.destination for x in letters.values()} == {"source:web"}
        errors = sorted(x.error for x in letters.values())
        assert errors[0].startswith("f: RuntimeError: boom")
        assert errors[1].startswith("the filtered message cannot be stored as JSON")
        records = await log.read(0, max_records=10, max_bytes=10**6)
        stored = [(r.source, r.message()["messageId"]) for r in records]
        assert stored == [("web", "ok"), ("web", "forward-junk"), ("other", "fwd-forward")]
        other_books, web_books = audit(await log.books()).sources  # by source id
        assert (web_books.source, web_books.received, web_books.stored, web_books.dead_lettered) == ("web", 5, 2, 2)
        assert web_books.filtered == {"unplanned": 1}
        assert (other_books.source, other_books.received, other_books.stored) == ("other", 1, 1)
        duplicate = await hub.store_messages([(web, event("ok", properties={"kind": "ok"}))])
        assert duplicate.duplicates == 1 and audit(await log.books()).sources[1].duplicates == 1
        text = hub.metrics.render().decode()
        assert 'gateway_messages_filtered_total{reason="unplanned",stage="source",target="web"} 1.0' in text
        assert 'gateway_messages_filtered_total{reason="filter_error",stage="source",target="web"} 2.0' in text


async def test_forwards_from_different_sources_never_deduplicate_each_other(tmp_path: Path, registry: Registry) -> None:
    # Two sources block the same messageId into one quarantine source, which also receives it
    # directly: three different events, all kept. A retry of one of them is still a duplicate.
    def block(message: dict[str, Any]) -> Verdict:
        return Verdict(reason="unplanned", forward=(Forward("other", dict(message)),))

    text = config_text(tmp_path, archive=False).replace(
        f'write_key = "{WRITE_KEY}"', f'write_key = "{WRITE_KEY}"\nfilters = ["f"]'
    )
    config = parse_config(
        text + '\n[sources.app]\nwrite_key = "app-key"\nfilters = ["f"]\n'
        '[sources.other]\nwrite_key = "other-key"\n[filters.f]\ntype = "bots"\n',
        registry,
    )
    async with open_log(config.log, config.data_dir) as log:
        hub = IngestHub(log, config, {"f": Answers(block)})
        web, app = hub.authenticate(WRITE_KEY, "tracking_api"), hub.authenticate("app-key", "tracking_api")
        other = hub.authenticate("other-key", "tracking_api")
        assert web is not None and app is not None and other is not None
        for source in (web, app, other):
            assert (await hub.store_messages([(source, event("shared"))])).stored == 1
        assert (await hub.store_messages([(web, event("shared"))])).duplicates == 1
        records = await log.read(0, max_records=10, max_bytes=10**6)
        assert [(r.source, r.message()["messageId"]) for r in records] == [("other", "shared")] * 3


async def test_a_source_redrive_drops_the_letters_of_users_suppressed_since(tmp_path: Path, registry: Registry) -> None:
    config = hub_config(tmp_path, registry)
    broken = Answers(lambda m: 1 / 0)
    async with open_log(config.log, config.data_dir) as log:
        hub = IngestHub(log, config, {"f": broken})
        web = hub.authenticate(WRITE_KEY, "tracking_api")
        assert web is not None
        await hub.store_messages([(web, event("a", userId="keep")), (web, event("b", userId="gone"))])
        assert len(await log.dead_letters()) == 2
        await log.set_suppressed("gone", True)
        broken.answer = lambda m: m  # fixed
        assert await log.change_dead_letters("redrive", destination="source:web") == 2
        assert await redrive_source_letters(hub) == 2
        assert await log.dead_letters() == []
        records = await log.read(0, max_records=10, max_bytes=10**6)
        assert [r.message()["messageId"] for r in records] == ["a"]
        [books] = audit(await log.books()).sources  # the letters moved to where they went, in the same commit
        assert (books.received, books.stored, books.suppressed, books.dead_lettered) == (2, 1, 1, 0)


async def test_letters_refused_again_on_a_source_redrive_each_keep_their_own_reason(
    tmp_path: Path, registry: Registry
) -> None:
    def fail(message: dict[str, Any]) -> Verdict:
        return Verdict(message=message, failure=f"still broken for {message['messageId']}")

    config = hub_config(tmp_path, registry)
    async with open_log(config.log, config.data_dir) as log:
        broken = Answers(lambda m: 1 / 0)
        hub = IngestHub(log, config, {"f": broken})
        web = hub.authenticate(WRITE_KEY, "tracking_api")
        assert web is not None
        await hub.store_messages([(web, event("a")), (web, event("b"))])
        broken.answer = fail  # broken differently now, and differently for each message
        assert await log.change_dead_letters("redrive", destination="source:web") == 2
        assert await redrive_source_letters(hub) == 0
        letters = await log.dead_letters()
        assert {(json.decode(x.body)["messageId"], x.state, x.error) for x in letters} == {
            ("a", "dead", "f: still broken for a"),
            ("b", "dead", "f: still broken for b"),
        }


class InPlace(Answers):
    """``Answers``, applied in place by the chain (its fast pass is never sure)."""

    def fast_pass(self) -> Any:
        return lambda message: False

    def in_place(self) -> Any:
        return lambda message: self.answer(message) is message


async def test_a_filter_applied_in_place_is_stored_or_dead_lettered_as_when_applied(
    tmp_path: Path, registry: Registry
) -> None:
    """The hub stores what the chain passed in place without the chain's dispatch: the changed
    message, and the same dead letters as apply's for one it left without a messageId or with a
    value JSON cannot hold."""

    def answer(message: dict[str, Any]) -> Any:
        kind = message["properties"].pop("kind")
        if kind == "no-id":
            del message["messageId"]
        elif kind == "unencodable":
            message["properties"]["x"] = object()
        return message

    config = hub_config(tmp_path, registry)
    async with open_log(config.log, config.data_dir) as log:
        hub = IngestHub(log, config, {"f": InPlace(answer)})
        outcome = await store_one_of_each(hub, ["ok", "no-id", "unencodable"])
        assert (outcome.stored, outcome.filtered) == (1, 2)
        records = await log.read(0, max_records=10, max_bytes=10**6)
        assert [r.message() for r in records] == [event("ok", properties={})]
        errors = sorted(x.error for x in await log.dead_letters())
        assert errors[0].startswith("the filtered message cannot be stored as JSON")
        assert errors[1] == "the filters returned a message without a string messageId"
