"""Segment message -> GA4 Measurement Protocol event, as Segment's GA4 (Cloud) destination maps
it, with event and parameter names and values made valid under GA4's rules and limits."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

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
#: The longest ``user_id`` GA4 takes (a longer one is left out, not cut).
MAX_USER_ID = 256
#: Longer values GA4 allows for these parameters.
LONG_VALUES = {"page_location": 1000, "page_referrer": 420, "page_title": 300}
#: Parameter name prefixes GA4 reserves.
RESERVED_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
#: Event names GA4 reserves (the Measurement Protocol's and the web's lists; GA4 drops such an
#: event silently): a custom event of one of these names gets ``n_`` in front. Not ``page_view``,
#: which page calls are sent as (as Segment's GA4 destination does).
RESERVED_EVENTS = frozenset(
    [
        "ad_activeview",
        "ad_click",
        "ad_exposure",
        "ad_impression",
        "ad_query",
        "ad_reward",
        "adunit_exposure",
        "app_background",
        "app_clear_data",
        "app_exception",
        "app_remove",
        "app_store_refund",
        "app_store_subscription_cancel",
        "app_store_subscription_convert",
        "app_store_subscription_renew",
        "app_update",
        "app_upgrade",
        "dynamic_link_app_open",
        "dynamic_link_app_update",
        "dynamic_link_first_open",
        "error",
        "file_download",
        "firebase_campaign",
        "first_open",
        "first_visit",
        "form_start",
        "form_submit",
        "in_app_purchase",
        "click",
        "notification_dismiss",
        "notification_foreground",
        "notification_open",
        "notification_receive",
        "os_update",
        "scroll",
        "session_start",
        "session_start_with_rollout",
        "user_engagement",
        "video_complete",
        "video_progress",
        "video_start",
        "view_complete",
        "view_search_results",
    ]
)
#: Parameter names GA4 reserves that a custom property may not take (``session_id`` and
#: ``engagement_time_msec`` are set by the mapping itself): they get ``n_`` in front.
RESERVED_PARAMS = frozenset({"gclid", "session_number", "firebase_conversion"})
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


#: :func:`valid_name` of the names seen so far, by lowercase and name: an event's parameter names
#: repeat from event to event, and a dict lookup costs less than ``lru_cache``'s key tuple.
_VALID_NAMES: tuple[dict[str, str], dict[str, str]] = ({}, {})
_MAX_REMEMBERED_NAMES = 4096


def _valid_name(name: str, lowercase: bool) -> str:
    """:func:`valid_name`, remembered (up to :data:`_MAX_REMEMBERED_NAMES` names of each case)."""
    names = _VALID_NAMES[lowercase]
    valid = names.get(name)
    if valid is None:
        if len(names) >= _MAX_REMEMBERED_NAMES:
            names.clear()
        valid = names[name] = _made_valid(name, lowercase)
    return valid


def _made_valid(name: str, lowercase: bool) -> str:
    cleaned = _INVALID.sub("_", name.strip())
    if lowercase:
        cleaned = cleaned.lower()
    if not cleaned[:1].isalpha() or cleaned.lower().startswith(RESERVED_PREFIXES):
        cleaned = f"n_{cleaned.lstrip('_')}"
    return cleaned[:MAX_NAME]


def _unreserved(name: str, reserved: frozenset[str]) -> str:
    """``name``, or ``n_`` + it when GA4 reserves it (it would drop the event or parameter)."""
    return f"n_{name}"[:MAX_NAME] if name in reserved else name


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


#: Decodes a message's context, as the mapping reads it.
_decode_context = msgspec.json.Decoder(_Context | None).decode


class Message(msgspec.Struct, gc=False):
    """The fields of a Segment message the mapping reads: a stored body decodes straight into
    it, skipping the rest. Untyped, as the dict was. The context is kept as its JSON, decoded
    only for a page call (its page): decoding it took half of a message's decoding time."""

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
    context: msgspec.Raw = msgspec.Raw(b"null")


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


