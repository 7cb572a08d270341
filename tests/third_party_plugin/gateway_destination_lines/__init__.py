"""Example third-party destination, built only on ``gateway``'s public API."""

from __future__ import annotations

from collections.abc import Sequence

from gateway import ComponentConfig, Destination, DestinationContext, DestinationType, Record, hookimpl


class LinesConfig(ComponentConfig):
    file: str
    prefix: str = ""


class LinesDestination(Destination):
    def __init__(self, config: LinesConfig, context: DestinationContext) -> None:
        self.config = config
        self.context = context

    async def send(self, batch: Sequence[Record]) -> None:
        with open(self.config.file, "a", encoding="utf-8") as out:
            for record in batch:
                message = record.message()
                out.write(f"{self.config.prefix}{self.context.id} {message['type']} {message['messageId']}\n")


@hookimpl
def gateway_destination_types() -> list[DestinationType]:
    return [
        DestinationType(
            name="lines", config_type=LinesConfig, factory=LinesDestination, description="example: one line per message"
        )
    ]
