"""The console's access rules over plain HTTP (issue 15 §1): logging in sets an HttpOnly,
SameSite=Strict, expiring session cookie; the cookie authenticates the console and the admin
API's reads, a change made with it needs the session's CSRF token; the bearer header works as
before; logging out ends the session; every admin response carries the security headers."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from quart import Response
from quart_trio import QuartTrio

from gateway.ops.auth import SESSION_COOKIE, LoginThrottle, Sessions, safe_next, set_session_cookie
from tests.gatewayproc import ADMIN_TOKEN, GatewayProcess, config_text
from tests.gatewayproc import admin_url as admin_url_of

VENDOR = Path(__file__).parent.parent / "gateway" / "ops" / "console" / "static" / "vendor"
CSP = (
    "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The admin URL of a running daemon (token ``ADMIN_TOKEN``)."""
    folder = tmp_path_factory.mktemp("console-http")
    config = folder / "gateway.toml"
    config.write_text(config_text(folder, admin=True))
    with GatewayProcess(config) as process:
        yield admin_url_of(process)


@contextmanager
def log_in(admin: str) -> Iterator[httpx.Client]:
    """A client holding a console session."""
    with httpx.Client(base_url=admin) as client:
        answer = client.post("/console/login", data={"token": ADMIN_TOKEN, "next": "/console/"})
        assert answer.status_code == 303, answer.text
        assert SESSION_COOKIE in client.cookies
        yield client


def csrf_of(client: httpx.Client) -> str:
    page = client.get("/console/")
    assert page.status_code == 200
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert match, "the console page carries no CSRF token"
    return match.group(1)


def test_console_pages_send_a_browser_to_the_login_form(admin: str) -> None:
    answer = httpx.get(f"{admin}/console/destinations/archive/")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/login?next=/console/destinations/archive/"
    # The listener's root too, so a browser pointed at it finds the form.
    assert httpx.get(f"{admin}/").headers["location"] == "/console/login?next=/"
    form = httpx.get(f"{admin}/console/login")
    assert form.status_code == 200 and 'name="token"' in form.text
    # The API still answers 401, as scripts expect.
    assert httpx.get(f"{admin}/status").status_code == 401
    # htmx swaps no 4xx: the Overview's refresh is told where to go instead.
    fragment = httpx.get(
        f"{admin}/console/fragments/health", headers={"HX-Request": "true", "HX-Current-URL": f"{admin}/console/"}
    )
    assert fragment.status_code == 401
    assert fragment.headers["hx-redirect"].startswith("/console/login?next=")


