"""Segment message -> Amplitude HTTP V2 events, as Segment's Amplitude destinations map them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway import integration_options, message_time_ms, number, products_of

if TYPE_CHECKING:
    from gateway_destination_amplitude import AmplitudeConfig

#: Where events carry options for this destination in their ``integrations`` object.
INTEGRATION_NAMES = ("Amplitude", "Actions Amplitude")


def _get(mapping: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


_NESTED = {
    "app": (("version", "app_version"),),
    "device": (
        ("type", "platform"),
        ("brand", "device_brand"),
        ("manufacturer", "device_manufacturer"),
        ("model", "device_model"),
    ),
    "os": (("name", "os_name"), ("version", "os_version")),
    "network": (("carrier", "carrier"),),
    "location": (
        ("country", "country"),
        ("region", "region"),
        ("city", "city"),
        ("latitude", "location_lat"),
        ("longitude", "location_lng"),
    ),
}


def base_event(message: dict[str, Any], received_ms: int) -> dict[str, Any]:
    """The fields every event of a message shares: ids, time, insert_id, session, context."""
    event: dict[str, Any] = {}
    context = message.get("context")
    device_id = None
    if type(context) is dict:
        # One pass over the context's keys: this runs once per event on the delivery path.
        for key, value in context.items():
            if key in _NESTED:
                if type(value) is dict:
                    for field, name in _NESTED[key]:
                        found = value.get(field)
                        if found is not None:
                            event[name] = found
            elif key == "ip" and value is not None:
                event["ip"] = value
            elif key == "locale" and value is not None:
                event["language"] = value
        device = context.get("device")
        if type(device) is dict:
            device_id = device.get("id")
            advertising_id = device.get("advertisingId")
            if advertising_id:
                os_name = str(event.get("os_name", "")).lower()
                event["idfa" if os_name in ("ios", "ipados") else "adid"] = advertising_id
        if "platform" not in event and context.get("userAgent"):
            event["platform"] = "Web"
    for key, value in (
        ("user_id", message.get("userId")),
        ("device_id", device_id or message.get("anonymousId")),
        ("time", message_time_ms(message, received_ms)),
        ("insert_id", message.get("messageId")),
    ):
        if value is not None:
            event[key] = value
    event["library"] = "gateway"
    if message.get("integrations"):
        session = number(integration_options(message, *INTEGRATION_NAMES).get("session_id"))
        if session is not None:
            event["session_id"] = int(session)
    return event


def _revenue_fields(source: dict[str, Any], *, refund: bool, revenue_keys: tuple[str, ...]) -> dict[str, Any]:
    """Amplitude's revenue fields from an order or a product (price x quantity wins, as in
    Amplitude; else the first of ``revenue_keys``); {} when there is no amount."""
    price, quantity = number(source.get("price")), number(source.get("quantity"))
    fields: dict[str, Any] = {}
    if price is not None:
        fields["price"] = -abs(price) if refund else price
        fields["quantity"] = round(quantity) if quantity is not None else 1
        fields["revenue"] = fields["price"] * fields["quantity"]
    else:
        for key in revenue_keys:
            amount = number(source.get(key))
            if amount is not None:
                fields["revenue"] = -abs(amount) if refund else amount
                break
    if not fields:
        return {}
    product_id = source.get("product_id") or source.get("productId")
    if product_id is not None:
        fields["productId"] = str(product_id)
    fields["revenueType"] = source.get("revenueType") or ("Refund" if refund else "Purchase")
    currency = source.get("currency")
    if isinstance(currency, str):
        fields["currency"] = currency.upper()
    return fields


def to_amplitude(message: dict[str, Any], config: AmplitudeConfig, received_ms: int = 0) -> list[dict[str, Any]]:
    """The HTTP V2 events for one Segment message ([] for a call Amplitude does not take)."""
    kind = message.get("type")
    event = base_event(message, received_ms)
    if kind == "identify":
        traits = message.get("traits") or {}
        return [{**event, "event_type": "$identify", "user_properties": {"$set": traits}}]
    if kind == "group":
        traits = message.get("traits") or {}
        group_type = traits.get(config.group_type_trait) if config.group_type_trait else None
        group_value = traits.get(config.group_value_trait) if config.group_value_trait else None
        group_type = str(group_type or config.group_type)
        group_value = str(group_value or message.get("groupId"))
        groups = {group_type: group_value}
        membership = {**event, "event_type": "$identify", "groups": groups, "user_properties": {"$set": groups}}
        properties = {
            **event,
            "event_type": "$groupidentify",
            "groups": groups,
            "group_properties": {"$set": traits},
            "insert_id": f"{message.get('messageId')}-group",
        }
        return [membership, properties]
    if kind == "alias":
        return []  # /usermap needs Amplitude's Portfolio add-on (Segment leaves it off by default)
    properties = dict(message.get("properties") or {})
    if kind in ("page", "screen"):
        name = message.get("name")
        event["event_type"] = f"Viewed {name}" if name else ("Loaded a Page" if kind == "page" else "Loaded a Screen")
        for key in ("name", "category"):
            if message.get(key) is not None:
                properties.setdefault(key, message[key])
        return [{**event, "event_properties": properties}]
    name = str(message.get("event"))
    event["event_type"] = name
    event["event_properties"] = properties
    traits = _get(message, "context", "traits")
    if isinstance(traits, dict) and traits:
        event["user_properties"] = traits
    if name not in ("Order Completed", "Order Refunded"):
        return [event]
    refund = name == "Order Refunded"
    events = [event]
    if not config.track_revenue_per_product:
        event.update(_revenue_fields(properties, refund=refund, revenue_keys=("revenue", "total")))
    if config.products_as_events and not refund:
        for n, product in enumerate(products_of(name, properties)):
            item = {
                **base_event(message, received_ms),
                "event_type": "Product Purchased",
                "event_properties": {
                    **product,
                    **{k: properties[k] for k in ("order_id", "checkout_id") if k in properties},
                },
                "insert_id": f"{message.get('messageId')}-{n}",
            }
            if config.track_revenue_per_product:
                item.update(_revenue_fields(product, refund=False, revenue_keys=("revenue",)))
            events.append(item)
    return events
