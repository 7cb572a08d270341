"""A FilterChain tries each filter's fast pass before the filter: a pass skips it, a "not sure"
or a fast pass that raises runs it (under its own error policy), and a fast_pass() that raises
when the chain is built only costs that filter its fast pass."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import Filter, FilterContext, InlinePass
from gateway.components import FilterChain, apply_filters

CONTEXT = FilterContext("web")


class Tagging(Filter):
    """Adds its tag to ``message["seen"]`` (so a test sees which filters ran), with the fast pass
    it is given."""

    def __init__(self, tag: str, fast: Callable[[dict[str, Any]], bool] | None = None, *, broken: bool = False) -> None:
        self.tag = tag
        self.fast = fast
        self.broken = broken

    def process(self, message: dict[str, Any]) -> dict[str, Any] | None:
        if message.get("drop") == self.tag:
            return None
        message["seen"] = [*message.get("seen", []), self.tag]
        return message

    def fast_pass(self) -> Callable[[dict[str, Any]], bool] | None:
        if self.broken:
            raise RuntimeError("broken fast_pass")
        return self.fast


def event(**fields: Any) -> dict[str, Any]:
    return {"type": "track", "messageId": "m1", **fields}


def always(message: dict[str, Any]) -> bool:
    return True


def never(message: dict[str, Any]) -> bool:
    return False


def raises(message: dict[str, Any]) -> bool:
    raise ValueError("cannot tell")


def test_a_fast_pass_skips_its_filter_and_not_sure_runs_it() -> None:
    chain = FilterChain([("a", Tagging("a", always)), ("b", Tagging("b", never)), ("c", Tagging("c"))])
    outcome = apply_filters(chain, event(), CONTEXT)
    assert outcome.message == event(seen=["b", "c"])
    # The same filters as a plain sequence: no fast pass is asked.
    assert apply_filters(list(chain), event(), CONTEXT).message == event(seen=["a", "b", "c"])


def test_a_fast_pass_that_raises_leaves_the_decision_to_the_filter() -> None:
    chain = FilterChain([("a", Tagging("a", raises)), ("b", Tagging("b", always))])
    assert apply_filters(chain, event(), CONTEXT).message == event(seen=["a"])
    dropped = apply_filters(chain, event(drop="a"), CONTEXT)
    assert (dropped.message, dropped.reason) == (None, "a")


def test_a_broken_fast_pass_method_only_costs_the_filter_its_fast_pass() -> None:
    chain = FilterChain([("a", Tagging("a", always, broken=True))])
    assert [step[2] for step in chain.steps] == [None]
    assert apply_filters(chain, event(), CONTEXT).message == event(seen=["a"])


def test_a_chain_is_still_the_tuple_of_its_filters() -> None:
    filters = [("a", Tagging("a")), ("b", Tagging("b"))]
    chain = FilterChain(filters)
    assert chain == tuple(filters)
    assert [filter_id for filter_id, _ in chain] == ["a", "b"]


class Flagged(Filter):
    """Tags a message that carries its flag, drops one whose ``drop`` names it, and passes the
    others unchanged; its fast pass (honest, or never sure, or raising, or none) says so."""

    def __init__(self, tag: str, fast: str) -> None:
        self.tag = tag
        self.fast = fast

    def process(self, message: dict[str, Any]) -> dict[str, Any] | None:
        if message.get("drop") == self.tag:
            return None
        if self.tag in message.get("flags", ()):
            message["seen"] = [*message.get("seen", []), self.tag]
        return message

    def fast_pass(self) -> Callable[[dict[str, Any]], bool] | None:
        if self.fast in ("honest", "in place", "in place raises"):
            return lambda m: m.get("drop") != self.tag and self.tag not in m.get("flags", ())
        return {"never": never, "raises": raises, "none": None}[self.fast]

    def in_place(self) -> Callable[[dict[str, Any]], bool] | None:
        """Tags a flagged message in place; not sure of one it drops (nothing done)."""
        if self.fast == "in place raises":
            return raises
        if self.fast != "in place":
            return None

        def tag_in_place(message: dict[str, Any]) -> bool:
            if message.get("drop") == self.tag:
                return False
            self.process(message)
            return True

        return tag_in_place


@settings(max_examples=200, deadline=None)
@given(
    fast=st.lists(st.sampled_from(["honest", "never", "raises", "none", "in place", "in place raises"]), max_size=6),
    flags=st.lists(st.sampled_from("abcdef"), max_size=3),
    drop=st.sampled_from([None, *"abcdef"]),
)
def test_a_chain_gives_what_its_filters_give_one_by_one(fast: list[str], flags: list[str], drop: str | None) -> None:
    filters = [(tag, Flagged(tag, kind)) for tag, kind in zip("abcdef", fast, strict=False)]
    message = event(flags=flags, drop=drop)
    chained = apply_filters(FilterChain(filters), copy.deepcopy(message), CONTEXT)
    assert chained == apply_filters(filters, copy.deepcopy(message), CONTEXT)


class Flagging(Filter):
    """Adds a flag to every message (and has no fast pass): the filters after it must see it."""

    def __init__(self, flag: str) -> None:
        self.flag = flag

    def process(self, message: dict[str, Any]) -> dict[str, Any] | None:
        return {**message, "flags": [*message.get("flags", ()), self.flag]}


def test_after_a_filter_runs_the_fast_passes_after_it_see_the_message_it_returned() -> None:
    """Once a filter ran, the chain asks the fast passes after it in one call
    (``unsure_from[k]``), on the message that filter returned."""
    chain = FilterChain([("x", Flagging("b")), ("a", Flagged("a", "honest")), ("b", Flagged("b", "honest"))])
    assert [chain.unsure_from[k](event()) for k in range(4)] == [0, 3, 3, 3]
    assert [chain.unsure_from[k](event(flags=["b"])) for k in range(4)] == [0, 2, 2, 3]
    outcome = apply_filters(chain, event(), CONTEXT)
    assert outcome.message == event(flags=["b"], seen=["b"])


class Inline(Filter):
    """Drops nothing, with the inline fast pass it is given."""

    def __init__(self, fast: InlinePass) -> None:
        self.fast = fast

    def process(self, message: dict[str, Any]) -> dict[str, Any] | None:
        return message

    def fast_pass(self) -> InlinePass:
        return self.fast


def test_inline_fast_passes_are_written_in_unless_their_names_clash() -> None:
    """Each expression is written into the chain's code; when two bind one name to different
    values, or one binds (:=) a name another reads, each is called instead: the same answers."""
    a_is_not_one = InlinePass("event.get('a') != _x", {"_x": 1})
    b_is_not_two = InlinePass("event.get('b') != _x", {"_x": 2})
    binds_y = InlinePass("(_y := event.get('c')) is None", {})
    reads_y = InlinePass("event.get('d') != _y", {"_y": 4})
    for fast in ([a_is_not_one, InlinePass("event.get('b') != _z", {"_z": 2})], [a_is_not_one, b_is_not_two]):
        chain = FilterChain([(str(n), Inline(p)) for n, p in enumerate(fast)])
        assert [chain.first_unsure(m) for m in ({}, {"a": 1}, {"b": 2}, {"a": 1, "b": 2})] == [2, 0, 1, 0]
    chain = FilterChain([("c", Inline(binds_y)), ("d", Inline(reads_y))])
    assert [chain.first_unsure(m) for m in ({}, {"c": 3}, {"d": 4})] == [2, 0, 1]
    assert a_is_not_one({"a": 2}) is True and a_is_not_one({"a": 1}) is False


def test_a_filter_applied_in_place_runs_once_and_the_chain_goes_on() -> None:
    """A filter's in-place apply is called when its fast pass is not sure; its changes are
    what the fast passes after it see, and apply is not called as well."""
    chain = FilterChain([("a", Flagged("a", "in place")), ("b", Flagged("b", "honest"))])
    message = event(flags=["a"])
    assert chain.first_unsure(message) == 2 and message["seen"] == ["a"]
    outcome = apply_filters(chain, event(flags=["a", "b"]), CONTEXT)
    assert outcome.message == event(flags=["a", "b"], seen=["a", "b"])
    assert chain.first_unsure(event(drop="a")) == 0  # not sure: apply decides (and drops it)
    assert apply_filters(chain, event(drop="a"), CONTEXT).message is None
