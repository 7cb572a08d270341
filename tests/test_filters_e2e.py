"""Filters through the real daemon: an FQL destination filter drops and trims, the books say
why, and a reload changes the rule for new events without a restart."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx

from tests.gatewayproc import WRITE_KEY, GatewayProcess, audit_log, config_text, read_jsonl, wait_until


def filter_toml(condition: str) -> str:
    return f"""
[filters.no_tests]
type = "fql"
if = "{condition}"
drop = true

[filters.no_email]
type = "fql"
if = "all"
drop_properties = {{ properties = ["email"] }}
"""


def test_fql_filters_drop_trim_account_and_hot_reload(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    base = config_text(tmp_path).replace(
        "batch_max_wait_secs = 0.05\n", 'batch_max_wait_secs = 0.05\nfilters = ["no_tests", "no_email"]\n'
    )
    path.write_text(base + filter_toml("event = 'Test Event'"))
    with GatewayProcess(path) as gateway:

        def send(*events: tuple[str, str]) -> None:
            batch = [
                {
                    "type": "track",
                    "userId": "u",
                    "event": e,
                    "messageId": m,
                    "properties": {"email": "a@b.c", "plan": "pro"},
                }
                for m, e in events
            ]
            assert httpx.post(f"{gateway.url}/v1/batch", auth=(WRITE_KEY, ""), json={"batch": batch}).status_code == 200

        send(("m1", "Signed Up"), ("m2", "Test Event"), ("m3", "Debug"))
        delivered = wait_until(lambda: (got := read_jsonl(tmp_path / "archive")) and len(got) == 2 and got)
        assert [m["messageId"] for m in delivered] == ["m1", "m3"]
        assert all(m["properties"] == {"plan": "pro"} for m in delivered)

        before = sum('"config_reloaded"' in line for line in gateway.lines)
        path.write_text(base + filter_toml("event = 'Debug'"))
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: sum('"config_reloaded"' in line for line in gateway.lines) > before)
        send(("m4", "Test Event"), ("m5", "Debug"))
        delivered = wait_until(lambda: (got := read_jsonl(tmp_path / "archive")) and len(got) == 3 and got)
        assert [m["messageId"] for m in delivered] == ["m1", "m3", "m4"]

        [books] = wait_until(
            lambda: (r := audit_log(tmp_path)).destinations and r.destinations[0].pending == 0 and r.destinations
        )
        assert books.delivered == 3 and books.filtered == {"filtered_by_rules": 2} and books.unaccounted == 0

        bad = base + filter_toml("event = = 'x'")
        path.write_text(bad)
        gateway.proc.send_signal(signal.SIGHUP)
        refused = wait_until(lambda: [json.loads(line) for line in gateway.lines if '"config_reload_refused"' in line])
        assert refused[-1]["where"] == "filters.no_tests" and "column" in refused[-1]["error"]


def test_source_filters_keep_blocked_events_and_bots_out_of_the_log(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        config_text(tmp_path).replace(
            f'write_key = "{WRITE_KEY}"', f'write_key = "{WRITE_KEY}"\nfilters = ["schema", "bots"]'
        )
        + '\n[filters.schema]\ntype = "schema"\nblock_track_events = ["Test Event"]\nomit_identify_traits = ["ssn"]\n'
        + '\n[filters.bots]\ntype = "bots"\naction = "drop"\n'
    )
    googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    with GatewayProcess(path) as gateway:
        batch = [
            {"type": "track", "userId": "u", "event": "Test Event", "messageId": "blocked"},
            {
                "type": "identify",
                "userId": "u",
                "traits": {"ssn": "078-05-1120", "plan": "pro"},
                "messageId": "trimmed",
            },
            {"type": "page", "anonymousId": "a", "context": {"userAgent": googlebot}, "messageId": "bot"},
            {"type": "track", "userId": "u", "event": "Signed Up", "messageId": "kept"},
        ]
        assert httpx.post(f"{gateway.url}/v1/batch", auth=(WRITE_KEY, ""), json={"batch": batch}).status_code == 200
        delivered = wait_until(lambda: (got := read_jsonl(tmp_path / "archive")) and len(got) == 2 and got)
        assert [m["messageId"] for m in delivered] == ["trimmed", "kept"]
        assert delivered[0]["traits"] == {"plan": "pro"}
        metrics = httpx.get(f"{gateway.url}/metrics").text
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("log.sqlite3*"))
    assert b"078-05-1120" not in on_disk and b"Googlebot" not in on_disk and b"Test Event" not in on_disk
    assert 'gateway_messages_filtered_total{reason="event_setting",stage="source",target="web"} 1.0' in metrics
    assert 'gateway_messages_filtered_total{reason="bot",stage="source",target="web"} 1.0' in metrics
