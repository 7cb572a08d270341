"""The config's types: the tables the core owns (``[server]``, ``[log]``, ``[admin]``), the core
keys of every source, destination and filter, and :class:`GatewayConfig`, the validated whole.

They are frozen msgspec structs that refuse unknown keys; how a file becomes one is
gateway.config.loading.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec
from msgspec import Meta

from gateway.components import MatcherType
from gateway.config.secrets import redact, secret_values
from gateway.privacy.config import PrivacyConfig, PrivacyPolicy

DEFAULT_SOURCE_TYPE = "tracking_api"

PositiveInt = Annotated[int, Meta(ge=1)]
NonNegativeInt = Annotated[int, Meta(ge=0)]
PositiveFloat = Annotated[float, Meta(gt=0)]
NonNegativeFloat = Annotated[float, Meta(ge=0)]
#: A client-facing time limit: short enough to matter, at most an hour.
Timeout = Annotated[float, Meta(gt=0, le=3600)]
Identifier = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]+$", min_length=1, max_length=64)]

_LISTEN = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def _check_listen(listen: str) -> None:
    match = _LISTEN.match(listen)
    if not match or int(match[2]) > 65535:
        raise ValueError(f"listen must be HOST:PORT with a port of 0 to 65535, got {listen!r}")


class Table(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A table of the config: unknown keys are refused (a typo is an error, not a default)."""


class ServerConfig(Table, frozen=True, kw_only=True):
    """``[server]``: the HTTP listener and request limits."""

    listen: str = "127.0.0.1:8080"
    data_dir: str = "var"
    #: Peers whose ``X-Forwarded-For`` is believed when setting ``context.ip`` (IPs or CIDRs).
    trusted_proxies: list[str] = []
    #: Largest request body, after gunzip. The Node client really sends 1.2 MB batches.
    max_request_bytes: Annotated[int, Meta(ge=1024 * 1024)] = 8 * 1024 * 1024
    max_message_bytes: Annotated[int, Meta(ge=1024)] = 32 * 1024
    #: At most 100,000: a body of more items is refused whole (gateway.messages.MAX_BATCH_ITEMS).
    max_batch_messages: Annotated[int, Meta(ge=1, le=100_000)] = 2500
    graceful_shutdown_secs: NonNegativeFloat = 10.0
    #: Seconds a client is asked to wait (``Retry-After``) when the log cannot take writes, or
    #: when it is refused because ``max_connections`` are open.
    retry_after_secs: PositiveInt = 5
    #: Connections each listener (the HTTP API, the admin API) keeps open at once; one more is
    #: answered 503 with ``Retry-After`` and closed. The process needs about
    #: 2 x (max_connections + 64) + 256 open files (gateway.http.server.open_files_needed).
    max_connections: Annotated[int, Meta(ge=1, le=1_000_000)] = 4096
    #: Time a client has to send a whole request head, from connecting (or from its first byte
    #: after an idle keep-alive period).
    request_head_timeout_secs: Timeout = 10.0
    #: Longest silence while a request body is arriving.
    body_chunk_timeout_secs: Timeout = 10.0
    #: Time a client has to send a whole request body, from the end of its head.
    body_timeout_secs: Timeout = 30.0
    #: An idle keep-alive connection is closed after this (longer than common proxies' own).
    keep_alive_timeout_secs: Timeout = 75.0
    #: Time each write of a response may take; a client that does not read it is dropped.
    send_timeout_secs: Timeout = 30.0
    #: Let several gateways listen on the same ``listen`` address (SO_REUSEPORT; the kernel
    #: spreads connections over them): every core of a machine, with ``log.engine = "redis"``.
    reuse_port: bool = False

    def __post_init__(self) -> None:
        _check_listen(self.listen)
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {proxy!r} is not an IP address or network") from None


