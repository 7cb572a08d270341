"""RudderStack's browser SDK, unmodified, in a real browser: headless Debian Chromium (Playwright)
loads a page from another origin with ``@rudderstack/analytics-js`` 3.34.1 from npm (the bundled
UMD build, served by the site itself, ``tests/clients/rudderstack``), its ``configUrl`` and
``dataPlaneUrl`` pointed at the gateway's ``/rudderstack``. The SDK must load its source config
from the gateway, send with each of its transports (one request per event, queue batches, beacon
batches), and every call must reach the file destination exactly once, as the SDK built it.
Nothing may leave loopback (Chromium's resolver and net log, as in ``tests/test_browser.py``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.browser.pagesrv import PageServer
from tests.gatewayproc import GatewayProcess, config_text, read_jsonl
from tests.test_browser import Browsing, Web, playwright_driver, web  # noqa: F401 (fixtures)

CLIENT_DIR = Path(__file__).parent / "clients" / "rudderstack"
SDK = "@rudderstack/analytics-js"
SDK_VERSION = "3.34.1"
RUDDER_KEY = "2AbRudderBrowserWriteKey"
TRANSPORTS = {
    "xhr": {},
    "batch": {"queueOptions": {"batch": {"enabled": True, "maxItems": 5, "flushInterval": 300}}},
    "beacon": {"useBeacon": True, "beaconQueueOptions": {"maxItems": 5, "flushQueueInterval": 300}},
}
CALLS = """async () => {
  const sent = [];
  const keep = (event) => sent.push(event);
  window.rudder.identify("user-1", {email: "u1@example.com", plan: "pro"}, {}, keep);
  window.rudder.track("Button Clicked", {color: "red", n: 3}, {}, keep);
  window.rudder.page("Docs", "Install", {section: "setup"}, {}, keep);
  window.rudder.group("group-1", {name: "Acme", employees: 12}, {}, keep);
  window.rudder.alias("user-1-new", "user-1", {}, keep);
  while (sent.length < 5) { await new Promise((done) => setTimeout(done, 10)); }
  return {sent: sent, userAgent: navigator.userAgent};
}"""


@pytest.fixture(scope="session")
def rudder_node_modules() -> Path:
    """``tests/clients/rudderstack/node_modules`` with the pinned SDK, from its lockfile."""
    package = CLIENT_DIR / "node_modules" / "@rudderstack" / "analytics-js"
    if not (package / "dist" / "npm" / "modern" / "bundled" / "umd" / "index.js").is_file():
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
    assert json.loads((package / "package.json").read_text())["version"] == SDK_VERSION
    return CLIENT_DIR / "node_modules"


@pytest.fixture
def rudder_site(rudder_node_modules: Path) -> Iterator[PageServer]:
    server = PageServer(rudder_node_modules).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    extra = f'\n[sources.site]\ntype = "rudderstack"\nwrite_key = "{RUDDER_KEY}"\n'
    config = tmp_path / "gateway.toml"
    config.write_text(config_text(tmp_path, extra=extra))
    process = GatewayProcess(config).start()
    try:
        yield process
    finally:
        process.kill()


def _load(browser: Browsing, site: PageServer, gateway: GatewayProcess, options: dict[str, Any]) -> str:
    site.values.update(
        WRITE_KEY=RUDDER_KEY,
        DATA_PLANE_URL=f"{gateway.url}/rudderstack",
        CONFIG_URL=f"{gateway.url}/rudderstack",
        LOAD_OPTIONS=json.dumps(options),
    )
    url = site.url("rudderstack.html")
    browser.goto(url)
    browser.until(lambda: browser.page.evaluate("() => window.rudderReady"), what="the RudderStack SDK ready")
    return url


def _events_posted(posts: list[Any]) -> dict[str, dict[str, Any]]:
    """The events in the bodies the browser posted (when the browser reports the body)."""
    events: dict[str, dict[str, Any]] = {}
    for seen in posts:
        if seen.body:
            body = seen.json()
            for event in body.get("batch", [body]):
                events[event["messageId"]] = event
    return events


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_the_rudderstack_sdk_loads_its_config_and_every_call_arrives_once(
    transport: str,
    gateway: GatewayProcess,
    rudder_site: PageServer,
    web: Web,  # noqa: F811 (the imported fixture)
    tmp_path: Path,
) -> None:
    browser = web.open()
    page_url = _load(browser, rudder_site, gateway, TRANSPORTS[transport])
    result = browser.page.evaluate(CALLS)
    sent = {event["messageId"]: event for event in result["sent"]}
    archive = tmp_path / "archive"
    browser.until(lambda: len(read_jsonl(archive)) >= 5, what="5 messages in the archive")
    # The browser reports a request to the page's DevTools session in its own time (a beacon's
    # can come after the gateway stored it): wait for the answers to every post it made.
    browser.until(
        lambda: (posted := browser.to(gateway.url, "POST")) and all(s.status is not None for s in posted),
        what="the browser's report of its posts and their answers",
    )
    to_gateway = browser.to(gateway.url)

    # The source config came from the gateway, as the SDK asks for it.
    [config] = [s for s in to_gateway if s.method == "GET"]
    assert (config.path, config.status) == ("/rudderstack/sourceConfig/", 200), browser.report()
    query = parse_qs(urlsplit(config.url).query)
    assert (query["writeKey"], query["v"]) == ([RUDDER_KEY], [SDK_VERSION])
    assert config.response_headers.get("access-control-allow-origin") == rudder_site.origin

    # Each transport posted where RudderStack's data plane takes it, and got 200 with CORS.
    posts = [s for s in to_gateway if s.method == "POST"]
    assert posts and all(s.status == 200 for s in posts), browser.report()
    paths = {s.path for s in posts}
    if transport == "xhr":
        assert sorted(s.path for s in posts) == sorted(
            f"/rudderstack/v1/{t}" for t in ("identify", "track", "page", "group", "alias")
        ), browser.report()
    elif transport == "batch":
        assert paths == {"/rudderstack/v1/batch"}, browser.report()
    else:
        assert paths == {"/rudderstack/beacon/v1/batch"}, browser.report()
        assert all(parse_qs(urlsplit(s.url).query)["writeKey"] == [RUDDER_KEY] for s in posts)
    if transport != "beacon":  # XHRs carry the write key as Basic auth, so they are preflighted
        for seen in posts:
            assert seen.headers["authorization"].startswith("Basic "), seen
            assert seen.response_headers.get("access-control-allow-origin") == rudder_site.origin, seen
        preflights = [s for s in to_gateway if s.method == "OPTIONS"]
        assert preflights and all(s.status in (200, 204) for s in preflights), browser.report()
    posted = _events_posted(posts)
    assert set(posted) <= set(sent)
    logged = web.finish()
    assert any(url.startswith(f"{gateway.url}/rudderstack/") for url in logged)

    # The file destination got each call once, as the SDK built it.
    assert gateway.stop() == 0, "".join(gateway.lines)
    stored = read_jsonl(archive)
    assert sorted(m["messageId"] for m in stored) == sorted(sent), (stored, sent)
    for message in stored:
        event = sent[message["messageId"]]
        for key in ("type", "anonymousId", "event", "properties", "groupId", "previousId", "name", "category"):
            assert message.get(key) == event.get(key), (key, message, event)
        assert message.get("userId") == (event["userId"] or None)  # "" (not identified yet): no userId
        assert message["originalTimestamp"] == event["originalTimestamp"]
        assert message["channel"] == "web"
        context = message["context"]
        assert context["library"] == {"name": "RudderLabs JavaScript SDK", "version": SDK_VERSION, "variant": "bundled"}
        assert context["userAgent"] == result["userAgent"]
        assert context["page"]["url"] == page_url
        assert context["ip"] == "127.0.0.1"
    by_type = {m["type"]: m for m in stored}
    assert len({m["anonymousId"] for m in stored}) == 1
    assert by_type["identify"]["userId"] == "user-1"
    assert by_type["identify"]["traits"] == {"email": "u1@example.com", "plan": "pro"}
    assert (by_type["track"]["event"], by_type["track"]["properties"]) == ("Button Clicked", {"color": "red", "n": 3})
    assert (by_type["page"]["category"], by_type["page"]["name"]) == ("Docs", "Install")
    assert by_type["page"]["properties"]["section"] == "setup"
    assert (by_type["group"]["groupId"], by_type["group"]["traits"]) == ("group-1", {"name": "Acme", "employees": 12})
    assert (by_type["alias"]["userId"], by_type["alias"]["previousId"]) == ("user-1-new", "user-1")
