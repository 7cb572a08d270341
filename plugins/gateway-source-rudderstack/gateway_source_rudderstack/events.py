"""RudderStack events as the Segment messages they mean (the SDKs' payloads, read from
``@rudderstack/analytics-js`` 3.34 and ``rudder-sdk-python`` 2.1)."""

from __future__ import annotations

from typing import Any

#: The calls the data plane takes one at a time at ``/v1/<type>``.
CALLS = ("identify", "track", "page", "screen", "group", "alias")


def as_segment(event: Any) -> Any:
    """``event`` (a decoded RudderStack event) made Segment-shaped, in place; anything but an
    object is returned as it is, for the core to reject.

    - ``originalTimestamp`` is the client's time of the call (RudderStack sends no
      ``timestamp``): it becomes ``timestamp``, so the core keeps it as ``originalTimestamp``
      and corrects it for clock skew with ``sentAt``, as it does for Segment's clients;
    - ``userId: ""`` (the browser SDK before identify) and ``anonymousId: ""`` mean no id;
    - an identify's traits are in ``context.traits``; Segment's are top-level ``traits``.
    """
    if not isinstance(event, dict):
        return event
    if "timestamp" not in event and "originalTimestamp" in event:
        event["timestamp"] = event.pop("originalTimestamp")
    for key in ("userId", "anonymousId"):
        if event.get(key) == "":
            del event[key]
    context = event.get("context")
    if event.get("type") == "identify" and "traits" not in event and isinstance(context, dict):
        traits = context.get("traits")
        if isinstance(traits, dict):
            event["traits"] = dict(traits)
    return event
