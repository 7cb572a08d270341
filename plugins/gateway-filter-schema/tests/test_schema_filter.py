"""Schema event filters: what is blocked, what is trimmed, what passes untouched."""

from __future__ import annotations

from gateway_filter_schema import SchemaConfig, SchemaFilter


def make() -> SchemaFilter:
    return SchemaFilter(
        SchemaConfig(
            block_track_events=["Test Event"],
            block_screens=True,
            omit_identify_traits=["ssn"],
            omit_group_traits=["notes"],
        )
    )


def test_blocks_named_track_events_and_screen_calls() -> None:
    f = make()
    assert f.process({"type": "track", "event": "Test Event"}) is None
    assert f.process({"type": "track", "event": "test event"}) is not None  # exact names
    assert f.process({"type": "screen", "name": "Home"}) is None
    assert f.process({"type": "page", "name": "Home"}) == {"type": "page", "name": "Home"}


def test_omits_traits_by_call_type() -> None:
    f = make()
    assert f.process({"type": "identify", "traits": {"ssn": "x", "plan": "pro"}}) == {
        "type": "identify",
        "traits": {"plan": "pro"},
    }
    assert f.process({"type": "group", "traits": {"notes": "x", "ssn": "kept"}}) == {
        "type": "group",
        "traits": {"ssn": "kept"},
    }
    assert f.process({"type": "identify", "traits": "junk"}) == {"type": "identify", "traits": "junk"}
