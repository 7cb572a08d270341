"""The function source end to end, in a real gateway: webhooks authenticated by URL token or by
an HMAC signature, turned into Segment calls by the operator's function, delivered to a
destination; a redelivery stored once; a failing or slow function answered 500 with the
delivery kept as a raw dead letter, and redriven through the fixed function."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.testing import TestGateway, run_gateway

TOKEN = "hooks-url-token-0123456789"
ADMIN = "admin-token-for-source-function-tests"
SECRET, OLD_SECRET = "whsec-new-0123", "whsec-old-4567"

HANDLER = """
from gateway_source_function import group, identify, track

def on_request(request, settings):
    hook = request.json()
    if hook.get("explode"):
        raise RuntimeError("the function cannot read this hook")
    user = hook["user"]
    return [
        identify(user, traits={"email": hook["email"], "plan": settings["plan"]}),
        track(hook["event"], userId=user, properties={"ticket": hook["ticket"], "via": request.header("X-Via")}),
        group("acme", userId=user, traits={"name": "Acme"}),
    ]
"""
FIXED = HANDLER.replace('raise RuntimeError("the function cannot read this hook")', "pass")
SLOW = """
def on_request(request, settings):
    while True:
        pass
"""
NO_EVENT = """
def on_request(request, settings):
    return [{"type": "track", "userId": "u1"}]
"""


def config(functions: Path, extra: str = "", **options: str) -> str:
    lines = "".join(f"{key} = {value}\n" for key, value in options.items())
    return f"""
[admin]
token = "{ADMIN}"

