"""From what a source hands over to message dicts: a candidate's payload decoded (JSON bytes)
or measured (a dict), within the per-message size and nesting limits, with its call type; and a
Segment batch body opened into raw items and the root's defaults."""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from gateway.components import IngestLimits
from gateway.messages import (
    BatchDefaults,
    Invalid,
    check_nesting,
    decode_batch,
    decode_item,
    decode_single,
    encode,
)

JSONObject = dict[str, Any]
#: The code of the one rejection entry that stands for every item past a batch's limit.
BATCH_LIMIT_EXCEEDED = "batch_limit_exceeded"


def _too_large(max_bytes: int) -> Invalid:
    return Invalid("message_too_large", f"Exceed payload limit: a message may be at most {max_bytes} bytes")


def candidate_message(payload: object, call: str | None, max_bytes: int, root_bytes: int = 0) -> JSONObject:
    """The message of a candidate's ``payload``. Its call type is ``call``, or, when None, the
    message's own ``type`` (a batch item), which :func:`gateway.messages.batch_item_type`
    checks once the message's source is known (an unknown key or a refused origin comes first).

    ``root_bytes``: what a batch root merges into each item (its ``context`` and
    ``integrations``), counted in each item's size, or a small request could store thousands of
    copies of a root as large as the request.

    Raises:
        Invalid: too large, not one JSON object, or nested too deep.
    """
    if type(payload) is dict:
        data = encode(payload)
        if len(data) + root_bytes > max_bytes:
            raise _too_large(max_bytes)
        check_nesting(payload, data)
        return payload
    if type(payload) is not msgspec.Raw and not isinstance(payload, bytes):
        raise Invalid("message_not_object", "a message must be a JSON object")
    if len(payload) + root_bytes > max_bytes:
        raise _too_large(max_bytes)
    # A call's own endpoint (``/v1/track``) got "the body"; a batch item is "the item".
    return decode_item(payload) if call is None else decode_single(payload)


def defaults_bytes(defaults: BatchDefaults) -> int:
    """What ``defaults`` add to each message they are merged into (their ``context`` and
    ``integrations``), counted in its size."""
    return sum(len(encode(part)) for part in (defaults.context, defaults.integrations) if part)


class OpenBatch(NamedTuple):
    """A batch body opened: its items (raw, at most ``max_batch_messages``), the root's
    defaults and their size, how many items were past the limit, and the root's ``writeKey``."""

    items: list[msgspec.Raw]
    defaults: BatchDefaults
    root_bytes: int
    excess: int
    write_key: str | None


def open_batch(body: bytes, limits: IngestLimits) -> OpenBatch:
    """Open a Segment batch body.

    Raises:
        Invalid: not JSON, not an object, or ``batch`` missing or not an array.
    """
    batch = decode_batch(body)
    context = batch.context if type(batch.context) is dict else None
    integrations = batch.integrations if type(batch.integrations) is dict else None
    # A root sentAt that is not a string is no time: merged into every item it would be stored
    # unvalidated (and skew correction ignores it anyway).
    sent_at = batch.sentAt if type(batch.sentAt) is str else None
    defaults = BatchDefaults(sent_at=sent_at, context=context, integrations=integrations)
    root_bytes = defaults_bytes(defaults)
    limit = limits.max_batch_messages
    write_key = batch.writeKey if isinstance(batch.writeKey, str) and batch.writeKey else None
    return OpenBatch(batch.batch[:limit], defaults, root_bytes, max(0, len(batch.batch) - limit), write_key)