def test_login_sets_an_httponly_samesite_strict_expiring_cookie(admin: str) -> None:
    answer = httpx.post(f"{admin}/console/login", data={"token": ADMIN_TOKEN, "next": "/console/sources/web/debugger"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sources/web/debugger"
    cookie = answer.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert {"httponly", "samesite", "max-age", "path"} <= attributes, cookie
    assert "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "secure" not in attributes  # served over plain HTTP here; see the TLS test below
    assert ADMIN_TOKEN not in cookie


def test_a_wrong_token_is_refused_and_sets_no_cookie(admin: str) -> None:
    for token in ("", "not-the-token", ADMIN_TOKEN + "x"):
        answer = httpx.post(f"{admin}/console/login", data={"token": token})
        assert answer.status_code == 401
        assert "set-cookie" not in answer.headers
        assert "That is not the admin token." in answer.text


def test_the_cookie_authenticates_the_console_and_the_api_reads(admin: str) -> None:
    with log_in(admin) as client:
        page = client.get("/console/")
        assert page.status_code == 200 and "Overview" in page.text and "archive" in page.text
        assert client.get("/status").json()["destinations"]["archive"]["type"] == "file"
        assert client.get("/console/fragments/health").status_code == 200
        for path in ("/console/sources/web/debugger", "/console/sources/web/", "/console/destinations/archive/"):
            assert client.get(path).status_code == 200, path
        assert client.get("/console/sources/nope/debugger").status_code == 404
        root = client.get("/")
        assert root.status_code == 303 and root.headers["location"] == "/console/"


def test_a_change_made_with_the_cookie_needs_the_csrf_token(admin: str) -> None:
    with log_in(admin) as client:
        token = csrf_of(client)
        refused = client.post("/dead-letters/discard", json={"ids": [12345]})
        assert refused.status_code == 403
        assert refused.json()["code"] == "csrf_token_missing"
        wrong = client.post("/dead-letters/discard", json={"ids": [12345]}, headers={"X-CSRF-Token": "x" + token})
        assert wrong.status_code == 403
        accepted = client.post("/dead-letters/discard", json={"ids": [12345]}, headers={"X-CSRF-Token": token})
        assert accepted.status_code == 200 and accepted.json() == {"changed": 0}
        # Another session's token is not this one's.
        with log_in(admin) as other:
            assert client.post("/reload", headers={"X-CSRF-Token": csrf_of(other)}).status_code == 403
    # A bearer token is never sent unasked: no CSRF token needed.
    bearer = httpx.post(
        f"{admin}/dead-letters/discard", json={"ids": [12345]}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert bearer.status_code == 200


def test_a_wrong_bearer_header_is_refused_even_with_a_session(admin: str) -> None:
    with log_in(admin) as client:
        assert client.get("/status", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_logout_needs_the_csrf_token_and_ends_the_session(admin: str) -> None:
    with log_in(admin) as client:
        token = csrf_of(client)
        cookie = client.cookies[SESSION_COOKIE]
        assert client.post("/console/logout").status_code == 403
        answer = client.post("/console/logout", data={"csrf_token": token})
        assert answer.status_code == 303 and answer.headers["location"] == "/console/login"
    # The old cookie is dead, even if a browser kept it.
    assert httpx.get(f"{admin}/status", cookies={SESSION_COOKIE: cookie}).status_code == 401


def test_forged_cookies_are_refused(admin: str) -> None:
    with log_in(admin) as client:
        cookie = client.cookies[SESSION_COOKIE]
    expires, nonce, mac = cookie.split(".")
    for forged in (
        f"{int(expires) + 3600}.{nonce}.{mac}",  # a longer life
        f"{expires}.other.{mac}",
        f"{expires}.{nonce}.{mac[:-2]}AA",
        f"{expires}.{nonce}",
        "",
    ):
        assert httpx.get(f"{admin}/status", cookies={SESSION_COOKIE: forged}).status_code == 401, forged


def test_security_headers_on_pages_api_and_static(admin: str) -> None:
    with log_in(admin) as client:
        for path in ("/console/", "/status", "/console/static/js/debugger.js", "/console/login"):
            answer = client.get(path)
            assert answer.status_code == 200, path
            assert answer.headers["content-security-policy"] == CSP, path
            assert answer.headers["x-content-type-options"] == "nosniff", path
            assert answer.headers["referrer-policy"] == "no-referrer", path
        assert client.get("/console/").headers["cache-control"] == "no-store"
        # The API's answers hold events (personal data) and state: no browser cache keeps them.
        for path in ("/status", "/sources/web/events", "/dead-letters", "/config"):
            assert client.get(path).headers.get("cache-control") == "no-store", path
        assert client.get("/console/static/js/debugger.js").headers["content-type"].startswith("text/javascript")
    # The console's scripts and styles carry no data, so the login page can load them.
    assert httpx.get(f"{admin}/console/static/console.css").status_code == 200


def test_the_login_form_takes_no_large_body(admin: str) -> None:
    """Anyone may post to the login form: it reads no more than a token's worth, so a stranger
    cannot make the admin listener parse megabytes per request."""
    big = httpx.post(
        f"{admin}/console/login",
        content=b"token=" + b"a" * (1024 * 1024),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert big.status_code == 413 and "gateway_console" not in big.headers.get("set-cookie", "")
    chunked = httpx.post(
        f"{admin}/console/login",
        content=iter([b"token=", b"a" * (1024 * 1024)]),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert chunked.status_code == 413
    assert httpx.post(f"{admin}/console/login", data={"token": "wrong", "next": "/console/"}).status_code == 401


def test_pages_have_no_inline_script_or_style(admin: str) -> None:
    with log_in(admin) as client:
        for path in (
            "/console/",
            "/console/sources/web/debugger",
            "/console/sources/web/",
            "/console/destinations/archive/",
        ):
            html = client.get(path).text
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
            assert not re.search(r"\sstyle=|<style|\son[a-z]+=", html, re.IGNORECASE), path


def test_session_cookie_is_secure_over_tls() -> None:
    app = QuartTrio("tls-check")

    @app.get("/")
    async def issue() -> Response:
        response = Response("ok")
        set_session_cookie(response, "value", 60)
        return response

    async def check() -> None:
        client = app.test_client()
        assert "Secure" in (await client.get("/", scheme="https")).headers["set-cookie"]
        assert "Secure" not in (await client.get("/", scheme="http")).headers["set-cookie"]

    import trio

    trio.run(check)


def test_sessions_expire_and_a_new_token_ends_them() -> None:
    sessions = Sessions(lifetime_secs=60)
    cookie, session = sessions.issue("token-one-0123456789", now=1000)
    assert sessions.verify("token-one-0123456789", cookie, now=1059) == session
    assert sessions.verify("token-one-0123456789", cookie, now=1060) is None
    assert sessions.verify("token-two-0123456789", cookie, now=1000) is None
    sessions.revoke(session, now=1001)
    assert sessions.verify("token-one-0123456789", cookie, now=1002) is None
    assert sessions.csrf_token("token-one-0123456789", session) != sessions.csrf_token("token-two-0123456789", session)


def test_after_login_only_console_paths() -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example", "/status", "", None, "/console\\x"):
        assert safe_next(target) == "/console/", target
    assert safe_next("/console/sources/web/debugger") == "/console/sources/web/debugger"


def test_vendored_libraries_are_the_pinned_ones() -> None:
    for line in (VENDOR / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    for library in ("htmx", "uplot"):
        assert (VENDOR / library / "LICENSE").is_file()


def test_wrong_tokens_past_the_limit_wait_out_the_window() -> None:
    throttle = LoginThrottle(max_failures=3, max_total=5, window_secs=60)
    for moment in (0, 1, 2):
        assert throttle.wait_secs("a", now=moment) == 0
        throttle.failed("a", now=moment)
    assert throttle.wait_secs("a", now=10) == 50  # until the first failure leaves the window
    assert throttle.wait_secs("b", now=10) == 0  # another address is not held up
    throttle.failed("a", now=10)  # (refused before it was tried: not counted again)
    assert throttle.wait_secs("a", now=59.5) == 0.5
    assert throttle.wait_secs("a", now=60) == 0
    # Everyone together: past max_total failures in the window, every address waits.
    for client, moment in (("b", 61), ("c", 62), ("d", 63), ("e", 64), ("f", 65)):
        throttle.failed(client, now=moment)
    assert throttle.wait_secs("g", now=66) == 55
    assert throttle.wait_secs("g", now=121) == 0
    assert len(throttle._failures) <= 5  # bounded by max_total, whatever the addresses


def test_the_login_form_slows_down_guessing(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(config_text(tmp_path, admin=True))
    with GatewayProcess(config) as process:
        admin = admin_url_of(process)

        def guess(n: int) -> int:
            return httpx.post(f"{admin}/console/login", data={"token": f"guess-{n}"}).status_code

        with ThreadPoolExecutor(max_workers=20) as pool:  # each wrong token waits half a second
            assert sorted(pool.map(guess, range(20))) == [401] * 20
        refused = httpx.post(f"{admin}/console/login", data={"token": ADMIN_TOKEN})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) <= 60
        assert "set-cookie" not in refused.headers  # not even the right token, for now
        # Another address is not held up by this one's guesses (127.0.0.0/8 is all loopback).
        other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
        with other:
            assert other.post(f"{admin}/console/login", data={"token": ADMIN_TOKEN}).status_code == 303
        # Scripts with the bearer token are not held up.
        assert httpx.get(f"{admin}/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200


def test_other_sites_cannot_use_up_the_login_form(tmp_path: Path) -> None:
    """Any page the operator's browser opens may post to a loopback listener (a cross-site form
    or a no-cors fetch): such posts are refused before they count as wrong tokens, so another
    site cannot hold the login form at 429, nor log the browser in (login CSRF)."""
    config = tmp_path / "gateway.toml"
    config.write_text(config_text(tmp_path, admin=True))
    with GatewayProcess(config) as process:
        admin = admin_url_of(process)
        for site in ("cross-site", "same-site"):
            for n in range(11):
                answer = httpx.post(
                    f"{admin}/console/login", data={"token": f"guess-{n}"}, headers={"Sec-Fetch-Site": site}
                )
                assert answer.status_code == 403, (site, n)
        right = httpx.post(f"{admin}/console/login", data={"token": ADMIN_TOKEN}, headers={"Sec-Fetch-Site": site})
        assert right.status_code == 403 and "set-cookie" not in right.headers
        mine = httpx.post(
            f"{admin}/console/login", data={"token": ADMIN_TOKEN}, headers={"Sec-Fetch-Site": "same-origin"}
        )
        assert mine.status_code == 303 and SESSION_COOKIE in mine.headers["set-cookie"]


def test_a_logout_outlives_a_restart(tmp_path: Path) -> None:
    """A logged-out cookie a browser (or a thief) kept stays dead after the daemon restarts,
    while a session that did not log out goes on."""
    config = tmp_path / "gateway.toml"
    config.write_text(config_text(tmp_path, admin=True))
    with GatewayProcess(config) as process:
        admin = admin_url_of(process)
        with log_in(admin) as kept:
            kept_cookie = kept.cookies[SESSION_COOKIE]
        with log_in(admin) as client:
            cookie = client.cookies[SESSION_COOKIE]
            assert client.post("/console/logout", data={"csrf_token": csrf_of(client)}).status_code == 303
    with GatewayProcess(config) as process:
        admin = admin_url_of(process)
        assert httpx.get(f"{admin}/status", cookies={SESSION_COOKIE: cookie}).status_code == 401
        assert httpx.get(f"{admin}/status", cookies={SESSION_COOKIE: kept_cookie}).status_code == 200


def test_unreadable_revocations_end_every_earlier_session(tmp_path: Path) -> None:
    path = tmp_path / "revoked.json"
    sessions = Sessions(revoked_path=path)
    cookie, session = sessions.issue("token-one-0123456789")
    sessions.revoke(session)
    sessions.save()
    assert Sessions(revoked_path=path).verify("token-one-0123456789", cookie) is None  # read back
    other_cookie, _ = sessions.issue("token-one-0123456789", now=time.time() - 1)
    path.write_bytes(b"{not json")
    broken = Sessions(revoked_path=path)
    assert broken.verify("token-one-0123456789", other_cookie) is None  # issued before the start
    fresh, _ = broken.issue("token-one-0123456789", now=time.time() + 1)
    assert broken.verify("token-one-0123456789", fresh) is not None
