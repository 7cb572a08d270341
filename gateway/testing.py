"""Helpers for testing plugins against a real gateway: run one in-process from a TOML string,
send it calls over HTTP, and wait for delivery on events, never on the clock.

    from gateway.testing import run_gateway

    async def test_my_destination(tmp_path):
        config = '''
        [sources.web]
        write_key = "key"
        [destinations.mine]
        type = "my_destination"
        url = "http://127.0.0.1:9999"
        '''
        async with run_gateway(config, data_dir=tmp_path) as gw:
            response = await gw.send("track", {"userId": "u", "event": "Signed Up"}, write_key="key")
            assert response.status_code == 200
            await gw.wait_delivered("mine")

It serves on loopback ports chosen by the system, with its log in ``data_dir``, the installed
plugins (entry points) and any ``plugins`` given. A ``type = "recording"`` destination keeps
what it receives in memory (:meth:`TestGateway.recorded`), and can be told to fail.
:func:`open_loopback_server` serves a vendor API a test writes (one handler that enforces the
vendor's schema) on loopback, records its requests and scripts faults. Needs the
test extras (``httpx``, ``pytest-trio``): ``pip install 'gateway-core[test]'``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import tomllib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio

from gateway.components import (
    ComponentConfig,
    Destination,
    DestinationContext,
    DestinationType,
    Filter,
    FilterContext,
    FilterOutcome,
    Record,
    SendResult,
    apply_filters,
)
from gateway.errors import DeliveryError
from gateway.hookspecs import hookimpl
from gateway.kit.loopback import Answer, LoopbackServer, ReceivedRequest, open_loopback_server

__all__ = [
    "Answer",
    "GatewayProcess",
    "LoopbackServer",
    "ReceivedRequest",
    "RecordingDestination",
    "TestGateway",
    "check_config",
    "open_loopback_server",
    "plugin_registry",
    "read_jsonl",
    "run_filters",
    "run_gateway",
]

#: How long a ``wait_*`` helper waits before it fails the test with what it was waiting for.
DEFAULT_WAIT_SECS = 30.0


class RecordingConfig(ComponentConfig, frozen=True, kw_only=True):
    """``type = "recording"``: no keys of its own."""


class RecordingDestination(Destination):
    """A destination that keeps every message it is sent, in order, and can be told to fail.

    Attributes:
        messages: Every message delivered so far (decoded), in delivery order.
        batches: The seqs of each batch it took.
    """

    def __init__(self, config: RecordingConfig, context: DestinationContext) -> None:
        self.id = context.id
        self.messages: list[dict[str, Any]] = []
        self.batches: list[list[int]] = []
        self._failures: list[DeliveryError] = []
        self._reject: dict[str, str] = {}
        self._changed = trio.Event()

    def fail_next(self, count: int = 1, *, retryable: bool = True, message: str = "scripted failure") -> None:
        """Make the next ``count`` sends fail with a :class:`DeliveryError`."""
        self._failures.extend(DeliveryError(message, retryable=retryable) for _ in range(count))

    def reject(self, message_id: str, why: str = "rejected by the test") -> None:
        """Refuse the message with this messageId for good whenever it is sent (a
        :class:`SendResult` naming it); the rest of its batch is taken."""
        self._reject[message_id] = why

    async def send(self, batch: Sequence[Record]) -> SendResult | None:
        if self._failures:
            raise self._failures.pop(0)
        rejected: dict[int, str] = {}
        taken = []
        for record in batch:
            message = record.message()
            why = self._reject.get(str(message.get("messageId")))
            if why is not None:
                rejected[record.seq] = why
            else:
                taken.append(record.seq)
                self.messages.append(message)
        self.batches.append(taken)
        self._changed.set()
        self._changed = trio.Event()
        return SendResult(rejected=rejected) if rejected else None

    async def wait_for(self, count: int) -> list[dict[str, Any]]:
        """Return the messages once at least ``count`` were delivered here."""
        while len(self.messages) < count:
            await self._changed.wait()
        return self.messages


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
    return apply_filters(filters, message, context or FilterContext("test"))


class _TestingPlugin:
    """Registers the ``recording`` destination type in the gateways :func:`run_gateway` runs."""

    def __init__(self) -> None:
        self.instances: dict[str, RecordingDestination] = {}

    def _build(self, config: RecordingConfig, context: DestinationContext) -> RecordingDestination:
        destination = self.instances.get(context.id)
        if destination is None:  # one per id: a reload that restarts it keeps what it recorded
            destination = self.instances[context.id] = RecordingDestination(config, context)
        return destination

    @hookimpl
    def gateway_destination_types(self) -> list[DestinationType]:
        return [
            DestinationType(
                name="recording",
                config_type=RecordingConfig,
                factory=self._build,
                description="keeps what it receives in memory (gateway.testing)",
            )
        ]


class TestGateway:
    """A gateway :func:`run_gateway` is serving.

    Attributes:
        url: The HTTP API's base URL (``http://127.0.0.1:PORT``).
        admin_url: The admin API's base URL, or None when the config sets no ``[admin] token``.
        data_dir: The gateway's data folder.
        config_path: The config file it runs on (rewrite it and call :meth:`reload`).
    """

    __test__ = False  # not a pytest test class

    def __init__(self, gateway: Any, plugin: _TestingPlugin, config_path: Path, client: httpx.AsyncClient) -> None:
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
            self.config_path.write_text(_completed(config, self.data_dir, self._gateway.config.server.listen))
        ok: bool = await self._gateway.reload("gateway.testing")
        return ok

    def _running(self, destination: str) -> Any:
        running = self._gateway.destinations.get(destination)
        if running is None:
            raise KeyError(f"no running destination {destination!r} (have {sorted(self._gateway.destinations)})")
        return running


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _completed(config: str, data_dir: Path, listen: str | None = None) -> str:
    """``config`` with the keys a test gateway needs filled in where it leaves them out: a
    loopback listener on a free port, ``data_dir``, and a short graceful shutdown."""
    document = tomllib.loads(config)
    server = document.get("server", {})
    lines = []
    if "listen" not in server:
        lines.append(f'listen = "{listen or f"127.0.0.1:{_free_port()}"}"')
    if "data_dir" not in server:
        lines.append(f"data_dir = {msgspec.json.encode(str(data_dir)).decode()}")
    if "graceful_shutdown_secs" not in server:
        lines.append("graceful_shutdown_secs = 2.0")
    admin = document.get("admin", {})
    admin_lines = [f'listen = "127.0.0.1:{_free_port()}"'] if "token" in admin and "listen" not in admin else []
    if not lines and not admin_lines:
        return config
    # TOML forbids a table twice: add the keys inside the existing table when there is one.
    return _into_table(_into_table(config, "server", lines), "admin", admin_lines)


def _into_table(config: str, table: str, lines: list[str]) -> str:
    if not lines:
        return config
    header = f"[{table}]"
    out = []
    added = False
    for line in config.splitlines():
        out.append(line)
        if not added and line.strip() == header:
            out.extend(lines)
            added = True
    if not added:
        out = [header, *lines, "", *out]
    return "\n".join(out) + "\n"


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
        path.write_text(_completed(config, folder))
        pm = make_plugin_manager(load_entry_points=entry_points)
        testing = _TestingPlugin()
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


class GatewayProcess:
    """The real daemon, ``python -m gateway run`` on a config file, in a subprocess: for tests
    that kill it (``kill -9`` mid-delivery) or need it alone in its process. ``url`` is known
    once it logged its start; ``lines`` holds what it logged, and :meth:`wait_logged` waits for
    a line as it comes (no polling)."""

    def __init__(self, config_path: Path, *, env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.lines: list[str] = []
        self._logged = threading.Condition()  # notified at each line, and when the output ends
        self._ended = False
        self._pump_thread: threading.Thread | None = None

    def start(self, timeout: float = 60.0) -> GatewayProcess:
        """Start the daemon and return once it logged ``gateway_started`` (it serves then).

        Raises:
            RuntimeError: it exited, or did not start within ``timeout`` seconds (with its output).
        """
        if self._pump_thread is not None and self.proc is not None and self.proc.poll() is not None:
            # The previous run's reader must have seen its end of output before this run
            # starts: otherwise its late "ended" would cut the new run's wait short.
            self._pump_thread.join(30)
        with self._logged:
            self.lines = []
            self._ended = False
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(self.config_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        self._pump_thread = threading.Thread(target=self._pump, args=(self.proc,), daemon=True)
        self._pump_thread.start()
        try:
            started = self.wait_logged("gateway_started", within_secs=timeout)
        except AssertionError:
            self.kill()
            raise RuntimeError("gateway did not start:\n" + "".join(self.lines)) from None
        self.url = started["listen"][0]
        return self

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._logged:
                if self.proc is proc:
                    self.lines.append(line)
                self._logged.notify_all()
        with self._logged:
            if self.proc is proc:
                self._ended = True
            self._logged.notify_all()

    def wait_logged(self, *events: str, after: int = 0, within_secs: float = DEFAULT_WAIT_SECS) -> dict[str, Any]:
        """The first JSON log record named one of ``events`` among ``lines[after:]``, once the
        daemon logged it. Take ``after = len(process.lines)`` before acting, to wait for the
        line that the action causes rather than an earlier one.

        Raises:
            AssertionError: the daemon's output ended, or ``within_secs`` passed, first (with
                the last lines it logged).
        """
        names = {f'"event": "{event}"' for event in events}
        found: list[str] = []

        def logged() -> bool:
            found[:] = [line for line in self.lines[after:] if any(name in line for name in names)][:1]
            return bool(found) or self._ended

        with self._logged:
            self._logged.wait_for(logged, timeout=within_secs)
            if found:
                record: dict[str, Any] = json.loads(found[0])
                return record
            why = "the daemon's output ended" if self._ended else f"not within {within_secs}s"
            tail = "".join(self.lines[-20:])
        raise AssertionError(f"waited for {' or '.join(events)} in the gateway's log: {why}; it logged last:\n{tail}")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def rss_bytes(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.stop()
            except subprocess.TimeoutExpired:
                self.kill()


def read_jsonl(folder: Path) -> list[dict[str, Any]]:
    """Every message in the JSON Lines files of a file destination, in file order."""
    messages = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                messages.append(json.loads(line))
    return messages
