"""The ``recording`` destination type: keeps in memory what it is sent, and fails when told to."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

from gateway.components import ComponentConfig, Destination, DestinationContext, DestinationType, Record, SendResult
from gateway.errors import DeliveryError
from gateway.hookspecs import hookimpl


class RecordingConfig(ComponentConfig, frozen=True, kw_only=True):
    """``type = "recording"``: no keys of its own."""


class RecordingDestination(Destination):
    """A destination that keeps every message it is sent, in order, and can be told to fail.

    Attributes:
        messages: Every message delivered so far (decoded), in delivery order.
        batches: The seqs of each batch it took.
    """

    def __init__(self, config: RecordingConfig, context: DestinationContext) -> None:
        self.id = context.id
        self.messages: list[dict[str, Any]] = []
        self.batches: list[list[int]] = []
        self._failures: list[DeliveryError] = []
        self._reject: dict[str, str] = {}
        self._changed = trio.Event()

    def fail_next(self, count: int = 1, *, retryable: bool = True, message: str = "scripted failure") -> None:
        """Make the next ``count`` sends fail with a :class:`DeliveryError`."""
        self._failures.extend(DeliveryError(message, retryable=retryable) for _ in range(count))

    def reject(self, message_id: str, why: str = "rejected by the test") -> None:
        """Refuse the message with this messageId for good whenever it is sent (a
        :class:`SendResult` naming it); the rest of its batch is taken."""
        self._reject[message_id] = why

    async def send(self, batch: Sequence[Record]) -> SendResult | None:
        if self._failures:
            raise self._failures.pop(0)
        rejected: dict[int, str] = {}
        taken = []
        for record in batch:
            message = record.message()
            why = self._reject.get(str(message.get("messageId")))
            if why is not None:
                rejected[record.seq] = why
            else:
                taken.append(record.seq)
                self.messages.append(message)
        self.batches.append(taken)
        self._changed.set()
        self._changed = trio.Event()
        return SendResult(rejected=rejected) if rejected else None

    async def wait_for(self, count: int) -> list[dict[str, Any]]:
        """Return the messages once at least ``count`` were delivered here."""
        while len(self.messages) < count:
            await self._changed.wait()
        return self.messages


class RecordingPlugin:
    """Registers the ``recording`` destination type in the gateways :func:`run_gateway` runs."""

    def __init__(self) -> None:
        self.instances: dict[str, RecordingDestination] = {}

    def _build(self, config: RecordingConfig, context: DestinationContext) -> RecordingDestination:
        destination = self.instances.get(context.id)
        if destination is None:  # one per id: a reload that restarts it keeps what it recorded
            destination = self.instances[context.id] = RecordingDestination(config, context)
        return destination

    @hookimpl
    def gateway_destination_types(self) -> list[DestinationType]:
        return [
            DestinationType(
                name="recording",
                config_type=RecordingConfig,
                factory=self._build,
                description="keeps what it receives in memory (gateway.testing)",
            )
        ]
