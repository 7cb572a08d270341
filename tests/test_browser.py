"""Websites through a real browser: headless Debian Chromium (driven by Playwright) loads pages
from another origin than the gateway, and what they send must reach the file destination once.

Issue 3 §4: (a) the official snippet with the analytics.js bundle and settings served by the
gateway; (b) ``AnalyticsBrowser.load`` from the npm package (``tests/clients/browser``), standard
and batching delivery; (c) the Pixel API from an ``<img>`` and ``ajs_*`` landing pages (analytics.js
and ``/v1/qs.js``); (d) CORS: a disallowed origin is refused and a 429 is retried after its
``Retry-After``; (e) the ``/v1/qs/r`` redirect allowlist over plain HTTP.

Chromium runs with the flags of clients.md §5: its resolver maps every name but localhost to
NOTFOUND, so nothing can leave loopback, and each test also checks that no page even tried: every
request Playwright reports, and every request in Chromium's own net log (which also has what a
page sends while it unloads, which no page API reports).
"""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from tests.browser.pagesrv import PageServer
from tests.gatewayproc import WRITE_KEY, GatewayProcess, config_text, read_jsonl, wait_booked

HERE = Path(__file__).parent
CLIENT_DIR = HERE / "clients" / "browser"
CACHE_DIR = HERE / "browser" / ".cache"
ANALYTICS_NEXT = "@segment/analytics-next"
ANALYTICS_NEXT_VERSION = "1.84.3"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
BATCHING = {"Segment.io": {"deliveryStrategy": {"strategy": "batching", "config": {"size": 10, "timeout": 500}}}}
TYPE_PATHS = {"page": "/v1/p", "identify": "/v1/i", "track": "/v1/t", "group": "/v1/g", "alias": "/v1/a"}


# --- fixtures: analytics.js, the npm package, Chromium, the site, the gateway ----------------


@pytest.fixture(scope="session")
def analytics_js_assets() -> Path:
    """``<cache>/assets``, filled once by the gateway's own install step (which runs ``npm pack``)."""
    version_file = CACHE_DIR / "assets" / "analytics-next" / "VERSION"
    wanted = f"{ANALYTICS_NEXT}@{ANALYTICS_NEXT_VERSION}"
    if not (version_file.is_file() and version_file.read_text().strip() == wanted):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway_source_tracking_api.analytics_js",
                "--data-dir",
                str(CACHE_DIR),
                "--version",
                ANALYTICS_NEXT_VERSION,
            ],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"installing analytics.js failed (it needs npm):\n{result.stdout}\n{result.stderr}")
    assert (version_file.parent / "standalone.js").is_file()
    return CACHE_DIR / "assets"


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """``tests/clients/browser/node_modules`` with ``@segment/analytics-next``, from its lockfile."""
    package = CLIENT_DIR / "node_modules" / "@segment" / "analytics-next"
    if not (package / "dist" / "umd" / "index.js").is_file():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail(f"{CLIENT_DIR}/node_modules is missing and `npm` is not on PATH to install it")
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=CLIENT_DIR,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"`npm ci` failed in {CLIENT_DIR}:\n{result.stdout}\n{result.stderr}")
    version = json.loads((package / "package.json").read_text())["version"]
    assert version == ANALYTICS_NEXT_VERSION, version
    return CLIENT_DIR / "node_modules"


