"""Example third-party destination, built only on ``gateway``'s public API."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from gateway import ComponentConfig, Destination, DestinationContext, DestinationType, Record, hookimpl


class LinesConfig(ComponentConfig):
    file: str
    prefix: str = ""


class LinesDestination(Destination):
    def __init__(self, config: LinesConfig, context: DestinationContext) -> None:
        self.config = config
        self.context = context

    async def send(self, batch: Sequence[Record]) -> None:
        lines = []
        for record in batch:
            message = record.message()
            lines.append(f"{self.config.prefix}{self.context.id} {message['type']} {message['messageId']}\n")
        await trio.to_thread.run_sync(self._append, "".join(lines))  # file I/O off the event loop

    def _append(self, text: str) -> None:
        with open(self.config.file, "a", encoding="utf-8") as out:
            out.write(text)


@hookimpl
def gateway_destination_types() -> list[DestinationType]:
    return [
        DestinationType(
            name="lines", config_type=LinesConfig, factory=LinesDestination, description="example: one line per message"
        )
    ]
