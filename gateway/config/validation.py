"""What only the whole config shows: write keys that two sources share, filter ids no
``[filters]`` entry defines, and forwards to sources that do not exist (or from a destination's
filters)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.config.types import DestinationConfig, Entity, FilterConfig, SourceConfig
    from gateway.plugins import Registry


def check_references(
    path: str,
    sources: Mapping[str, Entity[SourceConfig]],
    destinations: Mapping[str, Entity[DestinationConfig]],
    filters: Mapping[str, Entity[FilterConfig]],
    registry: Registry,
) -> None:
    """Check what the entities of one config say about each other.

    Raises:
        ConfigError: at the first entry that names what is not there, or repeats a write key.
    """
    seen_keys: dict[str, str] = {}
    for sid, source in sources.items():
        other = seen_keys.setdefault(source.core.write_key, sid)
        if other != sid:
            raise ConfigError(path, f"sources.{sid}.write_key", f"same write key as sources.{other}")
    for kind, entities in (("sources", sources), ("destinations", destinations)):
        for eid, entity in entities.items():
            for index, filter_id in enumerate(entity.core.filters):
                if filter_id not in filters:
                    raise ConfigError(path, f"{kind}.{eid}.filters[{index}]", f"no filter {filter_id!r} in [filters]")
    # Filters that forward messages name configured sources, and run in sources only.
    for fid, filter_entity in filters.items():
        targets_of = registry.filters[filter_entity.core.type].forward_targets
        targets = targets_of(filter_entity.options) if targets_of is not None else {}
        for key, target in targets.items():
            if target not in sources:
                raise ConfigError(path, f"filters.{fid}.{key}", f"no source {target!r} in [sources]")
        if targets:
            for did, destination in destinations.items():
                if fid in destination.core.filters:
                    raise ConfigError(
                        path,
                        f"destinations.{did}.filters",
                        f"filter {fid!r} forwards messages to other sources, which only a source's filters can do",
                    )