@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        pytest.fail(f"the browser tests need Debian's Chromium at {CHROMIUM}: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def site(node_modules: Path) -> Iterator[PageServer]:
    """The website: pages and the npm build, on a loopback port of its own (its own origin)."""
    server = PageServer(node_modules).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def other_site(node_modules: Path) -> Iterator[PageServer]:
    """A second website, on another origin."""
    server = PageServer(node_modules).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_gateway(tmp_path: Path, analytics_js_assets: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Starts the daemon with ``[sources.web]`` options, the installed analytics.js and a file
    destination writing to ``tmp_path/archive``."""
    started: list[GatewayProcess] = []

    def start(source_options: str = "") -> GatewayProcess:
        (tmp_path / "assets").symlink_to(analytics_js_assets, target_is_directory=True)
        archive = f"""
[destinations.archive]
type = "file"
path = "{tmp_path / "archive"}"
batch_max_wait_secs = 0.05
"""
        config_path = tmp_path / "gateway.toml"
        config_path.write_text(config_text(tmp_path, archive=False, admin=True, extra=source_options + archive))
        gateway = GatewayProcess(config_path)
        started.append(gateway)
        return gateway.start()

    yield start
    for gateway in started:
        gateway.kill()


# --- recording what the browser does ---------------------------------------------------------


@dataclass
class Seen:
    """One request as the browser's network stack saw it (Chrome DevTools protocol): preflights
    included, with the raw response status and headers even when CORS hid them from the page."""

    id: str
    method: str = ""
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    sent: float = 0.0  # browser's monotonic clock, seconds
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    answered: float | None = None
    failure: str | None = None
    cors_error: str | None = None
    done: bool = False  # loading finished or failed

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    def json(self) -> Any:
        assert self.body is not None, self
        return json.loads(self.body)


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


class Browsing:
    """A fresh browser context (no cookies, no localStorage) and page, every request recorded:
    ``urls`` by Playwright for the whole context, ``seen`` by the page's network stack."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.urls: list[str] = []
        self.seen: list[Seen] = []
        self.console: list[str] = []
        self.context.on("request", lambda request: self.urls.append(request.url))
        self.page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        self.page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))

        by_id: dict[str, Seen] = {}

        def get(params: dict[str, Any]) -> Seen:
            return by_id.setdefault(params["requestId"], Seen(params["requestId"]))

        def will_be_sent(params: dict[str, Any]) -> None:
            seen, request = get(params), params["request"]
            seen.method, seen.url, seen.sent = request["method"], request["url"], params["timestamp"]
            seen.headers = {**_lower(request["headers"]), **seen.headers}
            seen.body = request.get("postData")
            self.seen.append(seen)

        def sent_extra(params: dict[str, Any]) -> None:
            get(params).headers.update(_lower(params["headers"]))

        def response_extra(params: dict[str, Any]) -> None:
            seen = get(params)
            seen.status, seen.response_headers = params["statusCode"], _lower(params["headers"])

        def response(params: dict[str, Any]) -> None:
            seen = get(params)
            seen.answered = params["timestamp"]
            if seen.status is None:
                seen.status = params["response"]["status"]
                seen.response_headers = _lower(params["response"]["headers"])

        def finished(params: dict[str, Any]) -> None:
            get(params).done = True

        def failed(params: dict[str, Any]) -> None:
            seen = get(params)
            seen.failure = params["errorText"]
            seen.cors_error = (params.get("corsErrorStatus") or {}).get("corsError")
            seen.done = True

        cdp = self.context.new_cdp_session(self.page)
        cdp.on("Network.requestWillBeSent", will_be_sent)
        cdp.on("Network.requestWillBeSentExtraInfo", sent_extra)
        cdp.on("Network.responseReceivedExtraInfo", response_extra)
        cdp.on("Network.responseReceived", response)
        cdp.on("Network.loadingFinished", finished)
        cdp.on("Network.loadingFailed", failed)
        cdp.send("Network.enable")
        self.cdp = cdp

    def response_body(self, seen: Seen) -> str:
        """The body of an answer the page got (while the page that asked is still open)."""
        result = self.cdp.send("Network.getResponseBody", {"requestId": seen.id})
        return base64.b64decode(result["body"]).decode() if result["base64Encoded"] else result["body"]

    def goto(self, url: str) -> None:
        self.page.goto(url, wait_until="load")

    def pump(self, seconds: float) -> None:
        """Let the page run (and Playwright deliver its events) for ``seconds``."""
        self.page.wait_for_timeout(seconds * 1000)

    def until(self, predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"{what} not met within {timeout}s\n{self.report()}")
            self.pump(0.05)

    def settle(self, base: str) -> list[Seen]:
        """Wait until every request the page sent to ``base`` so far has finished (answered or
        failed); return them. A retry only follows a failure, which then shows."""

        def finished() -> tuple[list[Seen]] | None:
            sent = self.to(base)
            return (sent,) if all(s.done for s in sent) else None

        [sent] = self.until(finished, what=f"every request to {base} finished")
        return sent

    def to(self, base: str, method: str | None = None) -> list[Seen]:
        """Requests sent to ``base`` (an origin), in order; preflights have method OPTIONS."""
        return [s for s in self.seen if s.url.startswith(base + "/") and method in (None, s.method)]

    def report(self) -> str:
        lines = [f"{s.method} {s.url} -> {s.status} {s.failure or ''} {s.cors_error or ''}".rstrip() for s in self.seen]
        return "requests:\n  " + "\n  ".join(lines) + "\nconsole:\n  " + "\n  ".join(self.console)