#: (product field, item parameter, whether it is a number) of :data:`ITEM_FIELDS`, with and
#: without ``position`` (single-product events have none).
_ITEM_PLAN = tuple((field, param, param in ("price", "quantity", "index")) for field, param in ITEM_FIELDS.items())
_ITEM_PLAN_SINGLE = tuple(entry for entry in _ITEM_PLAN if entry[0] != "position")


def item_of(product: dict[str, Any], *, with_index: bool) -> dict[str, Any]:
    """A GA4 item from a Segment product (``position`` only in multi-product events)."""
    item: dict[str, Any] = {}
    for field, param, numeric in _ITEM_PLAN if with_index else _ITEM_PLAN_SINGLE:
        value = product.get(field)
        if value is None:
            continue
        kind = type(value)
        if numeric:
            if kind is not int and kind is not float:
                value = number(value)
                if value is None:
                    continue
        elif kind is str:  # no item parameter has a longer limit
            value = value[:MAX_VALUE]
        else:
            value = valid_value(param, value if isinstance(value, str | int | float) else str(value))
        item[param] = value
    return item


#: Ecommerce properties GA4 names otherwise.
_ECOMMERCE_RENAMED = {"payment_method": "payment_type", "query": "search_term", "list_id": "item_list_id"}


#: (property, parameter) of the Ecommerce properties copied as they are.
_ECOMMERCE_COPIED = tuple(
    (key, _ECOMMERCE_RENAMED.get(key, key))
    for key in ("currency", "coupon", "shipping", "tax", "affiliation", "payment_method", "query", "list_id")
)


#: (property, parameter) an event's GA4 counterpart takes beyond the Ecommerce ones, as Segment's
#: GA4 actions default them (its View/Select Promotion: ``creative_slot`` from ``creative``,
#: ``location_id`` from ``position``).
_PROMOTION = (
    ("promotion_id", "promotion_id"),
    ("name", "promotion_name"),
    ("creative_name", "creative_name"),
    ("creative", "creative_slot"),
    ("creative_slot", "creative_slot"),
    ("position", "location_id"),
)
_EVENT_PARAMS: dict[str, tuple[tuple[str, str], ...]] = {
    "Promotion Viewed": _PROMOTION,
    "Promotion Clicked": _PROMOTION,
    "Signed Up": (("method", "method"),),
    "Signed In": (("method", "method"),),
}


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
    else:  # not price x quantity: GA4 refuses a value without a currency, which products often lack
        value = number(properties.get("value"))
    if value is not None:
        params["value"] = value
    for key, param in _ECOMMERCE_COPIED + _EVENT_PARAMS.get(event, ()):
        value = properties.get(key)
        if value is not None:
            params.setdefault(param, value)
    if event in ("Signed Up", "Signed In") and "method" not in params and properties.get("type") is not None:
        params["method"] = properties["type"]  # Segment's own default for sign_up's method
    if isinstance(params.get("currency"), str):
        params["currency"] = params["currency"].upper()
    if event == "Order Refunded" and not params.get("items"):
        params.pop("items", None)  # a full refund names no items
    if "transaction_id" in params and params["transaction_id"] is None:  # the one that may be None
        del params["transaction_id"]
    return params


#: The options of a message without ``integrations`` (read, never written).
_NO_OPTIONS: dict[str, Any] = {}
#: Property plans (:func:`_add_custom`) kept, and the most properties a message may have to use one.
_MAX_PLANS = 4096
_MAX_PLANNED_PROPERTIES = 64
#: The most characters of names (event and properties) a kept plan holds: with _MAX_PLANS, this
#: bounds what the caches keep (names of a few hundred characters would make it 100+ MiB).
_MAX_KEPT_NAME_CHARS = 4096
_Plan = tuple[tuple[str, str, int], ...]
_Key = TypeVar("_Key")
_Value = TypeVar("_Value")
#: Per (the event's own parameters, its property names): what :func:`_plan` made of them.
_PLANS: dict[tuple[tuple[str, ...], tuple[str, ...]], _Plan] = {}
#: The one parameter a custom track event without GA4 options has before its properties.
_ENGAGEMENT = ("engagement_time_msec",)
#: Per (event name, lowercase names, property names) of such an event: its GA4 name and
#: what :func:`_plan` made of its properties (most events are these: no work per name).
_CUSTOM_EVENTS: dict[tuple[str, bool, tuple[str, ...]], tuple[str, _Plan]] = {}


