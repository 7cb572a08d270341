"""Who may call the admin app: a script with ``Authorization: Bearer <admin.token>``, or a browser
that logged in to the console with that token and holds its session cookie.

A session cookie is ``<expires>.<nonce>.<mac>``, signed with a key derived from the admin token:
it survives a restart, and a new token (a reload) ends every session at once. A logout revokes
the session's nonce, kept in a small file in the data folder so that it outlives a restart too.
A cookie is sent by the browser on its own, so a change (any method but GET/HEAD/OPTIONS) made
with one must also carry the session's CSRF token, in the ``X-CSRF-Token`` header or the
``csrf_token`` form field, which only the console's own pages can read; a bearer token is never
sent unasked, so requests carrying one need no CSRF token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import msgspec
import structlog
from quart import Response, g, redirect, request

from gateway.http.app import error_response

#: The console's session cookie.
SESSION_COOKIE = "gateway_console"
#: Where a cookie-authenticated change carries its CSRF token: this header, or the form field.
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
#: How long a console login lasts.
SESSION_SECS = 8 * 3600
#: The file in the data folder that keeps the sessions logged out before they expired.
REVOKED_SESSIONS_FILE = "console-revoked-sessions.json"
#: Methods that change nothing, so a cookie alone is enough for them.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Paths anyone may load: the login form, and the console's own scripts and styles (no data).
PUBLIC_PATHS = ("/console/login",)
PUBLIC_PREFIXES = ("/console/static/",)
#: The most a stranger may post (the login form: a token and where to go next), in bytes.
MAX_PUBLIC_BODY_BYTES = 16 * 1024

#: On every admin response. The console's pages need no inline script or style (issue 15 §1).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class Session:
    """A verified console session: its nonce (what logout revokes) and when it ends."""

    nonce: str
    expires: int


@dataclass
class Sessions:
    """Issues and checks the console's signed session cookies and their CSRF tokens.

    Logging out revokes a session's nonce until the session would have expired anyway, so the
    set of revoked nonces stays bounded by the logouts of the last ``SESSION_SECS``. With
    ``revoked_path`` the set is kept there (:meth:`save`) and read back at start; a file that
    cannot be read ends every session issued before the start instead (a logout must not
    come undone).
    """

    lifetime_secs: int = SESSION_SECS
    revoked_path: Path | None = None
    _revoked: dict[str, int] = field(default_factory=dict)
    _not_before: float = 0.0  # sessions issued earlier are refused (see above)

    def __post_init__(self) -> None:
        path = self.revoked_path
        if path is None or not path.exists():
            return
        try:
            self._revoked = msgspec.json.decode(path.read_bytes(), type=dict[str, int])
        except (OSError, msgspec.DecodeError) as error:
            self._not_before = time.time()
            structlog.get_logger().warning(
                "console_sessions_ended", path=str(path), reason=f"the revoked sessions cannot be read: {error}"
            )

    def save(self) -> None:
        """Write the revoked nonces to ``revoked_path`` (atomically, synced): call it after
        :meth:`revoke`, off the event loop."""
        if self.revoked_path is None:
            return
        temporary = self.revoked_path.with_suffix(".tmp")
        with open(temporary, "wb") as file:
            file.write(msgspec.json.encode(dict(self._revoked)))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.revoked_path)

    def issue(self, admin_token: str, now: float | None = None) -> tuple[str, Session]:
        """A new session's cookie value, and the session."""
        expires = int(now if now is not None else time.time()) + self.lifetime_secs
        nonce = secrets.token_urlsafe(16)
        payload = f"{expires}.{nonce}"
        return f"{payload}.{_mac(admin_token, 'session', payload)}", Session(nonce, expires)

    def verify(self, admin_token: str, cookie: str | None, now: float | None = None) -> Session | None:
        """The session ``cookie`` stands for, or None: unsigned, signed with another token,
        expired or revoked."""
        if not cookie or not admin_token:
            return None
        payload, _, mac = cookie.rpartition(".")
        expires_text, _, nonce = payload.partition(".")
        if not expires_text.isdigit() or not nonce:
            return None
        if not hmac.compare_digest(mac.encode(), _mac(admin_token, "session", payload).encode()):
            return None
        expires = int(expires_text)
        if expires <= (now if now is not None else time.time()) or nonce in self._revoked:
            return None
        if expires - self.lifetime_secs < self._not_before:
            return None
        return Session(nonce, expires)

    def revoke(self, session: Session, now: float | None = None) -> None:
        """End ``session`` before it expires (logout)."""
        moment = now if now is not None else time.time()
        self._revoked = {nonce: until for nonce, until in self._revoked.items() if until > moment}
        self._revoked[session.nonce] = session.expires

    def csrf_token(self, admin_token: str, session: Session) -> str:
        """The CSRF token of ``session``: derived from it, so nothing is stored."""
        return _mac(admin_token, "csrf", session.nonce)

    def csrf_ok(self, admin_token: str, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given).encode(), self.csrf_token(admin_token, session).encode())


