"""The HTTP listeners: hypercorn's settings for each, the shared (SO_REUSEPORT) socket, and
opening one in the daemon's nursery behind our serving loop (gateway.http.server)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog
import trio
from hypercorn.config import Config as HypercornConfig
from quart_trio import QuartTrio

from gateway.config import GatewayConfig
from gateway.errors import ConfigError, exception_leaves
from gateway.http.app import shield_sends, without_lifespan
from gateway.http.connection import Limits
from gateway.http.server import serve_http
from gateway.metrics import Metrics

log = structlog.get_logger("gateway")


def hypercorn_config(listen: str) -> HypercornConfig:
    """Hypercorn's settings for one listener, field by field. The limits from ``[server]`` are
    not among them: gateway.http.connection applies those (keep-alive included), reading them
    for each connection."""
    config = HypercornConfig()
    config.bind = [listen]
    config.accesslog = None
    # A Logger instance (not "-") so hypercorn adds no handler of its own: one line per message.
    config.errorlog = logging.getLogger("hypercorn.error")
    # Connections the kernel queues before accept (hypercorn's default is 100): a burst of
    # thousands of clients connecting at once overflowed it, and some waited a minute.
    config.backlog = 4096
    return config


def reuse_port_socket(listen: str) -> socket.socket:
    """A TCP socket bound to ``listen`` (HOST:PORT) with SO_REUSEPORT, so that several gateway
    processes (``server.reuse_port``) accept on one address; the kernel hashes each new
    connection to one of them."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, int(port)))
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class Listener:
    """One listening address: set ``stop`` to stop accepting; ``closed`` is set once its socket
    is closed (the address is free again), ``done`` once the requests in flight finished."""

    listen: str
    stop: trio.Event = field(default_factory=trio.Event)
    closed: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)

    async def close(self) -> None:
        """Stop accepting and wait until the socket is closed (its requests in flight go on)."""
        self.stop.set()
        await self.closed.wait()


def in_the_way(listen: str, running: Iterable[tuple[str, str]], wanted: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """The ``running`` listeners no longer ``wanted`` that must close before one binds ``listen``:
    those on its port. A wildcard and a specific address on one port conflict (so do two names of
    one address), so a reload that changes only the host was refused as "address in use"."""
    port = listen.rpartition(":")[2]
    return [key for key in running if key not in wanted and key[1].rpartition(":")[2] == port]


def wanted_listeners(config: GatewayConfig) -> set[tuple[str, str]]:
    """(app, address) pairs a config asks for: the HTTP API, and the admin API if it has a token."""
    wanted = {("http", config.server.listen)}
    if config.admin.token:
        wanted.add(("admin", config.admin.listen))
    return wanted


async def open_listener(
    nursery: trio.Nursery,
    name: str,
    listen: str,
    app: QuartTrio,
    config: GatewayConfig,
    limits: Callable[[], Limits],
    metrics: Metrics,
) -> tuple[Listener, list[str]]:
    """Serve ``app`` on ``listen`` in ``nursery``; returns the listener and the addresses bound.

    Raises:
        ConfigError: the address cannot be listened on (busy, a host that does not resolve).
    """
    listener = Listener(listen)
    settings = hypercorn_config(listen)
    if name == "http" and config.server.reuse_port:
        try:
            shared = reuse_port_socket(listen)
        except OSError as error:
            raise ConfigError(config.path, "server.listen", f"cannot listen on {listen}: {error}") from error
        # hypercorn takes a socket as fd://N and wraps that very descriptor (no duplicate): it is
        # the listener's now, and closes with it. Closing ours too closed the number again later,
        # by then another socket's (the next listener's, on a reload that moves it).
        settings.bind = [f"fd://{shared.detach()}"]

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await serve_http(
                without_lifespan(shield_sends(app)),
                settings,
                api=name,
                limits=limits,
                metrics=metrics,
                shutdown_trigger=listener.stop.wait,
                closed=listener.closed,
                task_status=task_status,
            )
        finally:
            listener.closed.set()  # (already, unless it failed before it listened)
            listener.done.set()

    try:
        binds: list[str] = await nursery.start(run)
    except Exception as error:  # (not Cancelled or KeyboardInterrupt: those go on up)
        failure = _failure_in(error)  # (a nursery may wrap it in an exception group)
        key = "server.listen" if name == "http" else "admin.listen"
        raise ConfigError(config.path, key, f"cannot listen on {listen}: {failure}") from error
    log.info("listener_started", api=name, listen=binds)
    return listener, binds


def _failure_in(error: BaseException) -> BaseException:
    """What went wrong inside ``error``'s exception groups: the first OSError (a busy port, a
    host that does not resolve) if any, else the first error."""
    leaves = exception_leaves(error)
    return next((leaf for leaf in leaves if isinstance(leaf, OSError)), leaves[0])
