"""Reading what a ``file`` destination wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_jsonl(folder: Path) -> list[dict[str, Any]]:
    """Every message in the JSON Lines files of a file destination, in file order."""
    messages = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                messages.append(json.loads(line))
    return messages
