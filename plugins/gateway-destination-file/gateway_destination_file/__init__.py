"""The ``file`` destination: JSON Lines files in a folder, one message per line, rotated by size.

A deletion request (``gateway privacy delete USER_ID``) rewrites every file of the folder
without that user's lines (each to a temporary file, then renamed over the original).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import msgspec
import trio

from gateway import ComponentConfig, Destination, DestinationContext, DestinationType, Record, hookimpl

PREFIX = "events-"
SUFFIX = ".jsonl"
TEMP_SUFFIX = ".rewrite"


class _UserOnly(msgspec.Struct):
    userId: Any = None


_decode_user = msgspec.json.Decoder(_UserOnly).decode


def _is_users_line(line: bytes, user_id: str) -> bool:
    if b'"userId"' not in line:
        return False
    try:
        found: Any = _decode_user(line).userId
    except msgspec.DecodeError:
        return False  # not a line we wrote: leave it alone
    return bool(found == user_id)


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

    async def delete_user(self, user_id: str) -> int:
        """Rewrite the folder's files without ``user_id``'s lines; returns how many went."""
        return await trio.to_thread.run_sync(self._delete_user, user_id, limiter=self._lock)

    def _delete_user(self, user_id: str) -> int:
        if self._file is not None:  # the next batch reopens the newest file
            self._file.close()
            self._file = None
        if not self._folder.is_dir():
            return 0
        for leftover in self._folder.glob(f"{PREFIX}*{SUFFIX}{TEMP_SUFFIX}"):
            leftover.unlink()  # from a rewrite a crash interrupted; the original is intact
        removed = sum(self._rewrite(path, user_id) for path in sorted(self._folder.glob(f"{PREFIX}*{SUFFIX}")))
        if removed:
            _fsync_folder(self._folder)
        return removed

    def _rewrite(self, path: Path, user_id: str) -> int:
        with open(path, "rb") as source:
            if not any(_is_users_line(line, user_id) for line in source):
                return 0
            source.seek(0)
            temp = path.with_name(path.name + TEMP_SUFFIX)
            removed = 0
            with open(temp, "wb") as target:
                for line in source:
                    if _is_users_line(line, user_id):
                        removed += 1
                    else:
                        target.write(line)
                target.flush()
                os.fsync(target.fileno())
        os.replace(temp, path)
        return removed

    async def aclose(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
