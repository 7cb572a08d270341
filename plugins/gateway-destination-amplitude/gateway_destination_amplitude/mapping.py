"""Segment message -> Amplitude HTTP V2 events, as Segment's Amplitude destinations map them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from gateway import first_time_ms, integration_options, number, products_of

if TYPE_CHECKING:
    from gateway_destination_amplitude import AmplitudeConfig

#: Where events carry options for this destination in their ``integrations`` object.
INTEGRATION_NAMES = ("Amplitude", "Actions Amplitude")
#: The events that carry revenue (and, completed, one event per product).
_ORDER_EVENTS = frozenset({"Order Completed", "Order Refunded"})


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
    properties: Any = None
    traits: Any = None
    integrations: Any = None
    context: msgspec.Raw = msgspec.Raw(b"")


#: Decodes a stored message body into :class:`Message` (once per event on the delivery path).
decode_message = msgspec.json.Decoder(Message).decode
_decode = msgspec.json.decode
_encode = msgspec.json.encode


class _Context(NamedTuple):
    """What a context gives every event of a message: its fields, device id and traits."""

    fields: dict[str, Any]
    device_id: Any
    traits: Any


_NO_CONTEXT = _Context({}, None, None)


def _context_of(context: Any) -> _Context:
    if type(context) is not dict:
        return _NO_CONTEXT
    fields: dict[str, Any] = {}
    for key, value in context.items():
        if key in _NESTED:
            if type(value) is dict:
                for field, name in _NESTED[key]:
                    found = value.get(field)
                    if found is not None:
                        fields[name] = found
        elif key == "ip" and value is not None:
            fields["ip"] = value
        elif key == "locale" and value is not None:
            fields["language"] = value
    device_id = None
    device = context.get("device")
    if type(device) is dict:
        device_id = device.get("id")
        advertising_id = device.get("advertisingId")
        if advertising_id:
            os_name = str(fields.get("os_name", "")).lower()
            fields["idfa" if os_name in ("ios", "ipados") else "adid"] = advertising_id
    if "platform" not in fields and context.get("userAgent"):
        fields["platform"] = "Web"
    return _Context(fields, device_id, context.get("traits"))


def base_event(message: Message, received_ms: int, context: _Context) -> dict[str, Any]:
    """The fields every event of a message shares: ids, time, insert_id, session, context."""
    # Plain statements rather than a loop over pairs: this runs once per event on the delivery path.
    event = context.fields.copy()
    if message.userId is not None:
        event["user_id"] = message.userId
    device_id = context.device_id or message.anonymousId
    if device_id is not None:
        event["device_id"] = device_id
    event["time"] = first_time_ms(received_ms, message.timestamp, message.originalTimestamp, message.receivedAt)
    if message.messageId is not None:
        event["insert_id"] = message.messageId
    event["library"] = "gateway"
    if message.integrations:
        options = integration_options({"integrations": message.integrations}, *INTEGRATION_NAMES)
        session = number(options.get("session_id"))
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
    return events_of(decode_message(_encode(message)), config, received_ms, {})


def events_of(
    message: Message, config: AmplitudeConfig, received_ms: int, contexts: dict[bytes, _Context]
) -> list[dict[str, Any]]:
    """:func:`to_amplitude` of a decoded :class:`Message`; ``contexts`` holds the contexts
    already mapped (kept by the destination: the events share them, read only)."""
    raw = bytes(message.context)
    context = contexts.get(raw)
    if context is None:
        context = contexts[raw] = _context_of(_decode(raw)) if raw else _NO_CONTEXT
    kind = message.type
    base = base_event(message, received_ms, context)
    if kind == "identify":
        traits = message.traits or {}
        return [{**base, "event_type": "$identify", "user_properties": {"$set": traits}}]
    if kind == "group":
        traits = message.traits or {}
        group_type = traits.get(config.group_type_trait) if config.group_type_trait else None
        group_value = traits.get(config.group_value_trait) if config.group_value_trait else None
        group_type = str(group_type or config.group_type)
        group_value = str(group_value or message.groupId)
        groups = {group_type: group_value}
        membership = {**base, "event_type": "$identify", "groups": groups, "user_properties": {"$set": groups}}
        properties = {
            **base,
            "event_type": "$groupidentify",
            "groups": groups,
            "group_properties": {"$set": traits},
            "insert_id": f"{message.messageId}-group",
        }
        return [membership, properties]
    if kind == "alias":
        return []  # /usermap needs Amplitude's Portfolio add-on (Segment leaves it off by default)
    properties = message.properties  # decoded for this call: the mapping may change it
    if type(properties) is not dict:
        properties = dict(properties or {})
    if kind in ("page", "screen"):
        event = base
        name = message.name
        event["event_type"] = f"Viewed {name}" if name else ("Loaded a Page" if kind == "page" else "Loaded a Screen")
        for key, value in (("name", message.name), ("category", message.category)):
            if value is not None:
                properties.setdefault(key, value)
        event["event_properties"] = properties
        return [event]
    name = str(message.event)
    event = base.copy() if name in _ORDER_EVENTS else base  # product events need the base unchanged
    event["event_type"] = name
    event["event_properties"] = properties
    traits = context.traits
    if isinstance(traits, dict) and traits:
        event["user_properties"] = traits
    if name not in _ORDER_EVENTS:
        return [event]
    refund = name == "Order Refunded"
    events = [event]
    per_product = config.products_as_events and not refund  # a refund has no product events
    if not (config.track_revenue_per_product and per_product):  # else its product events carry it
        event.update(_revenue_fields(properties, refund=refund, revenue_keys=("revenue", "total")))
    if per_product:
        for n, product in enumerate(products_of(name, properties)):
            item = {
                **base,
                "event_type": "Product Purchased",
                "event_properties": {
                    **product,
                    **{k: properties[k] for k in ("order_id", "checkout_id") if k in properties},
                },
                "insert_id": f"{message.messageId}-{n}",
            }
            if config.track_revenue_per_product:
                item.update(_revenue_fields(product, refund=False, revenue_keys=("revenue",)))
            events.append(item)
    return events
