"""A test's config completed with what it may leave out: a loopback listener on a free port, the
data folder, a short graceful shutdown."""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path

import msgspec


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
