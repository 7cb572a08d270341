"""One PostgreSQL server for the module's tests (initdb in a temporary folder, its own port)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gateway_destination_postgres.testing import TemporaryPostgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[TemporaryPostgres]:
    with TemporaryPostgres() as server:
        yield server
