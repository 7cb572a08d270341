"""Segment message -> GA4 Measurement Protocol event, as Segment's GA4 (Cloud) destination maps
it, with event and parameter names and values made valid under GA4's rules and limits."""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from gateway import first_time_ms, integration_options, number, products_of

if TYPE_CHECKING:
    from gateway_destination_ga4 import Ga4Config

#: Where events carry options for this destination in their ``integrations`` object.
INTEGRATION_NAMES = ("Google Analytics 4", "Actions Google Analytics 4")
#: Segment Ecommerce spec events -> GA4 recommended events (Segment's GA4 destination).
ECOMMERCE = {
    "Products Searched": "search",
    "Product List Viewed": "view_item_list",
    "Product Clicked": "select_item",
    "Product Viewed": "view_item",
    "Product Added": "add_to_cart",
    "Product Removed": "remove_from_cart",
    "Cart Viewed": "view_cart",
    "Checkout Started": "begin_checkout",
    "Payment Info Entered": "add_payment_info",
    "Order Completed": "purchase",
    "Order Refunded": "refund",
    "Promotion Viewed": "view_promotion",
    "Promotion Clicked": "select_promotion",
    "Product Added to Wishlist": "add_to_wishlist",
    "Signed Up": "sign_up",
    "Signed In": "login",
}
#: Segment product fields -> GA4 item parameters.
ITEM_FIELDS = {
    "product_id": "item_id",
    "name": "item_name",
    "affiliation": "affiliation",
    "coupon": "coupon",
    "brand": "item_brand",
    "category": "item_category",
    "variant": "item_variant",
    "price": "price",
    "quantity": "quantity",
    "position": "index",
}
MAX_NAME = 40
MAX_PARAMS = 25
MAX_VALUE = 100
#: Longer values GA4 allows for these parameters.
LONG_VALUES = {"page_location": 1000, "page_referrer": 420, "page_title": 300}
#: Parameter name prefixes GA4 reserves.
RESERVED_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
_INVALID = re.compile(r"[^A-Za-z0-9_]")


class Ga4Event(NamedTuple):
    """One Measurement Protocol event and who it is about (events are sent per client)."""

    client_id: str
    user_id: str | None
    event: dict[str, Any]


def valid_name(name: str, *, lowercase: bool = False) -> str:
    """``name`` under GA4's naming rules: letters, digits and ``_`` only, starting with a letter,
    at most 40 characters, no reserved prefix (``name!`` -> ``name_``, ``2fa`` -> ``n_2fa``)."""
    return _valid_name(name, lowercase)


@functools.lru_cache(maxsize=4096)
def _valid_name(name: str, lowercase: bool) -> str:
    """:func:`valid_name`, remembered: an event's parameter names repeat from event to event."""
    cleaned = _INVALID.sub("_", name.strip())
    if lowercase:
        cleaned = cleaned.lower()
    if not cleaned[:1].isalpha() or cleaned.lower().startswith(RESERVED_PREFIXES):
        cleaned = f"n_{cleaned.lstrip('_')}"
    return cleaned[:MAX_NAME]


def valid_value(name: str, value: Any) -> str | int | float | None:
    """A parameter value GA4 takes (string within its length limit, or number); None for values
    it would drop the whole event for (objects, arrays, null)."""
    kind = type(value)  # the usual types first, without isinstance (a bool is an int too)
    if kind is str:
        return value[: LONG_VALUES.get(name, MAX_VALUE)]
    if kind is int or kind is float:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        return value[: LONG_VALUES.get(name, MAX_VALUE)]
    return None


class _Context(msgspec.Struct, gc=False):
    """The one context field the mapping reads (a page call's page)."""

    page: Any = None


class Message(msgspec.Struct, gc=False):
    """The fields of a Segment message the mapping reads: a stored body decodes straight into
    it, skipping the rest (and all of the context but its page). Untyped, as the dict was."""

    type: Any = None
    event: Any = None
    userId: Any = None
    anonymousId: Any = None
    name: Any = None
    timestamp: Any = None
    originalTimestamp: Any = None
    receivedAt: Any = None
    properties: Any = None
    integrations: Any = None
    context: _Context | None = None


#: Decodes a stored message body into :class:`Message` (once per event on the delivery path).
decode_message = msgspec.json.Decoder(Message).decode
_encode = msgspec.json.encode


def client_id_of(message: Message, options: dict[str, Any]) -> str | None:
    """The GA4 client id: ``integrations["Google Analytics 4"].clientId`` (or ``client_id``, or
    the ``_ga`` cookie value the browser sent, ``GA1.1.<id>.<time>``), else the anonymousId,
    else the userId; ``options`` are the message's options for GA4."""
    explicit = options.get("clientId") or options.get("client_id")
    if isinstance(explicit, str) and explicit:
        return explicit
    cookie = options.get("_ga")
    if isinstance(cookie, str) and cookie.count(".") >= 3:
        return ".".join(cookie.split(".")[-2:])
    return message.anonymousId or message.userId


