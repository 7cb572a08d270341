"""The Segment message wire format: decoding, per-call validation, and the fields the server sets.

One place defines what a valid identify/track/page/screen/group/alias call is (segment-api.md
§1.7), the error codes clients see, and the server-side fields (§1.8-1.10): ``messageId``,
``receivedAt``, ``originalTimestamp``, the skew-corrected ``timestamp``, merged batch-root
``context``/``integrations``/``sentAt``, ``context.ip``, and the removal of ``writeKey``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any

import msgspec

CALL_TYPES = ("identify", "track", "page", "screen", "group", "alias")
TYPE_BY_LETTER = {name[0]: name for name in CALL_TYPES}
MAX_MESSAGE_ID_CHARS = 100

JSONObject = dict[str, Any]


class Invalid(Exception):
    """A request or message that is wrong for good: clients must not send it again.

    Args:
        code: A stable snake_case code, as in Segment's ingest errors where one exists.
        message: Text for the developer who sent it.
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


#: Items a batch body may hold at all (``server.max_batch_messages`` is the limit a batch is
#: answered by): beyond, the whole body is refused before anything is held per item.
MAX_BATCH_ITEMS = 100_000


class BatchBody(msgspec.Struct):
    """A ``/v1/batch`` body: the items stay raw so each one's size is known without re-encoding."""

    batch: Annotated[list[msgspec.Raw], msgspec.Meta(max_length=MAX_BATCH_ITEMS)]
    writeKey: Any = None
    sentAt: Any = None
    context: Any = None
    integrations: Any = None


_decode_any = msgspec.json.Decoder().decode
_decode_batch = msgspec.json.Decoder(BatchBody).decode
encode = msgspec.json.Encoder().encode


#: Objects and arrays nest at most this deep in a message: deeper ones are refused (400), so
#: nothing downstream (privacy walks, filters, destinations) meets unbounded recursion.
MAX_NESTING = 100


