"""Shared fixtures: the plugin registry, an in-process app on a real SQLite log, a gateway process."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from quart_trio import QuartTrio

from gateway.config import GatewayConfig, parse_config
from gateway.http.app import create_app
from gateway.ingest.hub import IngestHub
from gateway.log import IngestLog, open_log
from gateway.plugins import Registry, build_registry, make_plugin_manager
from tests.gatewayproc import WRITE_KEY, GatewayProcess, config_text


@pytest.fixture(scope="session")
def registry() -> Registry:
    """Component types of the installed plugins (the built-in ones must be installed)."""
    return build_registry(make_plugin_manager())


@dataclass
class App:
    app: QuartTrio
    hub: IngestHub
    log: IngestLog
    config: GatewayConfig

    def client(self):
        return self.app.test_client()


@pytest.fixture
def app_config_extra() -> str:
    """Extra TOML appended to the in-process app's config (override in a test module)."""
    return ""


@asynccontextmanager
async def open_app(
    data_dir: Path, registry: Registry, extra: str = "", *, fast_paths: bool = True
) -> AsyncIterator[App]:
    """The HTTP app on a real SQLite log in ``data_dir``, without delivery workers (and, with
    ``fast_paths=False``, with every request answered by the source types' Quart routes)."""
    config = parse_config(config_text(data_dir, archive=False, extra=extra), registry)
    source_types = [t if fast_paths else dataclasses.replace(t, fast_path=None) for t in registry.sources.values()]
    async with open_log(config.log, config.data_dir) as ingest_log:
        hub = IngestHub(ingest_log, config, {})
        yield App(create_app(hub, source_types), hub, ingest_log, config)


@pytest.fixture
async def gateway_app(tmp_path: Path, registry: Registry, app_config_extra: str) -> AsyncIterator[App]:
    """The HTTP app on a real SQLite log in ``tmp_path``, without delivery workers."""
    async with open_app(tmp_path, registry, app_config_extra) as app:
        yield app


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[GatewayProcess]:
    """A gateway daemon (not started) on the default test config in ``tmp_path``, with the admin
    API that ``tests.gatewayproc.wait_booked`` uses."""
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(config_text(tmp_path, admin=True))
    process = GatewayProcess(config_path)
    try:
        yield process
    finally:
        process.kill()


__all__ = ["WRITE_KEY"]
