"""Shape plans: a message classified by its shape plans gives what the field-by-field walk gives,
and the inventory booked per message shape holds what it held when booked field by field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ingest.inventory import FieldInventory
from gateway.plugins import Registry
from gateway.privacy import shape_plans
from gateway.privacy.classifier import (
    LEARN_AFTER,
    Classifier,
    FieldClass,
    Finding,
    PrivacyConfig,
    PrivacyPolicy,
    apply_policy,
    block_red,
)
from tests.conftest import open_app
from tests.test_http import post, stored

KEYS = ["email", "password", "note", "plan", "card", "library", "name", "ip", "address", "sku", "userAgent", "items"]
VALUES = [
    "4111 1111 1111 1111",
    "jane@example.com",
    "+33 6 12 34 56 78",
    "203.0.113.42",
    "premium",
    "call me after 5",
    "123-45-6789",
    42,
    1.5,
    True,
    None,
]
scalars = st.sampled_from(VALUES)
trees = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(KEYS), children, max_size=4),
    max_leaves=12,
)
messages = st.fixed_dictionaries(
    {},
    optional={
        root: st.dictionaries(st.sampled_from(KEYS), trees, max_size=5) for root in ("context", "traits", "properties")
    },
)


def settled(registry: Registry, batch: list[dict[str, Any]]) -> Classifier:
    """A classifier that has seen ``batch`` often enough for every path in it to settle."""
    classifier = Classifier(list(registry.matchers.values()), PrivacyConfig(classes={"traits.plan": "red"}))
    for _ in range(LEARN_AFTER + 1):
        for message in batch:
            classifier.walk(message)
    return classifier


@settings(max_examples=60, deadline=None)
@given(batch=st.lists(messages, min_size=1, max_size=4))
def test_a_planned_message_is_classified_as_field_by_field(registry: Registry, batch: list[dict[str, Any]]) -> None:
    classifier = settled(registry, batch)
    planned_any = False
    for message in batch:
        slow = classifier._findings(message, False, greens=True)
        for red_only in (False, True):
            planned = classifier._plans.findings(message, survey=True, red_only=red_only)
            assert planned is not None  # every path settled: no value to check on this message
            planned_any = True
            found, shape = planned
            floor = ("red",) if red_only else ("red", "yellow")
            assert found == [f for f in slow if f.cls in floor]
            assert shape is not None and set(shape.fields) == {FieldClass(f.path, f.cls, f.hits) for f in slow}
            scanned = classifier._plans.findings(message, survey=False, red_only=red_only)
            assert scanned is not None and scanned[0] == [
                f for f in classifier._findings(message, False, greens=False) if f.cls in floor
            ]
    assert planned_any
    for message in batch:  # a sampled message takes its plan only when its values change nothing
        sampled = classifier._sampled_plan(message, survey=True, red_only=False)
        if sampled is not None:
            assert sampled[0] == classifier._findings(message, True, greens=False)
    for message in batch:  # the same shapes with their keys in another order
        reordered = _reversed(message)
        planned = classifier._plans.findings(reordered, survey=True, red_only=False)
        assert planned is not None
        assert _loose(planned[0]) == _loose(classifier._findings(reordered, False, greens=False))


def _reversed(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _reversed(node[key]) for key in reversed(node)}
    return [_reversed(item) for item in node] if isinstance(node, list) else node


def _loose(findings: list[Finding]) -> list[tuple[str, str, str, tuple[str, ...], str]]:
    """Findings in any order, each still pointing at its value in its container."""
    assert all(f.container[f.key] is f.value for f in findings)  # type: ignore[index]
    return sorted((f.path, str(f.key), f.cls, f.hits, repr(f.value)) for f in findings)


def test_scan_and_survey_agree_with_walk_on_sampled_and_planned_messages(registry: Registry) -> None:
    message = {
        "traits": {"email": "a@b.co", "password": "x", "plan": "pro", "tags": ["a", {"card": "4111 1111 1111 1111"}]},
        "properties": {"note": "4111 1111 1111 1111", "total": 3},
        "context": {"library": {"name": "analytics.js"}, "ip": "10.0.0.1"},
    }
    classifier = settled(registry, [message])
    walked = classifier.walk(message)
    for _ in range(250):  # planned messages and sampled ones alike
        found, shape = classifier.survey(message)
        assert found == [f for f in walked if f.cls != "green"] == classifier.scan(message)
        assert set(shape.fields) == {FieldClass(f.path, f.cls, f.hits) for f in walked}
    assert classifier.scan(message, "red") == [f for f in walked if f.cls == "red"]


def test_a_value_that_changes_a_settled_path_reaches_the_plans(registry: Registry) -> None:
    classifier = settled(registry, [{"properties": {"note": "call me"}}])
    assert classifier.scan({"properties": {"note": "call me"}}) == []
    # Settled paths are checked in one message in SAMPLE_EVERY: a card number is found then...
    hits = [bool(classifier.scan({"properties": {"note": "4111 1111 1111 1111"}})) for _ in range(100)]
    first = hits.index(True)
    # ...and the path is red from then on (sticky): the plans made before are gone.
    assert hits == [False] * first + [True] * (100 - first)
    assert [f.cls for f in classifier.scan({"properties": {"note": "call me"}})] == ["red"]


def test_a_value_in_an_array_that_changes_a_settled_path_reaches_the_plans(registry: Registry) -> None:
    classifier = settled(registry, [{"properties": {"tags": ["vip", "new"]}}])
    assert classifier.scan({"properties": {"tags": ["vip", "new"]}}) == []
    # An array's scalar items are its value: a sampled message checks them, though a plan of
    # the message's shape (a list of scalars under properties.tags) would take it otherwise.
    carded = {"properties": {"tags": ["vip", "4111 1111 1111 1111"]}}
    hits = [bool(classifier.scan(carded)) for _ in range(100)]
    first = hits.index(True)
    assert hits == [False] * first + [True] * (100 - first)
    assert [f.cls for f in classifier.scan({"properties": {"tags": ["vip"]}})] == ["red"]


def test_a_yellow_field_that_turns_into_an_object_is_looked_inside(registry: Registry) -> None:
    # The message plan of a settled Yellow leaf took any value there: an object holding a password
    # later was reported as the Yellow field alone, so a red-only scan (block_red) stored it.
    classifier = settled(registry, [{"traits": {"email": "a@b.co", "tier": "gold"}}])
    for _ in range(5):
        classifier.scan({"traits": {"email": "a@b.co", "tier": "gold"}}, "red")
    nested = {"traits": {"email": {"password": "hunter2"}, "tier": "gold"}}
    for _ in range(5):
        assert [(f.path, f.cls) for f in classifier.scan(nested, "red")] == [("traits.email.password", "red")]


def test_the_inventory_books_a_known_shape_once_and_keeps_last_seen(registry: Registry) -> None:
    classifier = settled(registry, [{"traits": {"email": "a@b.co", "plan": "pro"}}])
    inventory = FieldInventory()
    for now_ms in (1_000, 2_000, 3_000):
        message = {"traits": {"email": "a@b.co", "plan": "pro"}}
        inventory.see("web", classifier.survey(copy.deepcopy(message))[1], now_ms)
    rows = {row.path: row for row in inventory.changes()}
    assert set(rows) == {"traits.email", "traits.plan"}
    assert rows["traits.email"].cls == "yellow" and rows["traits.email"].hits == ("email",)
    assert all(row.first_seen == 1_000 and row.last_seen == 3_000 for row in rows.values())
    inventory.saved(list(rows.values()))
    assert inventory.changes() == []
    inventory.see("web", classifier.survey({"traits": {"email": "a@b.co", "plan": "pro"}})[1], 4_000)
    assert {row.path: row.last_seen for row in inventory.changes()} == {"traits.email": 4_000, "traits.plan": 4_000}


def test_keys_msgspec_cannot_name_and_wide_messages_are_walked_not_planned(registry: Registry) -> None:
    classifier = Classifier(list(registry.matchers.values()), PrivacyConfig())
    odd = {"properties": {"C:\\dir": "v", 'say "hi"': 1, "tab\there": 2, "password": "hunter2"}, "type": "track"}
    for _ in range(LEARN_AFTER + 50):  # past learning: plans are compiled, or refused, from here on
        found, _ = classifier.survey(copy.deepcopy(odd), "red")
        assert [f.path for f in found] == ["properties.password"]
    wide = {"type": "track", "context": {"library": {f"k{i}": i for i in range(3000)}}, "properties": {"password": "x"}}
    for n in range(20):
        message = copy.deepcopy(wide)
        message["context"]["library"] = {f"k{n}-{i}": i for i in range(3000)}  # a new wide shape each time
        found, _ = classifier.survey(message, "red")
        assert [f.path for f in found] == ["properties.password"]
    plans = classifier._plans
    assert plans._planned_fields <= 100_000 and plans._shaped_fields <= 100_000 + 3_002


def test_a_planned_message_finds_red_fields_inside_yellow_objects(registry: Registry) -> None:
    message = {"type": "identify", "traits": {"address": {"city": "Paris", "password": "hunter2"}}}
    classifier = settled(registry, [message])
    for _ in range(3):  # by the dict plans, then by the message plan
        planned = classifier._plans.findings(copy.deepcopy(message), survey=False, red_only=True)
        assert planned is not None
        assert [(f.path, f.cls) for f in planned[0]] == [("traits.address.password", "red")]


@settings(max_examples=200, deadline=None)
@given(batch=st.lists(messages, min_size=1, max_size=4), order=st.lists(st.integers(0, 3), min_size=1, max_size=24))
def test_with_every_value_checked_plans_give_what_the_walk_gives(
    registry: Registry, batch: list[dict[str, Any]], order: list[int]
) -> None:
    """``value_checks = "every"`` takes shape plans too, each message's values checked at its
    plan's sites: on any stream of messages (the same shapes again, values that change a
    path's class and change it back) scan and survey give what the walk gives."""
    matchers = list(registry.matchers.values())
    every = Classifier(matchers, PrivacyConfig(value_checks="every", classes={"traits.plan": "red"}))
    reference = Classifier(matchers, PrivacyConfig(value_checks="every", classes={"traits.plan": "red"}))
    for index in order:
        message = batch[index % len(batch)]
        walked = reference._findings(message, True, greens=True)
        scanned = reference._findings(message, True, greens=False)
        for at_least, floor in (("yellow", ("red", "yellow")), ("red", ("red",))):
            assert every.scan(copy.deepcopy(message), at_least) == [f for f in scanned if f.cls in floor]
            found, shape = every.survey(message, at_least)
            assert found == [f for f in walked if f.cls in floor]
            assert set(shape.fields) == {FieldClass(f.path, f.cls, f.hits) for f in walked}