def check_nesting(message: Any, raw: bytes | msgspec.Raw, limit: int = MAX_NESTING) -> None:
    """Refuse a message nested deeper than ``limit`` (``raw``: its JSON, to skip the walk for
    the messages that cannot be: fewer brackets than the limit).

    Raises:
        Invalid: ``nesting_too_deep``.
    """
    data = raw if type(raw) is bytes else bytes(raw)  # a batch item is a msgspec.Raw
    if data.count(b"{") + data.count(b"[") <= limit:
        return
    stack: list[tuple[Any, int]] = [(message, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise _too_deep()
        children = node.values() if type(node) is dict else node
        stack.extend((child, depth + 1) for child in children if type(child) in (dict, list))


def decode_single(body: bytes) -> JSONObject:
    """Decode the body of a single-call endpoint.

    Raises:
        Invalid: the body is not JSON, or not a JSON object.
    """
    message = _decode_json(body, "the body")
    if not isinstance(message, dict):
        raise Invalid("message_not_object", "the body must be a JSON object")
    check_nesting(message, body)
    return message


def decode_batch(body: bytes) -> BatchBody:
    """Decode a batch body, leaving each item raw.

    Raises:
        Invalid: not JSON, not an object, or ``batch`` missing or not an array.
    """
    try:
        batch = _decode_batch(body)
    except msgspec.ValidationError as error:
        raise Invalid("invalid_batch", f'the body must be an object with a "batch" array ({error})') from None
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise Invalid("invalid_json", f"the body is not valid JSON: {error}") from None
    except RecursionError:
        raise _too_deep() from None
    for root in (batch.context, batch.integrations):  # merged into the items, one level down
        if type(root) is dict:
            check_nesting(root, encode(root), MAX_NESTING - 1)
    return batch


def _decode_json(data: bytes | msgspec.Raw, what: str) -> Any:
    """Decode JSON; every way it can be wrong is the client's: invalid UTF-8 in a string, a
    number out of range (``1e400``), nesting deeper than the decoder goes.

    Raises:
        Invalid: ``invalid_json`` or ``nesting_too_deep``.
    """
    try:
        return _decode_any(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise Invalid("invalid_json", f"{what} is not valid JSON: {error}") from None
    except RecursionError:
        raise _too_deep() from None


def _too_deep() -> Invalid:
    return Invalid("nesting_too_deep", f"objects and arrays may nest at most {MAX_NESTING} deep")


def decode_item(raw: bytes) -> JSONObject:
    """Decode one batch item (its syntax was checked with the batch; its values were not).

    Raises:
        Invalid: the item is not valid JSON, or not a JSON object.
    """
    try:
        item = _decode_any(raw)
    except Exception:  # decoded again to raise the client's error (this runs once per event)
        item = _decode_json(raw, "the item")
    if type(item) is not dict:
        raise Invalid("message_not_object", "each batch item must be a JSON object")
    check_nesting(item, raw)
    return item


def _require_string(message: JSONObject, key: str, missing: str, wrong: str) -> None:
    value = message.get(key)
    if value is None:
        raise Invalid(missing, f"{key} is required")
    if not isinstance(value, str) or not value:
        raise Invalid(wrong, f"{key} must be a non-empty string")


def _optional_object(message: JSONObject, key: str) -> None:
    value = message.get(key)
    if value is not None and type(value) is not dict:
        raise Invalid(f"{key}_not_object", f"{key} must be an object")


def _optional_string(message: JSONObject, key: str) -> None:
    value = message.get(key)
    if value is not None and not isinstance(value, str):
        raise Invalid(f"{key}_not_string", f"{key} must be a string")


def validate(message: JSONObject, call_type: str) -> None:
    """Check one message of ``call_type`` against the Tracking API rules.

    Raises:
        Invalid: the first rule the message breaks.
    """
    get = message.get  # this runs once per event: plain lookups, no helper calls on the happy path
    user_id = get("userId")
    anonymous_id = get("anonymousId")
    if user_id is None and anonymous_id is None:
        raise Invalid("no_user_anon_id", "userId or anonymousId is required")
    if user_id is not None and (type(user_id) is not str or not user_id):
        raise Invalid("id_not_string", "userId must be a non-empty string")
    if anonymous_id is not None and (type(anonymous_id) is not str or not anonymous_id):
        raise Invalid("id_not_string", "anonymousId must be a non-empty string")
    message_id = get("messageId")
    if message_id is not None:
        if type(message_id) is not str or not message_id:
            raise Invalid("message_id_not_string", "messageId must be a non-empty string")
        if len(message_id) > MAX_MESSAGE_ID_CHARS:
            raise Invalid("message_id_too_long", f"messageId is longer than {MAX_MESSAGE_ID_CHARS} characters")
        if "\x00" in message_id:  # the core's own dedup keys use NUL: no client id may look like one
            raise Invalid("message_id_invalid", "messageId must not contain NUL characters")
    for key in ("context", "integrations"):
        value = get(key)
        if value is not None and type(value) is not dict:
            raise Invalid(f"{key}_not_object", f"{key} must be an object")
    if call_type == "track":
        event = get("event")
        if type(event) is not str or not event:
            _require_string(message, "event", "event_not_defined", "event_not_string")
        properties = get("properties")
        if properties is not None and type(properties) is not dict:
            raise Invalid("properties_not_object", "properties must be an object")
    elif call_type in ("page", "screen"):
        _optional_string(message, "name")
        _optional_string(message, "category")
        _optional_object(message, "properties")
    elif call_type == "identify":
        _optional_object(message, "traits")
    elif call_type == "group":
        _require_string(message, "groupId", "group_id_required", "group_id_not_string")
        _optional_object(message, "traits")
    elif call_type == "alias":
        _require_string(message, "previousId", "previous_id_required", "previous_id_not_string")
        _require_string(message, "userId", "user_id_required", "id_not_string")


def batch_item_type(item: JSONObject) -> str:
    """The call type of a batch item, which must say it.

    Raises:
        Invalid: ``type`` is missing or not one of the six calls.
    """
    call_type = item.get("type")
    if call_type not in CALL_TYPES:
        if call_type is None:
            raise Invalid("type_required", "each batch item needs a type")
        raise Invalid("type_invalid", f"type must be one of {', '.join(CALL_TYPES)}")
    return str(call_type)


def parse_time(value: Any) -> datetime | None:
    """An ISO-8601 time as sent by clients (``Z`` or an offset, ms or µs); naive means UTC."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _parse_sent_at(value: Any) -> datetime | None:
    """:func:`parse_time` for ``sentAt``, which every item of a batch shares: parsed once."""
    return _parse_time_cached(value) if type(value) is str else None


_parse_time_cached = lru_cache(maxsize=256)(parse_time)


def format_time(moment: datetime) -> str:
    """UTC, millisecond precision, ``Z``: the form Segment's processed events use."""
    zone = moment.tzinfo
    if zone is None:
        moment = moment.replace(tzinfo=UTC)
    elif zone is not UTC and moment.utcoffset():
        moment = moment.astimezone(UTC)
    # msgspec writes RFC 3339 in C, several times faster than isoformat (this runs once per
    # event): '"YYYY-MM-DDTHH:MM:SSZ"', or with '.ffffff' before the Z; truncate to ms as isoformat did.
    text = encode(moment)
    if len(text) == 22:
        return text[1:20].decode() + ".000Z"
    return text[1:24].decode() + "Z"


class Arrival(msgspec.Struct, frozen=True):
    """When and from where a request arrived: computed once, shared by all its messages."""

    at: datetime
    text: str
    client_ip: str | None

    @classmethod
    def now(cls, client_ip: str | None) -> Arrival:
        at = datetime.now(UTC)
        return cls(at=at, text=format_time(at), client_ip=client_ip)


class BatchDefaults(msgspec.Struct, frozen=True):
    """Fields of a batch root that apply to every item lacking them."""

    sent_at: Any = None
    context: JSONObject | None = None
    integrations: JSONObject | None = None


NO_DEFAULTS = BatchDefaults()


def _merge_under(message: JSONObject, key: str, defaults: JSONObject | None) -> None:
    if not defaults:
        return
    own = message.get(key)
    message[key] = {**defaults, **own} if isinstance(own, dict) else dict(defaults)


def apply_server_fields(
    message: JSONObject,
    call_type: str,
    arrival: Arrival,
    defaults: BatchDefaults = NO_DEFAULTS,
) -> None:
    """Set the fields the server owns on a validated message, in place.

    ``timestamp`` is corrected for the client's clock skew: ``receivedAt - (sentAt -
    originalTimestamp)`` when the client sent both; its own ``timestamp`` when it sent no
    ``sentAt``; ``receivedAt`` when it sent no ``timestamp``.

    Raises:
        Invalid: ``timestamp`` is present but not an ISO-8601 time.
    """
    get = message.get  # this runs once per event: plain lookups, helpers only where needed
    if "writeKey" in message:
        del message["writeKey"]
    message["type"] = call_type
    if get("messageId") is None:
        message["messageId"] = str(uuid.uuid4())
    if defaults is not NO_DEFAULTS:
        _merge_under(message, "context", defaults.context)
        _merge_under(message, "integrations", defaults.integrations)
        if defaults.sent_at is not None and get("sentAt") is None:
            message["sentAt"] = defaults.sent_at
    client_ip = arrival.client_ip
    if client_ip is not None:
        context = get("context")
        if context is None:
            message["context"] = {"ip": client_ip}
        elif context.get("ip") is None:
            context["ip"] = client_ip

    received_text = arrival.text
    message["receivedAt"] = received_text
    client_time = get("timestamp")
    if client_time is None:
        message["originalTimestamp"] = received_text
        message["timestamp"] = received_text
        return
    original = parse_time(client_time)
    if original is None:
        raise Invalid("timestamp_invalid", "timestamp must be an ISO-8601 date-time")
    message["originalTimestamp"] = client_time
    sent_at = _parse_sent_at(get("sentAt"))
    try:
        corrected = arrival.at - (sent_at - original) if sent_at is not None else original
        message["timestamp"] = format_time(corrected)
    except OverflowError:  # year 1 or 9999 with an offset, or a sentAt that far from it
        raise Invalid("timestamp_invalid", "timestamp (corrected by sentAt) is outside the years 1-9999") from None
