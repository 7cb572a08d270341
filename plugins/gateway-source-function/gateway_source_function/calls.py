"""What a source function sees and returns: the webhook as a :class:`WebhookRequest`, and the
Segment calls, as dicts or made with the helpers here::

    from gateway_source_function import identify, track

    def on_request(request, settings):
        hook = request.json()
        return [
            identify(hook["user"]["id"], traits={"email": hook["user"]["email"]}),
            track("Ticket Opened", userId=hook["user"]["id"], properties={"id": hook["ticket"]}),
        ]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

__all__ = ["WebhookRequest", "alias", "group", "identify", "page", "screen", "track"]


@dataclass(frozen=True)
class WebhookRequest:
    """One webhook delivery, as the source function gets it.

    Attributes:
        body: The body as sent (gunzipped when it came gzipped).
        headers: Request headers by lower-case name (credentials left out: ``authorization``,
            ``cookie`` and the signature header are never passed or kept).
        query: The query parameters (the URL ``token`` left out).
        source_id: The id of the source this webhook is for.
        delivery_id: The sender's id of this delivery (from the ``delivery_id_header`` the
            config names), or None. It is the same when the sender redelivers.
    """

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    source_id: str = ""
    delivery_id: str | None = None

    @property
    def text(self) -> str:
        """The body as UTF-8 text (undecodable bytes replaced)."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body decoded as JSON (raises ``msgspec.DecodeError``, a ValueError, if it is not)."""
        return msgspec.json.decode(self.body)

    def header(self, name: str, default: str | None = None) -> str | None:
        """A header by name, in any case."""
        return self.headers.get(name.lower(), default)


def _call(call_type: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": call_type, **{key: value for key, value in fields.items() if value is not None}}


def track(
    event: str,
    *,
    userId: str | None = None,
    anonymousId: str | None = None,
    properties: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A track call; ``fields`` adds any other field (``timestamp``, ``context``, ``messageId``...)."""
    return _call(
        "track", {"event": event, "userId": userId, "anonymousId": anonymousId, "properties": properties, **fields}
    )


def identify(
    userId: str | None = None,
    *,
    anonymousId: str | None = None,
    traits: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """An identify call."""
    return _call("identify", {"userId": userId, "anonymousId": anonymousId, "traits": traits, **fields})


def page(
    name: str | None = None,
    *,
    userId: str | None = None,
    anonymousId: str | None = None,
    properties: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A page call."""
    return _call(
        "page", {"name": name, "userId": userId, "anonymousId": anonymousId, "properties": properties, **fields}
    )


def screen(
    name: str | None = None,
    *,
    userId: str | None = None,
    anonymousId: str | None = None,
    properties: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A screen call."""
    return _call(
        "screen", {"name": name, "userId": userId, "anonymousId": anonymousId, "properties": properties, **fields}
    )


def group(
    groupId: str,
    *,
    userId: str | None = None,
    anonymousId: str | None = None,
    traits: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A group call."""
    return _call(
        "group", {"groupId": groupId, "userId": userId, "anonymousId": anonymousId, "traits": traits, **fields}
    )


def alias(userId: str, previousId: str, **fields: Any) -> dict[str, Any]:
    """An alias call: ``previousId`` is now known as ``userId``."""
    return _call("alias", {"userId": userId, "previousId": previousId, **fields})
