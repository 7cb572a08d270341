"""Segment message -> Mixpanel Ingestion API objects, as Segment's Mixpanel (Actions) maps them:
events for ``/import``, profile updates for ``/engage``, group updates for ``/groups`` and
identity events for ``/track``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from gateway import first_time_ms, products_of, stable_uuid

if TYPE_CHECKING:
    from gateway_destination_mixpanel import MixpanelConfig

#: Segment's special traits -> Mixpanel's reserved profile properties.
PROFILE_TRAITS = {
    "created": "$created",
    "createdAt": "$created",
    "created_at": "$created",
    "email": "$email",
    "firstName": "$first_name",
    "first_name": "$first_name",
    "lastName": "$last_name",
    "last_name": "$last_name",
    "name": "$name",
    "username": "$username",
    "phone": "$phone",
    "avatar": "$avatar",
}
_CAMPAIGN = {
    "name": "utm_campaign",
    "source": "utm_source",
    "medium": "utm_medium",
    "term": "utm_term",
    "content": "utm_content",
}


@dataclass
class Mapped:
    """What one Segment message becomes, by endpoint."""

    events: list[dict[str, Any]] = field(default_factory=list)  # /import
    profiles: list[dict[str, Any]] = field(default_factory=list)  # /engage
    groups: list[dict[str, Any]] = field(default_factory=list)  # /groups
    identities: list[dict[str, Any]] = field(default_factory=list)  # /track ($create_alias)


class Message(msgspec.Struct, gc=False):
    """The fields of a Segment message the mapping reads: a stored body decodes straight into
    it, skipping the rest. Untyped, as the dict was (the mapping checks what it uses);
    ``context`` stays raw JSON, mapped once per distinct context in a batch (the events of one
    device share it)."""

    type: Any = None
    event: Any = None
    userId: Any = None
    anonymousId: Any = None
    messageId: Any = None
    timestamp: Any = None
    originalTimestamp: Any = None
    receivedAt: Any = None
    name: Any = None
    category: Any = None
    groupId: Any = None
    previousId: Any = None
    properties: Any = None
    traits: Any = None
    context: msgspec.Raw = msgspec.Raw(b"")


#: Decodes a stored message body into :class:`Message` (once per event on the delivery path).
decode_message = msgspec.json.Decoder(Message).decode
_decode = msgspec.json.decode
_encode = msgspec.json.encode


class _Context(NamedTuple):
    """What a context gives a message: default event properties, and the ip and ``active``
    flag of profile updates."""

    properties: dict[str, Any]
    ip: Any
    active: Any


_NO_CONTEXT = _Context({}, None, None)


_REFUSED = "00000000-0000-0000-0000-000000000000 anon anonymous nil none null n/a na undefined unknown <nil> 0 -1"
#: The ids Mixpanel refuses as a ``distinct_id`` or an ``$insert_id`` (compared lower-cased).
REFUSED_IDS = frozenset([*_REFUSED.split(), "true", "false", "[]", "{}"])


def insert_id(message_id: Any, *salt: Any) -> str:
    """A ``$insert_id`` Mixpanel takes (1-36 characters of ``[A-Za-z0-9-]``, none of
    :data:`REFUSED_IDS`), the same on every retry: the messageId itself when it is one, as
    Segment's Mixpanel (Actions) maps it (the uuids of analytics-python, Node and the mobile
    libraries are), else a UUIDv5 of it; with ``salt`` (a Product Purchased's index), a UUIDv5
    of both. Hashing every messageId cost about a sixth of the mapping's time."""
    if (
        not salt
        and type(message_id) is str
        and len(message_id) <= 36
        and message_id.isascii()
        and message_id.replace("-", "").isalnum()
        and message_id.lower() not in REFUSED_IDS
    ):
        return message_id
    return stable_uuid(message_id, "mixpanel", *salt)


def context_properties(message: dict[str, Any], config: MixpanelConfig) -> dict[str, Any]:
    """Mixpanel's default properties from the Segment context, and the ids Mixpanel merges on."""
    context = message.get("context")
    return _context_properties(context, config) if type(context) is dict else {}


def _context_properties(context: dict[str, Any], config: MixpanelConfig) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for key, value in context.items():
        if value is None:
            continue
        if key in _NESTED:
            if type(value) is dict:
                for field_name, name in _NESTED[key]:
                    found = value.get(field_name)
                    if found is not None:
                        properties[name] = found
        elif key == "ip":
            properties["ip"] = value
        elif key == "campaign":
            if type(value) is dict:
                properties.update({_CAMPAIGN[k]: v for k, v in value.items() if k in _CAMPAIGN})
        elif key == "groupId":
            properties[config.group_key] = value
    return properties


def _context_of(raw: bytes, config: MixpanelConfig) -> _Context:
    context = _decode(raw) if raw else None
    if type(context) is not dict:
        return _NO_CONTEXT
    return _Context(_context_properties(context, config), context.get("ip"), context.get("active"))


_NESTED = {
    "os": (("name", "$os"), ("version", "$os_version")),
    "page": (("url", "$current_url"), ("referrer", "$referrer")),
    "screen": (("width", "$screen_width"), ("height", "$screen_height")),
    "app": (("version", "$app_version_string"), ("build", "$app_build_number")),
    "device": (("manufacturer", "$manufacturer"), ("model", "$model")),
    "network": (("carrier", "$carrier"),),
}


def _event(
    message: Message, name: str, properties: dict[str, Any], context: dict[str, Any], time_ms: int, *salt: Any
) -> dict[str, Any]:
    user_id, anonymous_id = message.userId, message.anonymousId
    merged = {**context, **properties}
    merged["time"] = time_ms
    merged["distinct_id"] = user_id or anonymous_id or ""
    merged["$insert_id"] = insert_id(message.messageId, *salt)
    merged["mp_lib"] = "gateway"
    if user_id:
        merged["$user_id"] = user_id
    if anonymous_id:
        merged["$device_id"] = anonymous_id
    return {"event": name, "properties": merged}


def profile_properties(traits: dict[str, Any]) -> dict[str, Any]:
    """Traits with Segment's special ones renamed to Mixpanel's reserved profile properties."""
    out = {PROFILE_TRAITS.get(key, key): value for key, value in traits.items()}
    if "$name" not in out and ("$first_name" in out or "$last_name" in out):
        out["$name"] = " ".join(str(out[k]) for k in ("$first_name", "$last_name") if out.get(k))
    return out


def to_mixpanel(message: dict[str, Any], config: MixpanelConfig, received_ms: int = 0) -> Mapped:
    """What a Segment message becomes in Mixpanel (nothing, for an alias in Simplified ID Merge)."""
    mapped = Mapped()
    for kind, item in items_of(decode_message(_encode(message)), config, received_ms, {}):
        getattr(mapped, kind).append(item)
    return mapped


def _owned(value: Any) -> dict[str, Any]:
    """An object of a decoded :class:`Message` as a dict the mapping may change (it owns it)."""
    return value if type(value) is dict else dict(value or {})


def items_of(
    message: Message, config: MixpanelConfig, received_ms: int, contexts: dict[bytes, _Context]
) -> list[tuple[str, dict[str, Any]]]:
    """:func:`to_mixpanel` of a decoded :class:`Message`, as ``(kind, item)`` pairs where kind
    is a field of :class:`Mapped`; ``contexts`` holds the contexts already mapped (kept by the
    destination: the events share them, read only)."""
    raw = bytes(message.context)
    context = contexts.get(raw)
    if context is None:
        context = contexts[raw] = _context_of(raw, config)
    kind = message.type
    user_id, anonymous_id = message.userId, message.anonymousId
    if kind == "track":
        name = str(message.event)
        properties = _owned(message.properties)
        time_ms = first_time_ms(received_ms, message.timestamp, message.originalTimestamp, message.receivedAt)
        items = [("events", _event(message, name, properties, context.properties, time_ms))]
        if name == "Order Completed" and config.purchase_event_per_product:
            order_keys = {k: properties[k] for k in ("order_id", "checkout_id") if k in properties}
            for n, product in enumerate(products_of(name, properties)):
                purchased = {**product, **order_keys}
                items.append(
                    ("events", _event(message, "Product Purchased", purchased, context.properties, time_ms, n))
                )
        return items
    if kind in ("page", "screen"):
        name = message.name
        event = f"Viewed {name}" if name else ("Loaded a Page" if kind == "page" else "Loaded a Screen")
        properties = _owned(message.properties)
        for key, value in (("name", message.name), ("category", message.category)):
            if value is not None:
                properties.setdefault(key, value)
        return [
            (
                "events",
                _event(
                    message,
                    event,
                    properties,
                    context.properties,
                    first_time_ms(received_ms, message.timestamp, message.originalTimestamp, message.receivedAt),
                ),
            )
        ]
    if kind == "identify":
        items = []
        if user_id and anonymous_id and anonymous_id != user_id:
            # Original ID Merge links the ids with $identify; Simplified merges any event that
            # carries both $user_id and $device_id, which this one does too.
            identify = {"$identified_id": user_id, "$anon_id": anonymous_id}
            time_ms = first_time_ms(received_ms, message.timestamp, message.originalTimestamp, message.receivedAt)
            items.append(("events", _event(message, "$identify", identify, context.properties, time_ms)))
        traits = message.traits or {}
        if traits:
            update: dict[str, Any] = {
                "$token": config.project_token,
                "$distinct_id": user_id or anonymous_id,
                "$set": profile_properties(traits),
            }
            if context.ip:
                update["$ip"] = context.ip
            if context.active is False:
                update["$ignore_time"] = True
            items.append(("profiles", update))
        return items
    if kind == "group":
        traits = _owned(message.traits)
        if "name" in traits:
            traits["$name"] = traits.pop("name")
        group = {"$token": config.project_token, "$group_key": config.group_key, "$group_id": message.groupId}
        group["$set"] = traits
        return [("groups", group)]
    if kind == "alias" and config.identity_merge == "original":
        alias = {"distinct_id": message.previousId, "alias": user_id, "token": config.project_token}
        return [("identities", {"event": "$create_alias", "properties": alias})]
    return []