#: Values equal across types (``1 == 1.0 == True``; a card number as an int and as a float):
#: what a site remembers as holding must not let one pass for another.
EQUAL_ACROSS_TYPES = [1, 1.0, True, "1", 4111111111111111, 4111111111111111.0, "4111 1111 1111 1111", None, 0, False]


@settings(max_examples=60, deadline=None)
@given(stream=st.lists(st.tuples(*[st.sampled_from(EQUAL_ACROSS_TYPES)] * 3), min_size=1, max_size=30))
def test_with_every_value_checked_sites_tell_equal_values_of_other_types_apart(
    registry: Registry, stream: list[tuple[Any, Any, Any]]
) -> None:
    """One message shape whose values change type and value, at sites in a dict, in an array of
    objects and in an array of scalars: each message's plan gives what the walk gives."""
    matchers = list(registry.matchers.values())
    every = Classifier(matchers, PrivacyConfig(value_checks="every"))
    reference = Classifier(matchers, PrivacyConfig(value_checks="every"))
    for note, sku, tag in stream:
        message = {"properties": {"note": note, "items": [{"sku": sku}, {"sku": note}], "tags": [tag]}}
        walked = reference._findings(message, True, greens=True)
        found, shape = every.survey(message, "yellow")
        assert found == [f for f in walked if f.cls in ("red", "yellow")]
        assert set(shape.fields) == {FieldClass(f.path, f.cls, f.hits) for f in walked}


