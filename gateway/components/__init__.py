"""What a plugin provides: the component types (source, filter, matcher, destination) and their
contracts, one module each.

A plugin returns these from its hooks (see ``gateway.hookspecs``). Each type has a ``name`` that
the config refers to (``type = "file"``), a msgspec ``Config`` type that validates its section of
the config, and a factory that builds the running component from a validated config.

May import only the bottom layer (gateway.messages, gateway.telemetry, gateway.errors): every
other package builds on these contracts.
"""

from __future__ import annotations

from gateway.components.base import ComponentConfig, JSONObject
from gateway.components.destination import (
    Destination,
    DestinationContext,
    DestinationType,
    Exchange,
    Record,
    SendResult,
)
from gateway.components.filter import (
    FILTER_ERROR_REASON,
    Filter,
    FilterChain,
    FilterContext,
    FilterErrorLog,
    FilterOutcome,
    FilterType,
    Forward,
    InlinePass,
    Verdict,
    apply_filters,
)
from gateway.components.matcher import MatcherType
from gateway.components.source import (
    Candidate,
    Checked,
    Ingest,
    IngestLimits,
    IngestOutcome,
    RateLimit,
    Rejection,
    Source,
    SourceType,
)

__all__ = [
    "FILTER_ERROR_REASON",
    "Candidate",
    "Checked",
    "ComponentConfig",
    "Destination",
    "DestinationContext",
    "DestinationType",
    "Exchange",
    "Filter",
    "FilterChain",
    "FilterContext",
    "FilterErrorLog",
    "FilterOutcome",
    "FilterType",
    "Forward",
    "Ingest",
    "IngestLimits",
    "IngestOutcome",
    "InlinePass",
    "JSONObject",
    "MatcherType",
    "RateLimit",
    "Record",
    "Rejection",
    "SendResult",
    "Source",
    "SourceType",
    "Verdict",
    "apply_filters",
]