def item_of(product: dict[str, Any], *, with_index: bool) -> dict[str, Any]:
    """A GA4 item from a Segment product (``position`` only in multi-product events)."""
    item: dict[str, Any] = {}
    for field, param in ITEM_FIELDS.items():
        if field == "position" and not with_index:
            continue
        value = product.get(field)
        if value is None:
            continue
        if param in ("price", "quantity", "index"):
            value = number(value)
            if value is None:
                continue
        else:
            value = valid_value(param, value if isinstance(value, str | int | float) else str(value))
        item[param] = value
    return item


#: Ecommerce properties GA4 names otherwise.
_ECOMMERCE_RENAMED = {"payment_method": "payment_type", "query": "search_term", "list_id": "item_list_id"}


def _ecommerce_params(event: str, properties: dict[str, Any]) -> dict[str, Any]:
    products = products_of(event, properties)
    params: dict[str, Any] = {}
    if products or event in ("Order Completed", "Checkout Started", "Order Refunded", "Cart Viewed"):
        single = event in (
            "Product Viewed",
            "Product Added",
            "Product Removed",
            "Product Clicked",
            "Product Added to Wishlist",
        )
        params["items"] = [item_of(p, with_index=not single) for p in products]
    if event in ("Order Completed", "Order Refunded"):
        params["transaction_id"] = properties.get("order_id")
        value = number(properties.get("total"))
        if value is None:
            value = number(properties.get("revenue"))
    else:
        value = number(properties.get("value"))
        if value is None and event in ("Product Viewed", "Product Added", "Product Removed"):
            price = number(properties.get("price"))
            quantity = number(properties.get("quantity"))
            value = price * (quantity or 1) if price is not None else None
    if value is not None:
        params["value"] = value
    for key in ("currency", "coupon", "shipping", "tax", "affiliation", "payment_method", "query", "list_id"):
        if properties.get(key) is not None:
            params[_ECOMMERCE_RENAMED.get(key, key)] = properties[key]
    if isinstance(params.get("currency"), str):
        params["currency"] = params["currency"].upper()
    if event == "Order Refunded" and not params.get("items"):
        params.pop("items", None)  # a full refund names no items
    return {key: value for key, value in params.items() if value is not None}


def to_ga4(message: dict[str, Any], config: Ga4Config, received_ms: int = 0) -> Ga4Event | None:
    """The GA4 event of a track or page call (None for calls GA4's destination does not take:
    identify, group, alias, screen on a web stream) or a message with no client id."""
    return event_of(decode_message(_encode(message)), config, received_ms)


def event_of(message: Message, config: Ga4Config, received_ms: int) -> Ga4Event | None:
    """:func:`to_ga4` of a decoded :class:`Message`."""
    kind = message.type
    if kind not in ("track", "page"):
        return None
    options = integration_options({"integrations": message.integrations}, *INTEGRATION_NAMES)
    client_id = client_id_of(message, options)
    if client_id is None:
        return None
    properties = message.properties if isinstance(message.properties, dict) else {}
    params: dict[str, Any] = {}
    if kind == "page":
        name = "page_view"
        page = (message.context.page if message.context is not None else None) or {}
        pairs = {
            "page_location": page.get("url") or properties.get("url"),
            "page_referrer": page.get("referrer") or properties.get("referrer"),
            "page_title": page.get("title") or properties.get("title") or message.name,
        }
        params.update({k: v for k, v in pairs.items() if v})
        custom = {k: v for k, v in properties.items() if k not in ("url", "referrer", "title", "path", "search")}
    else:
        event = str(message.event)
        if event in ECOMMERCE:
            name = ECOMMERCE[event]
            params.update(_ecommerce_params(event, properties))
            custom = {}
        else:
            name = _valid_name(event, config.lowercase_event_names)
            custom = properties
    if options.get("session_id") is not None:
        params["session_id"] = options["session_id"]
    params.setdefault("engagement_time_msec", config.engagement_time_msec)
    fixed = list(params)
    for key, value in custom.items():
        param = _valid_name(str(key), False)
        if param in params or len(params) >= MAX_PARAMS:
            continue
        if type(value) is str:  # valid_value() inlined for the usual case: this runs per property
            params[param] = value[: LONG_VALUES.get(param, MAX_VALUE)]
            continue
        valid = valid_value(param, value)
        if valid is not None:
            params[param] = valid
    for key in fixed:  # the custom ones are valid already (valid_value of a valid value is itself)
        if key != "items":
            valid = valid_value(key, params[key])
            if valid is None:
                del params[key]
            else:
                params[key] = valid
    time_ms = first_time_ms(received_ms, message.timestamp, message.originalTimestamp, message.receivedAt)
    event_body = {"name": name, "params": params, "timestamp_micros": time_ms * 1000}
    user_id = message.userId if config.send_user_id else None
    return Ga4Event(str(client_id), user_id, event_body)
