"""The official Segment server libraries, unmodified, deliver every call through the real daemon.

Python: ``segment-analytics-python`` 2.4.0, plain and gzip bodies. Node: ``@segment/analytics-node``
3.1.0 driven by ``tests/clients/node/send.mjs``, including the 1.2 MB batch its broken size guard
lets through (``/work/shared/docs/clients.md`` §3).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from segment.analytics import Client

from tests.gatewayproc import WRITE_KEY, GatewayProcess, read_jsonl, wait_booked

NODE_DIR = Path(__file__).parent / "clients" / "node"
NODE_DRIVER = NODE_DIR / "send.mjs"

# Same machine, same clock: the skew correction may only move a time by the network latency.
SAME_CLOCK_SLACK = timedelta(seconds=2)
# A historical event: its corrected timestamp must stay in the past, not jump to "now".
BACKDATED = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def _time(value: Any) -> datetime:
    assert isinstance(value, str), f"not an ISO-8601 string: {value!r}"
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, f"time without a zone: {value!r}"
    return parsed


def _delivered_once(gateway: GatewayProcess, archive: Path, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Once the file destination booked everything the client sent (it had a 2xx for all of it,
    so all of it was stored), stop the daemon and return the messages by id, failing on any
    duplicate, stranger or rejected item."""
    wait_booked(gateway, "archive")
    assert gateway.stop() == 0, "".join(gateway.lines)
    # The client saw 2xx for everything, but a batch can be answered 200 with some items rejected.
    rejections = [line for line in gateway.lines if '"messages_rejected"' in line]
    assert not rejections, rejections
    delivered = read_jsonl(archive)
    counts = Counter(m["messageId"] for m in delivered)
    assert counts == Counter(ids), f"expected each id exactly once, got {counts}"
    return {m["messageId"]: m for m in delivered}


def _assert_server_fields(message: dict[str, Any], *, call_type: str, library: str) -> None:
    assert message["type"] == call_type
    assert "writeKey" not in message
    assert message["context"]["ip"] == "127.0.0.1"
    assert message["context"]["library"]["name"] == library
    received = _time(message["receivedAt"])
    assert abs(datetime.now(UTC) - received) < timedelta(minutes=1)
    _time(message["originalTimestamp"])
    _time(message["timestamp"])


# --- Python ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_python_client_delivers_every_call_type(gateway_process: GatewayProcess, tmp_path: Path, gzip: bool) -> None:
    gateway_process.start()
    errors: list[tuple[Exception, list[dict[str, Any]]]] = []
    client = Client(
        WRITE_KEY,
        host=gateway_process.url,
        gzip=gzip,
        max_retries=2,
        on_error=lambda error, batch: errors.append((error, batch)),
    )
    calls = [
        client.identify("py-user-1", {"email": "py@example.com", "plan": "pro"}),
        client.track("py-user-1", "Order Completed", {"revenue": 42.5, "currency": "EUR"}),
        client.page("py-user-1", "Docs", "Quickstart", {"path": "/docs/quickstart"}),
        client.screen(anonymous_id="py-anon-1", category="Onboarding", name="Welcome"),
        client.group("py-user-1", "py-group-1", {"name": "Acme", "employees": 12}),
        client.alias("py-anon-1", "py-user-1"),
        client.track("py-user-1", "Imported", {"source": "backfill"}, timestamp=BACKDATED, message_id="py-backdated-1"),
    ]
    try:
        client.flush()
    finally:
        client.join()
    assert all(queued for queued, _ in calls), calls
    assert errors == []
    sent = [msg for _, msg in calls]

    delivered = _delivered_once(gateway_process, tmp_path / "archive", [msg["messageId"] for msg in sent])

    for msg in sent:
        message = delivered[msg["messageId"]]
        _assert_server_fields(message, call_type=msg["type"], library="analytics-python")
        assert message["context"]["library"]["version"] == "2.4.0"
        assert message["originalTimestamp"] == msg["timestamp"]
        assert message.get("userId") == msg.get("userId")
        assert message.get("anonymousId") == msg.get("anonymousId")
        received, timestamp = _time(message["receivedAt"]), _time(message["timestamp"])
        original = _time(message["originalTimestamp"])
        # timestamp = receivedAt - (sentAt - originalTimestamp), so it trails the original only
        # by the network latency, whatever the time spent in the client's queue.
        assert timedelta(0) <= timestamp - original + timedelta(milliseconds=1) < SAME_CLOCK_SLACK, message
        if msg["messageId"] != "py-backdated-1":
            assert abs(received - timestamp) < SAME_CLOCK_SLACK, message

    by_type = {msg["type"]: delivered[msg["messageId"]] for msg in sent[:6]}
    assert by_type["identify"]["traits"] == {"email": "py@example.com", "plan": "pro"}
    assert by_type["track"]["event"] == "Order Completed"
    assert by_type["track"]["properties"] == {"revenue": 42.5, "currency": "EUR"}
    assert (by_type["page"]["category"], by_type["page"]["name"]) == ("Docs", "Quickstart")
    assert by_type["page"]["properties"] == {"path": "/docs/quickstart"}
    assert (by_type["screen"]["category"], by_type["screen"]["name"]) == ("Onboarding", "Welcome")
    assert by_type["group"]["groupId"] == "py-group-1"
    assert by_type["group"]["traits"] == {"name": "Acme", "employees": 12}
    assert (by_type["alias"]["previousId"], by_type["alias"]["userId"]) == ("py-anon-1", "py-user-1")

    backdated = delivered["py-backdated-1"]
    assert _time(backdated["originalTimestamp"]) == BACKDATED
    assert BACKDATED <= _time(backdated["timestamp"]) < BACKDATED + SAME_CLOCK_SLACK


