"""Stripe events as Segment calls: customers become identify calls; paid checkouts, succeeded
charges and paid invoices become Ecommerce spec ``Order Completed`` events; subscription
changes become track events. The Stripe event id is the messageId, so Stripe's retries of an
event (same id) are stored once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

JSON = dict[str, Any]

#: Currencies Stripe counts in whole units (its "zero-decimal currencies"): no division by 100.
ZERO_DECIMAL = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()  # noqa: SIM905
)
ORDER_COMPLETED = "Order Completed"
SUBSCRIPTION_EVENTS = {
    "customer.subscription.created": "Subscription Created",
    "customer.subscription.updated": "Subscription Updated",
    "customer.subscription.deleted": "Subscription Deleted",
}


def iso(epoch_secs: Any) -> str | None:
    """A Stripe time (Unix seconds) as ISO-8601 UTC."""
    if isinstance(epoch_secs, bool) or not isinstance(epoch_secs, int | float):
        return None
    return datetime.fromtimestamp(epoch_secs, UTC).isoformat().replace("+00:00", "Z")


def money(amount: Any, currency: Any) -> float | None:
    """A Stripe amount (in the currency's smallest unit) in the currency's units."""
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        return None
    if isinstance(currency, str) and currency.lower() in ZERO_DECIMAL:
        return float(amount)
    return amount / 100


def _ids(obj: JSON, customer: Any, user_id_key: str) -> JSON:
    """userId from the object's metadata (the app's own id, when it put it there), and the
    Stripe customer id as anonymousId, so an identify joins the two."""
    ids: JSON = {}
    metadata = obj.get("metadata")
    user_id = metadata.get(user_id_key) if isinstance(metadata, dict) else None
    if isinstance(user_id, str) and user_id:
        ids["userId"] = user_id
    if isinstance(customer, dict):
        customer = customer.get("id")
    if isinstance(customer, str) and customer:
        ids["anonymousId"] = customer
    elif "userId" not in ids:
        ids["anonymousId"] = str(obj.get("id") or "stripe")
    return ids


def _object(value: Any) -> JSON:
    """``value`` when it is a JSON object, else an empty one (Stripe leaves fields out or null)."""
    return value if isinstance(value, dict) else {}


def _clean(values: JSON) -> JSON:
    return {key: value for key, value in values.items() if value is not None}


def _product(item: JSON, currency: Any) -> JSON:
    price = _object(item.get("price"))
    product = price.get("product")
    quantity = item.get("quantity")
    return _clean(
        {
            "product_id": product.get("id") if isinstance(product, dict) else product,
            "sku": price.get("id"),
            "name": item.get("description"),
            "price": money(price.get("unit_amount"), currency),
            "quantity": quantity,
        }
    )


def _line_items(container: Any, currency: Any) -> list[JSON] | None:
    """Products of ``line_items``/``lines`` (present when the event carries them)."""
    data = container.get("data") if isinstance(container, dict) else None
    if not isinstance(data, list):
        return None
    return [_product(item, currency) for item in data if isinstance(item, dict)]


def _identify(obj: JSON, options: Any) -> JSON:
    address = _object(obj.get("address"))
    traits = _clean(
        {
            "email": obj.get("email"),
            "name": obj.get("name"),
            "phone": obj.get("phone"),
            "description": obj.get("description"),
            "createdAt": iso(obj.get("created")),
            "address": _clean(
                {
                    "street": " ".join(p for p in (address.get("line1"), address.get("line2")) if p) or None,
                    "city": address.get("city"),
                    "state": address.get("state"),
                    "postalCode": address.get("postal_code"),
                    "country": address.get("country"),
                }
            )
            or None,
            "stripe_customer_id": obj.get("id"),
        }
    )
    return {"type": "identify", **_ids(obj, obj.get("id"), options.user_id_metadata_key), "traits": traits}


def _checkout(obj: JSON, options: Any) -> JSON:
    currency = obj.get("currency")
    totals = _object(obj.get("total_details"))
    properties = {
        "order_id": obj.get("id"),
        "checkout_id": obj.get("id"),
        "total": money(obj.get("amount_total"), currency),
        "subtotal": money(obj.get("amount_subtotal"), currency),
        "revenue": money(obj.get("amount_subtotal"), currency),
        "tax": money(totals.get("amount_tax"), currency),
        "discount": money(totals.get("amount_discount"), currency),
        "shipping": money(totals.get("amount_shipping"), currency),
        "currency": currency.upper() if isinstance(currency, str) else None,
        "products": _line_items(obj.get("line_items"), currency),
        "payment_intent_id": obj.get("payment_intent"),
    }
    return _track(ORDER_COMPLETED, obj, obj.get("customer"), properties, options)


def _charge(obj: JSON, options: Any) -> JSON:
    currency = obj.get("currency")
    amount = money(obj.get("amount_captured") or obj.get("amount"), currency)
    properties = {
        "order_id": obj.get("payment_intent") or obj.get("id"),
        "total": amount,
        "revenue": amount,
        "currency": currency.upper() if isinstance(currency, str) else None,
        "charge_id": obj.get("id"),
        "invoice_id": obj.get("invoice"),
        "description": obj.get("description"),
    }
    return _track(ORDER_COMPLETED, obj, obj.get("customer"), properties, options)


def _invoice(obj: JSON, options: Any) -> JSON:
    currency = obj.get("currency")
    subtotal = money(obj.get("subtotal"), currency)
    properties = {
        "order_id": obj.get("id"),
        "total": money(obj.get("amount_paid"), currency),
        "subtotal": subtotal,
        "revenue": subtotal,
        "tax": money(obj.get("tax"), currency),
        "currency": currency.upper() if isinstance(currency, str) else None,
        "products": _line_items(obj.get("lines"), currency),
        "subscription_id": obj.get("subscription"),
        "invoice_number": obj.get("number"),
    }
    return _track(ORDER_COMPLETED, obj, obj.get("customer"), properties, options)


def _subscription(event_name: str) -> Callable[[JSON, Any], JSON]:
    def mapping(obj: JSON, options: Any) -> JSON:
        items = _object(obj.get("items")).get("data")
        first = _object(items[0]) if isinstance(items, list) and items else {}
        price = _object(first.get("price"))
        recurring = _object(price.get("recurring"))
        currency = price.get("currency") or obj.get("currency")
        properties = {
            "subscription_id": obj.get("id"),
            "status": obj.get("status"),
            "plan_id": price.get("id"),
            "product_id": price.get("product"),
            "amount": money(price.get("unit_amount"), currency),
            "currency": currency.upper() if isinstance(currency, str) else None,
            "interval": recurring.get("interval"),
            "quantity": first.get("quantity"),
            "current_period_start": iso(obj.get("current_period_start") or first.get("current_period_start")),
            "current_period_end": iso(obj.get("current_period_end") or first.get("current_period_end")),
            "cancel_at_period_end": obj.get("cancel_at_period_end"),
            "canceled_at": iso(obj.get("canceled_at")),
            "trial_end": iso(obj.get("trial_end")),
        }
        return _track(event_name, obj, obj.get("customer"), properties, options)

    return mapping


def _track(event: str, obj: JSON, customer: Any, properties: JSON, options: Any) -> JSON:
    return {
        "type": "track",
        "event": event,
        **_ids(obj, customer, options.user_id_metadata_key),
        "properties": _clean(properties),
    }


#: Stripe event type -> its mapping to one Segment call.
MAPPINGS: dict[str, Callable[[JSON, Any], JSON]] = {
    "customer.created": _identify,
    "customer.updated": _identify,
    "checkout.session.completed": _checkout,
    "charge.succeeded": _charge,
    "invoice.paid": _invoice,
    **{stripe_type: _subscription(name) for stripe_type, name in SUBSCRIPTION_EVENTS.items()},
}


def segment_call(event: JSON, options: Any) -> JSON | None:
    """The Segment call for a Stripe event, or None for a type this source does not map (or
    the config leaves out). Raises on an event whose shape is not Stripe's (KeyError,
    TypeError...)."""
    stripe_type = event["type"]
    mapping = MAPPINGS.get(stripe_type)
    if mapping is None or (options.events is not None and stripe_type not in options.events):
        return None
    obj = event["data"]["object"]
    if not isinstance(obj, dict):
        raise TypeError(f"data.object is {type(obj).__name__}, not an object")
    call = mapping(obj, options)
    call["messageId"] = event["id"]
    call["timestamp"] = iso(event.get("created"))
    call["context"] = {
        "integration": {"name": "stripe"},
        "stripe": _clean(
            {
                "event_id": event["id"],
                "event_type": stripe_type,
                "livemode": event.get("livemode"),
                "api_version": event.get("api_version"),
            }
        ),
    }
    if call["timestamp"] is None:
        del call["timestamp"]
    return call
