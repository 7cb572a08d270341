"""The file destination: JSON Lines, one message per line, size-based rotation, resume."""

from __future__ import annotations

import json
from pathlib import Path

from gateway_destination_file import FileConfig, FileDestination

from gateway import DestinationContext, Record


def records(start: int, count: int, pad: int = 0) -> list[Record]:
    return [
        Record(seq=i, source="web", body=json.dumps({"messageId": f"m{i}", "pad": "x" * pad}).encode())
        for i in range(start, start + count)
    ]


def lines(folder: Path) -> list[str]:
    return [
        json.loads(line)["messageId"] for p in sorted(folder.glob("*.jsonl")) for line in p.read_text().splitlines()
    ]


async def test_writes_one_line_per_message_in_order(tmp_path: Path) -> None:
    async with FileDestination(FileConfig(path=str(tmp_path / "out")), DestinationContext("a", tmp_path)) as dest:
        await dest.send(records(1, 3))
        await dest.send(records(4, 2))
    assert lines(tmp_path / "out") == [f"m{i}" for i in range(1, 6)]
    assert [p.name for p in (tmp_path / "out").iterdir()] == [f"events-{1:020d}.jsonl"]


async def test_rotates_by_size_and_resumes_the_newest_file(tmp_path: Path) -> None:
    config = FileConfig(path=str(tmp_path), max_file_bytes=2048, fsync=False)
    async with FileDestination(config, DestinationContext("a", tmp_path)) as dest:
        for start in range(1, 41, 4):
            await dest.send(records(start, 4, pad=100))
    files = sorted(tmp_path.glob("*.jsonl"))  # noqa: ASYNC240 (a test reading what was written)
    assert len(files) > 2
    assert all(f.stat().st_size < 2048 + 4 * 200 for f in files)
    assert lines(tmp_path) == [f"m{i}" for i in range(1, 41)]
    newest_size = files[-1].stat().st_size
    async with FileDestination(config, DestinationContext("a", tmp_path)) as dest:
        await dest.send(records(41, 1))
    if newest_size < 2048:
        assert sorted(tmp_path.glob("*.jsonl"))[-1] == files[-1]  # noqa: ASYNC240 (appended to, not a new file)
    assert lines(tmp_path)[-1] == "m41"


def user_records(start: int, users: list[str]) -> list[Record]:
    return [
        Record(seq=start + i, source="web", body=json.dumps({"messageId": f"m{start + i}", "userId": u}).encode())
        for i, u in enumerate(users)
    ]


async def test_delete_user_rewrites_every_file_without_the_users_lines(tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = FileConfig(path=str(out), max_file_bytes=1024, fsync=False)
    async with FileDestination(config, DestinationContext("a", tmp_path)) as dest:
        for start in range(1, 60, 3):
            await dest.send(user_records(start, ["u1", "user-42", "user-420"]))
        files = sorted(out.glob("*.jsonl"))
        assert len(files) > 1
        with (out / "events-00000000000000000001.jsonl").open("ab") as foreign:
            foreign.write(b"not json user-42\n")
        assert await dest.delete_user("user-42") == 20
        assert sorted(out.glob("*.jsonl")) == files  # the same files, rewritten in place
        assert not list(out.glob("*.rewrite"))
        assert await dest.delete_user("user-42") == 0
        await dest.send(user_records(61, ["user-42", "u2"]))  # appends again after the rewrite
    bodies = [line for p in sorted(out.glob("*.jsonl")) for line in p.read_text().splitlines()]
    assert "not json user-42" in bodies  # a line it cannot read is left alone
    users = [json.loads(b)["userId"] for b in bodies if b.startswith("{")]
    assert users.count("user-42") == 1 and users[-2:] == ["user-42", "u2"]
    assert users.count("user-420") == 20 and users.count("u1") == 20
