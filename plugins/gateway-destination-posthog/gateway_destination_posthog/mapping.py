"""Segment message -> PostHog batch item, as PostHog's own Segment destination maps it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from gateway import stable_uuid

if TYPE_CHECKING:
    from gateway_destination_posthog import PostHogConfig

#: distinct_ids PostHog refuses to identify or alias with (it skips the merge silently).
REFUSED_IDS_ANY_CASE = frozenset(
    {
        "anonymous",
        "guest",
        "distinctid",
        "distinct_id",
        "id",
        "not_authenticated",
        "email",
        "undefined",
        "true",
        "false",
    }
)
REFUSED_IDS = frozenset({"[object Object]", "NaN", "None", "none", "null", "0"})
#: context.campaign keys -> PostHog's utm_* properties.
_CAMPAIGN = {
    "name": "utm_campaign",
    "source": "utm_source",
    "medium": "utm_medium",
    "term": "utm_term",
    "content": "utm_content",
}


class Refused(ValueError):
    """The message cannot be sent to PostHog as it is (it would be dropped there silently)."""


def _check_mergeable(distinct_id: str, what: str) -> None:
    if distinct_id.lower() in REFUSED_IDS_ANY_CASE or distinct_id in REFUSED_IDS or not distinct_id.strip():
        raise Refused(f"PostHog refuses to {what} with the id {distinct_id!r}")


def context_properties(context: dict[str, Any], group_type: str) -> dict[str, Any]:
    """PostHog's names for Segment context fields; other context keys are kept as ``segment_<key>``."""
    out: dict[str, Any] = {}
    # One pass over the context's keys: this runs once per event on the delivery path.
    for key, value in context.items():
        if value is None:
            continue
        if key in _NESTED:
            if type(value) is dict:
                for field, name in _NESTED[key]:
                    found = value.get(field)
                    if found is not None:
                        out[name] = found
        elif key in _RENAMED:
            out[_RENAMED[key]] = value
        elif key == "campaign":
            if type(value) is dict:
                out.update({_CAMPAIGN[k]: v for k, v in value.items() if k in _CAMPAIGN})
        elif key == "groupId":
            out["$groups"] = {group_type: value}
        elif key != "traits":
            out[f"segment_{key}"] = value
    return out


_NESTED = {
    "page": (("url", "$current_url"), ("path", "$pathname"), ("referrer", "$referrer")),
    "os": (("name", "$os"),),
    "device": (("type", "$device_type"),),
    "screen": (("width", "$screen_width"), ("height", "$screen_height")),
}
_RENAMED = {"ip": "$ip", "userAgent": "$raw_user_agent"}


class Message(msgspec.Struct, gc=False):
    """The fields of a Segment message the mapping reads: a stored body decodes straight into
    it, skipping the rest (integrations, sentAt, receivedAt...). Untyped, as the dict was (the
    mapping checks what it uses); ``context`` stays raw JSON, mapped once per distinct context
    in a batch (the events of one device and page share it)."""

    type: Any = None
    event: Any = msgspec.UNSET  # UNSET: absent (as opposed to null)
    userId: Any = None
    anonymousId: Any = None
    messageId: Any = msgspec.UNSET
    timestamp: Any = None
    name: Any = None
    previousId: Any = None
    groupId: Any = None
    context: msgspec.Raw = msgspec.Raw(b"")
    properties: Any = None
    traits: Any = None


#: Decodes a stored message body into :class:`Message` (once per event on the delivery path).
decode_message = msgspec.json.Decoder(Message).decode
_decode = msgspec.json.decode
_encode = msgspec.json.encode


def to_posthog(message: dict[str, Any], config: PostHogConfig, received_ms: int = 0) -> dict[str, Any]:
    """One ``/batch/`` item for a Segment message.

    Raises:
        Refused: an identify or alias with an id PostHog refuses to merge.
    """
    return item_of(decode_message(_encode(message)), config, {})


def item_of(message: Message, config: PostHogConfig, contexts: dict[bytes, dict[str, Any]]) -> dict[str, Any]:
    """:func:`to_posthog` of a decoded :class:`Message`; ``contexts`` holds the properties of
    the contexts already mapped (kept by the destination: the items share them, read only).

    Raises:
        Refused: an identify or alias with an id PostHog refuses to merge.
    """
    raw = bytes(message.context)
    mapped = contexts.get(raw)
    if mapped is None:
        context = _decode(raw) if raw else None
        mapped = contexts[raw] = context_properties(context, config.group_type) if type(context) is dict else {}
    properties = mapped.copy()
    properties["$lib"] = "gateway"
    kind = message.type
    user_id, anonymous_id = message.userId, message.anonymousId
    distinct_id = user_id or anonymous_id or ""
    if kind == "track":
        event = message.event
        if event is msgspec.UNSET:
            raise KeyError("event")  # validation lets no such track through
        properties.update(message.properties or {})
    elif kind == "page":
        event = "$pageview"
        properties.update(message.properties or {})
        url = properties.get("url")
        if "$current_url" not in properties and url:
            properties["$current_url"] = url
        if message.name:
            properties.setdefault("name", message.name)
    elif kind == "screen":
        event = "$screen"
        properties.update(message.properties or {})
        properties["$screen_name"] = message.name or properties.get("name")
    elif kind == "identify":
        traits = message.traits or {}
        if user_id:
            _check_mergeable(user_id, "identify")
            event = "$identify"
            if anonymous_id and anonymous_id != user_id:
                properties["$anon_distinct_id"] = anonymous_id
        else:  # no user to identify: set the anonymous person's properties
            event = "$set"
        properties["$set"] = traits
    elif kind == "alias":
        previous = str(message.previousId or "")
        _check_mergeable(distinct_id, "alias")
        _check_mergeable(previous, "alias")
        event = "$create_alias"
        properties["alias"] = previous
    elif kind == "group":
        event = "$groupidentify"
        properties["$group_type"] = config.group_type
        properties["$group_key"] = message.groupId
        properties["$group_set"] = message.traits or {}
    else:
        raise Refused(f"PostHog has no mapping for a {kind!r} call")
    properties["distinct_id"] = distinct_id
    message_id = message.messageId
    item: dict[str, Any] = {
        "event": event,
        "properties": properties,
        "uuid": stable_uuid("" if message_id is msgspec.UNSET else message_id, "posthog"),
    }
    if message.timestamp:
        item["timestamp"] = message.timestamp
    return item