def test_with_every_value_checked_a_value_changes_its_field_for_that_message_only(registry: Registry) -> None:
    every = Classifier(list(registry.matchers.values()), PrivacyConfig(value_checks="every"))
    clean, carded = {"properties": {"note": "call me"}}, {"properties": {"note": "4111 1111 1111 1111"}}
    for _ in range(3):  # planned after the first of each
        assert every.scan(clean) == []
        assert [f.cls for f in every.scan(carded)] == ["red"]
    for _ in range(3):
        assert every.scan(clean) == []
    assert every._plans._recent  # and the stream of one shape is planned again


@settings(max_examples=100, deadline=None)
@given(message=messages, survey_first=st.booleans())
def test_block_red_does_what_the_block_red_policy_does(
    registry: Registry, message: dict[str, Any], survey_first: bool
) -> None:
    """The ingest's ``block_red`` shortcut and :func:`apply_policy` with ``red = "block"`` leave
    the same message, from a scan or from a survey's findings alike."""
    # One classifier each: a classifier learns from what it sees, so both must see the same.
    classifier, reference = (
        Classifier(list(registry.matchers.values()), PrivacyConfig(classes={"traits.plan": "red"})) for _ in range(2)
    )
    by_policy, by_shortcut = copy.deepcopy(message), copy.deepcopy(message)
    policy = PrivacyPolicy(red="block")
    findings = classifier.survey(by_shortcut, "red")[0] if survey_first else None
    reference_findings = reference.survey(by_policy, "red")[0] if survey_first else None
    changed = block_red(by_shortcut, classifier, findings)
    assert apply_policy(by_policy, reference, policy, reference_findings) is changed
    assert by_shortcut == by_policy


