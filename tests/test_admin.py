"""Operations end to end: admin API and CLI, dead letters, audit, metrics, readiness, secrets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.gatewayproc import WRITE_KEY, GatewayProcess, audit_log, config_text, gateway_cli, read_jsonl, wait_booked
from tests.sink import Sink, free_port, http_destination

TOKEN = "admin-token-for-tests-0123456789"


@pytest.fixture
def sink() -> Sink:
    with Sink() as running:
        yield running


@pytest.fixture
def gateway(tmp_path: Path, sink: Sink) -> GatewayProcess:
    admin_port = free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(
        config_text(tmp_path)
        + http_destination(
            sink.url,
            name="hook",
            batch_max_wait_secs=0.02,
            retry_initial_secs=0.05,
            retry_max_secs=0.2,
            delete_url=sink.delete_url,
        )
        + f'\n[admin]\nlisten = "127.0.0.1:{admin_port}"\ntoken = {{ env = "GW_TEST_ADMIN_TOKEN" }}\n'
    )
    process = GatewayProcess(config, env={"GW_TEST_ADMIN_TOKEN": TOKEN})
    process.admin = f"http://127.0.0.1:{admin_port}"  # type: ignore[attr-defined]
    with process:
        yield process


def cli(process: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return gateway_cli(process.config_path, *args, env={"GW_TEST_ADMIN_TOKEN": TOKEN})


def booked(process: GatewayProcess, *destinations: str) -> None:
    """Wait until the destinations (both by default) booked everything stored so far."""
    wait_booked(process, *(destinations or ("hook", "archive")), token=TOKEN)


def send(process: GatewayProcess, *ids: str) -> None:
    batch = [{"type": "track", "userId": "u", "event": "e", "messageId": i} for i in ids]
    assert httpx.post(f"{process.url}/v1/batch", auth=(WRITE_KEY, ""), json={"batch": batch}).status_code == 200


def test_admin_api_refuses_missing_or_wrong_tokens(gateway: GatewayProcess) -> None:
    admin = gateway.admin  # type: ignore[attr-defined]
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}):
        response = httpx.get(f"{admin}/status", headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"
    assert httpx.get(f"{admin}/status", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    # The admin API is not on the public listener.
    assert httpx.get(f"{gateway.url}/status", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404


def test_config_view_redacts_secrets(gateway: GatewayProcess) -> None:
    config = httpx.get(f"{gateway.admin}/config", headers={"Authorization": f"Bearer {TOKEN}"}).json()  # type: ignore[attr-defined]
    assert config["admin"]["token"] == "***"
    assert config["sources"]["web"]["write_key"] == "***"
    assert config["destinations"]["hook"]["type"] == "http"
    assert TOKEN not in str(config) and WRITE_KEY not in str(config)


def test_dead_letters_list_redrive_and_audit(gateway: GatewayProcess, sink: Sink) -> None:
    sink.rejected.add("bad-1")
    send(gateway, "ok-1", "bad-1", "ok-2")
    booked(gateway)
    assert sink.delivered_ids() == {"ok-1", "ok-2"}
    listing = cli(gateway, "dead-letters", "list", "--destination", "hook").stdout
    [line] = listing.strip().splitlines()
    letter_id = line.split("\t")[0]
    assert "HTTP 400" in line and "dead" in line

    status = cli(gateway, "status")
    assert status.returncode == 0, status.stderr
    assert "hook (http): delivered 2" in status.stdout and "dead-lettered 1" in status.stdout

    books = cli(gateway, "audit")
    assert books.returncode == 0, books.stdout
    books = books.stdout
    assert "hook: accepted 3 " in books and "delivered 2" in books and "dead-lettered 1" in books
    assert "source web: received 3 = stored 3 + duplicates 0 + filtered 0 (none) + dead-lettered 0" in books
    assert "every accepted message is accounted for" in books

    sink.rejected.clear()
    mark = len(gateway.lines)
    redrive = cli(gateway, "dead-letters", "redrive", letter_id)
    assert redrive.stdout.strip() == "1 dead letter(s) marked for redrive"
    assert gateway.wait_logged("dead_letters_redriven", after=mark)["delivered"] == 1
    assert "bad-1" in sink.delivered_ids()
    assert cli(gateway, "dead-letters", "list").stdout == ""
    assert "1 dead letters redriven since" in cli(gateway, "audit").stdout

    sink.rejected.add("bad-2")
    send(gateway, "bad-2")
    booked(gateway, "hook")
    [line] = cli(gateway, "dead-letters", "list").stdout.splitlines()
    assert "\tdead\t" in line and "HTTP 400" in line
    assert (
        cli(gateway, "dead-letters", "discard", "--destination", "hook").stdout.strip() == "1 dead letter(s) discarded"
    )
    assert cli(gateway, "dead-letters", "list").stdout == ""


def test_metrics_parse_and_count(gateway: GatewayProcess, sink: Sink) -> None:
    send(gateway, "m-1", "m-2", "m-2")
    httpx.post(f"{gateway.url}/v1/track", auth=(WRITE_KEY, ""), json={"userId": "u"})  # rejected: no event
    # Booked, not only received by the sink: the backlog gauge counts from the saved cursor.
    booked(gateway)
    reloaded = httpx.post(f"{gateway.admin}/reload", headers={"Authorization": f"Bearer {TOKEN}"})  # type: ignore[attr-defined]
    assert reloaded.json() == {"reloaded": True}
    text = httpx.get(f"{gateway.url}/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("gateway_messages_accepted_total", (("source", "web"),))] == 2
    assert samples[("gateway_messages_deduplicated_total", (("source", "web"),))] == 1
    assert samples[("gateway_messages_rejected_total", (("code", "event_not_defined"),))] == 1
    assert samples[("gateway_destination_delivered_total", (("destination", "hook"),))] == 2
    assert samples[("gateway_destination_backlog_messages", (("destination", "hook"),))] == 0
    assert samples[("gateway_http_requests_total", (("path", "/v1/batch"), ("status", "200")))] == 1
    assert samples[("gateway_log_commit_seconds_count", ())] >= 1
    assert samples[("gateway_delivery_latency_seconds_count", (("destination", "hook"),))] == 2
    assert samples[("gateway_config_reloads_total", (("result", "ok"),))] == 1


def test_ready_and_health(gateway: GatewayProcess) -> None:
    assert httpx.get(f"{gateway.url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/ready")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "checks": {"log_writable": True, "config_loaded": True}, "reasons": []}


def test_missing_secret_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "g.toml"
    config.write_text(config_text(tmp_path) + '\n[admin]\ntoken = { env = "GW_TEST_NOT_SET_ANYWHERE" }\n')
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "admin.token: environment variable GW_TEST_NOT_SET_ANYWHERE is not set" in result.stderr
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    config.write_text(config_text(tmp_path) + f'\n[admin]\ntoken = {{ file = "{secret}" }}\n')
    assert subprocess.run([sys.executable, "-m", "gateway", "check-config", str(config)]).returncode == 0


def test_audit_detects_missing_books(tmp_path: Path, gateway: GatewayProcess, sink: Sink) -> None:
    send(gateway, "a-1", "a-2", "a-3")
    booked(gateway)
    books = audit_log(tmp_path)
    assert books.balanced and [d.delivered for d in books.destinations] == [3, 3]
    import sqlite3

    conn = sqlite3.connect(tmp_path / "log.sqlite3")
    with conn:
        conn.execute("DELETE FROM delivery_outcomes WHERE destination = 'hook'")
    conn.close()
    report = audit_log(tmp_path)
    hook = next(d for d in report.destinations if d.destination == "hook")
    assert hook.unaccounted == 3
    result = cli(gateway, "audit")
    assert result.returncode == 3
    assert "UNACCOUNTED: 3 message(s)" in result.stdout and "NOT BALANCED" in result.stdout


def test_suppression_drops_a_users_events_and_survives_a_restart(gateway: GatewayProcess, tmp_path: Path) -> None:
    def track(user: str, message_id: str) -> None:
        body = {"userId": user, "event": "e", "messageId": message_id}
        assert httpx.post(f"{gateway.url}/v1/track", auth=(WRITE_KEY, ""), json=body).status_code == 200

    done = cli(gateway, "privacy", "suppress", "user-42")
    assert done.stdout.strip() == "user-42: suppressed", done.stderr
    track("user-42", "s-1")
    track("someone-else", "s-2")
    booked(gateway)
    assert [m["messageId"] for m in read_jsonl(tmp_path / "archive")] == ["s-2"]
    assert cli(gateway, "privacy", "suppressions").stdout.split() == ["user-42"]

    gateway.stop()
    gateway.start()
    track("user-42", "s-3")
    track("someone-else", "s-4")
    booked(gateway)
    assert [m["messageId"] for m in read_jsonl(tmp_path / "archive")] == ["s-2", "s-4"]
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert 'gateway_messages_filtered_total{reason="suppressed",stage="source",target="web"} 1.0' in metrics

    assert cli(gateway, "privacy", "unsuppress", "user-42").stdout.strip() == "user-42: no longer suppressed"
    track("user-42", "s-5")
    booked(gateway)
    assert [m["messageId"] for m in read_jsonl(tmp_path / "archive")] == ["s-2", "s-4", "s-5"]


SECRET = "PLUTONIUM-7731"


def post(process: GatewayProcess, *events: tuple[str, str]) -> None:
    """Send ``(userId, messageId)`` track events in one batch; user-42's carry ``SECRET``."""
    batch = [
        {"type": "track", "userId": user, "event": "e", "messageId": mid}
        | ({"properties": {"note": SECRET}} if user == "user-42" else {})
        for user, mid in events
    ]
    assert httpx.post(f"{process.url}/v1/batch", auth=(WRITE_KEY, ""), json={"batch": batch}).status_code == 200


