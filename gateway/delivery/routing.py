"""Which events a destination gets by their ``integrations`` object (segment-api.md §2.4), and
how long a failed send waits before the next attempt."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

#: Segment's discard reason for an event its integrations object kept from a destination.
INTEGRATIONS_REASON = "filtered_by_integrations_object"


def integrations_allow(
    integrations: Any, names: Sequence[str], *, opt_in: bool, all_false_applies: bool = True
) -> bool:
    """Whether an event's ``integrations`` object lets it go to the destination called ``names``
    (its display name, then other names events use for it) (segment-api.md §2.4): the first of
    its names present decides (only a literal ``false`` disables; ``true`` or an object of
    options enables), else ``All`` (same rule) unless ``all_false_applies`` is off (warehouses,
    the Segment relay), else on, unless the destination is opt-in, which only its names turn on."""
    if not isinstance(integrations, dict):
        return not opt_in
    for name in names:
        if name in integrations:
            return integrations[name] is not False
    if opt_in:
        return False
    return not all_false_applies or integrations.get("All") is not False


def backoff_delay(attempt: int, *, initial: float, maximum: float, retry_after: float | None) -> float:
    """Exponential backoff with jitter for the ``attempt``-th failure (1-based), at least
    ``retry_after`` when the destination asked for it."""
    ceiling = min(maximum, initial * 2 ** (attempt - 1))
    delay = random.uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, maximum))
    return delay
