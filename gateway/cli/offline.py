"""How the commands that read stored data reach it: the log of the config's data_dir, opened
read-only, so they work with the daemon up or down."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import trio

from gateway.config import load_config
from gateway.plugins import build_registry, make_plugin_manager

if TYPE_CHECKING:
    from gateway.log import LogReader

T = TypeVar("T")


def read_log(config_path: str, read: Callable[[LogReader], Awaitable[T]]) -> T:
    """``read`` the log of the config's data_dir, read-only (with the daemon up or down)."""
    from gateway.log import open_log_reader

    config = load_config(config_path, build_registry(make_plugin_manager()))

    async def main() -> T:
        async with open_log_reader(config.log, config.data_dir) as reader:
            return await read(reader)

    return trio.run(main)