def _is_loopback(url: str) -> bool:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return parts.scheme in ("http", "https") and (host == "localhost" or host.startswith("127."))


def _page_requests_in_net_log(net_log: Path) -> list[str]:
    """URLs of every request a page made, from Chromium's net log. Chromium's own requests (the
    component updater and the like, initiator "not an origin") are left out: they are not the
    page's, and the resolver rules stop them anyway."""
    data = json.loads(net_log.read_text())
    names = {number: name for name, number in data["constants"]["logEventTypes"].items()}
    urls = []
    for event in data["events"]:
        params = event.get("params") or {}
        is_request = names.get(event["type"]) == "URL_REQUEST_START_JOB" and "url" in params
        if is_request and params.get("initiator") != "not an origin":
            urls.append(params["url"])
    return urls


class Web:
    """One Chromium for one test, writing a net log; ``open()`` gives fresh contexts, ``finish()``
    closes the browser and checks that nothing was sent outside loopback."""

    def __init__(self, playwright: Any, net_log: Path) -> None:
        self.net_log = net_log
        self.browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[*CHROMIUM_ARGS, f"--log-net-log={net_log}"],
        )
        self.opened: list[Browsing] = []
        self.finished = False

    def open(self) -> Browsing:
        self.opened.append(Browsing(self.browser))
        return self.opened[-1]

    def close(self) -> None:
        if not self.finished:
            self.finished = True
            self.browser.close()

    def finish(self) -> list[str]:
        """Close the browser; assert every request any page made went to loopback; return the
        URLs of the net log."""
        self.close()
        reported = [url for browsing in self.opened for url in browsing.urls]
        logged = _page_requests_in_net_log(self.net_log)
        assert reported and logged, "no request recorded"
        outside = [url for url in reported + logged if not _is_loopback(url)]
        assert outside == [], f"requests outside loopback: {outside}"
        return logged


@pytest.fixture
def web(playwright_driver: Any, tmp_path: Path) -> Iterator[Web]:
    chromium = Web(playwright_driver, tmp_path / "netlog.json")
    try:
        yield chromium
    finally:
        chromium.close()


# --- helpers ---------------------------------------------------------------------------------


def _stored(gateway: GatewayProcess, archive: Path) -> list[dict[str, Any]]:
    """Once the file destination booked everything the daemon stored, stop the daemon and return
    what the destination got (a stop finishes only the batches in flight)."""
    wait_booked(gateway, "archive")
    assert gateway.stop() == 0, "".join(gateway.lines)
    return read_jsonl(archive)


def _wait_stored(archive: Path, count: int, browser: Browsing, timeout: float = 15.0) -> None:
    browser.until(lambda: len(read_jsonl(archive)) >= count, timeout, f"{count} messages in the archive")


def _page_values(
    site: PageServer,
    gateway: GatewayProcess,
    *,
    options: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    on_load: str = "window.analytics.page();",
) -> None:
    site.values.update(
        GATEWAY=gateway.url,
        WRITE_KEY=WRITE_KEY,
        LOAD_OPTIONS=json.dumps(options or {}),
        LOAD_SETTINGS=json.dumps(settings or {"writeKey": WRITE_KEY, "cdnURL": gateway.url}),
        ON_LOAD=on_load,
        PIXEL_DATA="",
    )


def _wait_loaded(browser: Browsing, mode: str) -> None:
    if mode == "snippet":
        browser.until(
            lambda: browser.page.evaluate("() => window.analytics.initialized === true"),
            what="analytics.js initialized",
        )
    else:
        result = browser.page.evaluate("() => window.loadResult")
        assert result == "loaded", f"{result}\n{browser.report()}"


def _sent_events(requests: list[Seen]) -> dict[str, dict[str, Any]]:
    """The events the browser posted (standard or batched), by messageId."""
    events: dict[str, dict[str, Any]] = {}
    for seen in requests:
        if seen.method == "POST" and seen.body:
            body = seen.json()
            for event in body["batch"] if seen.path == "/v1/b" else [body]:
                events[event["messageId"]] = event
    return events


CALLS = """async () => {
  await window.analytics.identify("user-1", {email: "u1@example.com", plan: "pro"});
  await window.analytics.track("Button Clicked", {color: "red", n: 3});
  await window.analytics.group("group-1", {name: "Acme", employees: 12});
  await window.analytics.alias("user-1-new", "user-1");
  return navigator.userAgent;
}"""


