"""The ``file`` destination: JSON Lines files in a folder, one message per line, rotated by size."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, BinaryIO

import msgspec
import trio

from gateway import ComponentConfig, Destination, DestinationContext, DestinationType, Record, hookimpl

PREFIX = "events-"
SUFFIX = ".jsonl"


class FileConfig(ComponentConfig):
    """``[destinations.<id>]`` keys of a file destination."""

    path: Annotated[str, msgspec.Meta(min_length=1)]
    max_file_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 64 * 1024 * 1024
    fsync: bool = True


class FileDestination(Destination):
    """Appends batches to the newest file of the folder, starting a new one past the size bound."""

    def __init__(self, config: FileConfig, context: DestinationContext) -> None:
        self._config = config
        self._folder = Path(config.path)
        self._file: BinaryIO | None = None
        self._size = 0
        self._lock = trio.CapacityLimiter(1)

    def _open_newest(self, first_seq: int) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        existing = sorted(self._folder.glob(f"{PREFIX}*{SUFFIX}"))
        if existing and existing[-1].stat().st_size < self._config.max_file_bytes:
            path = existing[-1]
        else:
            path = self._folder / f"{PREFIX}{first_seq:020d}{SUFFIX}"
        self._file = open(path, "ab")  # noqa: SIM115 - kept open across batches, closed in aclose
        self._size = self._file.tell()

    def _write(self, batch: Sequence[Record]) -> None:
        if self._file is None or self._size >= self._config.max_file_bytes:
            if self._file is not None:
                self._file.close()
                self._file = None
            self._open_newest(batch[0].seq)
        assert self._file is not None
        data = b"".join(record.body + b"\n" for record in batch)
        self._file.write(data)
        self._file.flush()
        if self._config.fsync:
            os.fsync(self._file.fileno())
        self._size += len(data)

    async def send(self, batch: Sequence[Record]) -> None:
        await trio.to_thread.run_sync(self._write, batch, limiter=self._lock)

    async def aclose(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@hookimpl
def gateway_destination_types() -> list[DestinationType]:
    return [
        DestinationType(
            name="file",
            config_type=FileConfig,
            factory=FileDestination,
            description="JSON Lines files in a folder, one message per line, size-based rotation",
        )
    ]
