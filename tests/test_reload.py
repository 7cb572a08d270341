"""Hot reload: build first, swap between requests, keep what did not change, refuse bad configs."""

from __future__ import annotations

import math
import os
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
import trio
import trio.testing

from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.plugins import Registry
from gateway.runtime.daemon import serve_gateway
from gateway.runtime.gateway import Gateway
from gateway.runtime.reload import watch_for_reloads
from tests.gatewayproc import WRITE_KEY, GatewayProcess, config_text, read_jsonl, reload, wait_booked


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def post(url: str, key: str, message_id: str) -> int:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{url}/v1/track", auth=(key, ""), json={"userId": "u", "event": "e", "messageId": message_id}
        )
        return response.status_code


async def delivered(gateway: Gateway, *destinations: str) -> None:
    """Wait until the destinations booked every message stored so far (their saved cursors)."""
    head = gateway.log.head()
    with trio.fail_after(20):
        for name in destinations:
            await gateway.destinations[name].worker.wait_cursor(head)


async def reloads_ended(gateway: Gateway, count: int) -> None:
    """Wait until ``count`` reloads ended (applied or refused) since the gateway started."""
    with trio.fail_after(10):
        await gateway.wait_reloads(count)


async def refused(gateway: Gateway, path: Path, registry: Registry) -> ConfigError:
    """Apply the config file as it is now, which the gateway must refuse; returns the refusal."""
    with pytest.raises(ConfigError) as refusal:
        await gateway.apply(load_config(path, registry))
    return refusal.value


class Served(NamedTuple):
    gateway: Gateway
    path: Path  # its config file
    base: str  # what the file held at start
    nursery: trio.Nursery  # for what a test runs beside it (cancelled at the end)


@asynccontextmanager
async def served(tmp_path: Path, registry: Registry, *, listen: str | None = None) -> AsyncIterator[Served]:
    """The gateway on a fresh config in ``tmp_path``, served (no reload watcher: the tests reload
    by hand or start one) until the block ends; then stopped as a SIGTERM would stop it, and
    whatever the test started beside it cancelled."""
    path = tmp_path / "gateway.toml"
    base = config_text(tmp_path, listen=listen or f"127.0.0.1:{free_port()}")
    path.write_text(base)
    stop, stopped = trio.Event(), trio.Event()

    async def serve(task_status: trio.TaskStatus[Gateway]) -> None:
        try:
            config = load_config(path, registry)
            await serve_gateway(config, registry, shutdown_trigger=stop.wait, watch=False, task_status=task_status)
        finally:
            stopped.set()

    async with trio.open_nursery() as nursery:
        gateway: Gateway = await nursery.start(serve)
        yield Served(gateway, path, base, nursery)
        stop.set()
        await stopped.wait()
        nursery.cancel_scope.cancel()


async def test_sighup_reloads_from_the_moment_the_watcher_reports_started(tmp_path: Path, registry: Registry) -> None:
    """SIGHUP's default action ends the process: a reload sent right after the gateway said it
    was ready (it happened here: the fifty-rewrites test's first SIGHUP killed the daemon about
    once in twenty runs on a loaded machine) must find its handler in place."""
    async with served(tmp_path, registry) as (gateway, _, _, nursery):
        for _ in range(10):  # trio's scheduling order varies: give a lost race ten chances
            async with trio.open_nursery() as watching:
                await watching.start(watch_for_reloads, gateway)
                # no checkpoint since: the handler must already be trio's, not the default
                assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN, None)
                watching.cancel_scope.cancel()
        await nursery.start(watch_for_reloads, gateway)
        os.kill(os.getpid(), signal.SIGHUP)
        await reloads_ended(gateway, 1)
        assert gateway.reloads == {"ok": 1, "failed": 0}


