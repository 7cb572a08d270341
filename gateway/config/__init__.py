"""The config file: one TOML document decoded into frozen msgspec types.

``types`` holds what a validated config is, ``loading`` how a file becomes one (UTF-8, TOML,
two-stage decoding), ``secrets`` the ``{ env = ... }``/``{ file = ... }`` references and their
redaction, ``validation`` the checks across entities. Importers use the names re-exported here.

May import: gateway.components, gateway.plugins, gateway.privacy.config, gateway.errors (the
layers below it); never a pipeline stage (the daemon builds on the config, not the reverse).
"""

from __future__ import annotations

from gateway.config.loading import DEFAULT_CONFIG_PATH, load_config, parse_config, parse_config_bytes
from gateway.config.types import (
    DEFAULT_SOURCE_TYPE,
    AdminConfig,
    DestinationConfig,
    Entity,
    FilterConfig,
    GatewayConfig,
    Identifier,
    LogConfig,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ServerConfig,
    SourceConfig,
    Timeout,
    iso_to_ms,
)

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_SOURCE_TYPE",
    "AdminConfig",
    "DestinationConfig",
    "Entity",
    "FilterConfig",
    "GatewayConfig",
    "Identifier",
    "LogConfig",
    "NonNegativeFloat",
    "NonNegativeInt",
    "PositiveFloat",
    "PositiveInt",
    "ServerConfig",
    "SourceConfig",
    "Timeout",
    "iso_to_ms",
    "load_config",
    "parse_config",
    "parse_config_bytes",
]