class LogConfig(Table, frozen=True, kw_only=True):
    """``[log]``: the durable ingest log."""

    #: ``sqlite`` (embedded, one gateway per data_dir) or ``redis`` (Redis Streams shared by
    #: many gateways; README: Scaling out).
    engine: Literal["sqlite", "redis"] = "sqlite"
    #: A (source, messageId) seen within this many seconds is acknowledged but not stored again.
    #: (It is remembered as long as its message is in the log, and the log keeps messages for
    #: at least this long.)
    dedup_window_secs: PositiveInt = 24 * 3600
    #: Messages every destination has are kept this long for replay (and at least as long as
    #: the dedup window), then purged.
    archive_secs: NonNegativeInt = 7 * 24 * 3600
    #: The bound on the log's files (WAL included). Ingestion answers 503 from a reserve below it
    #: (SQLite: 64 MiB or a sixteenth, for the writes it cannot count ahead) until purging or
    #: delivery frees space.
    max_disk_bytes: Annotated[int, Meta(ge=1024 * 1024)] = 8 * 1024**3
    #: SQLite ``synchronous``: ``full`` survives power loss, ``normal`` only process crashes.
    #: With Redis, what its AOF must give: ``full`` needs ``appendfsync always``, ``normal``
    #: accepts ``everysec`` (checked at start).
    synchronous: Literal["full", "normal"] = "full"
    #: Messages waiting for a commit beyond which new requests get 503 (overload guard).
    max_pending_messages: PositiveInt = 200_000
    #: Redis only: ``redis://[user:password@]host:port/db``, ``rediss://`` (TLS), ``unix:///path``,
    #: or ``redis+sentinel://host:port[,host:port]/<service>/db`` (a Sentinel-watched primary).
    url: str = "redis://127.0.0.1:6379/0"
    #: Redis only: every key of this log starts with ``{prefix}:`` (one Cluster hash slot).
    prefix: Identifier = "gateway"
    #: Redis only: replicas that must have each commit (``WAIT``) before clients are answered.
    replicas: NonNegativeInt = 0
    #: Redis only: how long a commit waits for ``replicas`` before it is refused (503).
    replica_timeout_ms: PositiveInt = 1000
    #: Redis only: check ``appendonly``/``appendfsync`` at start (turn off on managed Redis that
    #: disables CONFIG, once its persistence is known to meet ``synchronous``).
    redis_durability_checked: bool = True
    #: Redis only: a gateway that stops renewing its hold on a destination (killed, cut off) for
    #: this long lets another gateway take the destination over.
    lease_secs: Annotated[float, Meta(ge=0.2)] = 15.0


class SourceConfig(Table, frozen=True, kw_only=True):
    """Core keys of ``[sources.<id>]``; other keys belong to the source type."""

    write_key: Annotated[str, Meta(min_length=1)]
    type: Identifier = DEFAULT_SOURCE_TYPE
    filters: list[str] = []
    #: Remove Red fields (passwords, card numbers, SSNs...) before a message is ever stored.
    block_red: bool = False
    #: Keep a persistent inventory of the field paths this source sends under context, traits
    #: and properties: class, matchers that recognised them, first/last seen; never the values.
    #: Each new path is logged once (``privacy_field_seen``); ``gateway privacy inventory`` prints it.
    inventory: bool = False
    #: Events per second this source accepts; past it, requests get 429 with ``Retry-After``.
    rate_limit_events_per_sec: Annotated[float, Meta(gt=0)] | None = None
    #: Events a burst may take at once (default: one second's worth, at least 100).
    rate_limit_burst: Annotated[int, Meta(ge=1)] | None = None


