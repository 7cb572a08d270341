"""What the command groups share to declare themselves: the subparsers they add to, and the
argument types more than one of them takes."""

from __future__ import annotations

import argparse
from typing import TypeAlias

from gateway.config import iso_to_ms
from gateway.errors import GatewayError

#: The ``gateway`` command's subparsers, which each command group's ``add_commands`` adds to.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def time_argument(option: str, value: str) -> int:
    """``value`` of ``option``, an ISO-8601 time, in milliseconds since the epoch.

    Raises:
        GatewayError: it is not an ISO-8601 time (the message shows one).
    """
    try:
        return iso_to_ms(value)
    except ValueError:
        raise GatewayError(f"{option}: {value!r} is not an ISO-8601 time (e.g. 2026-11-28T09:00:00Z)") from None
