"""The ``function`` source: any webhook, turned into Segment calls by a few lines of Python.

```toml
[sources.helpdesk]
type = "function"
write_key = { env = "HELPDESK_TOKEN" }    # the URL token: POST /v1/sources/helpdesk/webhook?token=...
function = "helpdesk:on_request"          # module:callable, called as on_request(request, settings)
path = "/etc/gateway/functions"           # optional: a folder to import the module from
budget_ms = 500                           # time budget per delivery
settings = { plan_property = "plan" }     # optional: the callable's second argument
delivery_id_header = "X-Delivery-Id"      # optional: the sender's delivery id (dedup of redeliveries)
# Or authenticate by an HMAC of the body instead of the URL token:
# signature_header = "X-Hub-Signature-256"
# signature_prefix = "sha256="
# signature_algorithm = "sha256"          # sha1 | sha256 | sha512
# signature_encoding = "hex"              # hex | base64
# signing_secret = { env = "HELPDESK_SECRET" }   # or a list of secrets while rotating
```

The callable gets a :class:`WebhookRequest` (body, headers, query, delivery id) and returns
Segment calls: a dict with a ``type``, a list of them, or None; the helpers in
:mod:`gateway_source_function.calls` (``track``, ``identify``...) make them. They go through the
core's ingest like any other message: validation, server fields, the source's filters, privacy,
the log. When the sender gives a delivery id, each call without a messageId gets one derived
from (source, delivery id, its index), so a redelivered webhook is stored once.

A function that raises, runs out of time, or returns a call the core rejects stores nothing
from that delivery: the webhook is kept whole as a raw dead letter of the source and answered
500 so the sender retries. Fix the function, reload the config, and
``gateway dead-letters redrive --destination source:<id>`` runs the kept deliveries through it again.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from gateway import ComponentConfig, SourceType, hookimpl

from ._runner import FunctionSources
from .calls import WebhookRequest, alias, group, identify, page, screen, track

__all__ = [
    "FunctionSourceConfig",
    "WebhookRequest",
    "alias",
    "gateway_source_types",
    "group",
    "identify",
    "page",
    "screen",
    "track",
]

TYPE_NAME = "function"


class FunctionSourceConfig(ComponentConfig, frozen=True, kw_only=True):
    """``[sources.<id>]`` options of a ``function`` source."""

    #: ``module:callable``: ``callable(request)`` or, with ``settings``, ``callable(request, settings)``.
    function: Annotated[str, msgspec.Meta(min_length=3)]
    #: A folder to import the module from (before the rest of the import path).
    path: str | None = None
    #: Time budget per delivery, in milliseconds; past it the delivery is dead-lettered (500).
    budget_ms: Annotated[float, msgspec.Meta(gt=0, le=60_000)] = 500.0
    #: Passed as the callable's second argument when given.
    settings: dict[str, Any] | None = None
    #: A header holding the sender's id of each delivery: calls get messageIds derived from it.
    delivery_id_header: str | None = None
    #: A header holding an HMAC of the body: then it authenticates requests, not the URL token.
    signature_header: str | None = None
    #: The HMAC key (or keys, while rotating: any one may match).
    signing_secret: str | list[str] | None = None
    signature_algorithm: Literal["sha1", "sha256", "sha512"] = "sha256"
    signature_encoding: Literal["hex", "base64"] = "hex"
    #: What the header's value starts with before the signature (GitHub: ``"sha256="``).
    signature_prefix: str = ""
    #: Bodies larger than this get 413 (default: ``server.max_request_bytes``).
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1)] | None = None

    def __post_init__(self) -> None:
        module_name, sep, attribute = self.function.partition(":")
        if not sep or not module_name or not attribute:
            raise ValueError(f"function: {self.function!r} is not 'module:callable'")
        if (self.signature_header is None) != (self.signing_secret is None):
            raise ValueError("signature_header and signing_secret go together: give both, or neither")
        if isinstance(self.signing_secret, list) and not all(self.signing_secret):
            raise ValueError("signing_secret: every secret must be a non-empty string")

    @property
    def secrets(self) -> list[str]:
        """The signing secrets, as a list."""
        secret = self.signing_secret
        return [] if secret is None else [secret] if isinstance(secret, str) else list(secret)


@hookimpl
def gateway_source_types() -> list[SourceType]:
    functions = FunctionSources(TYPE_NAME)
    return [
        SourceType(
            name=TYPE_NAME,
            config_type=FunctionSourceConfig,
            blueprint=functions.blueprint,
            redrive=functions.redrive,
            description="webhooks turned into Segment calls by a Python function (module:callable), "
            "within a time budget; failed deliveries kept for redrive",
        )
    ]
