"""Plugin discovery: one pluggy manager per process, filled from the ``gateway`` entry points."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, TypeVar

import pluggy

from gateway import hookspecs
from gateway.components import DestinationType, FilterType, MatcherType, SourceType
from gateway.errors import PluginError
from gateway.privacy.config import CustomMatcher

_T = TypeVar("_T", SourceType, DestinationType, FilterType, MatcherType)


def make_plugin_manager(*, load_entry_points: bool = True) -> pluggy.PluginManager:
    """Build a plugin manager with the gateway hookspecs and, unless told not to, every
    plugin installed under the ``gateway`` entry-point group."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if load_entry_points:
        try:
            pm.load_setuptools_entrypoints(hookspecs.PROJECT)
        except Exception as error:  # an import error in a third-party plugin
            raise PluginError(f"cannot load a plugin: {error!r}") from error
    pm.check_pending()
    return pm


def _no_custom_matchers(name: str, config: CustomMatcher) -> MatcherType | None:
    return None


@dataclass(frozen=True)
class Registry:
    """The component types every registered plugin provides, by name, and the builder of
    ``[privacy.matchers]`` entries (the ``gateway_custom_matcher`` hook)."""

    sources: dict[str, SourceType] = field(default_factory=dict)
    destinations: dict[str, DestinationType] = field(default_factory=dict)
    filters: dict[str, FilterType] = field(default_factory=dict)
    matchers: dict[str, MatcherType] = field(default_factory=dict)
    provided_by: dict[tuple[str, str], str] = field(default_factory=dict)
    build_custom_matcher: Callable[[str, CustomMatcher], MatcherType | None] = _no_custom_matchers


def _collect(
    kind: str,
    results: Iterable[tuple[str, Iterable[_T]]],
    into: dict[str, _T],
    provided_by: dict[tuple[str, str], str],
) -> None:
    for plugin_name, types in results:
        for component_type in types or ():
            name = component_type.name
            if name in into:
                other = provided_by[(kind, name)]
                raise PluginError(
                    f"{kind} type {name!r} is provided by both {other!r} and {plugin_name!r}; uninstall one of them"
                )
            into[name] = component_type
            provided_by[(kind, name)] = plugin_name


def _per_plugin(pm: pluggy.PluginManager, hook_name: str) -> list[tuple[str, Any]]:
    results = []
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)
        results.append((plugin_name, impl.function()))
    return results


def build_registry(pm: pluggy.PluginManager) -> Registry:
    """Ask every plugin for its component types and index them by name.

    Raises:
        PluginError: two plugins provide a type of the same kind under the same name.
    """
    registry = Registry(
        build_custom_matcher=lambda name, config: pm.hook.gateway_custom_matcher(name=name, config=config)
    )
    _collect("source", _per_plugin(pm, "gateway_source_types"), registry.sources, registry.provided_by)
    _collect(
        "destination",
        _per_plugin(pm, "gateway_destination_types"),
        registry.destinations,
        registry.provided_by,
    )
    _collect("filter", _per_plugin(pm, "gateway_filter_types"), registry.filters, registry.provided_by)
    _collect("matcher", _per_plugin(pm, "gateway_matcher_types"), registry.matchers, registry.provided_by)
    return registry


def plugin_distribution(pm: pluggy.PluginManager, plugin_name: str) -> str:
    """Name and version of the distribution a plugin came from, or ``-`` when it has none."""
    for plugin, dist in pm.list_plugin_distinfo():
        if pm.get_name(plugin) == plugin_name:
            return f"{dist.project_name} {dist.version}"
    try:
        return f"{plugin_name} {metadata.version(plugin_name)}"
    except metadata.PackageNotFoundError:
        return "-"
