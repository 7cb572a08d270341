"""Scale-out on the real thing: several gateway processes on one real redis-server (Debian's,
started here with AOF and ``appendfsync always``), the official Python client sending to all of
them, ``kill -9`` of a gateway mid-delivery and of Redis mid-traffic.

What a gateway acknowledged is in Redis, so it reaches the destination whatever dies; a
messageId sent to two gateways is stored once; a dead gateway's destination is taken over by
another, re-sending at most what it had in flight; the books balance across gateways.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from segment.analytics import Client

from gateway.config import LogConfig
from gateway.log import open_log_reader
from gateway.ops.audit import AuditReport, audit
from tests.gatewayproc import WRITE_KEY, GatewayProcess, config_text, reload, wait_booked
from tests.redis_server import RedisServer, need_redis
from tests.sink import Sink, http_destination

LEASE_SECS = 1.0
BATCH = 20
CONCURRENCY = 2


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    need_redis()
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def _config(data_dir: Path, server: RedisServer, sink: Sink | None, *, extra: str = "", **log: object) -> Path:
    settings = {"engine": "redis", "url": server.url, "lease_secs": LEASE_SECS, **log}
    text = config_text(data_dir, archive=False, admin=True)
    text += "\n[log]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in settings.items())
    if sink is not None:
        text += http_destination(
            sink.url, batch_max_messages=BATCH, concurrency=CONCURRENCY, batch_max_wait_secs=0.05, retry_max_secs=1.0
        )
    text += extra
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "gateway.toml"
    path.write_text(text)
    return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _gateways(tmp_path: Path, server: RedisServer, sink: Sink | None, n: int) -> list[GatewayProcess]:
    return [GatewayProcess(_config(tmp_path / f"g{i}", server, sink)).start() for i in range(n)]


def _audit(server: RedisServer) -> AuditReport:
    import trio

    async def books() -> AuditReport:
        async with open_log_reader(LogConfig(engine="redis", url=server.url), Path("unused")) as reader:
            return audit(await reader.books())

    return trio.run(books)


def _holder(server: RedisServer, gateways: list[GatewayProcess], cursor: str = "hook") -> GatewayProcess:
    """The gateway that holds ``cursor`` now (its lease names its pid)."""
    client = redis.Redis.from_url(server.url)
    try:
        lease = client.get("{gateway}:lease:" + cursor)
    finally:
        client.close()
    assert lease is not None, f"no gateway holds {cursor}"
    pid = int(lease.decode().split(":")[1])
    [holder] = [g for g in gateways if g.proc is not None and g.proc.pid == pid]
    return holder


def _stop(gateways: list[GatewayProcess]) -> None:
    for gateway in gateways:
        if gateway.proc is not None and gateway.proc.poll() is None:
            gateway.stop()


def _python_client(url: str, errors: list[Any]) -> Client:
    return Client(
        WRITE_KEY, host=url, max_retries=10, upload_size=50, on_error=lambda error, batch: errors.append(error)
    )


# -- the durability check -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "named"),
    [({"appendonly": "no"}, "appendonly"), ({"appendfsync": "everysec"}, "appendfsync")],
    ids=["no-aof", "everysec"],
)
def test_a_gateway_refuses_a_redis_weaker_than_log_synchronous(
    tmp_path: Path, settings: dict[str, str], named: str
) -> None:
    need_redis()
    server = RedisServer(tmp_path / "redis", **settings).start()
    try:
        config = _config(tmp_path / "g", server, None)
        run = subprocess.run(
            [sys.executable, "-m", "gateway", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode != 0
        output = run.stdout + run.stderr
        assert "redis_not_durable" in output and named in output, output[-2000:]
        if named == "appendfsync":  # "normal" accepts everysec
            relaxed = GatewayProcess(_config(tmp_path / "g2", server, None, synchronous="normal")).start()
            relaxed.stop()
    finally:
        server.stop()


# -- Redis away: 503 with Retry-After, /ready says why, both sides resume by themselves ---------------


def test_redis_down_answers_503_then_ingestion_and_delivery_resume(tmp_path: Path, redis_server: RedisServer) -> None:
    with Sink() as sink:
        [gateway] = _gateways(tmp_path, redis_server, sink, 1)
        try:
            with httpx.Client(base_url=gateway.url, auth=(WRITE_KEY, ""), timeout=30) as http:
                assert (
                    http.post("/v1/track", json={"userId": "u", "event": "e", "messageId": "before"}).status_code == 200
                )
                sink.wait_delivered({"before"})
                mark = len(gateway.lines)
                redis_server.kill()
                answer = http.post("/v1/track", json={"userId": "u", "event": "e", "messageId": "during"})
                assert answer.status_code == 503 and answer.headers["Retry-After"] == "5", answer.text
                gateway.wait_logged("log_unavailable", "log_commit_failed", after=mark)
                ready = http.get("/ready")
                assert ready.status_code == 503
                assert "log (redis_unreachable)" in ready.json()["reasons"][0], ready.json()
                mark = len(gateway.lines)
                redis_server.start()  # the same port and AOF
                gateway.wait_logged("log_available_again", after=mark)
                assert http.get("/ready").status_code == 200
                assert (
                    http.post("/v1/track", json={"userId": "u", "event": "e", "messageId": "after"}).status_code == 200
                )
                sink.wait_delivered({"before", "after"})  # delivery went on by itself
                assert "during" not in sink.delivered_ids()  # never acknowledged, never stored
        finally:
            _stop([gateway])


# -- several gateways on one Redis ----------------------------------------------------------------


def test_gateways_share_one_log_a_message_sent_to_two_is_stored_once(tmp_path: Path, redis_server: RedisServer) -> None:
    with Sink() as sink:
        gateways = _gateways(tmp_path, redis_server, sink, 3)
        try:
            errors: list[Any] = []
            sent: list[str] = []
            clients = [_python_client(g.url, errors) for g in gateways]
            for i in range(300):
                for n, client in enumerate(clients):
                    ok, message = client.track(f"user-{i % 7}", "Scaled", {"i": i, "via": n})
                    assert ok
                    sent.append(message["messageId"])
            for client in clients:
                client.flush()
                client.join()
            assert errors == []
            # The same messages (a client's retry to another gateway) to two gateways at once.
            twice = [{"type": "track", "userId": "u", "event": "Twice", "messageId": f"twice-{i}"} for i in range(50)]
            statuses: list[int] = []

            def post(url: str) -> None:
                with httpx.Client(auth=(WRITE_KEY, ""), timeout=30) as http:
                    statuses.append(http.post(f"{url}/v1/batch", json={"batch": twice}).status_code)

            threads = [threading.Thread(target=post, args=(g.url,)) for g in gateways[:2]]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert statuses == [200, 200]
            expected = set(sent) | {m["messageId"] for m in twice}
            wait_booked(_holder(redis_server, gateways), "hook")
            assert sink.delivered_ids() == expected
            assert sink.duplicates() == 0  # nobody died: each message went out once
            report = _audit(redis_server)
            assert report.balanced
            [hook] = report.destinations
            assert (hook.delivered, hook.pending, hook.expected) == (len(expected), 0, len(expected))
            [web] = report.sources
            assert (web.stored, web.duplicates) == (len(expected), 50)
        finally:
            _stop(gateways)


def test_kill_9_of_a_gateway_mid_delivery_loses_nothing_and_bounds_the_duplicates(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with Sink(delay=0.02) as sink:
        gateways = _gateways(tmp_path, redis_server, sink, 2)
        try:
            acked: list[str] = []
            with httpx.Client(auth=(WRITE_KEY, ""), timeout=30) as http:
                for i in range(100):  # ten batches through both gateways
                    items = [
                        {"type": "track", "userId": "u", "event": "e", "messageId": f"k{i}-{j}"} for j in range(10)
                    ]
                    assert http.post(f"{gateways[i % 2].url}/v1/batch", json={"batch": items}).status_code == 200
                    acked += [m["messageId"] for m in items]
            holder = _holder(redis_server, gateways)
            survivor = next(g for g in gateways if g is not holder)
            sink.wait_until(lambda: len(sink.delivered_ids()) >= 300, "300 delivered")
            assert holder.proc is not None
            holder.proc.send_signal(signal.SIGKILL)  # mid-delivery: the sink has a batch in flight
            holder.proc.wait(10)
            # The survivor takes the destination over once the dead one's hold runs out.
            sink.wait_delivered(set(acked), within_secs=60)
            wait_booked(survivor, "hook")
            duplicates = sink.duplicates()
            print(
                f"\n[scale-out] kill -9 mid-delivery: {duplicates} duplicate deliveries (bound {CONCURRENCY * BATCH})"
            )
            assert duplicates <= CONCURRENCY * BATCH  # what the dead gateway had in flight, at most
            [hook] = _audit(redis_server).destinations
            assert (hook.delivered, hook.pending, hook.unaccounted) == (1000, 0, 0)
        finally:
            _stop(gateways)


def test_redis_killed_and_restarted_from_its_aof_loses_nothing_acknowledged(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with Sink() as sink:
        gateways = _gateways(tmp_path, redis_server, sink, 2)
        acked: set[str] = set()
        lock = threading.Lock()
        killed = threading.Event()
        errors: list[BaseException] = []

        def send(gateway: GatewayProcess, name: str) -> None:
            try:
                with httpx.Client(auth=(WRITE_KEY, ""), timeout=30) as http:
                    for i in range(150):
                        mid = f"{name}-{i}"
                        while True:  # 503 while Redis is away: the client sends it again
                            answer = http.post(
                                f"{gateway.url}/v1/track", json={"userId": "u", "event": "e", "messageId": mid}
                            )
                            if answer.status_code == 200:
                                break
                            assert answer.status_code == 503, answer.text
                            killed.wait(30)
                        with lock:
                            acked.add(mid)
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=send, args=(g, f"c{n}")) for n, g in enumerate(gateways)]
        try:
            for thread in threads:
                thread.start()
            sink.wait_until(lambda: len(sink.delivered_ids()) >= 60, "60 delivered")
            redis_server.kill()  # SIGKILL mid-traffic: only what the AOF holds comes back
            with lock:
                acked_before = set(acked)
            redis_server.start()
            killed.set()
            for thread in threads:
                thread.join(120)
            assert errors == []
            assert len(acked) == 300 and acked_before <= acked
            wait_booked(_holder(redis_server, gateways), "hook")
            assert acked <= sink.delivered_ids()
            report = _audit(redis_server)
            [hook] = report.destinations
            assert report.balanced and hook.pending == 0
            assert report.sources[0].stored == 300
        finally:
            _stop(gateways)


def test_a_reload_on_one_gateway_does_not_disturb_the_others(tmp_path: Path, redis_server: RedisServer) -> None:
    with Sink() as sink:
        gateways = _gateways(tmp_path, redis_server, sink, 2)
        try:
            holder = _holder(redis_server, gateways)
            other = next(g for g in gateways if g is not holder)
            statuses: list[int] = []
            ids: list[str] = []
            with httpx.Client(auth=(WRITE_KEY, ""), timeout=30) as http:
                for i in range(40):
                    if i == 10:  # the other gateway changes its destination's settings: its worker restarts
                        path = other.config_path
                        path.write_text(path.read_text().replace(f"concurrency = {CONCURRENCY}", "concurrency = 3"))
                        assert reload(other)["event"] == "config_reloaded"
                    if i == 20:  # and the holder reloads too: its worker lets go, another may take over
                        path = holder.config_path
                        path.write_text(path.read_text().replace(f"concurrency = {CONCURRENCY}", "concurrency = 3"))
                        assert reload(holder)["event"] == "config_reloaded"
                    for gateway in gateways:
                        mid = f"r{i}-{gateway.proc.pid if gateway.proc else 0}"
                        statuses.append(
                            http.post(
                                f"{gateway.url}/v1/track", json={"userId": "u", "event": "e", "messageId": mid}
                            ).status_code
                        )
                        ids.append(mid)
            assert statuses == [200] * 80
            sink.wait_delivered(set(ids))
            wait_booked(_holder(redis_server, gateways), "hook")
            assert sink.duplicates() == 0  # a reload lets go after the batches in flight landed
            [hook] = _audit(redis_server).destinations
            assert (hook.delivered, hook.pending, hook.unaccounted) == (80, 0, 0)
            for gateway in gateways:
                assert not [line for line in gateway.lines if '"level": "error"' in line], gateway.lines[-20:]
        finally:
            _stop(gateways)


# -- every core of one machine: several gateways on one listen address ------------------------------


def test_gateways_with_reuse_port_share_one_listen_address(tmp_path: Path, redis_server: RedisServer) -> None:
    from tests.sink import free_port

    port = free_port()

    def config(name: str, reuse: bool) -> Path:
        path = _config(tmp_path / name, redis_server, None)
        text = path.read_text().replace('listen = "127.0.0.1:0"\ndata_dir', f'listen = "127.0.0.1:{port}"\ndata_dir', 1)
        path.write_text(text.replace("[server]\n", f"[server]\nreuse_port = {'true' if reuse else 'false'}\n", 1))
        return path

    gateways = [GatewayProcess(config(f"g{i}", True)).start() for i in range(2)]
    try:
        assert {g.url for g in gateways} == {f"http://127.0.0.1:{port}"}
        # A gateway without reuse_port cannot take the address (the kernel checks both sides).
        lone = subprocess.run(
            [sys.executable, "-m", "gateway", "run", "--config", str(config("lone", False))],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert lone.returncode != 0 and "cannot listen" in lone.stdout + lone.stderr
        ids = []
        for i in range(40):  # a connection each: the kernel spreads them over both gateways
            with httpx.Client(auth=(WRITE_KEY, ""), timeout=30) as http:
                answer = http.post(
                    f"{gateways[0].url}/v1/track", json={"userId": "u", "event": "e", "messageId": f"p{i}"}
                )
                assert answer.status_code == 200
                ids.append(f"p{i}")
        gateways[0].stop()  # the other keeps serving the address alone
        with httpx.Client(auth=(WRITE_KEY, ""), timeout=30) as http:
            for i in range(5):
                answer = http.post(
                    f"{gateways[1].url}/v1/track", json={"userId": "u", "event": "e", "messageId": f"q{i}"}
                )
                assert answer.status_code == 200
        report = _audit(redis_server)
        assert report.sources[0].stored == 45
    finally:
        _stop(gateways)