def test_delete_removes_a_user_from_the_log_the_archive_and_dead_letters(
    gateway: GatewayProcess, sink: Sink, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    sink.rejected.add("u42-dead")
    post(gateway, ("user-42", "u42-dead"), ("other", "o-1"))
    booked(gateway)
    [line] = cli(gateway, "dead-letters", "list").stdout.splitlines()  # u42-dead's
    assert "\tdead\t" in line and "HTTP 400" in line
    # The hook goes down: what follows stays pending for it (one batch stuck in retries).
    sink.failing = True
    post(gateway, ("other", "o-block"))
    sink.wait_refused(1)
    post(gateway, ("user-42", "u42-1"), ("other", "o-2"), ("user-42", "u42-2"))  # the newest row is the user's
    booked(gateway, "archive")
    assert len(read_jsonl(archive)) == 6
    assert cli(gateway, "audit").returncode == 0
    log_files = lambda: b"".join(p.read_bytes() for p in tmp_path.glob("log.sqlite3*"))  # noqa: E731
    assert SECRET.encode() in log_files()

    done = cli(gateway, "privacy", "delete", "user-42")

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "user-42: 3 messages removed from the log, 1 dead letters; archive: 3 removed; hook: 1 removed; "
        "later events are dropped (suppressed)"
    )
    assert SECRET.encode() not in log_files()
    assert [m["messageId"] for m in read_jsonl(archive)] == ["o-1", "o-block", "o-2"]
    assert not any(SECRET.encode() in p.read_bytes() for p in archive.iterdir())
    assert cli(gateway, "dead-letters", "list").stdout == ""
    assert sink.deletion_notices == [{"type": "delete", "userId": "user-42"}]
    books = cli(gateway, "audit")
    assert books.returncode == 0, books.stdout  # balanced with messages still pending for the hook
    assert "every accepted message is accounted for" in books.stdout

    # The hook comes back: it gets the others' events, never the user's, never a tombstone.
    sink.failing = False
    booked(gateway, "hook")
    assert sink.delivered_ids() == {"o-1", "o-block", "o-2"}
    assert all(m.get("type") != "deleted" and m.get("userId") != "user-42" for m in sink.messages.values())
    books = cli(gateway, "audit")
    assert books.returncode == 0
    hook = next(line for line in books.stdout.splitlines() if line.startswith("hook:"))
    assert hook.startswith("hook: accepted 6 ")
    assert "delivered 3 + filtered 2 (deleted 2) + dead-lettered 1 + pending 0" in hook

    post(gateway, ("user-42", "u42-3"), ("other", "o-3"))  # suppressed from now on
    booked(gateway)
    assert [m["messageId"] for m in read_jsonl(archive)] == ["o-1", "o-block", "o-2", "o-3"]
    assert cli(gateway, "privacy", "suppressions").stdout.split() == ["user-42"]