# --- (a) the official snippet, (b) AnalyticsBrowser.load from npm ---------------------------


@pytest.mark.parametrize("strategy", ["standard", "batching"])
@pytest.mark.parametrize("mode", ["snippet", "npm"])
def test_every_call_arrives_once(
    mode: str,
    strategy: str,
    start_gateway: Callable[..., GatewayProcess],
    site: PageServer,
    web: Web,
    tmp_path: Path,
) -> None:
    gateway = start_gateway()
    _page_values(site, gateway, options={"integrations": BATCHING} if strategy == "batching" else {})
    browser = web.open()
    page_url = site.url(f"{mode}.html")
    browser.goto(page_url)
    _wait_loaded(browser, mode)
    user_agent = browser.page.evaluate(CALLS)

    archive = tmp_path / "archive"
    _wait_stored(archive, 5, browser)
    to_gateway = browser.settle(gateway.url)

    # The settings (and, for the snippet, the bundle) came from the gateway. The settings keep
    # every browser off the vendor's servers: apiHost without scheme, metrics off.
    [settings] = [s for s in to_gateway if s.method == "GET" and s.path.endswith("/settings")]
    assert (settings.path, settings.status) == (f"/v1/projects/{WRITE_KEY}/settings", 200), browser.report()
    cdn_settings = json.loads(browser.response_body(settings))
    segment_io = cdn_settings["integrations"]["Segment.io"]
    assert segment_io["apiKey"] == WRITE_KEY
    assert (segment_io["apiHost"], segment_io["protocol"]) == (urlsplit(gateway.url).netloc + "/v1", "http")
    assert cdn_settings["metrics"]["sampleRate"] == 0
    bundle = [(s.path, s.status) for s in to_gateway if s.path.endswith("analytics.min.js")]
    assert bundle == ([(f"/analytics.js/v1/{WRITE_KEY}/analytics.min.js", 200)] if mode == "snippet" else [])

    # Each event posted once and answered 200 with CORS headers (a lost CORS header shows up
    # here as a failure and a retry), preflights allowing what analytics.js sends.
    posts = [s for s in to_gateway if s.method == "POST"]
    assert [(s.status, s.failure) for s in posts] == [(200, None)] * len(posts), browser.report()
    if strategy == "standard":
        assert Counter(s.path for s in posts) == Counter(TYPE_PATHS.values()), browser.report()
    else:
        assert {s.path for s in posts} == {"/v1/b"}, browser.report()
        assert sum(len(s.json()["batch"]) for s in posts) == 5, browser.report()
    for seen in to_gateway:
        if seen.path.endswith("analytics.min.js"):
            continue  # a classic <script>: no CORS involved
        assert seen.response_headers.get("access-control-allow-origin") in (site.origin, "*"), seen
    preflights = [s for s in to_gateway if s.method == "OPTIONS"]
    assert preflights, browser.report()
    for seen in preflights:
        assert seen.status in (200, 204), seen
        allowed = {h.strip().lower() for h in seen.response_headers["access-control-allow-headers"].split(",")}
        assert "authorization" in allowed, seen
    for seen in posts:
        exposed = {h.strip().lower() for h in seen.response_headers["access-control-expose-headers"].split(",")}
        assert "retry-after" in exposed, seen
    web.finish()

    # The file destination got each call exactly once, as the browser sent it.
    stored = _stored(gateway, archive)
    assert sorted(m["type"] for m in stored) == sorted(TYPE_PATHS), stored
    sent = _sent_events(posts)
    assert sorted(m["messageId"] for m in stored) == sorted(sent)
    for message in stored:
        event = sent[message["messageId"]]
        for key in ("type", "userId", "anonymousId", "previousId", "event", "properties", "traits", "groupId"):
            assert message.get(key) == event.get(key), (key, message, event)
        assert message["originalTimestamp"] == event["timestamp"]
        assert message["messageId"].startswith("ajs-next-"), message
        assert "writeKey" not in message
        context = message["context"]
        assert context["userAgent"] == user_agent
        assert context["page"]["url"] == page_url, context
        assert context["page"]["path"] == f"/{mode}.html"
        assert context["library"] == {"name": "analytics.js", "version": f"next-{ANALYTICS_NEXT_VERSION}"}
        assert context["ip"] == "127.0.0.1"
    by_type = {m["type"]: m for m in stored}
    assert len({m["anonymousId"] for m in stored}) == 1
    assert by_type["page"]["properties"]["url"] == page_url
    assert (by_type["identify"]["userId"], by_type["identify"]["traits"]) == (
        "user-1",
        {"email": "u1@example.com", "plan": "pro"},
    )
    assert by_type["track"]["userId"] == "user-1"
    assert (by_type["track"]["event"], by_type["track"]["properties"]) == ("Button Clicked", {"color": "red", "n": 3})
    assert (by_type["group"]["groupId"], by_type["group"]["traits"]) == ("group-1", {"name": "Acme", "employees": 12})
    # analytics.js itself sends alias(to, from) after identify() with userId = previousId = the
    # identified user (clients.md §4.2), so only previousId is checked against the call.
    assert by_type["alias"]["previousId"] == "user-1"


