"""``Violation Generated`` reports (segment-api.md §7.3): one track event per violation, for the
source named by ``forward_violations_to``.

Each report's messageId is derived from the offending message's source, messageId and the
violation's position, so checking the same message again (a redelivery, a redrive) produces the
same ids and the log's dedup keeps one copy of each report.
"""

from __future__ import annotations

import hashlib
from typing import Any

VIOLATION_EVENT = "Violation Generated"
#: The userId Segment gives every violation report.
VIOLATIONS_USER_ID = "schema-violations"


def report_message_id(source: str, message_id: Any, index: int) -> str:
    """``sch-`` and a digest of where the violation comes from (stable across re-checks)."""
    digest = hashlib.sha256(f"{source}\x00{message_id}\x00{index}".encode("utf-8", "surrogatepass")).hexdigest()
    return f"sch-{digest[:32]}"


def violation_reports(
    message: dict[str, Any], violations: list[dict[str, str]], source: str, plan_name: str
) -> list[dict[str, Any]]:
    """The ``Violation Generated`` track events for ``violations`` of ``message`` from ``source``."""
    context = message.get("context")
    context = context if isinstance(context, dict) else {}
    app = context.get("app")
    app_version = app.get("version") if isinstance(app, dict) else None
    call = message.get("type")
    name = message.get("event") if call == "track" else message.get("name")
    received_at = message.get("receivedAt")
    copied_context = {key: context[key] for key in ("app", "library") if key in context}
    reports = []
    for index, violation in enumerate(violations):
        reports.append(
            {
                "type": "track",
                "event": VIOLATION_EVENT,
                "userId": VIOLATIONS_USER_ID,
                "messageId": report_message_id(source, message.get("messageId"), index),
                "forwardedFromProject": source,
                "timestamp": received_at,
                "receivedAt": received_at,
                "properties": {
                    "appVersion": app_version,
                    "eventMessageID": message.get("messageId"),
                    "eventName": name,
                    "eventSentAt": message.get("sentAt"),
                    "eventTimestamp": message.get("timestamp"),
                    "eventType": call,
                    "sourceID": source,
                    "sourceName": source,
                    "sourceSlug": source,
                    "trackingPlanID": plan_name,
                    "trackingPlanName": plan_name,
                    "violationDescription": violation.get("description"),
                    "violationField": violation.get("field"),
                    "violationType": violation.get("type"),
                },
                "context": copied_context,
            }
        )
    return reports
