"""The log's conformance suite (tests/log_conformance.py) on every engine of tests/log_engines.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.log_conformance import *  # noqa: F403  (the promises, collected here once per engine)
from tests.log_conformance import clock  # noqa: F401  (a fixture)
from tests.log_engines import ENGINES, LogEngine


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LogEngine]:
    harness = ENGINES[request.param](tmp_path)
    yield harness
    server = getattr(harness, "server", None)
    if server is not None:
        server.stop()
