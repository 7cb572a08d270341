"""The source contract: what a source type provides."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.components.base import ComponentConfig

if TYPE_CHECKING:
    from quart import Blueprint

    from gateway.http.fastpath import FastPath
    from gateway.ingest.hub import IngestHub


@dataclass(frozen=True, slots=True)
class SourceType:
    """A kind of source: where messages come from.

    Attributes:
        name: The ``type`` value in ``[sources.<id>]``.
        config_type: Validates the source's keys beyond the core ones (``type``, ``write_key``,
            ``filters``).
        blueprint: Builds the HTTP routes of this source type, once per process. The routes
            authenticate and ingest through the :class:`gateway.ingest.hub.IngestHub` they get.
        description: One line for ``gateway plugins``.
        fast_path: Optional: builds a :class:`gateway.http.fastpath.FastPath` that answers this
            source type's hottest plain requests without the web framework; whatever it
            declines goes to the blueprint's routes.
    """

    name: str
    config_type: type[ComponentConfig]
    blueprint: Callable[[IngestHub], Blueprint]
    description: str = ""
    fast_path: Callable[[IngestHub], FastPath] | None = None