class DestinationConfig(Table, frozen=True, kw_only=True):
    """Core keys of ``[destinations.<id>]``: delivery settings the worker applies to any type."""

    type: Identifier
    #: The name events use for this destination in their ``integrations`` object (exact,
    #: case-sensitive, e.g. "Google Analytics"); by default the destination's id.
    display_name: Annotated[str, Meta(min_length=1)] | None = None
    #: Other names events use for it there (Segment's Actions destinations: "Actions Amplitude").
    also_named: list[Annotated[str, Meta(min_length=1)]] = []
    #: Off unless an event names it in ``integrations`` (like Segment's Salesforce default).
    opt_in: bool = False
    #: Whether ``"All": false`` in an event's ``integrations`` keeps it from this destination
    #: when the event does not name it. Segment: every destination but warehouses and its own
    #: collection (Segment.io), whose types default this to false (segment-api.md §2.4).
    all_false_applies: bool = True
    #: What this destination gets of Red/Yellow/Green fields: allow, block, redact or hash.
    privacy: PrivacyPolicy = PrivacyPolicy()
    filters: list[str] = []
    batch_max_messages: PositiveInt = 500
    batch_max_bytes: PositiveInt = 4 * 1024 * 1024
    batch_max_wait_secs: NonNegativeFloat = 1.0
    concurrency: Annotated[int, Meta(ge=1, le=64)] = 1
    timeout_secs: PositiveFloat = 30.0
    retry_initial_secs: PositiveFloat = 1.0
    retry_max_secs: PositiveFloat = 300.0
    #: Attempts before a retryable failure goes to the dead-letter table; 0 retries for ever.
    max_attempts: NonNegativeInt = 0
    #: Where a NEW destination starts reading: ``"end"`` (what arrives from now on) or an
    #: ISO-8601 time (replays what the archive still holds from then). Ignored once it has a cursor.
    start_at: str = "end"

    def __post_init__(self) -> None:
        if self.start_at != "end":
            try:
                datetime.fromisoformat(self.start_at)
            except ValueError:
                raise ValueError(f'start_at must be "end" or an ISO-8601 time, got {self.start_at!r}') from None

    def start_at_ms(self) -> int | None:
        """``start_at`` in milliseconds since the epoch (naive times are UTC), or None for the end."""
        if self.start_at == "end":
            return None
        return iso_to_ms(self.start_at)


def iso_to_ms(text: str) -> int:
    """An ISO-8601 time (naive times are UTC) in milliseconds since the epoch.

    Raises:
        ValueError: ``text`` is not an ISO-8601 time.
    """
    moment = datetime.fromisoformat(text)
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


class AdminConfig(Table, frozen=True, kw_only=True):
    """``[admin]``: the admin HTTP API, on its own listener (loopback by default)."""

    listen: str = "127.0.0.1:8081"
    #: Bearer token every admin request must carry. Without one the admin API is off. Write it as
    #: a reference rather than a literal: ``token = { env = "GATEWAY_ADMIN_TOKEN" }`` or
    #: ``token = { file = "/etc/gateway/admin.token" }``.
    token: Annotated[str, Meta(min_length=16)] | None = None

    def __post_init__(self) -> None:
        _check_listen(self.listen)


class FilterConfig(Table, frozen=True, kw_only=True):
    """Core keys of ``[filters.<id>]``."""

    type: Identifier


_E = TypeVar("_E", SourceConfig, DestinationConfig, FilterConfig)


@dataclass(frozen=True)
class Entity(Generic[_E]):
    """One configured source, destination or filter: its id, core keys and plugin options."""

    id: str
    core: _E
    options: Any


@dataclass(frozen=True)
class GatewayConfig:
    """A validated config file."""

    path: str
    server: ServerConfig
    log: LogConfig
    sources: dict[str, Entity[SourceConfig]]
    destinations: dict[str, Entity[DestinationConfig]]
    filters: dict[str, Entity[FilterConfig]]
    admin: AdminConfig = field(default_factory=AdminConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    #: The document as written (secrets resolved), for the admin API's redacted view.
    raw: dict[str, Any] = field(default_factory=dict)
    #: TOML paths whose values came from ``{ env = ... }`` / ``{ file = ... }`` references.
    secret_paths: frozenset[str] = frozenset()
    #: The matchers ``[privacy.matchers]`` asks for, built by a matcher plugin.
    custom_matchers: tuple[MatcherType, ...] = ()
    #: sha256 of the file's bytes it was read from ("" when parsed from text): what the reload
    #: watcher compares the file with, so an edit made while the daemon starts is not missed.
    digest: str = ""

    def redacted(self) -> dict[str, Any]:
        """The document with secrets, write keys, tokens and passwords replaced by ``"***"``."""
        redacted: dict[str, Any] = redact(self.raw, "", self.secret_paths)
        return redacted

    def secrets_of(self, *path: str) -> set[str]:
        """The secrets :meth:`redacted` hides in the table at ``path`` (``"destinations",
        "hook"``), for hunting them in texts a component wrote (an error naming its URL)."""
        value: Any = self.raw
        for key in path:
            value = value.get(key, {}) if isinstance(value, dict) else {}
        return secret_values(value, ".".join(path), self.secret_paths)

    @property
    def data_dir(self) -> Path:
        return Path(self.server.data_dir)