[sources.hooks]
type = "function"
write_key = "{TOKEN}"
function = "hooks_fn:on_request"
path = "{functions}"
budget_ms = 200
settings = {{ plan = "pro" }}
delivery_id_header = "X-Delivery-Id"
max_body_bytes = 100000
{lines}
[destinations.out]
type = "recording"
batch_max_wait_secs = 0.01
{extra}"""


@pytest.fixture
def functions(tmp_path: Path) -> Path:
    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "hooks_fn.py").write_text(HANDLER)
    return folder


def hook(ticket: int = 1, **fields: Any) -> dict[str, Any]:
    return {"user": "u1", "email": "u1@example.com", "event": "Ticket Opened", "ticket": ticket, **fields}


async def post(gw: TestGateway, body: dict[str, Any], *, token: str | None = TOKEN, **headers: str) -> Any:
    query = f"?token={token}" if token is not None else ""
    return await gw.request("POST", f"/v1/sources/hooks/webhook{query}", content=json.dumps(body), headers=headers)


async def metric(gw: TestGateway, line_start: str) -> float:
    text = (await gw.request("GET", "/metrics")).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
    return sum(values)


async def source_books(gw: TestGateway) -> dict[str, Any]:
    report = (await gw.admin("GET", "/audit")).json()
    [books] = [s for s in report["sources"] if s["source"] == "hooks"]
    outcomes = books["stored"] + books["duplicates"] + sum(books["filtered"].values())
    assert books["received"] == outcomes + books["dead_lettered"] + books["suppressed"]
    return books  # type: ignore[no-any-return]


async def test_an_unsigned_webhook_with_the_url_token_becomes_segment_calls(functions: Path, tmp_path: Path) -> None:
    async with run_gateway(config(functions), data_dir=tmp_path / "data") as gw:
        answer = await post(gw, hook(), **{"X-Via": "helpdesk", "X-Delivery-Id": "d-1"})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"success": True, "stored": 3, "duplicates": 0}
        identify, track, group = await gw.wait_recorded("out", 3)
        assert (identify["type"], identify["userId"], identify["traits"]) == (
            "identify",
            "u1",
            {"email": "u1@example.com", "plan": "pro"},
        )
        assert (track["event"], track["properties"]) == ("Ticket Opened", {"ticket": 1, "via": "helpdesk"})
        assert (group["groupId"], group["traits"]) == ("acme", {"name": "Acme"})
        # Completed by the core like any message: server fields, deterministic ids from the delivery.
        assert all(m["receivedAt"] and m["timestamp"] for m in (identify, track, group))
        assert len({m["messageId"] for m in (identify, track, group)}) == 3

        for token in ("wrong-token", None):
            refused = await post(gw, hook(2), token=token)
            assert (refused.status_code, refused.json()["code"]) == (401, "invalid_token")
        assert await metric(gw, 'gateway_messages_rejected_total{code="invalid_token"}') == 2
        missing = await gw.request("POST", f"/v1/sources/nope/webhook?token={TOKEN}", content=b"{}")
        assert missing.status_code == 404
        too_big = await post(gw, hook(ticket="x" * 100_001))  # type: ignore[arg-type]
        assert too_big.status_code == 413
        assert len(gw.recorded("out")) == 3


async def test_a_redelivered_webhook_is_stored_once(functions: Path, tmp_path: Path) -> None:
    async with run_gateway(config(functions), data_dir=tmp_path / "data") as gw:
        first = await post(gw, hook(), **{"X-Delivery-Id": "delivery-42"})
        again = await post(gw, hook(), **{"X-Delivery-Id": "delivery-42"})
        other = await post(gw, hook(), **{"X-Delivery-Id": "delivery-43"})
        assert [a.json()["stored"] for a in (first, again, other)] == [3, 0, 3]
        assert again.json()["duplicates"] == 3
        await gw.wait_delivered("out")
        assert len(gw.recorded("out")) == 6
        books = await source_books(gw)
        assert (books["received"], books["stored"], books["duplicates"]) == (9, 6, 3)


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_signed_webhooks_are_checked_against_every_configured_secret(functions: Path, tmp_path: Path) -> None:
    options = {
        "signature_header": '"X-Hub-Signature-256"',
        "signature_prefix": '"sha256="',
        "signing_secret": f'["{SECRET}", "{OLD_SECRET}"]',
    }
    async with run_gateway(config(functions, **options), data_dir=tmp_path / "data") as gw:
        body = json.dumps(hook()).encode()
        for n, secret in enumerate((SECRET, OLD_SECRET)):  # rotation: both keys are taken
            answer = await gw.request(
                "POST",
                "/v1/sources/hooks/webhook",
                content=body,
                headers={"X-Hub-Signature-256": sign(body, secret), "X-Delivery-Id": f"s-{n}"},
            )
            assert answer.status_code == 200, answer.text
        bad = [
            {},  # no signature (the URL token no longer counts)
            {"X-Hub-Signature-256": sign(body, "another-secret")},
            {"X-Hub-Signature-256": sign(body + b" ", SECRET)},  # a body changed on the way
            {"X-Hub-Signature-256": sign(body, SECRET).removeprefix("sha256=")},  # the prefix is part of it
        ]
        for headers in bad:
            answer = await gw.request("POST", f"/v1/sources/hooks/webhook?token={TOKEN}", content=body, headers=headers)
            assert (answer.status_code, answer.json()["code"]) == (401, "invalid_signature"), headers
        assert await metric(gw, 'gateway_messages_rejected_total{code="invalid_signature"}') == 4
        await gw.wait_delivered("out")
        assert len(gw.recorded("out")) == 6


async def test_base64_signatures(functions: Path, tmp_path: Path) -> None:
    options = {
        "signature_header": '"X-Signature"',
        "signature_encoding": '"base64"',
        "signature_algorithm": '"sha1"',
        "signing_secret": f'"{SECRET}"',
    }
    async with run_gateway(config(functions, **options), data_dir=tmp_path / "data") as gw:
        body = json.dumps(hook()).encode()
        signature = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha1).digest()).decode()
        ok = await gw.request("POST", "/v1/sources/hooks/webhook", content=body, headers={"X-Signature": signature})
        assert ok.status_code == 200, ok.text
        hexed = hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
        refused = await gw.request("POST", "/v1/sources/hooks/webhook", content=body, headers={"X-Signature": hexed})
        assert refused.status_code == 401


async def test_a_failing_function_keeps_the_delivery_and_redrive_runs_it_once_fixed(
    functions: Path, tmp_path: Path
) -> None:
    async with run_gateway(config(functions), data_dir=tmp_path / "data") as gw:
        failing = await post(gw, hook(explode=True), **{"X-Delivery-Id": "d-9", "X-Via": "retry-me"})
        assert (failing.status_code, failing.json()["code"]) == (500, "function_error")
        # The sender retries while the function still fails: kept again, still nothing stored.
        assert (await post(gw, hook(explode=True), **{"X-Delivery-Id": "d-9", "X-Via": "retry-me"})).status_code == 500
        letters = await gw.dead_letters("source:hooks")
        assert [letter["stage"] for letter in letters] == ["raw", "raw"]
        assert "RuntimeError: the function cannot read this hook" in letters[0]["error"]
        kept = json.loads(json.loads(letters[0]["message"])["text"])
        assert json.loads(kept["body"]) == hook(explode=True)
        assert kept["headers"]["x-delivery-id"] == "d-9" and "token" not in kept["query"]
        books = await source_books(gw)
        assert (books["received"], books["dead_lettered"], books["stored"]) == (2, 2, 0)
        assert gw.recorded("out") == []

        # Fix the function, reload, redrive (a redrive that still fails holds the letters again:
        # tests/test_raw_letters.py).
        (functions / "hooks_fn.py").write_text(FIXED)
        assert await gw.reload()
        redrive = await gw.admin("POST", "/dead-letters/redrive", json={"destination": "source:hooks"})
        assert redrive.status_code == 200, redrive.text
        messages = await gw.wait_recorded("out", 3)
        assert [m["type"] for m in messages] == ["identify", "track", "group"]
        assert messages[1]["properties"] == {"ticket": 1, "via": "retry-me"}
        await gw.wait_delivered("out")
        assert len(gw.recorded("out")) == 3  # both kept copies became the same three messages
        assert await gw.dead_letters("source:hooks") == []
        books = await source_books(gw)
        assert (books["received"], books["dead_lettered"], books["stored"], books["duplicates"]) == (6, 0, 3, 3)


@pytest.mark.parametrize(
    ("function", "code"),
    [(SLOW, "function_timeout"), (NO_EVENT, "invalid_calls"), ("on_request = 5\n", "function_error")],
)
async def test_a_slow_or_wrong_function_stores_nothing(
    functions: Path, tmp_path: Path, function: str, code: str
) -> None:
    (functions / "hooks_fn.py").write_text(function)
    async with run_gateway(config(functions), data_dir=tmp_path / "data") as gw:
        answer = await post(gw, hook())
        assert (answer.status_code, answer.json()["code"]) == (500, code), answer.text
        [letter] = await gw.dead_letters("source:hooks")
        assert letter["stage"] == "raw"
        books = await source_books(gw)
        assert (books["received"], books["dead_lettered"], books["stored"]) == (1, 1, 0)
