"""A plugin's components checked without a running gateway: the registry the daemon would build,
a config validated as ``gateway check-config`` does, and filters run as the core runs them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.components import Filter, FilterChain, FilterContext, FilterOutcome, apply_filters


def plugin_registry(*, plugins: Sequence[object] = (), entry_points: bool = True) -> Any:
    """The component types the installed plugins (and ``plugins``) provide, as the daemon finds
    them: ``.sources``, ``.destinations``, ``.filters``, ``.matchers`` by name, and
    ``.provided_by[(kind, name)]``, the plugin (entry point) that provides each."""
    from gateway.plugins import build_registry, make_plugin_manager

    pm = make_plugin_manager(load_entry_points=entry_points)
    for plugin in plugins:
        pm.register(plugin)
    return build_registry(pm)


def check_config(config: str, *, plugins: Sequence[object] = (), entry_points: bool = True) -> Any:
    """Validate a TOML config as ``gateway check-config`` does, with the installed plugins (and
    ``plugins``); returns it (``.sources``, ``.destinations``, ``.filters``: each entry's
    ``.core`` keys and its plugin ``.options``).

    Raises:
        gateway.ConfigError: naming the TOML path of what is wrong.
    """
    from gateway.config import parse_config
    from gateway.runtime.gateway import build_filters

    registry = plugin_registry(plugins=plugins, entry_points=entry_points)
    parsed = parse_config(config, registry)
    build_filters(parsed, registry)  # as the command: what only building finds (a function that does not import)
    return parsed


def run_filters(
    filters: Sequence[tuple[str, Filter]], message: dict[str, Any], context: FilterContext | None = None
) -> FilterOutcome:
    """Run ``(filter id, filter)`` pairs on ``message`` exactly as the core does at a source
    (``context`` None) or a destination: ``.message`` (None when dropped or failed),
    ``.reason``, ``.failure`` (the error a dead letter would carry) and ``.forward``."""
    return apply_filters(FilterChain(filters), message, context or FilterContext("test"))
