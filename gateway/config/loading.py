"""Reading a config file: UTF-8 TOML, secret references resolved, then decoded in two stages.

The core types (gateway.config.types) validate the tables the core owns and the core keys of
every entity (``type``, ``write_key``, delivery settings); the remaining keys of each entity go
to the ``config_type`` of the plugin named by its ``type``. Every failure becomes one
:class:`ConfigError` naming the TOML path of the bad value.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from gateway.config.secrets import resolve_secrets
from gateway.config.types import (
    AdminConfig,
    DestinationConfig,
    Entity,
    FilterConfig,
    GatewayConfig,
    Identifier,
    LogConfig,
    ServerConfig,
    SourceConfig,
    Table,
)
from gateway.config.validation import check_references
from gateway.errors import ConfigError
from gateway.privacy.config import Class, CustomMatcher, PrivacyConfig

if TYPE_CHECKING:
    from gateway.plugins import Registry

DEFAULT_CONFIG_PATH = "config/gateway.toml"

_E = TypeVar("_E", SourceConfig, DestinationConfig, FilterConfig)
_T = TypeVar("_T")


class _Document(Table, frozen=True, kw_only=True):
    server: ServerConfig = ServerConfig()
    log: LogConfig = LogConfig()
    admin: AdminConfig = AdminConfig()
    privacy: dict[str, Any] = {}
    sources: dict[Identifier, dict[str, Any]] = {}
    destinations: dict[Identifier, dict[str, Any]] = {}
    filters: dict[Identifier, dict[str, Any]] = {}


_FIELD_IN_MESSAGE = re.compile(r"(?:missing required|unknown) field `([^`]+)`")


def _error(path: str, prefix: str, error: msgspec.ValidationError) -> ConfigError:
    """Turn msgspec's ``... - at `$.a.b` `` into a ConfigError at ``prefix.a.b``."""
    text = str(error)
    problem, _, at = text.partition(" - at `$")
    where = prefix + at.rstrip("`") if at else prefix
    field = _FIELD_IN_MESSAGE.search(problem)
    if field:
        where = f"{where}.{field.group(1)}" if where else field.group(1)
    return ConfigError(path, where.lstrip("."), problem)


def _convert(path: str, prefix: str, data: Any, type_: type[_T]) -> _T:
    try:
        return msgspec.convert(data, type_)
    except msgspec.ValidationError as error:
        raise _error(path, prefix, error) from None


def _entity(
    path: str,
    prefix: str,
    entity_id: str,
    raw: dict[str, Any],
    core_type: type[_E],
    plugin_types: dict[str, Any],
    kind: str,
) -> Entity[_E]:
    core_keys = set(core_type.__struct_fields__)
    core = _convert(path, prefix, {k: v for k, v in raw.items() if k in core_keys}, core_type)
    component_type = plugin_types.get(core.type)
    if component_type is None:
        known = ", ".join(sorted(plugin_types)) or "none installed"
        raise ConfigError(
            path,
            f"{prefix}.type",
            f"unknown {kind} type {core.type!r} (known: {known}); "
            "is the plugin that provides it installed? `gateway plugins` lists what was found",
        )
    options = _convert(path, prefix, {k: v for k, v in raw.items() if k not in core_keys}, component_type.config_type)
    defaults = getattr(component_type, "delivery_defaults", None)
    if callable(defaults):
        defaults = defaults(options)
    if defaults:  # the type's own defaults of core keys (a warehouse's batch sizes); the config wins
        core = _convert(path, prefix, {**defaults, **{k: v for k, v in raw.items() if k in core_keys}}, core_type)
    return Entity(id=entity_id, core=core, options=options)


def _privacy(path: str, raw: dict[str, Any]) -> PrivacyConfig:
    """``[privacy]``, entry by entry, so an error names the class or matcher it is about."""
    rest = {k: v for k, v in raw.items() if k not in ("classes", "matchers")}
    config = _convert(path, "privacy", rest, PrivacyConfig)
    classes = raw.get("classes", {})
    matchers = raw.get("matchers", {})
    if not isinstance(classes, dict) or not isinstance(matchers, dict):
        raise ConfigError(path, "privacy", "classes and matchers must be tables")
    return msgspec.structs.replace(
        config,
        classes={k: _convert(path, f'privacy.classes."{k}"', v, Class) for k, v in classes.items()},  # type: ignore[arg-type]
        matchers={k: _convert(path, f"privacy.matchers.{k}", v, CustomMatcher) for k, v in matchers.items()},
    )


def parse_config(text: str, registry: Registry, *, path: str = "<config>") -> GatewayConfig:
    """Validate a config document.

    Raises:
        ConfigError: the text is not TOML, or a value is wrong; the error names its TOML path.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, "", f"not valid TOML: {error}") from None
    if not raw:
        raise ConfigError(
            path,
            "",
            "the config is empty: it needs at least one [sources.<id>] table with a write_key "
            "(config/gateway.toml is an annotated example)",
        )
    secret_paths: set[str] = set()
    raw = resolve_secrets(path, raw, "", secret_paths)
    document = _convert(path, "", raw, _Document)

    privacy = _privacy(path, document.privacy)
    custom_matchers = []
    for name, custom in privacy.matchers.items():
        try:
            built = registry.build_custom_matcher(name, custom)
        except Exception as error:  # the plugin's own check (a key term it cannot use), or its bug
            raise ConfigError(path, f"privacy.matchers.{name}", str(error) or type(error).__name__) from error
        if built is None:
            raise ConfigError(
                path,
                f"privacy.matchers.{name}",
                "no installed plugin builds custom matchers (the built-in one is gateway-matcher-builtin)",
            )
        custom_matchers.append(built)
    sources = {
        sid: _entity(path, f"sources.{sid}", sid, table, SourceConfig, registry.sources, "source")
        for sid, table in document.sources.items()
    }
    destinations = {
        did: _entity(
            path,
            f"destinations.{did}",
            did,
            table,
            DestinationConfig,
            registry.destinations,
            "destination",
        )
        for did, table in document.destinations.items()
    }
    filters = {
        fid: _entity(path, f"filters.{fid}", fid, table, FilterConfig, registry.filters, "filter")
        for fid, table in document.filters.items()
    }

    check_references(path, sources, destinations, filters, registry)
    return GatewayConfig(
        path=path,
        server=document.server,
        log=document.log,
        sources=sources,
        destinations=destinations,
        filters=filters,
        admin=document.admin,
        privacy=privacy,
        raw=raw,
        secret_paths=frozenset(secret_paths),
        custom_matchers=tuple(custom_matchers),
    )


def load_config(path: str | Path, registry: Registry) -> GatewayConfig:
    """Read and validate the config file at ``path``.

    Raises:
        ConfigError: the file is unreadable or invalid.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(str(path), "", f"cannot read the config file: {error}") from None
    return parse_config_bytes(data, registry, path=str(path))


def parse_config_bytes(data: bytes, registry: Registry, *, path: str) -> GatewayConfig:
    """Validate the bytes of a config file (TOML is UTF-8: anything else is refused, not guessed).

    Raises:
        ConfigError: the bytes are not UTF-8, or the config is invalid.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(path, "", f"cannot read the config file: it is not UTF-8 ({error})") from None
    return replace(parse_config(text, registry, path=path), digest=hashlib.sha256(data).hexdigest())