def test_batching_flushes_at_page_unload(
    start_gateway: Callable[..., GatewayProcess],
    site: PageServer,
    web: Web,
    tmp_path: Path,
) -> None:
    """A batch still waiting for its timeout is sent (keepalive) when the visitor leaves the page."""
    gateway = start_gateway()
    slow_batches = {
        "Segment.io": {"deliveryStrategy": {"strategy": "batching", "config": {"size": 100, "timeout": 60_000}}}
    }
    _page_values(site, gateway, options={"integrations": slow_batches}, on_load="")
    browser = web.open()
    browser.goto(site.url("npm.html"))
    assert browser.page.evaluate("() => window.loadResult") == "loaded", browser.report()
    browser.page.evaluate('async () => { await window.analytics.track("Leaving", {step: 1}); }')
    # Unbatched, the event would be sent before track() resolves: before this later request.
    marker = site.url("landing.html") + "?after-track"
    browser.page.evaluate("async (url) => { await (await fetch(url)).text(); }", marker)
    browser.until(lambda: any(s.url == marker for s in browser.seen), what="the later request")
    assert browser.to(gateway.url, "POST") == [], browser.report()  # still buffered
    assert read_jsonl(tmp_path / "archive") == []
    browser.goto(site.url("landing.html"))  # away, to a page without ajs_* parameters
    archive = tmp_path / "archive"
    _wait_stored(archive, 1, browser)
    assert f"{gateway.url}/v1/b" in web.finish()
    stored = _stored(gateway, archive)
    assert [(m["type"], m["event"], m["properties"]) for m in stored] == [("track", "Leaving", {"step": 1})]


# --- (c) Pixel API and landing pages -------------------------------------------------------


def test_pixel_img_stores_the_track(
    start_gateway: Callable[..., GatewayProcess],
    site: PageServer,
    web: Web,
    tmp_path: Path,
) -> None:
    gateway = start_gateway()
    _page_values(site, gateway)
    message = {
        "writeKey": WRITE_KEY,
        "userId": "reader-1",
        "event": "Email Opened",
        "properties": {"subject": "Spring sale", "campaign": "spring-2026"},
    }
    site.values["PIXEL_DATA"] = base64.urlsafe_b64encode(json.dumps(message).encode()).decode().rstrip("=")
    browser = web.open()
    browser.goto(site.url("pixel.html"))
    # The <img> really got an image (the gateway answers a 1x1 GIF).
    assert browser.page.evaluate(
        "() => { const img = document.getElementById('pixel'); return [img.complete, img.naturalWidth]; }"
    ) == [True, 1]
    user_agent = browser.page.evaluate("() => navigator.userAgent")
    archive = tmp_path / "archive"
    _wait_stored(archive, 1, browser)
    browser.settle(gateway.url)
    web.finish()
    [pixel] = [s for s in browser.to(gateway.url) if "/v1/pixel/" in s.path]
    assert (pixel.status, pixel.response_headers.get("content-type")) == (200, "image/gif")

    [stored] = _stored(gateway, archive)
    assert stored["type"] == "track"
    assert (stored["userId"], stored["event"]) == ("reader-1", "Email Opened")
    assert stored["properties"] == message["properties"]
    assert stored["context"]["userAgent"] == user_agent
    assert "writeKey" not in stored


LANDING_QUERY = (
    "?ajs_uid=lead-42&ajs_event=Clicked%20Email&ajs_aid=anon-42"
    "&ajs_prop_emailCampaign=First+Touch&ajs_trait_name=Karl+Jr.&utm_source=newsletter"
)


