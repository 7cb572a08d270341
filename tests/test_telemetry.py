"""Per-event trouble is logged throttled: one line per interval, saying how many it stands for."""

from __future__ import annotations

import structlog
from structlog.testing import capture_logs

from gateway.components import Filter, FilterContext, FilterErrorLog, apply_filters
from gateway.telemetry import ThrottledWarning


def test_throttled_warning_counts_what_it_does_not_log() -> None:
    with capture_logs() as logs:
        warning = ThrottledWarning(structlog.get_logger("t"), "thing_failed", interval_secs=3600)
        for _ in range(5):
            warning(detail="x")
        warning.interval_secs = 0
        warning(detail="y")
    assert [(e["event"], e["errors"], e["errors_since_last_warning"], e["detail"]) for e in logs] == [
        ("thing_failed", 1, 1, "x"),
        ("thing_failed", 6, 5, "y"),
    ]


def test_a_failing_filter_does_not_log_once_per_event() -> None:
    class Broken(Filter):
        def process(self, message: dict) -> dict | None:
            raise ValueError("nope")

    with capture_logs() as logs:
        errors = FilterErrorLog(structlog.get_logger("gateway.filters"))  # what the hub and workers hold
        for _ in range(100):
            outcome = apply_filters([("broken-for-logs", Broken())], {"type": "track"}, FilterContext("web"), errors)
            assert (outcome.message, outcome.failure) == (None, "broken-for-logs: ValueError: nope")
    assert [e["event"] for e in logs] == ["filter_failed"]