async def authenticate(admin_token: str | None, sessions: Sessions) -> Response | None:
    """The admin app's ``before_request``: None lets the request through (``g.console_session``
    is then the console session, or None for a bearer token); otherwise the refusal.

    A bearer header, when sent, decides alone (a wrong one is 401 even with a good cookie)."""
    g.console_session = None
    if is_public(request.path):
        length = request.content_length  # None: chunked, of any length
        if request.method not in SAFE_METHODS and (length is None or length > MAX_PUBLIC_BODY_BYTES):
            return error_response(413, "payload_too_large", f"at most {MAX_PUBLIC_BODY_BYTES} bytes here")
        # Another site's page (a form, a no-cors fetch to a loopback listener) would log the
        # browser in, or spend the login form's wrong tokens (LoginThrottle) and lock it.
        if request.method not in SAFE_METHODS and request.headers.get("Sec-Fetch-Site", "same-origin") not in (
            "same-origin",
            "none",
        ):
            return error_response(403, "cross_site", "the console's login form takes posts from its own pages only")
        return None
    header = request.headers.get("Authorization")
    if header is not None:
        return None if bearer_ok(admin_token, header) else unauthenticated_response()
    session = sessions.verify(admin_token or "", request.cookies.get(SESSION_COOKIE))
    if session is None:
        return unauthenticated_response()
    g.console_session = session
    if request.method not in SAFE_METHODS:
        given = request.headers.get(CSRF_HEADER)
        if given is None and request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            given = (await request.form).get(CSRF_FIELD)
        if not sessions.csrf_ok(admin_token or "", session, given):
            return csrf_refused_response()
    return None


@dataclass
class LoginThrottle:
    """Wrong tokens over the last minute, per client address: past ``max_failures`` from one
    address the login form answers it 429 until its oldest failure leaves the window, so guessing
    the token online is hopeless (the token is at least 16 characters anyway), and one client
    guessing cannot lock the operator out from another address. ``max_total`` failures from
    everyone together hold every address off the same way (many addresses guessing at once).
    Bounded: it holds at most ``max_total`` times. Behind a reverse proxy every browser has the
    proxy's address, so the limit is shared as it was before it was per address."""

    max_failures: int = 20
    max_total: int = 200
    window_secs: float = 60.0
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _everyone: deque[float] = field(default_factory=deque)

    def _forget(self, now: float) -> None:
        cutoff = now - self.window_secs
        while self._everyone and self._everyone[0] <= cutoff:
            self._everyone.popleft()
        for client, times in list(self._failures.items()):
            while times and times[0] <= cutoff:
                times.popleft()
            if not times:
                del self._failures[client]

    def wait_secs(self, client: str, now: float | None = None) -> float:
        """0 when ``client`` may try a login now; else how long until it may."""
        moment = now if now is not None else time.monotonic()
        self._forget(moment)
        waits = [0.0]
        if len(self._everyone) >= self.max_total:
            waits.append(self._everyone[0] + self.window_secs - moment)
        times = self._failures.get(client)
        if times is not None and len(times) >= self.max_failures:
            waits.append(times[0] + self.window_secs - moment)
        return max(waits)

    def failed(self, client: str, now: float | None = None) -> None:
        moment = now if now is not None else time.monotonic()
        if self.wait_secs(client, moment) > 0:
            return  # refused before it was tried: not counted again
        self._everyone.append(moment)
        self._failures.setdefault(client, deque()).append(moment)


def _mac(admin_token: str, purpose: str, payload: str) -> str:
    key = hmac.new(admin_token.encode(), f"gateway-console-{purpose}".encode(), hashlib.sha256).digest()
    digest = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def bearer_ok(admin_token: str | None, header: str) -> bool:
    """Whether an ``Authorization`` header value carries the admin token as a bearer token."""
    scheme, _, given = header.partition(" ")
    if not admin_token or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.encode(), admin_token.encode())


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a console path only (never another site: ``//evil``,
    ``/\\evil`` and absolute URLs fall back to the console's home)."""
    if target and target.startswith("/console/") and not target.startswith(("//", "/\\")) and "\\" not in target:
        return target
    return "/console/"


def unauthenticated_response() -> Response:
    """401 for the API; the login form for a console page."""
    if request.headers.get("HX-Request"):  # htmx swaps no 4xx: it follows HX-Redirect to the form
        response = error_response(401, "unauthorized", "the console session ended: log in again")
        response.headers["HX-Redirect"] = f"/console/login?next={quote(request.headers.get('HX-Current-URL', ''))}"
        return response
    if request.path in ("/", "/console") or request.path.startswith("/console/"):
        target = request.full_path if request.query_string else request.path
        return redirect(f"/console/login?next={quote(target, safe='/')}", 303)  # type: ignore[return-value]
    response = error_response(401, "unauthorized", "send Authorization: Bearer <admin.token>, or log in at /console/")
    response.headers["WWW-Authenticate"] = 'Bearer realm="gateway-admin"'
    return response


def csrf_refused_response() -> Response:
    return error_response(
        403,
        "csrf_token_missing",
        f"a change made with the console's session cookie must carry its CSRF token ({CSRF_HEADER} header or "
        f"{CSRF_FIELD} form field); scripts send Authorization: Bearer <admin.token> instead",
    )


def set_session_cookie(response: Response, cookie: str, lifetime_secs: int) -> None:
    """The session cookie: HttpOnly (no script reads it), SameSite=Strict (no other site's page
    sends it), Secure when the console is served over TLS."""
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=lifetime_secs,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.scheme == "https",
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Strict", secure=request.scheme == "https")


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.path.startswith(PUBLIC_PREFIXES):  # pages and API answers: data, never cached
        response.headers.setdefault("Cache-Control", "no-store")
    return response