@pytest.mark.parametrize("via", ["analytics.js", "qs.js"])
def test_landing_page_querystring(
    via: str,
    start_gateway: Callable[..., GatewayProcess],
    site: PageServer,
    web: Web,
    tmp_path: Path,
) -> None:
    gateway = start_gateway()
    _page_values(site, gateway)
    browser = web.open()
    page = "snippet.html" if via == "analytics.js" else "landing.html"
    browser.goto(site.url(page) + LANDING_QUERY)
    archive = tmp_path / "archive"
    expected = 3 if via == "analytics.js" else 2  # analytics.js also sends the snippet's page()
    _wait_stored(archive, expected, browser)
    browser.settle(gateway.url)
    user_agent = browser.page.evaluate("() => navigator.userAgent")
    web.finish()
    stored = _stored(gateway, archive)

    # analytics.js sends the two calls as parallel requests, so they may be stored in either order;
    # the call order shows in their timestamps.
    calls = sorted((m for m in stored if m["type"] in ("identify", "track")), key=lambda m: m["type"])
    assert [m["type"] for m in calls] == ["identify", "track"], stored
    identify, track = calls
    assert identify["userId"] == "lead-42"
    assert identify["anonymousId"] == "anon-42"
    assert identify["traits"] == {"name": "Karl Jr."}
    assert track["event"] == "Clicked Email"
    assert track["anonymousId"] == "anon-42"
    assert track["userId"] == "lead-42"
    assert track["properties"] == {"emailCampaign": "First Touch"}
    assert identify["originalTimestamp"] <= track["originalTimestamp"]
    for message in calls:
        assert message["context"]["userAgent"] == user_agent

    if via == "analytics.js":
        # The query string is handled by a lazy chunk, which the gateway serves too.
        chunks = [s for s in browser.to(gateway.url) if s.path.startswith("/analytics-next/bundles/queryString")]
        assert [s.status for s in chunks] == [200], browser.report()
        [page_call] = [m for m in stored if m["type"] == "page"]
        assert page_call["anonymousId"] == "anon-42"
        assert page_call["context"]["page"]["search"] == LANDING_QUERY
        assert len(stored) == 3
    else:
        assert len(stored) == 2
        beacons = [s for s in browser.to(gateway.url) if s.path == "/v1/qs"]
        assert len(beacons) == 1, browser.report()
        assert "utm_source" not in beacons[0].url  # only the ajs_* parameters are forwarded


# --- (d) CORS: disallowed origins, 429 + Retry-After ---------------------------------------


SNEAKY = """async ([gateway, writeKey]) => {
  const body = JSON.stringify({writeKey, userId: "intruder", event: "Sneaky", type: "track"});
  // "Simple" cross-origin requests: no preflight, so they reach the server whatever CORS says.
  await fetch(gateway + "/v1/t", {method: "POST", mode: "no-cors", body});
  return navigator.sendBeacon(gateway + "/v1/track", body);
}"""


def _no_cors_headers(seen: Seen) -> bool:
    return not any(name.startswith("access-control-") for name in seen.response_headers)


