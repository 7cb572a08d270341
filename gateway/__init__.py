"""The gateway: a self-hosted, Segment-compatible customer-event gateway.

Plugins import everything they need from here::

    from gateway import hookimpl, DestinationType, Destination, ComponentConfig, DeliveryError
"""

from __future__ import annotations

from gateway.components import (
    ComponentConfig,
    Destination,
    DestinationContext,
    DestinationType,
    Exchange,
    Filter,
    FilterContext,
    FilterType,
    Forward,
    MatcherType,
    Record,
    SendResult,
    SourceType,
    Verdict,
)
from gateway.errors import ConfigError, DeliveryError, GatewayError, LogUnavailableError, PluginError
from gateway.fastpath import FastPath, FastRequest, send_json
from gateway.hookspecs import hookimpl
from gateway.http_delivery import RETRYABLE_STATUSES, HttpDelivery, parse_retry_after
from gateway.ingest import IngestHub, IngestOutcome, Prepared, Source
from gateway.mapping import (
    epoch_ms,
    integration_options,
    message_time_ms,
    number,
    products_of,
    stable_uuid,
)
from gateway.messages import (
    Arrival,
    BatchDefaults,
    Invalid,
    apply_server_fields,
    batch_item_type,
    check_nesting,
    decode_batch,
    decode_item,
    decode_single,
    validate,
)
from gateway.telemetry import ThrottledWarning
from gateway.web import (
    basic_auth_user,
    decoded_body,
    error_response,
    json_response,
    read_body,
    success_response,
    unavailable_response,
    write_key_of,
)

__version__ = "0.1.0"

__all__ = [
    "Arrival",
    "BatchDefaults",
    "ComponentConfig",
    "ConfigError",
    "DeliveryError",
    "Destination",
    "DestinationContext",
    "DestinationType",
    "Exchange",
    "FastPath",
    "FastRequest",
    "Filter",
    "FilterContext",
    "FilterType",
    "Forward",
    "GatewayError",
    "HttpDelivery",
    "IngestHub",
    "IngestOutcome",
    "Invalid",
    "LogUnavailableError",
    "MatcherType",
    "PluginError",
    "Prepared",
    "RETRYABLE_STATUSES",
    "Record",
    "SendResult",
    "Source",
    "SourceType",
    "ThrottledWarning",
    "Verdict",
    "__version__",
    "apply_server_fields",
    "basic_auth_user",
    "batch_item_type",
    "check_nesting",
    "decode_batch",
    "decode_item",
    "decode_single",
    "decoded_body",
    "epoch_ms",
    "error_response",
    "hookimpl",
    "integration_options",
    "json_response",
    "message_time_ms",
    "number",
    "parse_retry_after",
    "products_of",
    "read_body",
    "send_json",
    "stable_uuid",
    "success_response",
    "unavailable_response",
    "validate",
    "write_key_of",
]
