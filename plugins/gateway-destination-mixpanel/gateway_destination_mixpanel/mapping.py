"""Segment message -> Mixpanel Ingestion API objects, as Segment's Mixpanel (Actions) maps them:
events for ``/import``, profile updates for ``/engage``, group updates for ``/groups`` and
identity events for ``/track``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway import message_time_ms, products_of, stable_uuid

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


def _get(mapping: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def insert_id(message_id: Any, *salt: Any) -> str:
    """A ``$insert_id`` Mixpanel takes (36 characters of ``[0-9a-f-]``), the same on every retry."""
    return stable_uuid(message_id, "mixpanel", *salt)


def context_properties(message: dict[str, Any], config: MixpanelConfig) -> dict[str, Any]:
    """Mixpanel's default properties from the Segment context, and the ids Mixpanel merges on."""
    context = message.get("context")
    properties: dict[str, Any] = {}
    if type(context) is not dict:
        return properties
    # One pass over the context's keys: this runs once per event on the delivery path.
    for key, value in context.items():
        if value is None:
            continue
        if key in _NESTED:
            if type(value) is dict:
                for field, name in _NESTED[key]:
                    found = value.get(field)
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


_NESTED = {
    "os": (("name", "$os"), ("version", "$os_version")),
    "page": (("url", "$current_url"), ("referrer", "$referrer")),
    "screen": (("width", "$screen_width"), ("height", "$screen_height")),
    "app": (("version", "$app_version_string"), ("build", "$app_build_number")),
    "device": (("manufacturer", "$manufacturer"), ("model", "$model")),
    "network": (("carrier", "$carrier"),),
}


def _event(
    message: dict[str, Any], name: str, properties: dict[str, Any], config: MixpanelConfig, received_ms: int, *salt: Any
) -> dict[str, Any]:
    user_id, anonymous_id = message.get("userId"), message.get("anonymousId")
    merged = {**context_properties(message, config), **properties}
    merged.update(
        {
            "time": message_time_ms(message, received_ms),
            "distinct_id": user_id or anonymous_id or "",
            "$insert_id": insert_id(message.get("messageId"), *salt),
            "mp_lib": "gateway",
        }
    )
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
    kind = message.get("type")
    mapped = Mapped()
    user_id, anonymous_id = message.get("userId"), message.get("anonymousId")
    if kind == "track":
        name = str(message.get("event"))
        properties = dict(message.get("properties") or {})
        mapped.events.append(_event(message, name, properties, config, received_ms))
        if name == "Order Completed" and config.purchase_event_per_product:
            order_keys = {k: properties[k] for k in ("order_id", "checkout_id") if k in properties}
            for n, product in enumerate(products_of(name, properties)):
                mapped.events.append(
                    _event(message, "Product Purchased", {**product, **order_keys}, config, received_ms, n)
                )
    elif kind in ("page", "screen"):
        name = message.get("name")
        event = f"Viewed {name}" if name else ("Loaded a Page" if kind == "page" else "Loaded a Screen")
        properties = dict(message.get("properties") or {})
        for key in ("name", "category"):
            if message.get(key) is not None:
                properties.setdefault(key, message[key])
        mapped.events.append(_event(message, event, properties, config, received_ms))
    elif kind == "identify":
        if user_id and anonymous_id and anonymous_id != user_id:
            # Original ID Merge links the ids with $identify; Simplified merges any event that
            # carries both $user_id and $device_id, which this one does too.
            identify = {"$identified_id": user_id, "$anon_id": anonymous_id}
            mapped.events.append(_event(message, "$identify", identify, config, received_ms))
        traits = message.get("traits") or {}
        if traits:
            update: dict[str, Any] = {
                "$token": config.project_token,
                "$distinct_id": user_id or anonymous_id,
                "$set": profile_properties(traits),
            }
            ip = _get(message, "context", "ip")
            if ip:
                update["$ip"] = ip
            if _get(message, "context", "active") is False:
                update["$ignore_time"] = True
            mapped.profiles.append(update)
    elif kind == "group":
        traits = dict(message.get("traits") or {})
        if "name" in traits:
            traits["$name"] = traits.pop("name")
        mapped.groups.append(
            {
                "$token": config.project_token,
                "$group_key": config.group_key,
                "$group_id": message.get("groupId"),
                "$set": traits,
            }
        )
    elif kind == "alias" and config.identity_merge == "original":
        mapped.identities.append(
            {
                "event": "$create_alias",
                "properties": {
                    "distinct_id": message.get("previousId"),
                    "alias": user_id,
                    "token": config.project_token,
                },
            }
        )
    return mapped