# --- Node -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node_client() -> Iterator[list[str]]:
    """The command that runs the Node driver; installs its locked dependencies when missing."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("the Node client tests need Node.js 20 (`node`) on PATH; install Node.js 20 with npm")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        pytest.fail(f"the Node client tests need Node.js 20 or later, found {version} at {node}")
    if not (NODE_DIR / "node_modules" / "@segment" / "analytics-node").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail(
                f"{NODE_DIR}/node_modules is missing and `npm` is not on PATH to install it; "
                "install npm (it ships with Node.js 20) or run `npm ci` in that folder",
            )
        install = [npm, "ci"] if (NODE_DIR / "package-lock.json").is_file() else [npm, "install"]
        result = subprocess.run(
            [*install, "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=240,
        )
        if result.returncode != 0:
            pytest.fail(f"`{' '.join(install)}` failed in {NODE_DIR}:\n{result.stdout}\n{result.stderr}")
    yield [node, str(NODE_DRIVER)]


def _run_node(command: list[str], url: str, scenario: str) -> dict[str, Any]:
    result = subprocess.run(
        [*command, url, WRITE_KEY, scenario],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"node driver failed:\n{result.stdout}\n{result.stderr}"
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["errors"] == [], report["errors"]
    assert [entry["error"] for entry in report["sent"]] == [None] * len(report["sent"]), report["sent"]
    assert all(entry["messageId"] for entry in report["sent"]), report["sent"]
    return report


def test_node_client_delivers_every_call_type(
    node_client: list[str],
    gateway_process: GatewayProcess,
    tmp_path: Path,
) -> None:
    gateway_process.start()
    report = _run_node(node_client, gateway_process.url, "calls")
    sent = report["sent"]
    assert [entry["type"] for entry in sent] == ["identify", "track", "page", "screen", "group", "alias"]
    assert [(r["url"], r["status"]) for r in report["requests"]] == [(f"{gateway_process.url}/v1/batch", 200)]

    delivered = _delivered_once(gateway_process, tmp_path / "archive", [entry["messageId"] for entry in sent])

    by_type = {}
    for entry in sent:
        message = delivered[entry["messageId"]]
        assert entry["messageId"].startswith("node-next-")
        _assert_server_fields(message, call_type=entry["type"], library="@segment/analytics-node")
        assert message["context"]["library"]["version"] == "3.1.0"
        received, timestamp = _time(message["receivedAt"]), _time(message["timestamp"])
        assert abs(received - timestamp) < SAME_CLOCK_SLACK, message
        assert (
            timedelta(0)
            <= timestamp - _time(message["originalTimestamp"]) + timedelta(milliseconds=1)
            < SAME_CLOCK_SLACK
        )
        by_type[entry["type"]] = message
    assert by_type["identify"]["userId"] == "node-user-1"
    assert by_type["identify"]["traits"] == {"email": "node@example.com", "plan": "pro"}
    assert by_type["track"]["event"] == "Order Completed"
    assert by_type["track"]["properties"] == {"revenue": 42.5, "currency": "EUR"}
    assert by_type["page"]["name"] == "Quickstart"
    assert by_type["page"]["properties"]["path"] == "/docs/quickstart"
    assert by_type["screen"]["anonymousId"] == "node-anon-1"
    assert by_type["screen"]["name"] == "Welcome"
    assert by_type["group"]["groupId"] == "node-group-1"
    assert by_type["group"]["traits"] == {"name": "Acme", "employees": 12}
    assert (by_type["alias"]["previousId"], by_type["alias"]["userId"]) == ("node-anon-1", "node-user-1")


def test_node_client_oversized_batch_is_accepted_whole(
    node_client: list[str],
    gateway_process: GatewayProcess,
    tmp_path: Path,
) -> None:
    gateway_process.start()
    report = _run_node(node_client, gateway_process.url, "big")
    sent = report["sent"]
    assert len(sent) == 40
    # The client really sent it as one request of more than 1 MB, and the gateway took it.
    [request] = report["requests"]
    assert request["status"] == 200
    assert request["bytes"] > 1024 * 1024

    delivered = _delivered_once(gateway_process, tmp_path / "archive", [entry["messageId"] for entry in sent])

    assert len({m["receivedAt"] for m in delivered.values()}) == 1
    for n, entry in enumerate(sent):
        message = delivered[entry["messageId"]]
        _assert_server_fields(message, call_type="track", library="@segment/analytics-node")
        assert message["properties"]["n"] == n
        assert message["properties"]["filler"] == "x" * (28 * 1024)
