"""Per-event trouble is logged throttled: one line per interval, saying how many it stands for."""

from __future__ import annotations

from pathlib import Path

import structlog
from structlog.testing import capture_logs

from gateway import ComponentConfig, Filter, FilterType, hookimpl
from gateway.telemetry import ThrottledWarning
from gateway.testing import run_gateway


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


async def test_a_failing_filter_does_not_log_once_per_event(tmp_path: Path) -> None:
    """Through the ingest hub, the caller that logs what apply_filters reports: a hundred events
    failing in one filter make one warning (and a hundred dead letters)."""

    class Broken(Filter):
        def process(self, message: dict) -> dict | None:
            raise ValueError("nope")

    class BrokenPlugin:
        @hookimpl
        def gateway_filter_types(self) -> list[FilterType]:
            return [FilterType(name="broken", config_type=ComponentConfig, factory=lambda config: Broken())]

    config = """
[sources.web]
write_key = "telemetry-test-key"
filters = ["broken-for-logs"]

[filters.broken-for-logs]
type = "broken"
"""
    batch = [{"type": "track", "userId": "u", "event": "E", "messageId": f"m-{n}"} for n in range(100)]
    async with run_gateway(config, data_dir=tmp_path, plugins=[BrokenPlugin()]) as gw:
        with capture_logs() as logs:
            assert (await gw.batch(batch, write_key="telemetry-test-key")).status_code == 200
        assert len(await gw.dead_letters("source:web")) == 100
    failed = [e for e in logs if e["event"] == "filter_failed"]
    assert [(e["filter"], e["error"], e["errors"]) for e in failed] == [("broken-for-logs", "nope", 1)]
