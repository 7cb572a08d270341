"""The daemon starts from a config file, accepts a call, delivers it, and stops cleanly on SIGTERM."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.gatewayproc import WRITE_KEY, GatewayProcess, read_jsonl, wait_until


def test_daemon_delivers_a_track_call_and_stops_on_sigterm(gateway_process: GatewayProcess, tmp_path: Path) -> None:
    gateway_process.start()
    response = httpx.post(
        f"{gateway_process.url}/v1/track",
        auth=(WRITE_KEY, ""),
        json={"userId": "u1", "event": "Signed Up", "messageId": "smoke-1"},
    )
    assert response.status_code == 200
    assert response.json() == {"success": True}
    delivered = wait_until(lambda: read_jsonl(tmp_path / "archive"))
    assert [m["messageId"] for m in delivered] == ["smoke-1"]
    assert delivered[0]["type"] == "track" and "receivedAt" in delivered[0]
    assert gateway_process.stop() == 0
