"""RudderStack's SDKs, unmodified, as a gateway source: what their control plane and data plane
answer, under ``/rudderstack``.

```toml
[sources.site]
type = "rudderstack"
write_key = "2Ab...your RudderStack write key"
allowed_origins = ["https://shop.example.com"]   # default ["*"]
```

A page moves by changing two URLs: ``rudderanalytics.load(writeKey,
"https://events.example.com/rudderstack", {configUrl: "https://events.example.com/rudderstack"})``.
The browser SDK (``@rudderstack/analytics-js`` v3) then asks ``GET /rudderstack/sourceConfig/?...
&writeKey=`` (Basic auth, preflighted) for its source configuration, and posts its events to
``/rudderstack/v1/<type>`` (one per request), ``/rudderstack/v1/batch`` (queue batching) or
``/rudderstack/beacon/v1/batch?writeKey=`` (``useBeacon``). Server SDKs use the same data plane
URL (``rudder-sdk-python``: ``/rudderstack/v1/batch``).

RudderStack's payloads differ from Segment's in a few ways the source evens out before the
core validates them (:func:`gateway_source_rudderstack.events.as_segment`): the client time is
in ``originalTimestamp`` (the core's ``timestamp``), unknown ids are ``""``, and an identify's
traits are in ``context.traits``. ``channel``, ``rudderId`` and the rest are kept as sent.
"""

from __future__ import annotations

import msgspec

from gateway import ComponentConfig, SourceType, hookimpl

from ._routes import make_blueprint

__all__ = ["PREFIX", "RudderStackConfig", "gateway_source_types"]

TYPE_NAME = "rudderstack"
#: Where the control plane and data plane are served: the SDKs' ``configUrl`` and ``dataPlaneUrl``.
PREFIX = "/rudderstack"


class RudderStackConfig(ComponentConfig, frozen=True, kw_only=True):
    """``[sources.<id>]`` options of a ``rudderstack`` source."""

    #: Browser origins whose requests are answered with CORS headers and stored: ``"*"``, an
    #: exact origin or ``"https://*.example.com"``. Requests from other origins are refused (403).
    allowed_origins: list[str] = msgspec.field(default_factory=lambda: ["*"])
    #: The source's name in the sourceConfig answer (default: its id).
    name: str | None = None


@hookimpl
def gateway_source_types() -> list[SourceType]:
    return [
        SourceType(
            name=TYPE_NAME,
            config_type=RudderStackConfig,
            blueprint=lambda ingest: make_blueprint(ingest, TYPE_NAME, PREFIX),
            description="RudderStack's SDKs unmodified: sourceConfig, /v1/<type>, /v1/batch, /beacon/v1/batch "
            "under /rudderstack",
        )
    ]
