"""A full disk under a real gateway (a small tmpfs): writes are refused with a retryable 503,
``/ready`` says why (delivery paused too), and both follow the disk as soon as space returns."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.testing import GatewayProcess
from tests.gatewayproc import WRITE_KEY, config_text, read_jsonl, wait_until


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; returns it (delete it to free the space)."""
    filler = disk / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return filler


def track(client: httpx.Client, acked: set[str], size: int = 100) -> int:
    message_id = f"disk-{uuid.uuid4()}"
    event = {"userId": "u", "event": "Disk", "messageId": message_id, "properties": {"pad": "x" * size}}
    response = client.post("/v1/track", json=event)
    if response.status_code == 200:
        acked.add(message_id)
    else:
        assert response.status_code == 503 and response.headers["Retry-After"], response.text
    return response.status_code


def test_ready_follows_a_full_disk_and_its_recovery(tmp_path: Path, small_disk: Path) -> None:
    config = tmp_path / "gateway.toml"
    # No destination: no write but the log's own probe shows that space is back.
    config.write_text(config_text(small_disk, archive=False))
    acked: set[str] = set()
    with GatewayProcess(config) as gateway, httpx.Client(base_url=gateway.url, auth=(WRITE_KEY, "")) as client:
        assert track(client, acked) == 200
        filler = fill(small_disk)
        # The log's files may still have room inside them: write until a commit is refused.
        wait_until(lambda: track(client, acked, size=20_000) == 503, timeout=30, interval=0)
        ready = client.get("/ready")
        assert ready.status_code == 503 and not ready.json()["checks"]["log_writable"]
        (reason,) = ready.json()["reasons"]
        assert "disk_full" in reason and "delivery is paused" in reason, reason

        filler.unlink()
        # Promptly (the log's checkpoint tries a small write every second), though no request
        # has come to show the disk is back.
        ready = wait_until(lambda: (r := client.get("/ready")).status_code == 200 and r, timeout=5)
        assert ready.json() == {"ready": True, "checks": {"log_writable": True, "config_loaded": True}, "reasons": []}
        assert track(client, acked) == 200


def test_delivery_resumes_after_a_full_disk(tmp_path: Path, small_disk: Path) -> None:
    config = tmp_path / "gateway.toml"
    archive = tmp_path / "archive"  # delivered elsewhere: only the log's disk fills up
    config.write_text(config_text(small_disk).replace(str(small_disk / "archive"), str(archive)))
    acked: set[str] = set()
    with GatewayProcess(config) as gateway, httpx.Client(base_url=gateway.url, auth=(WRITE_KEY, "")) as client:
        filler = fill(small_disk)
        wait_until(lambda: track(client, acked, size=20_000) == 503, timeout=30, interval=0)
        filler.unlink()
        wait_until(lambda: track(client, acked) == 200)
        wait_until(lambda: acked <= {m["messageId"] for m in read_jsonl(archive)}, timeout=30)
