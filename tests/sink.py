"""A loopback HTTP sink for the ``http`` destination: records every message it is sent.

It answers ``POST`` bodies of the http destination (``{"batch": [...], "sentAt": ...}``) with
200, optionally after a delay, or with 503 while it is told to fail (``failing``), when a
request holds a ``poisoned`` messageId, or once on demand (``refuse_next``). Every message it
accepted is counted by ``messageId``: a message counts as delivered when the sink has read the
request and decided to answer 2xx, even if the gateway dies before it reads the answer, since
that is exactly the case that makes at-least-once delivery re-send.

Tests wait on what the sink saw with :meth:`Sink.wait_until` (woken at each request it
handles, never polling).
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the gateway's pooled client expects
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if len(body) < length:  # the gateway died while sending: nothing was delivered
            self.close_connection = True
            return
        self.server.sink._handle(self, body)

    def answer(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sink: Sink

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A killed gateway resets its connections mid-request; that is the point of the tests.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Sink:
    """``with Sink() as sink:`` serves on ``sink.url`` (127.0.0.1, a free port) in a thread."""

    def __init__(self, *, delay: float = 0.0, failing: bool = False) -> None:
        self.delay = delay
        self.failing = failing
        #: messageIds the sink refuses (503) any request containing, while they are in this set.
        self.poisoned: set[str] = set()
        #: messageIds the sink refuses for good (400) in any request containing them.
        self.rejected: set[str] = set()
        self._refuse_next: threading.Event | None = None
        self.lock = threading.Lock()
        self._handled = threading.Condition()  # notified after each request is counted
        self.counts: Counter[str] = Counter()  # messageId -> times accepted
        self.messages: dict[str, dict[str, Any]] = {}  # messageId -> last body accepted
        self.requests = 0  # 2xx answers
        self.refused_requests = 0  # 503 answers
        self.bad_requests = 0  # bodies that were not a batch of messages with messageIds
        #: Deletion notices (``{"type": "delete", "userId": ...}``) POSTed to ``delete_url``
        #: (the sink's URL + ``/delete``), answered 200 even while ``failing``.
        self.deletion_notices: list[dict[str, Any]] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.sink = self
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.delete_url = f"{self.url}/delete"
        self._thread: threading.Thread | None = None

    # -- control -------------------------------------------------------------------------------

    def start(self) -> Sink:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def refuse_next(self) -> threading.Event:
        """Answer the next batch with 503; the event is set once that answer is sent."""
        refused = threading.Event()
        with self.lock:
            self._refuse_next = refused
        return refused

    # -- reading what arrived ------------------------------------------------------------------

    def wait_until(self, condition: Callable[[], object], what: str, *, within_secs: float = 30.0) -> None:
        """Return once ``condition()`` holds, checked again after each request the sink handles.

        Raises:
            AssertionError: not within ``within_secs`` (naming ``what``, and what the sink saw).
        """
        with self._handled:
            if self._handled.wait_for(condition, timeout=within_secs):
                return
        raise AssertionError(
            f"sink: {what} not within {within_secs}s ({len(self.delivered_ids())} messages delivered, "
            f"{self.requests} requests accepted, {self.refused_requests} refused)"
        )

    def wait_delivered(self, ids: set[str] | list[str], *, within_secs: float = 30.0) -> None:
        """Return once every messageId in ``ids`` was delivered here."""
        wanted = set(ids)
        what = f"{len(wanted)} messages delivered"
        self.wait_until(lambda: wanted <= self.delivered_ids(), what, within_secs=within_secs)

    def wait_refused(self, requests: int, *, within_secs: float = 30.0) -> None:
        """Return once the sink has refused (503) at least ``requests`` requests in all."""
        what = f"{requests} refused requests"
        self.wait_until(lambda: self.refused_requests >= requests, what, within_secs=within_secs)

    def delivered_ids(self) -> set[str]:
        with self.lock:
            return set(self.counts)

    def duplicates(self) -> int:
        """Deliveries beyond the first, summed over every messageId."""
        with self.lock:
            return sum(n - 1 for n in self.counts.values())

    def total_deliveries(self) -> int:
        with self.lock:
            return sum(self.counts.values())

    # -- serving -------------------------------------------------------------------------------

    def _handle(self, handler: _Handler, body: bytes) -> None:
        if handler.path.endswith("/delete"):
            with self.lock:
                self.deletion_notices.append(json.loads(body))
            handler.answer(200, b'{"ok":true}')
            return
        try:
            self._answer(handler, body)
        finally:
            with self._handled:
                self._handled.notify_all()

    def _answer(self, handler: _Handler, body: bytes) -> None:
        if self.failing:
            with self.lock:
                self.refused_requests += 1
            handler.answer(503, b'{"error":"sink down"}')
            return
        try:
            payload = json.loads(body)
            batch = payload["batch"]
            ids = [str(m["messageId"]) for m in batch]
            if not isinstance(payload["sentAt"], str):
                raise TypeError("sentAt")
        except (ValueError, KeyError, TypeError):
            with self.lock:
                self.bad_requests += 1
            handler.answer(400, b'{"error":"not a batch"}')
            return
        if self.rejected.intersection(ids):
            handler.answer(400, b'{"error":"invalid message"}')
            return
        with self.lock:
            refuse_now, self._refuse_next = self._refuse_next, None
        if refuse_now is not None or self.poisoned.intersection(ids):
            with self.lock:
                self.refused_requests += 1
            try:
                handler.answer(503, b'{"error":"not now"}')
            finally:
                if refuse_now is not None:
                    refuse_now.set()
            return
        with self.lock:
            self.requests += 1
            for message_id, message in zip(ids, batch, strict=True):
                self.counts[message_id] += 1
                self.messages[message_id] = message
        if self.delay:
            time.sleep(self.delay)
        handler.answer(200, b'{"ok":true}')


def http_destination(url: str, *, name: str = "hook", **settings: object) -> str:
    """TOML for an ``http`` destination ``name`` posting to ``url``, with delivery ``settings``
    (``batch_max_messages=20`` becomes ``batch_max_messages = 20``)."""
    lines = [f"[destinations.{name}]", 'type = "http"', f'url = "{url}"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    return "\n" + "\n".join(lines) + "\n"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, so a restarted gateway can
    come back on the same address with the same config."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