def test_disallowed_origin_is_refused_and_nothing_stored(
    start_gateway: Callable[..., GatewayProcess],
    site: PageServer,
    other_site: PageServer,
    web: Web,
    tmp_path: Path,
) -> None:
    gateway = start_gateway(f'allowed_origins = ["{site.origin}"]\n')
    archive = tmp_path / "archive"

    # 1. analytics.js on the other origin: the settings answer carries no CORS header, load fails.
    _page_values(other_site, gateway)
    refused = web.open()
    refused.goto(other_site.url("npm.html"))
    result = refused.page.evaluate("() => window.loadResult")
    assert result.startswith("failed"), result
    [settings] = refused.to(gateway.url, "GET")
    assert settings.path == f"/v1/projects/{WRITE_KEY}/settings"
    refused.until(lambda: settings.done, what="settings answered")
    assert _no_cors_headers(settings), settings
    assert settings.cors_error == "MissingAllowOriginHeader", settings

    # 2. Requests that skip the preflight reach the gateway, which must refuse them by origin.
    assert refused.page.evaluate(SNEAKY, [gateway.url, WRITE_KEY]) is True
    refused.until(lambda: [s.done for s in refused.to(gateway.url, "POST")] == [True, True], what="2 POSTs done")
    sneaky = refused.to(gateway.url, "POST")
    assert sorted(s.path for s in sneaky) == ["/v1/t", "/v1/track"]
    for seen in sneaky:
        assert seen.status == 403 and _no_cors_headers(seen), seen

    # 3. analytics.js given its settings inline (no settings fetch): the gateway refuses its
    # preflight, so the browser never sends the event.
    _page_values(
        other_site,
        gateway,
        on_load='window.analytics.track("Inline Settings");',
        settings={
            "writeKey": WRITE_KEY,
            "cdnURL": gateway.url,
            "cdnSettings": {
                "integrations": {
                    "Segment.io": {
                        "apiKey": WRITE_KEY,
                        "apiHost": urlsplit(gateway.url).netloc + "/v1",
                        "protocol": "http",
                    }
                }
            },
        },
    )
    inline = web.open()
    inline.goto(other_site.url("npm.html"))
    assert inline.page.evaluate("() => window.loadResult") == "loaded"
    inline.until(lambda: any(s.failure for s in inline.to(gateway.url, "POST")), what="a blocked /v1/t")

    # 4. The allowed origin, same gateway, same moment: stored.
    _page_values(site, gateway, on_load='window.analytics.track("Allowed Origin");')
    allowed = web.open()
    allowed.goto(site.url("npm.html"))
    assert allowed.page.evaluate("() => window.loadResult") == "loaded", allowed.report()
    _wait_stored(archive, 1, allowed)

    # analytics.js retries a refused POST: let the retries sent so far end (refused too) before
    # the browser closes, or one still waiting on its preflight has no outcome (seen once in CI).
    inline.settle(gateway.url)
    web.finish()  # the browser is gone: whatever the refused pages sent is all they sent
    preflights = inline.to(gateway.url, "OPTIONS")
    assert preflights and all(_no_cors_headers(s) for s in preflights), inline.report()
    for seen in inline.to(gateway.url, "POST"):
        assert seen.status is None and seen.cors_error, inline.report()  # never sent
    stored = _stored(gateway, archive)
    assert [(m["type"], m["event"]) for m in stored] == [("track", "Allowed Origin")], stored
    assert stored[0]["context"]["page"]["url"] == site.url("npm.html")


def test_429_is_retried_after_retry_after(
    start_gateway: Callable[..., GatewayProcess],
    site: PageServer,
    web: Web,
    tmp_path: Path,
) -> None:
    # One event every 2 s, bursts of 1: the second of two quick events gets 429 + Retry-After: 2.
    gateway = start_gateway("rate_limit_events_per_sec = 0.5\nrate_limit_burst = 1\n")
    _page_values(site, gateway, on_load='window.analytics.track("First"); window.analytics.track("Second");')
    browser = web.open()
    browser.goto(site.url("npm.html"))
    assert browser.page.evaluate("() => window.loadResult") == "loaded", browser.report()
    archive = tmp_path / "archive"
    _wait_stored(archive, 2, browser, timeout=20)
    browser.settle(gateway.url)
    web.finish()

    posts = browser.to(gateway.url, "POST")
    attempts: dict[str, list[Seen]] = {}
    for seen in posts:
        attempts.setdefault(seen.json()["messageId"], []).append(seen)
    assert len(attempts) == 2, browser.report()
    assert [s.status for s in posts].count(429) >= 1, browser.report()
    for tries in attempts.values():
        assert tries[-1].status == 200, browser.report()
        for before, after in itertools.pairwise(tries):
            assert before.status == 429, browser.report()
            retry_after = int(before.response_headers["retry-after"])
            assert retry_after >= 1
            assert before.answered is not None
            waited = after.sent - before.answered
            # A browser that cannot read Retry-After (not exposed by CORS) retries after 0.1-0.6 s.
            assert retry_after - 0.05 <= waited < retry_after + 3, (waited, retry_after, browser.report())
            assert after.headers.get("x-retry-count"), after.headers
            assert after.json()["_metadata"]["retryCount"] >= 1
    stored = _stored(gateway, archive)
    assert sorted(m["event"] for m in stored) == ["First", "Second"], stored
    assert sorted(m["messageId"] for m in stored) == sorted(attempts)


# --- (e) the click-redirect allowlist --------------------------------------------------------


