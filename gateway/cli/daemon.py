"""``gateway run`` (the daemon) and ``gateway check-config`` (what the daemon would refuse)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.config import DEFAULT_CONFIG_PATH, load_config
from gateway.plugins import build_registry, make_plugin_manager
from gateway.telemetry import LEVELS, configure_logging

if TYPE_CHECKING:
    import argparse

    from gateway.cli.arguments import Commands


def add_commands(commands: Commands) -> None:
    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("--config", default=DEFAULT_CONFIG_PATH, help=f"config file (default {DEFAULT_CONFIG_PATH})")
    run.add_argument("--log-level", default="info", choices=LEVELS)
    run.set_defaults(handler=_run)

    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config", nargs="?", default=DEFAULT_CONFIG_PATH)
    check.set_defaults(handler=_check_config)


def _run(args: argparse.Namespace) -> int:
    from gateway.runtime.daemon import run

    configure_logging(args.log_level)
    run(args.config)
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from gateway.runtime.gateway import build_filters

    registry = build_registry(make_plugin_manager())
    config = load_config(args.config, registry)
    build_filters(config, registry)  # what only building finds: a function that does not import
    print(
        f"{args.config}: ok ({len(config.sources)} sources, {len(config.destinations)} destinations, "
        f"{len(config.filters)} filters)"
    )
    return 0
