"""Filters through the real daemon: an FQL destination filter drops and trims, the books say
why, and a reload changes the rule for new events without a restart."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.gatewayproc import WRITE_KEY, GatewayProcess, audit_log, config_text, read_jsonl, reload, wait_booked


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
    base = config_text(tmp_path, admin=True).replace(
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
        wait_booked(gateway, "archive")
        delivered = read_jsonl(tmp_path / "archive")
        assert [m["messageId"] for m in delivered] == ["m1", "m3"]
        assert all(m["properties"] == {"plan": "pro"} for m in delivered)

        path.write_text(base + filter_toml("event = 'Debug'"))
        assert reload(gateway)["event"] == "config_reloaded"
        send(("m4", "Test Event"), ("m5", "Debug"))
        wait_booked(gateway, "archive")
        delivered = read_jsonl(tmp_path / "archive")
        assert [m["messageId"] for m in delivered] == ["m1", "m3", "m4"]

        [books] = audit_log(tmp_path).destinations
        assert books.pending == 0
        assert books.delivered == 3 and books.filtered == {"filtered_by_rules": 2} and books.unaccounted == 0

        bad = base + filter_toml("event = = 'x'")
        path.write_text(bad)
        refused = reload(gateway)
        assert refused["event"] == "config_reload_refused"
        assert refused["where"] == "filters.no_tests" and "column" in refused["error"]


def test_source_filters_keep_blocked_events_and_bots_out_of_the_log(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        config_text(tmp_path, admin=True).replace(
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
        wait_booked(gateway, "archive")
        delivered = read_jsonl(tmp_path / "archive")
        assert [m["messageId"] for m in delivered] == ["trimmed", "kept"]
        assert delivered[0]["traits"] == {"plan": "pro"}
        metrics = httpx.get(f"{gateway.url}/metrics").text
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("log.sqlite3*"))
    assert b"078-05-1120" not in on_disk and b"Googlebot" not in on_disk and b"Test Event" not in on_disk
    assert 'gateway_messages_filtered_total{reason="event_setting",stage="source",target="web"} 1.0' in metrics
    assert 'gateway_messages_filtered_total{reason="bot",stage="source",target="web"} 1.0' in metrics