def _add_custom(params: dict[str, Any], custom: dict[str, Any]) -> None:
    """Add the custom properties ``custom`` to the event's ``params``: each under its valid
    name, unless a parameter has that name already or the event has 25; strings cut to GA4's
    length, booleans as ``"true"``/``"false"``, values GA4 would drop the event for left out.

    Which property goes under which name depends only on the names: it is worked out once per
    shape (:func:`_plan`), and each message only copies its values (:func:`_add_planned`).
    """
    if len(custom) > _MAX_PLANNED_PROPERTIES:
        _add_each(params, custom)
        return
    shape = (tuple(params), tuple(custom))
    plan = _PLANS.get(shape)
    if plan is None:
        plan = _kept(_PLANS, shape, _plan(shape[0], shape[1]), sum(map(len, shape[1])))
    _add_planned(params, custom, plan)


def _add_planned(params: dict[str, Any], custom: dict[str, Any], plan: _Plan) -> None:
    """:func:`_add_custom` by the ``plan`` of ``params``' names and ``custom``'s, unless a value
    is left out (that frees a name or a place for a later property: then one at a time)."""
    for key, param, longest in plan:
        value = custom[key]
        kind = type(value)  # valid_value() inlined: this runs per property
        if kind is str:
            params[param] = value[:longest]
        elif kind is int or kind is float:
            params[param] = value
        elif kind is bool:
            params[param] = "true" if value else "false"
        else:  # a value left out: the plan does not hold for this message
            for _, planned, _ in plan:
                params.pop(planned, None)
            _add_each(params, custom)
            return


def _plan(fixed: tuple[str, ...], keys: tuple[str, ...]) -> _Plan:
    """(property, parameter name, longest string) of each of ``keys`` that becomes a parameter
    of an event with the parameters ``fixed``, if every value is kept (:func:`_add_each`)."""
    taken = set(fixed)
    plan = []
    for key in keys:
        if len(taken) >= MAX_PARAMS:
            break
        param = _unreserved(_valid_name(str(key), False), RESERVED_PARAMS)
        if param not in taken:
            taken.add(param)
            plan.append((key, param, LONG_VALUES.get(param, MAX_VALUE)))
    return tuple(plan)


def _add_each(params: dict[str, Any], custom: dict[str, Any]) -> None:
    """:func:`_add_custom`, one property at a time."""
    for key, value in custom.items():
        param = _unreserved(_valid_name(str(key), False), RESERVED_PARAMS)
        if param in params or len(params) >= MAX_PARAMS:
            continue
        valid = valid_value(param, value)
        if valid is not None:
            params[param] = valid


def to_ga4(message: dict[str, Any], config: Ga4Config, received_ms: int = 0) -> Ga4Event | None:
    """The GA4 event of a track or page call (None for calls GA4's destination does not take:
    identify, group, alias, screen on a web stream) or a message with no client id."""
    mapped = event_of(decode_message(_encode(message)), config, received_ms)
    return None if mapped is None else Ga4Event(mapped[0][0], mapped[0][1], mapped[1])