ALLOWED_TARGETS = [
    "https://allowed.example/welcome?utm_campaign=spring&x=1",
    "http://allowed.example/",
    "https://shop.partner.example/p/42",
    "https://partner.example/",
]
REFUSED_TARGETS = [
    "https://evil.example/",
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "javascript:alert(1)",
    "JavaScript:alert(document.domain)//allowed.example",
    "data:text/html,<script>alert(1)</script>",
    "https://allowed.example@evil.example/",
    "https://allowed.example:443@evil.example/",
    "https://evil.example\\@allowed.example",
    "https://evil.example\\allowed.example",
    "https://allowed.example.evil.example/",
    "https://evilallowed.example/",
    "https://evilpartner.example/",
    "https:evil.example",
    "https:/evil.example",
    "https:///evil.example",
    " https://allowed.example/",
    "https://allowed.example\t.evil.example/",
    "https://allowed.example\n.evil.example/",
    "ftp://allowed.example/",
    "https://evil.example\u3002allowed.example",  # ideographic full stop: a browser reads evil.example.allowed...
    "https://evil.example\u3002partner.example",
    "",
    # Malformed: no browser can follow these, so they are not redirects to the allowed host either.
    "https://allowed.example\uff0f@evil.example",  # fullwidth solidus (NFKC: "/")
    "https://[allowed.example/",
    "https://allowed.example:evil.example/",  # not a port
    "https://allowed.example:99999/",
]
# Already percent-encoded as they appear in the query (the gateway decodes once).
REFUSED_RAW = [
    "https%3A%2F%2Fallowed.example%252F%40evil.example",  # -> https://allowed.example%2F@evil.example
    "https%3A%2F%2Fevil.example%255C%40allowed.example",  # -> https://evil.example%5C@allowed.example
    "https%3A%2F%2Fallowed.example%40evil.example",  # -> https://allowed.example@evil.example
    "https%253A%252F%252Fallowed.example",  # double-encoded: -> https%3A%2F%2Fallowed.example
    "%2F%2Fevil.example",  # -> //evil.example
    "%2F%5Cevil.example",  # -> /\evil.example
    "javascript%3Aalert(1)",
    "%6A%61%76%61%73%63%72%69%70%74:alert(1)",  # -> javascript:alert(1)
    "https://evil.example%23.allowed.example",  # -> https://evil.example#.allowed.example
    "https%3A%2F%2Fallowed.example%09.evil.example",  # -> tab inside the host
    "https%3A%2F%2Fallowed.example%00.evil.example",  # -> NUL inside the host
    "https%3A%2F%2Fevil.example%2523.partner.example",  # -> https://evil.example%23.partner.example
    "https%3A%2F%2Fevil.example%252F.partner.example",  # -> https://evil.example%2F.partner.example
]


def test_redirect_allowlist(start_gateway: Callable[..., GatewayProcess], tmp_path: Path) -> None:
    gateway = start_gateway('redirect_allowlist = ["allowed.example", ".partner.example"]\n')

    address = urlsplit(gateway.url)

    def click(n: int, encoded_url: str | None) -> tuple[int, str | None, str]:
        """The request line exactly as given (an HTTP client library would normalize it, and
        would refuse to even read some of the Locations under test)."""
        target = f"/v1/qs/r?writeKey={WRITE_KEY}&ajs_uid=clicker-{n}&ajs_event=Email+Clicked"
        if encoded_url is not None:
            target += f"&url={encoded_url}"
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
        try:
            connection.request("GET", target)
            response = connection.getresponse()
            return response.status, response.getheader("Location"), response.read().decode(errors="replace")
        finally:
            connection.close()

    for n, target in enumerate(ALLOWED_TARGETS):
        status, location, body = click(n, quote(target, safe=""))
        assert (status, location) == (302, target), (target, status, location, body)

    refused = [(target, quote(target, safe="")) for target in REFUSED_TARGETS]
    refused += [(raw, raw) for raw in REFUSED_RAW] + [("<no url>", None)]
    answers = {}
    for n, (target, encoded) in enumerate(refused, start=100):
        status, location, _ = click(n, encoded)
        answers[target] = (status, location)
    wrong = {target: answer for target, answer in answers.items() if answer != (400, None)}
    assert wrong == {}, f"expected 400 without Location, got: {wrong}"

    # The allowed clicks were recorded (identify + track each), and only they.
    stored = _stored(gateway, tmp_path / "archive")
    clicks = Counter(m["userId"] for m in stored if m["userId"].startswith("clicker-") and int(m["userId"][8:]) < 100)
    assert clicks == {f"clicker-{n}": 2 for n in range(len(ALLOWED_TARGETS))}, stored
