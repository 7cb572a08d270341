"""A test's config completed with what it may leave out: a loopback listener on a free port, the
data folder, a short graceful shutdown."""

from __future__ import annotations

import random
import socket
import tomllib
from pathlib import Path

import msgspec


def _free_port() -> int:
    """A loopback port free now, below the kernel's ephemeral range where it can be: the gateway
    binds it later, and meanwhile any outgoing connection (a client's, the gateway's to a
    loopback vendor) may be given an ephemeral port, this one included ("address in use")."""
    low = _ephemeral_low()
    if low > 2048:
        for _ in range(100):
            port = random.randint(max(1024, low - 12_000), low - 1)
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux; 0 where it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def completed(config: str, data_dir: Path, listen: str | None = None) -> str:
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
