"""A gateway served in the test's own trio run (:func:`run_gateway`), and what a test does with
it (:class:`TestGateway`): send calls, wait for delivery on events, read what was recorded."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio

from gateway.components import Destination
from gateway.testing._config import completed
from gateway.testing._recording import RecordingDestination, RecordingPlugin
from gateway.testing._waiting import DEFAULT_WAIT_SECS


class TestGateway:
    """A gateway :func:`run_gateway` is serving.

    Attributes:
        url: The HTTP API's base URL (``http://127.0.0.1:PORT``).
        admin_url: The admin API's base URL, or None when the config sets no ``[admin] token``.
        data_dir: The gateway's data folder.
        config_path: The config file it runs on (rewrite it and call :meth:`reload`).
    """

    __test__ = False  # not a pytest test class

    def __init__(self, gateway: Any, plugin: RecordingPlugin, config_path: Path, client: httpx.AsyncClient) -> None:
        self._gateway = gateway
        self._plugin = plugin
        self._client = client
        self.config_path = config_path
        self.data_dir = Path(gateway.config.server.data_dir)
        self.url = gateway.urls[0]
        self.admin_url: str | None = gateway.admin_urls[0] if gateway.admin_urls else None

    @property
    def config(self) -> Any:
        """The config the gateway runs on now (a ``gateway.config.GatewayConfig``)."""
        return self._gateway.config

    # -- sending ---------------------------------------------------------------------------

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Any request to the HTTP API (``kwargs`` as for ``httpx.AsyncClient.request``)."""
        return await self._client.request(method, f"{self.url}{path}", **kwargs)

    async def send(
        self, call: str, message: Mapping[str, Any], *, write_key: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """``POST /v1/<call>`` (``track``, ``identify``...) with the write key as HTTP Basic user."""
        auth = (write_key, "") if write_key is not None else None
        return await self.request("POST", f"/v1/{call}", json=dict(message), auth=auth, **kwargs)

    async def batch(
        self, messages: Sequence[Mapping[str, Any]], *, write_key: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """``POST /v1/batch``; each message needs its ``type``."""
        auth = (write_key, "") if write_key is not None else None
        body = {"batch": [dict(m) for m in messages]}
        return await self.request("POST", "/v1/batch", json=body, auth=auth, **kwargs)

    async def python_client(
        self, write_key: str, calls: Callable[[Any], Sequence[tuple[bool, dict[str, Any]]]]
    ) -> list[dict[str, Any]]:
        """Make calls with Segment's official Python client (``segment.analytics.Client``,
        pointed at this gateway), flush them, and return the messages it queued as it built them
        (their ``messageId`` names them in what arrives). ``calls(client)`` returns what the
        client's methods return: ``lambda c: [c.track("u1", "Signed Up"), c.identify("u1", {})]``.
        The client is synchronous and threaded, so this runs in a worker thread.

        Raises:
            AssertionError: the client refused to queue a call, or reported an error.
        """
        from segment.analytics import Client

        errors: list[Exception] = []

        def run() -> Sequence[tuple[bool, dict[str, Any]]]:
            client = Client(write_key, host=self.url, max_retries=2, on_error=lambda e, _: errors.append(e))
            try:
                results = calls(client)
                client.flush()
            finally:
                client.join()
            return results

        results = await trio.to_thread.run_sync(run)
        assert all(ok for ok, _ in results), [msg for ok, msg in results if not ok]
        assert not errors, errors
        return [msg for _, msg in results]

    async def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request to the admin API, with the configured token."""
        if self.admin_url is None:
            raise RuntimeError("the config sets no [admin] token, so the admin API is off")
        headers = {"Authorization": f"Bearer {self._gateway.config.admin.token}", **kwargs.pop("headers", {})}
        return await self._client.request(method, f"{self.admin_url}{path}", headers=headers, **kwargs)

    # -- waiting ---------------------------------------------------------------------------

    async def wait_delivered(self, *destinations: str, within_secs: float = DEFAULT_WAIT_SECS) -> None:
        """Return once each destination (every one when none is named) has booked every
        message stored so far: delivered, filtered or dead-lettered, its cursor saved.

        Raises:
            AssertionError: not within ``within_secs`` seconds (with how far each one got).
        """
        head = self._gateway.log.head()
        names = destinations or tuple(self._gateway.destinations)
        with trio.move_on_after(within_secs):
            for name in names:
                await self._running(name).worker.wait_cursor(head)
            return
        progress = {name: self._running(name).worker.statistics().cursor for name in names}
        raise AssertionError(f"not delivered within {within_secs}s: log head {head}, cursors {progress}")

    async def wait_recorded(
        self, destination: str, count: int, *, within_secs: float = DEFAULT_WAIT_SECS
    ) -> list[dict[str, Any]]:
        """The messages a ``recording`` destination got, once it has at least ``count``."""
        recorder = self.recorder(destination)
        with trio.move_on_after(within_secs):
            return await recorder.wait_for(count)
        raise AssertionError(f"{destination} recorded {len(recorder.messages)} of {count} within {within_secs}s")

    # -- looking -----------------------------------------------------------------------------

    def recorder(self, destination: str) -> RecordingDestination:
        """The ``recording`` destination ``destination`` (to script failures, or read it)."""
        recorder = self._plugin.instances.get(destination)
        if recorder is None:
            raise KeyError(f"{destination!r} is not a running destination of type 'recording'")
        return recorder

    def recorded(self, destination: str) -> list[dict[str, Any]]:
        """What the ``recording`` destination ``destination`` received so far."""
        return self.recorder(destination).messages

    def destination(self, destination: str) -> Destination:
        """The running :class:`Destination` built for ``destination`` (to inspect a plugin's state)."""
        destination_object: Destination = self._running(destination).destination
        return destination_object

    def statistics(self, destination: str) -> dict[str, Any]:
        """The destination worker's counters: delivered, filtered, dead_lettered, retries..."""
        stats: dict[str, Any] = msgspec.to_builtins(self._running(destination).worker.statistics())
        return stats

    async def dead_letters(self, destination: str | None = None) -> list[dict[str, Any]]:
        """Dead letters (all, or one destination's; ``source:<id>`` for a source's filters)."""
        letters = await self._gateway.log.dead_letters(destination=destination, limit=10_000)
        return [
            {**msgspec.to_builtins(letter), "message": letter.body.decode("utf-8", "replace")} for letter in letters
        ]

    async def redrive(self, destination: str) -> int:
        """Mark the destination's dead letters for redrive, as ``gateway dead-letters redrive
        --destination`` does, and return once its worker has sent them again (those refused
        again are held, with their new error); returns how many were marked."""
        marked: int = await self._gateway.log.change_dead_letters("redrive", destination=destination)
        await self._running(destination).worker.wait_redrive_pass()
        return marked

    async def reload(self, config: str | None = None) -> bool:
        """Apply ``config`` (TOML, completed like :func:`run_gateway`'s) or the config file as it
        is now; returns whether it was accepted (a refused one leaves the old one serving)."""
        if config is not None:
            self.config_path.write_text(completed(config, self.data_dir, self._gateway.config.server.listen))
        ok: bool = await self._gateway.reload("gateway.testing")
        return ok

    def _running(self, destination: str) -> Any:
        running = self._gateway.destinations.get(destination)
        if running is None:
            raise KeyError(f"no running destination {destination!r} (have {sorted(self._gateway.destinations)})")
        return running


@asynccontextmanager
async def run_gateway(
    config: str,
    *,
    data_dir: Path | str | None = None,
    plugins: Sequence[object] = (),
    entry_points: bool = True,
) -> AsyncIterator[TestGateway]:
    """Serve a gateway in this trio run until the block ends, then stop it as SIGTERM would.

    Args:
        config: The TOML config. ``[server] listen`` and ``data_dir`` may be left out (a free
            loopback port; ``data_dir`` below), and ``[admin] listen`` too when it sets a token.
        data_dir: The gateway's data folder; a temporary one (removed at the end) by default.
        plugins: Plugin modules or objects to register besides the installed ones (a plugin
            under test that is not installed).
        entry_points: Load the installed plugins (``gateway`` entry points).

    Raises:
        gateway.errors.ConfigError: the config is invalid.
    """
    from gateway.config import load_config
    from gateway.plugins import build_registry, make_plugin_manager
    from gateway.runtime.daemon import serve_gateway

    with tempfile.TemporaryDirectory(prefix="gateway-test-") as scratch:
        folder = Path(data_dir) if data_dir is not None else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "gateway.toml"
        path.write_text(completed(config, folder))
        pm = make_plugin_manager(load_entry_points=entry_points)
        testing = RecordingPlugin()
        pm.register(testing, name="gateway.testing")
        for plugin in plugins:
            pm.register(plugin)
        registry = build_registry(pm)
        loaded = load_config(path, registry)
        stop = trio.Event()
        async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=30) as client:
            gateway = await nursery.start(_serve, serve_gateway, loaded, registry, stop)
            try:
                yield TestGateway(gateway, testing, path, client)
            finally:
                stop.set()


async def _serve(
    serve_gateway: Any, config: Any, registry: Any, stop: trio.Event, *, task_status: trio.TaskStatus[Any]
) -> None:
    await serve_gateway(config, registry, shutdown_trigger=stop.wait, watch=False, task_status=task_status)