async def test_the_file_watcher_waits_for_a_write_to_finish(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that truncates the file and writes it in two goes (an editor saving in place, a
    config tool) is not reloaded halfway: the half file would be refused, with an error logged,
    or worse, a half that parses would be applied (here it would move server.data_dir)."""
    import gateway.runtime.reload as reload_module

    monkeypatch.setattr(reload_module, "POLL_INTERVAL_SECS", 0.02)
    # The writer's pause must stay shorter than this even when the machine is busy.
    monkeypatch.setattr(reload_module, "SETTLE_SECS", 0.5)
    acted = trio.Event()  # the watcher saw the change: it waits for the file to settle, or reads it
    read: list[bytes] = []
    real_settled, real_hash = reload_module._settled, reload_module._content_hash

    async def settled(path: Path, signature: reload_module.Signature) -> reload_module.Signature:
        acted.set()
        return await real_settled(path, signature)

    def content_hash(path: Path) -> str | None:  # in a worker thread
        read.append(path.read_bytes())
        trio.from_thread.run_sync(acted.set)
        return real_hash(path)

    monkeypatch.setattr(reload_module, "_settled", settled)
    async with served(tmp_path, registry) as (gateway, path, base, nursery):
        await nursery.start(watch_for_reloads, gateway)  # it has read the file as it is
        monkeypatch.setattr(reload_module, "_content_hash", content_hash)
        updated = base + '\n[sources.app]\nwrite_key = "app-key"\n'
        half = len(updated) // 3
        with path.open("w") as file:  # truncated now
            file.write(updated[:half])
            file.flush()
            with trio.fail_after(10):
                await acted.wait()
            file.write(updated[half:])
        await reloads_ended(gateway, 1)
        assert all(content == updated.encode() for content in read), "the watcher read a half-written file"
        assert gateway.reloads == {"ok": 1, "failed": 0}
        assert "app" in gateway.config.sources


async def test_the_file_watcher_sees_replacements_and_retries_a_failed_read(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by an adversarial test: a replacement that kept the size and copied the mtime (an
    atomic rename of a ``cp -p`` copy, a ConfigMap's symlink swap) was never noticed, and an edit
    made while the file was unreadable (chmod 000) was lost for good once it became readable."""
    import gateway.runtime.reload as reload_module

    monkeypatch.setattr(reload_module, "POLL_INTERVAL_SECS", 0.02)
    monkeypatch.setattr(reload_module, "SETTLE_SECS", 0.02)
    failures = [0]
    real_hash = reload_module._content_hash

    def hash_or_fail(path: Path) -> str | None:
        if failures[0]:
            failures[0] -= 1
            return None  # as for a file the daemon's user cannot read for now
        return real_hash(path)

    monkeypatch.setattr(reload_module, "_content_hash", hash_or_fail)

    async with served(tmp_path, registry) as (gateway, path, base, nursery):
        await nursery.start(watch_for_reloads, gateway)  # it has read the file as it is
        # Same size, same mtime, another file: only its inode tells.
        copy = tmp_path / "gateway.toml.new"
        copy.write_text(base + '\n[sources.app]\nwrite_key = "key-bbbb"\n')
        stat = path.stat()
        os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        os.replace(copy, path)
        await reloads_ended(gateway, 1)
        assert gateway.config.sources["app"].core.write_key == "key-bbbb"
        # The first read of the next edit fails; the edit is applied on a later poll.
        failures[0] = 1
        path.write_text(base + '\n[sources.app]\nwrite_key = "key-cccc"\n')
        await reloads_ended(gateway, 2)
        assert gateway.config.sources["app"].core.write_key == "key-cccc"
        assert gateway.reloads == {"ok": 2, "failed": 0}


async def test_a_write_between_loading_and_watching_is_not_missed(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found while moving these tests onto events: the watcher took the file's hash when it
    started, after startup had loaded the file, so an edit made in between (a config tool
    writing as the daemon starts) was taken for what was running, and never applied."""
    import gateway.runtime.reload as reload_module

    monkeypatch.setattr(reload_module, "POLL_INTERVAL_SECS", 0.02)
    monkeypatch.setattr(reload_module, "SETTLE_SECS", 0.02)
    path = tmp_path / "gateway.toml"
    base = config_text(tmp_path, listen=f"127.0.0.1:{free_port()}")
    path.write_text(base)
    config = load_config(path, registry)
    path.write_text(base + '\n[sources.app]\nwrite_key = "app-key"\n')  # while the daemon starts
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        gateway: Gateway = await nursery.start(
            lambda task_status: serve_gateway(
                config, registry, shutdown_trigger=stop.wait, watch=True, task_status=task_status
            )
        )
        try:
            assert "app" not in gateway.config.sources
            await reloads_ended(gateway, 1)
            assert "app" in gateway.config.sources
        finally:
            stop.set()


async def test_a_config_that_is_not_utf8_is_refused_by_a_reload_too(tmp_path: Path, registry: Registry) -> None:
    # A reload decoded with "replace": a Latin-1 write key became U+FFFD and was accepted, while
    # startup and check-config refused the same file.
    async with served(tmp_path, registry) as (gateway, path, base, _):
        path.write_bytes(base.encode() + b'\n[sources.app]\nwrite_key = "caf\xe9-key"\n')
        assert not await gateway.reload("test")
        assert "app" not in gateway.config.sources


async def test_reload_adds_swaps_and_refuses_without_touching_the_rest(tmp_path: Path, registry: Registry) -> None:
    async with served(tmp_path, registry) as (gateway, path, base, _):
        url = gateway.urls[0]
        archive_worker = gateway.destinations["archive"].worker
        assert await post(url, WRITE_KEY, "m1") == 200
        assert await post(url, "app-key", "m2") == 401

        second = tmp_path / "second"
        path.write_text(
            base
            + f"""

[sources.app]
write_key = "app-key"

[destinations.second]
type = "file"
path = "{second}"
batch_max_wait_secs = 0.01
"""
        )
        assert await gateway.reload("test")
        assert gateway.destinations["archive"].worker is archive_worker  # unchanged: untouched
        assert await post(url, "app-key", "m3") == 200
        await delivered(gateway, "second")
        assert [m["messageId"] for m in read_jsonl(second)] == ["m3"]  # added: starts at the end

        good = path.read_text()
        path.write_text(good + '\n[destinations.bad]\ntype = "nope"\n')
        assert not await gateway.reload("test")
        assert gateway.reloads == {"ok": 1, "failed": 1}
        assert await post(url, "app-key", "m4") == 200  # the old config keeps serving

        new_port = free_port()
        old_listen = gateway.config.server.listen
        old_listener = gateway.listeners[("http", old_listen)]
        path.write_text(good.replace(old_listen, f"127.0.0.1:{new_port}"))
        assert await gateway.reload("test")
        new_url = f"http://127.0.0.1:{new_port}"
        assert await post(new_url, WRITE_KEY, "m5") == 200
        with trio.fail_after(10):
            await old_listener.done.wait()
        with pytest.raises(httpx.ConnectError):
            await post(url, WRITE_KEY, "m6")
        assert gateway.destinations["archive"].worker is archive_worker
        await delivered(gateway, "archive")
    assert [m["messageId"] for m in read_jsonl(tmp_path / "archive")] == ["m1", "m3", "m4", "m5"]


async def test_a_listener_moved_twice_keeps_serving(tmp_path: Path, registry: Registry) -> None:
    """Each listener used to run the app's lifespan: the old listener's shutdown then put a
    deadline on quart-trio's background nursery that the new one had opened, and when it passed
    the daemon crashed (ClosedResourceError from hypercorn's lifespan, 5 s after a move)."""
    first, second = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    async with served(tmp_path, registry, listen=first) as (gateway, path, base, _):
        moved_from = first
        for n, listen in enumerate((second, first, second)):
            old_listener = gateway.listeners[("http", moved_from)]
            path.write_text(base.replace(first, listen))
            assert await gateway.reload("test")
            with trio.fail_after(10):
                await old_listener.done.wait()
            # The old listener is down and left no deadline behind to end the serving nursery.
            background = getattr(gateway.app, "nursery", None)
            assert background is None or background.cancel_scope.deadline == math.inf
            assert await post(f"http://{listen}", WRITE_KEY, f"m{n}") == 200
            moved_from = listen
        await delivered(gateway, "archive")

    assert [m["messageId"] for m in read_jsonl(tmp_path / "archive")] == ["m0", "m1", "m2"]


async def test_a_listener_moved_to_another_host_on_the_same_port_keeps_serving(
    tmp_path: Path, registry: Registry
) -> None:
    """The new socket was bound while the old one still listened, and a wildcard and a specific
    address on one port conflict: the reload was refused as "address in use"."""
    port = free_port()
    first, everywhere = f"127.0.0.1:{port}", f"0.0.0.0:{port}"
    async with served(tmp_path, registry, listen=first) as (gateway, path, base, _):
        for n, (moved_from, listen) in enumerate(((first, everywhere), (everywhere, first))):
            old_listener = gateway.listeners[("http", moved_from)]
            path.write_text(base.replace(first, listen))
            assert await gateway.reload("test")
            assert set(gateway.listeners) == {("http", listen)}
            with trio.fail_after(10):
                await old_listener.done.wait()
            assert await post(f"http://{first}", WRITE_KEY, f"m{n}") == 200
        await delivered(gateway, "archive")
    assert [m["messageId"] for m in read_jsonl(tmp_path / "archive")] == ["m0", "m1"]


async def test_a_shared_listener_moved_on_the_same_port_keeps_serving_after_the_old_one_ends(
    tmp_path: Path, registry: Registry
) -> None:
    """With ``reuse_port`` the old listener closed its socket's descriptor a second time once its
    requests had ended; the new listener's socket had been given that number meanwhile, and
    stopped answering."""
    port = free_port()
    first, everywhere = f"127.0.0.1:{port}", f"0.0.0.0:{port}"
    async with served(tmp_path, registry, listen=first) as (gateway, path, base, _):
        shared = base.replace("[server]", "[server]\nreuse_port = true")
        path.write_text(shared)
        assert await gateway.reload("test")
        for n, (moved_from, listen) in enumerate(((first, everywhere), (everywhere, first))):
            old_listener = gateway.listeners[("http", moved_from)]
            path.write_text(shared.replace(first, listen))
            assert await gateway.reload("test")
            with trio.fail_after(10):
                await old_listener.done.wait()
            assert await post(f"http://{first}", WRITE_KEY, f"m{n}") == 200


async def test_a_move_on_the_same_port_that_cannot_bind_brings_the_old_listener_back(
    tmp_path: Path, registry: Registry
) -> None:
    port = free_port()
    first, elsewhere = f"127.0.0.1:{port}", f"192.0.2.1:{port}"  # TEST-NET-1: no address of this machine
    async with served(tmp_path, registry, listen=first) as (gateway, path, base, _):
        path.write_text(base.replace(first, elsewhere))
        refusal = await refused(gateway, path, registry)
        assert refusal.where == "server.listen" and f"cannot listen on {elsewhere}" in refusal.problem
        assert set(gateway.listeners) == {("http", first)} and gateway.urls == [f"http://{first}"]
        assert await post(f"http://{first}", WRITE_KEY, "m1") == 200


async def test_a_busy_port_is_refused_naming_the_listener_and_the_rest_stays(
    tmp_path: Path, registry: Registry
) -> None:
    # The refusal said "destinations: a destination failed to open: Exceptions from Trio
    # nursery (1 sub-exception)": the OSError came wrapped in an exception group.
    import socket

    first = f"127.0.0.1:{free_port()}"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = f"127.0.0.1:{busy.getsockname()[1]}"
        async with served(tmp_path, registry, listen=first) as (gateway, path, base, _):
            path.write_text(base.replace(first, taken))
            refusal = await refused(gateway, path, registry)
            assert refusal.where == "server.listen" and f"cannot listen on {taken}: [Errno 98]" in refusal.problem
            assert gateway.urls == [f"http://{first}"] and await post(f"http://{first}", WRITE_KEY, "m1") == 200
            # The graceful timeout applies to the running listeners from the next stop on (they
            # read the limits when they stop).
            path.write_text(base.replace("graceful_shutdown_secs = ", "graceful_shutdown_secs = 0.25 # "))
            assert await gateway.reload("test")
            assert gateway.connection_limits().graceful_shutdown_secs == 0.25


class _InlineReads:
    """``trio`` as gateway.runtime.gateway sees it, but with ``to_thread.run_sync`` run on the
    loop: a reload's steps (read, parse, apply) are then all on the loop, where the test sees
    how far each one got."""

    class to_thread:
        @staticmethod
        async def run_sync(fn: Any, *args: Any, **_: Any) -> Any:
            await trio.lowlevel.checkpoint()
            return fn(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(trio, name)


async def test_two_reloads_at_once_end_on_the_newer_file(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: a SIGHUP while the watcher was still applying an older file applied the
    newer one first, then the older one, which then ran for good. Here the first reload (the
    watcher's, of v1) is held inside its apply while the second (the operator's SIGHUP, of v2)
    goes as far as it can; then the first goes on. Without one-at-a-time reloads the second
    applies v2 meanwhile and v1 lands last."""
    import gateway.runtime.gateway as runtime

    monkeypatch.setattr(runtime, "trio", _InlineReads())
    steps: list[str] = []
    applying_v1, release_v1 = trio.Event(), trio.Event()

    async with served(tmp_path, registry) as (gateway, path, base, _):
        real_apply = gateway.apply

        async def apply(new: Any) -> None:
            version = "v1" if "v1" in new.sources else "v2"
            steps.append(f"apply {version}")
            if version == "v1":
                applying_v1.set()
                await release_v1.wait()  # a large file: v1 is still being applied
            await real_apply(new)
            steps.append(f"applied {version}")

        monkeypatch.setattr(gateway, "apply", apply)
        async with trio.open_nursery() as reloads:
            path.write_text(base + '\n[sources.v1]\nwrite_key = "v1key"\n')
            reloads.start_soon(gateway.reload, "file_changed")  # the watcher saw v1
            with trio.fail_after(10):
                await applying_v1.wait()
            path.write_text(base + '\n[sources.v2]\nwrite_key = "v2key"\n')
            reloads.start_soon(gateway.reload, "sighup")  # the operator's SIGHUP after writing v2
            await trio.testing.wait_all_tasks_blocked()  # the second reload got as far as it can
            release_v1.set()
        assert steps == ["apply v1", "applied v1", "apply v2", "applied v2"]
        assert "v2" in gateway.config.sources and "v1" not in gateway.config.sources
        assert gateway.reloads == {"ok": 2, "failed": 0}


async def test_a_port_out_of_range_is_refused_not_fatal(tmp_path: Path, registry: Registry) -> None:
    # 127.0.0.1:99999 passed the config check; hypercorn's bind raised OverflowError, not an
    # OSError, and the reload took the daemon down (found in review).
    first = f"127.0.0.1:{free_port()}"
    async with served(tmp_path, registry, listen=first) as (gateway, path, base, _):
        path.write_text(base.replace(first, "127.0.0.1:99999"))
        with pytest.raises(ConfigError, match="port of 0 to 65535"):
            load_config(path, registry)
        assert not await gateway.reload("test")
        assert await post(f"http://{first}", WRITE_KEY, "m1") == 200


def test_reload_needing_a_restart_is_refused(tmp_path: Path, registry: Registry) -> None:
    async def check() -> None:
        async with served(tmp_path, registry) as (gateway, path, base, _):
            path.write_text(base.replace("[sources.web]", '[log]\nsynchronous = "normal"\n\n[sources.web]'))
            assert not await gateway.reload("test")

    trio.run(check)


def test_fifty_rewrites_under_load_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    """The issue's bar: a client sends all along while the config is rewritten 50 times, valid
    and invalid versions alternating; no request fails, nothing is lost or delivered twice, and
    behaviour follows the valid versions."""
    path = tmp_path / "gateway.toml"
    base = config_text(tmp_path, admin=True)

    def version(i: int) -> str:
        if i % 2:  # invalid: a wrong type, an unknown plugin, a syntax error, an unknown key
            return [
                base + "\n[server]\n",
                base.replace("batch_max_wait_secs = 0.05", 'batch_max_wait_secs = "soon"'),
                base + '\n[destinations.x]\ntype = "nope"\n',
                base.replace("[sources.web]", "[sources.web]\ncolour = 1"),
            ][i // 2 % 4]
        probe = '\n[sources.probe]\nwrite_key = "probe-key"\n' if i % 4 == 0 else ""
        # Alternate a delivery setting too, so the archive worker restarts on those reloads.
        return base.replace("batch_max_wait_secs = 0.05", f"batch_max_wait_secs = 0.0{5 + i % 3}") + probe

    path.write_text(version(0))
    process = GatewayProcess(path).start()
    try:
        acked: list[str] = []
        failures: list[str] = []
        stop = threading.Event()
        progress = threading.Condition()  # notified at each acknowledgement

        def client(worker: int) -> None:
            with httpx.Client(auth=(WRITE_KEY, ""), timeout=10) as http:
                n = 0
                while not stop.is_set():
                    message_id = f"w{worker}-{n}"
                    response = http.post(
                        f"{process.url}/v1/track", json={"userId": "u", "event": "e", "messageId": message_id}
                    )
                    with progress:
                        if response.status_code == 200:
                            acked.append(message_id)
                        else:
                            failures.append(f"{response.status_code} {response.text}")
                        progress.notify_all()
                    n += 1

        threads = [threading.Thread(target=client, args=(w,)) for w in range(3)]
        for thread in threads:
            thread.start()
        try:
            for i in range(1, 51):
                path.write_text(version(i))
                answer = reload(process)
                assert answer["event"] == ("config_reload_refused" if i % 2 else "config_reloaded"), answer
                if i % 2 == 0:
                    probe = httpx.post(
                        f"{process.url}/v1/identify",
                        auth=("probe-key", ""),
                        json={"userId": "p", "messageId": f"probe-{i}"},
                    )
                    assert probe.status_code == (200 if i % 4 == 0 else 401), (i, probe.text)
                # Requests between every two reloads: a few more acknowledged before the next.
                with progress:
                    more = len(acked) + 3
                    assert progress.wait_for(lambda more=more: len(acked) >= more or failures, timeout=15), i
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert not failures, failures[:5]
        assert len(acked) > 200
        expected = set(acked) | {f"probe-{i}" for i in range(4, 51, 4)}
        wait_booked(process, "archive")
        delivered = [m["messageId"] for m in read_jsonl(tmp_path / "archive")]
        assert len(delivered) == len(set(delivered)), "a reload delivered something twice"
        assert set(delivered) == expected
        assert process.stop() == 0
    finally:
        process.kill()
