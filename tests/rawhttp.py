"""Raw-socket HTTP for hostile-client tests: send exact bytes, read what comes back, reset."""

from __future__ import annotations

import json
import re
import socket
import struct
import time
from urllib.parse import urlsplit

from gateway.testing import GatewayProcess

ADMIN_TOKEN = "hostile-tests-admin-token"


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def connect(url: str, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(address(url), timeout=timeout)


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a TCP reset, not a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes (True) or ``timeout`` passes (False)."""
    received = b""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return received, False
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return received, False
        except ConnectionResetError:
            return received, True
        if not data:
            return received, True
        received += data


def exchange(url: str, data: bytes, *, timeout: float = 10.0) -> tuple[bytes, bool]:
    """Send ``data`` on a new connection and read until the server closes it (see read_until_closed)."""
    with connect(url) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return b"", True
        return read_until_closed(sock, timeout)


def get(url: str, path: str, headers: str = "") -> bytes:
    """One ``GET`` on its own connection (closed after), the whole answer."""
    answer, closed = exchange(url, f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}\r\n".encode())
    assert closed, f"GET {path}: the connection stayed open after {answer[:200]!r}"
    return answer


def status_of(answer: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    assert match, f"not an HTTP answer: {answer[:200]!r}"
    return int(match[1])


def serving(process: GatewayProcess) -> bool:
    """The process is alive and answers ``/health``."""
    assert process.proc is not None
    return process.proc.poll() is None and status_of(get(process.url, "/health")) == 200


def metric(process: GatewayProcess, name: str, **labels: str) -> float:
    """A sample from ``/metrics`` (0 when absent)."""
    body = get(process.url, "/metrics").partition(b"\r\n\r\n")[2].decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in body.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == (f"{name}{{{wanted}}}" if labels else name):
            return float(value)
    return 0.0


def admin_url(process: GatewayProcess) -> str:
    """The admin listener's address, from its ``listener_started`` line."""
    for line in process.lines:
        if '"listener_started"' in line and '"admin"' in line:
            return str(json.loads(line)["listen"][0])
    raise AssertionError("no admin listener_started line:\n" + "".join(process.lines))


def tracebacks(process: GatewayProcess) -> list[str]:
    """Log lines that show a Python traceback."""
    return [line for line in process.lines if "Traceback (most recent call last)" in line]
