"""Through the real daemon: a tracking plan on a source blocks unplanned events before they are
stored, omits unplanned properties and annotates violations in ``context.protocols``, and
forwards blocked events and ``Violation Generated`` reports into another source."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import httpx

from tests.gatewayproc import WRITE_KEY, GatewayProcess, config_text, read_jsonl, read_log, reload, wait_booked

PLAN = {
    "rules": [
        {
            "type": "TRACK",
            "key": "Order Completed",
            "jsonSchema": {
                "properties": {
                    "properties": {
                        "type": "object",
                        "properties": {"order_id": {"type": "string"}, "total": {"type": "number"}},
                        "required": ["order_id"],
                    }
                }
            },
        }
    ]
}


def plan_config(tmp_path: Path, options: str, *, more_sources: str = "") -> tuple[Path, Path]:
    """Write PLAN and a config whose source ``web`` runs it with ``options`` (TOML lines);
    returns (plan path, config path)."""
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(PLAN))
    path = tmp_path / "gateway.toml"
    path.write_text(
        config_text(tmp_path, admin=True).replace(
            f'write_key = "{WRITE_KEY}"', f'write_key = "{WRITE_KEY}"\nfilters = ["plan"]'
        )
        + more_sources
        + f'\n[filters.plan]\ntype = "tracking_plan"\nplan = "{plan}"\n'
        + options
    )
    return plan, path


def test_tracking_plan_on_a_source(tmp_path: Path) -> None:
    _, path = plan_config(tmp_path, 'unplanned_events = "block"\nunplanned_properties = "omit"\nviolations = "allow"\n')
    with GatewayProcess(path) as gateway:
        batch = [
            {"type": "track", "userId": "u", "event": "Debug Thing", "messageId": "unplanned"},
            {
                "type": "track",
                "userId": "u",
                "event": "Order Completed",
                "messageId": "ok",
                "properties": {"order_id": "o1", "total": 3, "secret": "s3cr3t"},
            },
            {
                "type": "track",
                "userId": "u",
                "event": "Order Completed",
                "messageId": "bad",
                "properties": {"order_id": 42},
            },
        ]
        assert httpx.post(f"{gateway.url}/v1/batch", auth=(WRITE_KEY, ""), json={"batch": batch}).status_code == 200
        wait_booked(gateway, "archive")
        delivered = read_jsonl(tmp_path / "archive")
        metrics = httpx.get(f"{gateway.url}/metrics").text
    assert [m["messageId"] for m in delivered] == ["ok", "bad"]
    assert delivered[0]["properties"] == {"order_id": "o1", "total": 3}
    assert delivered[0]["context"]["protocols"] == {"omitted": ["secret"]}
    assert delivered[1]["context"]["protocols"]["violations"] == [
        {
            "type": "Invalid Type",
            "field": "properties.order_id",
            "description": "Invalid type. Expected: string, given: integer",
        }
    ]
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("log.sqlite3*"))
    assert b"Debug Thing" not in on_disk and b"s3cr3t" not in on_disk
    assert 'gateway_messages_filtered_total{reason="unplanned",stage="source",target="web"} 1.0' in metrics


def test_blocked_events_and_violations_are_forwarded_to_another_source(tmp_path: Path) -> None:
    plan, path = plan_config(
        tmp_path,
        'unplanned_events = "block"\nforward_blocked_to = "quarantine"\nforward_violations_to = "quarantine"\n',
        more_sources='\n[sources.quarantine]\nwrite_key = "quarantine-key"\n',
    )
    batch = [
        {"type": "track", "userId": "u", "event": "Debug Thing", "messageId": "unplanned"},
        {
            "type": "track",
            "userId": "u",
            "event": "Order Completed",
            "messageId": "bad",
            "properties": {"order_id": 42},
            "context": {"app": {"version": "2.1"}, "library": {"name": "analytics-python", "version": "2.4.0"}},
        },
    ]
    with GatewayProcess(path) as gateway:
        for _ in range(2):  # the second time, every message and report is a duplicate
            response = httpx.post(f"{gateway.url}/v1/batch", auth=(WRITE_KEY, ""), json={"batch": batch})
            assert response.status_code == 200
        wait_booked(gateway, "archive")
        delivered = read_jsonl(tmp_path / "archive")
        metrics = httpx.get(f"{gateway.url}/metrics").text
    by_id = {m["messageId"]: m for m in delivered}
    assert len(by_id) == 3 and "bad" in by_id
    blocked = by_id["unplanned"]
    assert blocked["event"] == "Debug Thing"
    assert blocked["context"]["protocols"] == {"sourceId": "web", "blocked": "unplanned"}
    [report] = [m for m in delivered if m["event"] == "Violation Generated"]
    assert report["messageId"].startswith("sch-") and report["userId"] == "schema-violations"
    assert report["forwardedFromProject"] == "web"
    assert report["context"] == batch[1]["context"]
    assert report["properties"] == {
        "appVersion": "2.1",
        "eventMessageID": "bad",
        "eventName": "Order Completed",
        "eventSentAt": None,
        "eventTimestamp": by_id["bad"]["timestamp"],
        "eventType": "track",
        "sourceID": "web",
        "sourceName": "web",
        "sourceSlug": "web",
        "trackingPlanID": str(plan),
        "trackingPlanName": str(plan),
        "violationDescription": "Invalid type. Expected: string, given: integer",
        "violationField": "properties.order_id",
        "violationType": "Invalid Type",
    }
    assert 'gateway_messages_forwarded_total{source="web",to_source="quarantine"} 4.0' in metrics
    records = read_log(tmp_path, lambda reader: reader.read(0, max_records=100, max_bytes=1 << 20))
    assert Counter(r.source for r in records) == {"web": 1, "quarantine": 2}


def test_an_edited_plan_applies_to_new_events_after_a_reload(tmp_path: Path) -> None:
    plan, path = plan_config(tmp_path, 'unplanned_events = "block"\n')

    def send(message_id: str) -> None:
        event = {"type": "track", "userId": "u", "event": "Debug Thing", "messageId": message_id}
        assert httpx.post(f"{gateway.url}/v1/track", auth=(WRITE_KEY, ""), json=event).status_code == 200

    with GatewayProcess(path) as gateway:
        send("before")
        planned = {**PLAN, "rules": [*PLAN["rules"], {"type": "TRACK", "key": "Debug Thing", "jsonSchema": {}}]}
        plan.write_text(json.dumps(planned))
        assert reload(gateway)["event"] == "config_reloaded"
        send("after")
        wait_booked(gateway, "archive")
        delivered = read_jsonl(tmp_path / "archive")
    assert [m["messageId"] for m in delivered] == ["after"]