def event_of(message: Message, config: Ga4Config, received_ms: int) -> tuple[tuple[str, Any], dict[str, Any]] | None:
    """:func:`to_ga4` of a decoded :class:`Message`, as ((client id, user id), the event): the
    pair is what a batch's events are grouped by, and no tuple is made per event but it."""
    kind = message.type
    if kind not in ("track", "page"):
        return None
    integrations = message.integrations
    event = message.event
    properties = message.properties
    if (
        not integrations
        and kind == "track"
        and type(event) is str
        and type(properties) is dict
        and event not in ECOMMERCE
        and len(properties) <= _MAX_PLANNED_PROPERTIES
        and type(config.engagement_time_msec) is int
    ):  # a custom event without options (most events): its name and plan worked out once per shape
        client_id = message.anonymousId or message.userId
        if client_id is None:
            return None
        shape = (event, config.lowercase_event_names, tuple(properties))
        custom_event = _CUSTOM_EVENTS.get(shape)
        if custom_event is None:
            custom_event = _custom_event(shape)
        name, plan = custom_event
        params: dict[str, Any] = {"engagement_time_msec": config.engagement_time_msec}
        _add_planned(params, properties, plan)
        return _with_time_and_user(message, config, received_ms, client_id, name, params)
    if integrations:
        options = integration_options({"integrations": integrations}, *INTEGRATION_NAMES)
        client_id = client_id_of(message, options)
    else:  # client_id_of() without options
        options = _NO_OPTIONS
        client_id = message.anonymousId or message.userId
    if client_id is None:
        return None
    if not isinstance(properties, dict):
        properties = {}
    params = {}
    if kind == "page":
        name = "page_view"
        context = _decode_context(message.context)
        page = context.page if context is not None and type(context.page) is dict else {}
        location = page.get("url") or properties.get("url")
        if location:
            params["page_location"] = location
        referrer = page.get("referrer") or properties.get("referrer")
        if referrer:
            params["page_referrer"] = referrer
        title = page.get("title") or properties.get("title") or message.name
        if title:
            params["page_title"] = title
        custom = {k: v for k, v in properties.items() if k not in ("url", "referrer", "title", "path", "search")}
    else:
        event = str(event)
        if event in ECOMMERCE:
            name = ECOMMERCE[event]
            params = _ecommerce_params(event, properties)
            custom = {}
        else:
            name = _unreserved(_valid_name(event, config.lowercase_event_names), RESERVED_EVENTS)
            custom = properties
    if options and options.get("session_id") is not None:
        params["session_id"] = options["session_id"]
    params.setdefault("engagement_time_msec", config.engagement_time_msec)
    fixed = list(params)
    if custom:
        _add_custom(params, custom)
    for key in fixed:  # the custom ones are valid already (valid_value of a valid value is itself)
        value = params[key]
        kind = type(value)
        if kind is str:  # valid_value() of a string, inlined
            params[key] = value[: LONG_VALUES.get(key, MAX_VALUE)]
        elif kind is not int and kind is not float and key != "items":
            valid = valid_value(key, value)
            if valid is None:
                del params[key]
            else:
                params[key] = valid
    return _with_time_and_user(message, config, received_ms, client_id, name, params)


def _custom_event(shape: tuple[str, bool, tuple[str, ...]]) -> tuple[str, _Plan]:
    """The GA4 name and property plan of a custom track event of ``shape`` (kept, unless its
    names are long)."""
    event, lowercase, keys = shape
    found = (_unreserved(_valid_name(event, lowercase), RESERVED_EVENTS), _plan(_ENGAGEMENT, keys))
    return _kept(_CUSTOM_EVENTS, shape, found, len(event) + sum(map(len, keys)))


def _kept(cache: dict[_Key, _Value], key: _Key, value: _Value, name_chars: int) -> _Value:
    """``value``, kept in ``cache`` under ``key`` unless its names (``name_chars`` characters)
    are long; a full cache is emptied first."""
    if name_chars <= _MAX_KEPT_NAME_CHARS:
        if len(cache) >= _MAX_PLANS:
            cache.clear()
        cache[key] = value
    return value


def _with_time_and_user(
    message: Message, config: Ga4Config, received_ms: int, client_id: Any, name: str, params: dict[str, Any]
) -> tuple[tuple[str, Any], dict[str, Any]]:
    """:func:`event_of`'s answer: the event ``name`` with ``params`` and the message's time, under
    its client and user."""
    time_ms = first_time_ms(received_ms, message.timestamp, message.originalTimestamp, message.receivedAt)
    event_body = {"name": name, "params": params, "timestamp_micros": time_ms * 1000}
    user_id = message.userId if config.send_user_id else None
    if user_id is not None and len(user_id) > MAX_USER_ID:
        user_id = None  # GA4 would not take it: the client id still says who it is (cut, it would be another user)
    return (str(client_id), user_id), event_body
