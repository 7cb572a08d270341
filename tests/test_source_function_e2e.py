"""A source function through the real daemon and the operator's commands: a webhook whose
function fails is answered 500 and kept as a raw dead letter (``gateway dead-letters list``
shows it, stage raw); after the function is fixed and the config reloaded (SIGHUP),
``gateway dead-letters redrive --destination source:hooks`` turns it into messages that reach
the file destination, and ``gateway audit`` still balances."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.gatewayproc import GatewayProcess, audit_log, config_text, gateway_cli, read_jsonl, reload, wait_booked
from tests.sink import free_port

TOKEN = "admin-token-for-source-function-e2e"
HOOK_TOKEN = "hooks-url-token-e2e"
BROKEN = """
from gateway_source_function import track

def on_request(request):
    hook = request.json()
    return [track(hook["event"], userId=hook["user"], properties=hook["properties"])]
"""
FIXED = BROKEN.replace('hook["event"]', 'hook.get("event") or hook["kind"]')


def cli(config: Path, *args: str) -> str:
    done = gateway_cli(config, *args, env={"GW_TEST_ADMIN_TOKEN": TOKEN})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_failed_webhook_is_redriven_by_the_cli_after_a_fix(tmp_path: Path) -> None:
    functions = tmp_path / "functions"
    functions.mkdir()
    (functions / "hooks_fn.py").write_text(BROKEN)
    config = tmp_path / "gateway.toml"
    config.write_text(
        config_text(tmp_path)
        + f'\n[admin]\nlisten = "127.0.0.1:{free_port()}"\ntoken = {{ env = "GW_TEST_ADMIN_TOKEN" }}\n'
        + f'\n[sources.hooks]\ntype = "function"\nwrite_key = "{HOOK_TOKEN}"\nfunction = "hooks_fn:on_request"\n'
        + f'path = "{functions}"\ndelivery_id_header = "X-Delivery-Id"\n'
    )
    url_of = "{}/v1/sources/hooks/webhook?token=" + HOOK_TOKEN
    with GatewayProcess(config, env={"GW_TEST_ADMIN_TOKEN": TOKEN}) as gateway:
        good = {"event": "Paid", "user": "u1", "properties": {"n": 1}}
        other_shape = {"kind": "Refunded", "user": "u2", "properties": {"n": 2}}  # the function cannot read it yet
        ok = httpx.post(url_of.format(gateway.url), json=good, headers={"X-Delivery-Id": "a"})
        failed = httpx.post(url_of.format(gateway.url), json=other_shape, headers={"X-Delivery-Id": "b"})
        assert ok.status_code == 200 and (failed.status_code, failed.json()["code"]) == (500, "function_error")
        wait_booked(gateway, "archive", token=TOKEN)
        [line] = cli(config, "dead-letters", "list").splitlines()
        assert "source:hooks" in line and "stage=raw" in line and "KeyError" in line, line
        assert [m["event"] for m in read_jsonl(tmp_path / "archive")] == ["Paid"]

        (functions / "hooks_fn.py").write_text(FIXED)
        assert reload(gateway)["event"] == "config_reloaded"
        mark = len(gateway.lines)
        assert "1 dead letter(s) marked for redrive" in cli(
            config, "dead-letters", "redrive", "--destination", "source:hooks"
        )
        redriven = gateway.wait_logged("raw_dead_letter_redriven", after=mark)
        assert (redriven["source"], redriven["stored"]) == ("hooks", 1)
        wait_booked(gateway, "archive", token=TOKEN)
        assert cli(config, "dead-letters", "list") == ""
        # The sender's retry of the delivery, now that the function reads it: the same messageId.
        retry = httpx.post(url_of.format(gateway.url), json=other_shape, headers={"X-Delivery-Id": "b"})
        assert retry.json() == {"success": True, "stored": 0, "duplicates": 1}
        wait_booked(gateway, "archive", token=TOKEN)
    delivered = read_jsonl(tmp_path / "archive")
    assert [(m["event"], m["userId"], m["properties"]) for m in delivered] == [
        ("Paid", "u1", {"n": 1}),
        ("Refunded", "u2", {"n": 2}),
    ]
    report = audit_log(tmp_path)
    assert report.balanced
    [hooks] = [books for books in report.sources if books.source == "hooks"]
    assert (hooks.received, hooks.stored, hooks.duplicates, hooks.dead_lettered) == (3, 2, 1, 0)
