"""Schema event filters (segment-api.md §7.2): block named track events or all page/screen calls,
and omit named identify and group traits, before anything is stored."""

from __future__ import annotations

from typing import Any

from gateway import ComponentConfig, Filter, FilterType, hookimpl


class SchemaConfig(ComponentConfig):
    """``[filters.<id>]`` keys of a schema filter."""

    block_track_events: list[str] = []
    block_pages: bool = False
    block_screens: bool = False
    omit_identify_traits: list[str] = []
    omit_group_traits: list[str] = []


class SchemaFilter(Filter):
    #: Segment's discard code for events a source's schema settings block.
    drop_reason = "event_setting"

    def __init__(self, config: SchemaConfig) -> None:
        self._blocked_events = frozenset(config.block_track_events)
        self._blocked_types = frozenset(
            name for name, on in (("page", config.block_pages), ("screen", config.block_screens)) if on
        )
        self._omit = {"identify": tuple(config.omit_identify_traits), "group": tuple(config.omit_group_traits)}

    def plan_status(self, call: str, event: str | None) -> str | None:
        if call in self._blocked_types or (call == "track" and event in self._blocked_events):
            return "blocked"
        return None

    def process(self, message: dict[str, Any]) -> dict[str, Any] | None:
        call_type = message.get("type")
        if call_type in self._blocked_types:
            return None
        if call_type == "track" and message.get("event") in self._blocked_events:
            return None
        omit = self._omit.get(str(call_type))
        traits = message.get("traits")
        if omit and isinstance(traits, dict):
            for name in omit:
                traits.pop(name, None)
        return message


@hookimpl
def gateway_filter_types() -> list[FilterType]:
    return [
        FilterType(
            name="schema",
            config_type=SchemaConfig,
            factory=SchemaFilter,
            description="block named track events, page or screen calls; omit identify/group traits",
        )
    ]