def test_delete_can_keep_collecting_and_answers_on_the_admin_api(gateway: GatewayProcess, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    post(gateway, ("user-7", "a-1"), ("other", "a-2"))
    booked(gateway)
    answer = httpx.post(
        f"{gateway.admin}/privacy/delete",  # type: ignore[attr-defined]
        headers={"Authorization": f"Bearer {TOKEN}"},
        json={"userId": "user-7", "keepCollecting": True},
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["userId"] == "user-7" and body["suppressed"] is False
    assert body["messages_deleted"] + body["tombstoned"] == 1 and body["dead_letters_deleted"] == 0
    assert body["destinations"]["archive"] == {"removed": 1, "supported": True, "settled": True, "error": None}
    assert body["destinations"]["hook"]["removed"] == 1
    assert body["pending"] == {"archive": 0, "hook": 0}
    post(gateway, ("user-7", "a-3"))  # still collected
    booked(gateway)
    assert [m["messageId"] for m in read_jsonl(archive)] == ["a-2", "a-3"]

    done = cli(gateway, "privacy", "delete", "user-7", "--keep-collecting")
    assert done.stdout.strip().endswith("later events are still collected (--keep-collecting)"), done.stderr
    assert cli(gateway, "privacy", "suppressions").stdout == ""
    bad = httpx.post(
        f"{gateway.admin}/privacy/delete",  # type: ignore[attr-defined]
        headers={"Authorization": f"Bearer {TOKEN}"},
        json={"user": "x"},
    )
    assert bad.status_code == 400
