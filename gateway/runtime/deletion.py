"""A user's deletion at the destinations, and what it reports (``gateway privacy delete``)."""

from __future__ import annotations

import msgspec
import structlog
import trio

from gateway.components import Destination
from gateway.errors import DeliveryError
from gateway.runtime.destinations import RunningDestination

log = structlog.get_logger("gateway")


class DestinationDeletion(msgspec.Struct, frozen=True):
    """What one destination's ``delete_user`` did: ``removed`` items, or the ``error`` it
    raised; ``supported`` is false when its type has no ``delete_user``. ``settled`` is false
    when a send that started before the deletion was still under way at the call."""

    removed: int = 0
    supported: bool = True
    settled: bool = True
    error: str | None = None


class UserDeletion(msgspec.Struct, frozen=True):
    """What ``gateway privacy delete`` removed, for the admin API and the command."""

    user_id: str = msgspec.field(name="userId")
    messages_deleted: int
    tombstoned: int
    dead_letters_deleted: int
    pending: dict[str, int]
    destinations: dict[str, DestinationDeletion]
    suppressed: bool


async def delete_at_destination(running: RunningDestination, user_id: str, settled: bool) -> DestinationDeletion:
    """Call the destination's own ``delete_user``, within its timeout; a failure is reported,
    never raised (the log's side of the deletion is done already)."""
    destination = running.destination
    if type(destination).delete_user is Destination.delete_user:
        return DestinationDeletion(supported=False, settled=settled)
    try:
        with trio.fail_after(running.entity.core.timeout_secs):
            removed = await destination.delete_user(user_id)
    except trio.TooSlowError:
        error = f"timed out after {running.entity.core.timeout_secs}s"
    except Exception as failure:  # a plugin error: report it, the log side is done already
        error = str(failure) if isinstance(failure, DeliveryError) else f"{type(failure).__name__}: {failure}"
    else:
        return DestinationDeletion(removed=removed, settled=settled)
    log.error("destination_delete_user_failed", destination=running.worker.id, error=error)
    return DestinationDeletion(settled=settled, error=error)