def test_with_every_value_checked_a_site_remembers_at_most_its_bound(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A site full of values lets one go for each new one (not all of them), never holding more
    than MAX_SITE_VALUES; what it gives stays what the walk gives."""
    monkeypatch.setattr(shape_plans, "MAX_SITE_VALUES", 4)
    matchers = list(registry.matchers.values())
    every = Classifier(matchers, PrivacyConfig(value_checks="every"))
    reference = Classifier(matchers, PrivacyConfig(value_checks="every"))
    for n in [*range(12), *range(12)]:
        message = {"properties": {"note": f"order {n}", "count": n, "email": f"{n}@example.com"}}
        found, _ = every.survey(message, "yellow")
        assert found == [f for f in reference._findings(message, True, greens=True) if f.cls != "green"]
    checks = [plan._sites_hold for plans in every._plans._recent.values() for plan in plans if plan._sites_hold]
    memos = [value for check in checks for name, value in check.__globals__.items() if name.startswith(("_s", "_i"))]
    assert memos and all(len(memo) <= 4 for memo in memos)
    assert any(len(memo) == 4 for memo in memos)


def _nested(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = [{"a": leaf}]
    return leaf


def test_every_value_checked_a_message_nested_past_what_python_compiles_is_classified(registry: Registry) -> None:
    # A plan's site check is code with a loop per array on the way to a site, and Python
    # compiles at most 20 nested loops: deeper, the message is classified field by field
    # (the SyntaxError used to escape scan(), failing its whole batch). Found by review.
    matchers = list(registry.matchers.values())
    every = Classifier(matchers, PrivacyConfig(value_checks="every"))
    reference = Classifier(matchers, PrivacyConfig(value_checks="every"))
    message = {"type": "track", "event": "E", "properties": {"a": _nested(21, "jane@example.com")}}
    walked = reference._findings(message, True, greens=False)
    for _ in range(3):  # planned from the second message on
        assert every.scan(copy.deepcopy(message)) == [f for f in walked if f.cls in ("red", "yellow")]


async def test_a_batch_with_a_message_nested_past_what_python_compiles_is_stored(
    tmp_path: Path, registry: Registry
) -> None:
    extra = 'block_red = true\n\n[privacy]\nvalue_checks = "every"\n'
    good = {"type": "track", "userId": "u1", "event": "Clicked", "messageId": "good"}
    deep = {
        "type": "track",
        "userId": "u1",
        "event": "Clicked",
        "messageId": "deep",
        "properties": {"a": _nested(21, "x")},
    }
    async with open_app(tmp_path, registry, extra) as app:
        for _ in range(3):
            status, body, _ = await post(app, "/v1/batch", {"batch": [good, deep]})
            assert (status, body) == (200, {"success": True})
        assert sorted(m["messageId"] for m in await stored(app)) == ["deep", "good"]
