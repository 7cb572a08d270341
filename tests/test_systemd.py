"""systemd: the notify protocol on a test socket, the watchdog, and the unit file."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from gateway.config import ServerConfig
from gateway.http.server import open_files_needed
from tests.gatewayproc import WRITE_KEY, GatewayProcess, config_text

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "gateway.service"
TEMPLATE = REPO / "systemd" / "gateway@.service"


def receive(sock: socket.socket, count: int, *, within_secs: float = 20.0, skip: str = "") -> list[tuple[float, str]]:
    """The next ``count`` notifications (but those equal to ``skip``), with when each arrived."""
    received: list[tuple[float, str]] = []
    deadline = time.monotonic() + within_secs
    while len(received) < count:
        sock.settimeout(max(0.0, deadline - time.monotonic()))
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            raise AssertionError(f"{count} notifications not within {within_secs}s: got {received}") from None
        if data != skip:
            received.append((time.monotonic(), data))
    return received


def queued(sock: socket.socket) -> list[str]:
    """The notifications already sent (the daemon has exited: nothing else can come)."""
    sock.setblocking(False)
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


WATCHDOG_SECS = 0.2


def test_notify_protocol_in_order_with_watchdog_pings(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        config = tmp_path / "gateway.toml"
        config.write_text(config_text(tmp_path))
        env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": str(int(WATCHDOG_SECS * 1_000_000))}
        process = GatewayProcess(config, env=env).start()
        assert process.proc is not None
        try:
            [(_, first)] = receive(sock, 1)
            # READY=1 only once requests can be served: the listener answers right away.
            assert "READY=1" in first.splitlines(), first
            assert f"MAINPID={process.proc.pid}" in first
            assert (
                httpx.post(f"{process.url}/v1/identify", auth=(WRITE_KEY, ""), json={"userId": "u"}).status_code == 200
            )

            # A ping every half WATCHDOG_USEC: five of them (four intervals, 0.4 s) within 1 s.
            pings = receive(sock, 5)
            assert [m for _, m in pings] == ["WATCHDOG=1"] * 5
            assert pings[-1][0] - pings[0][0] < 5 * WATCHDOG_SECS

            process.proc.send_signal(signal.SIGHUP)
            after_hup = [m for _, m in receive(sock, 2, skip="WATCHDOG=1")]
            assert after_hup[0].startswith("RELOADING=1\nMONOTONIC_USEC="), after_hup
            assert "READY=1" in after_hup[1].splitlines()

            process.proc.send_signal(signal.SIGTERM)
            assert process.proc.wait(20) == 0
            assert [m for m in queued(sock) if m != "WATCHDOG=1"] == ["STOPPING=1"]
        finally:
            process.kill()


def test_no_notify_socket_is_fine(gateway_process: GatewayProcess) -> None:
    env = dict(gateway_process.env)
    env.pop("NOTIFY_SOCKET", None)
    gateway_process.env = env
    gateway_process.start()
    assert gateway_process.stop() == 0


def unit_settings(unit: Path = UNIT) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_file_declares_what_the_daemon_does() -> None:
    unit = unit_settings()
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert int(unit["WatchdogSec"][0]) > 0
    assert any("check-config" in v for v in unit["ExecStartPre"])
    assert unit["ExecReload"][-1] == "/bin/kill -HUP $MAINPID" and "check-config" in unit["ExecReload"][0]
    assert unit["StateDirectory"] == ["gateway"] and unit["User"] == ["gateway"]
    assert unit["Restart"] == ["on-failure"]
    for hardening in ("ProtectSystem", "NoNewPrivileges", "PrivateTmp", "ProtectHome", "CapabilityBoundingSet"):
        assert hardening in unit


def test_unit_open_files_limit_fits_the_default_max_connections() -> None:
    needed = open_files_needed(2, ServerConfig().max_connections)  # the HTTP and the admin API
    limit = int(unit_settings()["LimitNOFILE"][0])
    assert needed <= limit < 4 * needed, f"LimitNOFILE={limit}; the default config needs {needed}"


def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is missing (Debian package systemd); .ci/run installs it"
    gateway = str(Path(sys.executable).parent / "gateway")
    unit = tmp_path / "gateway.service"
    unit.write_text(
        UNIT.read_text()
        .replace("/opt/gateway/bin/gateway", gateway)
        .replace("/etc/gateway/gateway.toml", str(REPO / "config" / "gateway.toml"))
    )
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_template_unit_runs_instances_on_one_config_each_with_its_own_state() -> None:
    unit, main = unit_settings(TEMPLATE), unit_settings()
    assert unit["StateDirectory"] == ["gateway/%i"] and unit["WorkingDirectory"] == ["/var/lib/gateway/%i"]
    assert unit["ExecStart"] == main["ExecStart"]  # one config for every instance
    assert unit["Environment"] == ["GATEWAY_ADMIN_LISTEN=127.0.0.1:810%i"]
    # Everything else is the main unit's: supervision, notify protocol, reload, hardening.
    for key, values in main.items():
        if key not in ("Description", "After", "StateDirectory", "WorkingDirectory", "ReadWritePaths"):
            assert unit[key] == values, key


def test_template_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is missing (Debian package systemd); .ci/run installs it"
    gateway = str(Path(sys.executable).parent / "gateway")
    unit = tmp_path / "gateway@.service"
    unit.write_text(
        TEMPLATE.read_text()
        .replace("/opt/gateway/bin/gateway", gateway)
        .replace("/etc/gateway/gateway.toml", str(REPO / "config" / "gateway.toml"))
    )
    instance = tmp_path / "gateway@2.service"
    instance.symlink_to(unit)
    result = subprocess.run([analyze, "verify", str(instance)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
