"""The gateway: a self-hosted, Segment-compatible customer-event gateway.

This module is the plugin API, and the only one: plugins import what they need from here (and
their tests from ``gateway.testing``), never from a submodule::

    from gateway import hookimpl, DestinationType, Destination, ComponentConfig, DeliveryError

What each name is for:

- Every plugin: :func:`hookimpl`, :class:`ComponentConfig` (the base of its config type),
  :class:`ThrottledWarning` (per-event trouble, logged without flooding), the error types.
- Destinations: :class:`DestinationType`, :class:`Destination`, :class:`DestinationContext`,
  :class:`Record`, :class:`SendResult`, :class:`Exchange`, :class:`DeliveryError`; for HTTP
  APIs :class:`HttpDelivery` (answers mapped to the retry policy, redacted samples) with
  :data:`RETRYABLE_STATUSES` and :func:`parse_retry_after`; for Segment's specs
  :func:`integration_options`, :func:`products_of`, :func:`message_time_ms` (:func:`first_time_ms`), :func:`epoch_ms`,
  :func:`number`, :func:`stable_uuid` and :class:`MappedContexts` (contexts mapped once).
- Filters: :class:`FilterType`, :class:`Filter`, :class:`FilterContext`, :class:`Verdict`,
  :class:`Forward`, :class:`InlinePass`.
- Operators' Python functions (function filters and sources): :func:`load_callable`
  (``module:callable``, re-imported on reload) and :func:`call_within` (a time budget,
  :class:`BudgetExceeded`, enforced where :func:`budget_enforceable`).
- Privacy matchers: :class:`MatcherType`, and :class:`CustomMatcher` (a ``[privacy.matchers]``
  entry a matcher plugin builds).
- Sources: :class:`SourceType`, :class:`Ingest` (what the core gives a source: it validates,
  completes, rate-limits, filters and stores), :class:`Source`, :class:`Candidate`,
  :class:`Checked`, :class:`Rejection`, :class:`IngestOutcome`, :class:`IngestLimits`,
  :class:`Arrival`, :class:`BatchDefaults`, :data:`CALL_TYPES`, :class:`Invalid`,
  :class:`RateLimitedError`, :class:`LogUnavailableError`; the HTTP helpers every source
  shares (:func:`read_body`, :func:`decoded_body`, :func:`write_key_of`,
  :func:`basic_auth_user`, :func:`json_response`, :func:`success_response`,
  :func:`error_response`, :func:`unavailable_response`); CORS for sources browsers post to
  (:func:`origin_allowed`, :func:`cors_headers`, :func:`add_cors_headers`); and, for the hottest requests, the
  :class:`FastPath` contract with :class:`FastRequest` and :func:`send_json`.

Importing this module imports nothing else: each name loads from its module on first use, so
``import gateway`` stays cheap. Beneath it, one package per stage of the pipeline (README:
"Package layout"), layered by the import-linter contracts in pyproject.toml.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and editors; at run time each name loads on first use
    from gateway.components import (
        Candidate,
        Checked,
        ComponentConfig,
        Destination,
        DestinationContext,
        DestinationType,
        Exchange,
        Filter,
        FilterContext,
        FilterType,
        Forward,
        Ingest,
        IngestLimits,
        IngestOutcome,
        InlinePass,
        MatcherType,
        Record,
        Rejection,
        SendResult,
        Source,
        SourceType,
        Verdict,
    )
    from gateway.errors import (
        ConfigError,
        DeliveryError,
        GatewayError,
        LogUnavailableError,
        PluginError,
        RateLimitedError,
    )
    from gateway.hookspecs import hookimpl
    from gateway.http.app import (
        basic_auth_user,
        decoded_body,
        error_response,
        json_response,
        read_body,
        success_response,
        unavailable_response,
        write_key_of,
    )
    from gateway.http.cors import add_cors_headers, cors_headers, origin_allowed
    from gateway.http.fastpath import FastPath, FastRequest, send_json
    from gateway.kit.functions import BudgetExceeded, budget_enforceable, call_within, load_callable
    from gateway.kit.http_delivery import (
        RETRYABLE_STATUSES,
        HttpDelivery,
        check_http_url,
        chunk_encoded,
        parse_retry_after,
    )
    from gateway.kit.mapping import (
        MappedContexts,
        epoch_ms,
        first_time_ms,
        integration_options,
        message_time_ms,
        number,
        products_of,
        stable_uuid,
    )
    from gateway.messages import CALL_TYPES, Arrival, BatchDefaults, Invalid
    from gateway.privacy.config import CustomMatcher
    from gateway.telemetry import ThrottledWarning

#: Where each public name lives. Loading them on first use keeps ``import gateway`` cheap, so
#: the command starts (and ignores an early SIGHUP) before the web stack is imported.
_WHERE = {
    "Arrival": "gateway.messages",
    "BatchDefaults": "gateway.messages",
    "BudgetExceeded": "gateway.kit.functions",
    "CALL_TYPES": "gateway.messages",
    "Candidate": "gateway.components",
    "Checked": "gateway.components",
    "ComponentConfig": "gateway.components",
    "ConfigError": "gateway.errors",
    "CustomMatcher": "gateway.privacy.config",
    "DeliveryError": "gateway.errors",
    "Destination": "gateway.components",
    "DestinationContext": "gateway.components",
    "DestinationType": "gateway.components",
    "Exchange": "gateway.components",
    "FastPath": "gateway.http.fastpath",
    "FastRequest": "gateway.http.fastpath",
    "Filter": "gateway.components",
    "FilterContext": "gateway.components",
    "FilterType": "gateway.components",
    "Forward": "gateway.components",
    "GatewayError": "gateway.errors",
    "HttpDelivery": "gateway.kit.http_delivery",
    "Ingest": "gateway.components",
    "IngestLimits": "gateway.components",
    "IngestOutcome": "gateway.components",
    "InlinePass": "gateway.components",
    "Invalid": "gateway.messages",
    "LogUnavailableError": "gateway.errors",
    "MatcherType": "gateway.components",
    "PluginError": "gateway.errors",
    "RETRYABLE_STATUSES": "gateway.kit.http_delivery",
    "RateLimitedError": "gateway.errors",
    "Record": "gateway.components",
    "Rejection": "gateway.components",
    "SendResult": "gateway.components",
    "Source": "gateway.components",
    "SourceType": "gateway.components",
    "ThrottledWarning": "gateway.telemetry",
    "Verdict": "gateway.components",
    "add_cors_headers": "gateway.http.cors",
    "basic_auth_user": "gateway.http.app",
    "budget_enforceable": "gateway.kit.functions",
    "call_within": "gateway.kit.functions",
    "cors_headers": "gateway.http.cors",
    "decoded_body": "gateway.http.app",
    "MappedContexts": "gateway.kit.mapping",
    "epoch_ms": "gateway.kit.mapping",
    "first_time_ms": "gateway.kit.mapping",
    "error_response": "gateway.http.app",
    "hookimpl": "gateway.hookspecs",
    "integration_options": "gateway.kit.mapping",
    "json_response": "gateway.http.app",
    "load_callable": "gateway.kit.functions",
    "message_time_ms": "gateway.kit.mapping",
    "number": "gateway.kit.mapping",
    "origin_allowed": "gateway.http.cors",
    "parse_retry_after": "gateway.kit.http_delivery",
    "check_http_url": "gateway.kit.http_delivery",
    "chunk_encoded": "gateway.kit.http_delivery",
    "products_of": "gateway.kit.mapping",
    "read_body": "gateway.http.app",
    "send_json": "gateway.http.fastpath",
    "stable_uuid": "gateway.kit.mapping",
    "success_response": "gateway.http.app",
    "unavailable_response": "gateway.http.app",
    "write_key_of": "gateway.http.app",
}

__version__ = "0.1.0"

__all__ = [
    "CALL_TYPES",
    "RETRYABLE_STATUSES",
    "Arrival",
    "BatchDefaults",
    "BudgetExceeded",
    "Candidate",
    "Checked",
    "ComponentConfig",
    "ConfigError",
    "CustomMatcher",
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
    "Ingest",
    "IngestLimits",
    "IngestOutcome",
    "InlinePass",
    "Invalid",
    "LogUnavailableError",
    "MappedContexts",
    "MatcherType",
    "PluginError",
    "RateLimitedError",
    "Record",
    "Rejection",
    "SendResult",
    "Source",
    "SourceType",
    "ThrottledWarning",
    "Verdict",
    "__version__",
    "add_cors_headers",
    "basic_auth_user",
    "budget_enforceable",
    "call_within",
    "check_http_url",
    "chunk_encoded",
    "cors_headers",
    "decoded_body",
    "epoch_ms",
    "error_response",
    "first_time_ms",
    "hookimpl",
    "integration_options",
    "json_response",
    "load_callable",
    "message_time_ms",
    "number",
    "origin_allowed",
    "parse_retry_after",
    "products_of",
    "read_body",
    "send_json",
    "stable_uuid",
    "success_response",
    "unavailable_response",
    "write_key_of",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'gateway' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
