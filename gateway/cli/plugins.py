"""``gateway plugins`` (the component types the installed plugins provide) and ``gateway
new-plugin`` (a plugin distribution to start from)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.errors import GatewayError
from gateway.plugins import build_registry, make_plugin_manager, plugin_distribution

if TYPE_CHECKING:
    import argparse

    from gateway.cli.arguments import Commands


def add_plugins_command(commands: Commands) -> None:
    plugins = commands.add_parser("plugins", help="list the plugins and component types found")
    plugins.set_defaults(handler=_plugins)


def add_new_plugin_command(commands: Commands) -> None:
    scaffold = commands.add_parser("new-plugin", help="write a plugin distribution to start from (tests included)")
    scaffold.add_argument("kind", choices=("destination", "filter", "source"))
    scaffold.add_argument("name", help="lower-case snake_case: the type name in the config")
    scaffold.add_argument("--into", default=".", help="folder to write gateway-<kind>-<name>/ in (default: here)")
    scaffold.set_defaults(handler=_new_plugin)


def _plugins(args: argparse.Namespace) -> int:
    pm = make_plugin_manager()
    registry = build_registry(pm)
    kinds: tuple[tuple[str, dict[str, Any]], ...] = (
        ("source", registry.sources),
        ("destination", registry.destinations),
        ("filter", registry.filters),
        ("matcher", registry.matchers),
    )
    for kind, types in kinds:
        for name, component_type in sorted(types.items()):
            plugin = registry.provided_by[(kind, name)]
            print(f"{kind:<12} {name:<16} {plugin_distribution(pm, plugin):<40} {component_type.description}")
    return 0


def _new_plugin(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gateway.kit.scaffold import new_plugin

    try:
        folder = new_plugin(args.kind, args.name, Path(args.into))
    except ValueError as error:
        raise GatewayError(str(error)) from None
    print(f"wrote {folder}: pip install -e {folder} && python -m pytest {folder}")
    return 0
