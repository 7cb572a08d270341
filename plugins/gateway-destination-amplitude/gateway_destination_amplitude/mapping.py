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


def base_event(message: dict[str, Any], received_ms: int) -> dict[str, Any]:
    """The fields every event of a message shares: ids, time, insert_id, session, context."""
    context = message.get("context") if isinstance(message.get("context"), dict) else {}
    event: dict[str, Any] = {
        "user_id": message.get("userId"),
        "device_id": _get(context, "device", "id") or message.get("anonymousId"),
        "time": message_time_ms(message, received_ms),
        "insert_id": message.get("messageId"),
        "library": "gateway",
    }
    options = integration_options(message, *INTEGRATION_NAMES)
    session = number(options.get("session_id"))
    if session is not None:
        event["session_id"] = int(session)
    os_name = _get(context, "os", "name")
    fields = {
        "ip": context.get("ip"),
        "app_version": _get(context, "app", "version"),
        "platform": _get(context, "device", "type") or ("Web" if context.get("userAgent") else None),
        "os_name": os_name,
        "os_version": _get(context, "os", "version"),
        "device_brand": _get(context, "device", "brand"),
        "device_manufacturer": _get(context, "device", "manufacturer"),
        "device_model": _get(context, "device", "model"),
        "carrier": _get(context, "network", "carrier"),
        "country": _get(context, "location", "country"),
        "region": _get(context, "location", "region"),
        "city": _get(context, "location", "city"),
        "language": context.get("locale"),
        "location_lat": _get(context, "location", "latitude"),
        "location_lng": _get(context, "location", "longitude"),
    }
    advertising_id = _get(context, "device", "advertisingId")
    if advertising_id:
        fields["idfa" if str(os_name).lower() in ("ios", "ipados") else "adid"] = advertising_id
    event.update({key: value for key, value in fields.items() if value is not None})
    return {key: value for key, value in event.items() if value is not None}


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
