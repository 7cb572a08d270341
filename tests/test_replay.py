"""``gateway replay``: a destination gets a time range of the archive again, beside its live
delivery; a replay survives ``kill -9`` (its cursor is persisted) and leaves the books alone."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from tests.gatewayproc import (
    WRITE_KEY,
    GatewayProcess,
    audit_log,
    config_text,
    gateway_cli,
    log_cursors,
    read_log,
    wait_until,
)
from tests.sink import Sink, free_port, http_destination

TOKEN = "admin-token-for-replay-tests-01234"


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return gateway_cli(config, *args, env={"GW_TEST_ADMIN_TOKEN": TOKEN})


def send(gateway: GatewayProcess, *ids: str) -> None:
    batch = [{"type": "track", "userId": "u", "event": "e", "messageId": i} for i in ids]
    assert httpx.post(f"{gateway.url}/v1/batch", auth=(WRITE_KEY, ""), json={"batch": batch}).status_code == 200


def replay_cursors(data_dir: Path) -> list[str]:
    return [name for name in log_cursors(data_dir) if name.startswith("replay:")]


def test_replay_resends_a_time_range_and_survives_kill_9(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    with Sink() as sink:
        config.write_text(
            config_text(tmp_path, archive=False, listen=f"127.0.0.1:{free_port()}")
            + http_destination(
                sink.url, batch_max_messages=5, batch_max_wait_secs=0.02, retry_initial_secs=0.05, retry_max_secs=0.2
            )
            + f'\n[admin]\nlisten = "127.0.0.1:{free_port()}"\ntoken = {{ env = "GW_TEST_ADMIN_TOKEN" }}\n'
        )
        env = {"GW_TEST_ADMIN_TOKEN": TOKEN}
        with GatewayProcess(config, env=env) as gateway:
            send(gateway, "early")
            wait_until(lambda: "early" in sink.delivered_ids())
            # --since one millisecond after "early" was received, and the replayed ones after it.
            [early] = read_log(tmp_path, lambda reader: reader.read(0, max_records=1, max_bytes=1 << 20))
            since_ms = early.received_at + 1
            since = (
                datetime.fromtimestamp(since_ms // 1000, UTC).replace(microsecond=since_ms % 1000 * 1000).isoformat()
            )
            wait_until(lambda: time.time() * 1000 >= since_ms + 1)
            ids = [f"r{i}" for i in range(20)]
            send(gateway, *ids)
            wait_until(lambda: sink.delivered_ids() >= set(ids))

            sink.failing = True  # the replay gets stuck retrying its first batch
            refused = sink.refused_requests
            started = cli(config, "replay", "hook", "--since", since)
            assert started.returncode == 0, started.stderr
            assert "replaying up to 20 messages (seq 2..21) to hook" in started.stdout
            wait_until(lambda: sink.refused_requests > refused)
            status = cli(config, "status").stdout
            assert "replay:hook:21:" in status and "of 2..21" in status
            gateway.kill()

        assert len(replay_cursors(tmp_path)) == 1  # persisted: it resumes after the restart
        sink.failing = False
        with GatewayProcess(config, env=env) as gateway:
            wait_until(lambda: all(sink.counts[i] >= 2 for i in ids))
            wait_until(lambda: replay_cursors(tmp_path) == [])
            assert sink.counts["early"] == 1  # before --since: not replayed
            send(gateway, "live")  # live delivery went on beside it
            wait_until(lambda: "live" in sink.delivered_ids())
            assert "nothing to replay" in cli(config, "replay", "hook", "--since", "2999-01-01T00:00:00Z").stdout
            sink.failing = True  # a replay stuck on a dead endpoint can be called off
            assert cli(config, "replay", "hook", "--since", since).returncode == 0
            assert len(replay_cursors(tmp_path)) == 1
            assert cli(config, "replay", "hook", "--cancel").stdout.strip() == "1 replay(s) of hook cancelled"
            assert replay_cursors(tmp_path) == []
            sink.failing = False
            bad = cli(config, "replay", "nope", "--since", since)
            assert bad.returncode == 2 and "no running destination 'nope'" in bad.stderr
            bad = cli(config, "replay", "nope", "--cancel")  # it said "0 replay(s) of nope cancelled"
            assert bad.returncode == 2 and "no destination 'nope' and no replay of it" in bad.stderr
            for limit in ("0", "-1"):  # they listed 100 and everything
                assert cli(config, "dead-letters", "list", "--limit", limit).returncode == 2
            assert "is not an ISO-8601 time" in cli(config, "replay", "hook", "--since", "yesterday").stderr
        assert all(sink.counts[i] == 2 for i in ids)  # each replayed once, nothing more
    [books] = audit_log(tmp_path).destinations
    assert books.destination == "hook" and books.unaccounted == 0 and books.delivered == 22
