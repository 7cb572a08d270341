"""Logging: structlog, JSON lines on stdout when it is not a terminal, readable lines when it is.

Event names are stable snake_case identifiers (``destination_delivery_failed``); context such as
the destination id is bound with contextvars at task boundaries. Nothing here logs per event
above debug level, and no log line carries write keys or message payloads.
"""

from __future__ import annotations

import logging
import sys

import structlog

LEVELS = ("debug", "info", "warning", "error")


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    """Set up structlog (and the stdlib loggers of hypercorn) for the daemon.

    Args:
        level: The lowest level written.
        json: Force JSON (True) or console (False) output; by default JSON unless stdout is a TTY.
    """
    if json is None:
        json = not sys.stdout.isatty()
    numeric = logging.getLevelName(level.upper())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, force=True)
