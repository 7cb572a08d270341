"""Logging: structlog, JSON lines on stdout when it is not a terminal, readable lines when it is.

Event names are stable snake_case identifiers (``destination_delivery_failed``); context such as
the destination id is bound with contextvars at task boundaries. Nothing here logs per event
above debug level, and no log line carries write keys or message payloads.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

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


class ThrottledWarning:
    """A warning about per-event trouble, logged at most once per ``interval_secs`` with how many
    occurrences it stands for, so that a broken filter or plan cannot flood the log.

    Args:
        logger: A structlog logger.
        event: The stable event name, e.g. ``fql_evaluation_failed``.
        interval_secs: The least time between two lines.
    """

    def __init__(self, logger: Any, event: str, interval_secs: float = 60.0) -> None:
        self.logger = logger
        self.event = event
        self.interval_secs = interval_secs
        self.count = 0
        self._count_at_last = 0
        self._last = -float("inf")

    def __call__(self, **fields: Any) -> None:
        """Count one occurrence; log it (with ``fields``) unless one was logged too recently."""
        self.count += 1
        now = time.monotonic()
        if now - self._last < self.interval_secs:
            return
        since = self.count - self._count_at_last
        self._last = now
        self._count_at_last = self.count
        self.logger.warning(self.event, errors=self.count, errors_since_last_warning=since, **fields)
