"""Adversarial checks of what ``gateway new-plugin destination`` writes (issue 16 review): the
generated destination, as a new author gets it, against vendors' ordinary answers."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from gateway.kit.scaffold import new_plugin
from gateway.testing import Answer, ReceivedRequest, open_loopback_server, run_gateway


@pytest.mark.parametrize(
    ("n", "answer"),
    [(1, Answer(204, b"")), (2, Answer(200, "OK")), (3, Answer(202, b"", {"Content-Type": "text/plain"}))],
)
async def test_the_scaffold_takes_a_2xx_answer_without_a_json_body(tmp_path: Path, n: int, answer: Answer) -> None:
    # Many vendors acknowledge with 204 No Content or a plain-text 200. The generated send()
    # reads response.json() unguarded: the ValueError counts as a plugin crash, retried, so the
    # vendor gets the batch again and again (duplicates) until max_attempts dead-letters it.
    name = f"acme{n}"
    folder = new_plugin("destination", name, tmp_path)
    sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module(f"gateway_destination_{name}")
    finally:
        sys.path.remove(str(folder))
    received: list[ReceivedRequest] = []

    def vendor(request: ReceivedRequest) -> Answer:
        received.append(request)
        return answer

    config = f"""
[sources.web]
write_key = "kit-write-key"

[destinations.vendor]
type = "{name}"
endpoint = "URL"
api_key = "kit-api-key"
batch_max_wait_secs = 0.05
retry_initial_secs = 0.01
retry_max_secs = 0.05
max_attempts = 3
"""
    async with (
        open_loopback_server(vendor) as server,
        run_gateway(config.replace("URL", server.url), data_dir=tmp_path / "gw", plugins=[module]) as gw,
    ):
        message = {"userId": "u1", "event": "Signed Up", "messageId": "m-1"}
        assert (await gw.send("track", message, write_key="kit-write-key")).status_code == 200
        await gw.wait_delivered("vendor")
        letters = await gw.dead_letters("vendor")
        stats = gw.statistics("vendor")
    assert letters == [] and stats["delivered"] == 1
    assert len(received) == 1  # sent once, not once per attempt


@pytest.mark.parametrize("kind", ["destination", "filter", "source"])
def test_what_the_readme_generates_into_plugins_passes_the_repos_lint(tmp_path: Path, kind: str) -> None:
    # README "Write a destination" generates the distribution `--into plugins`, which
    # tests/test_code_quality.py lints (ruff check and ruff format --check): the generated
    # tests have unsorted imports and lines over 120 characters, so the gate fails at once.
    import subprocess

    root = Path(__file__).resolve().parent.parent
    folders = [str(new_plugin(kind, name, tmp_path)) for name in ("acme", "customer_io_eu")]
    ruff = str(Path(sys.executable).parent / "ruff")
    config = ["--config", str(root / "pyproject.toml")]
    for command in (["check", *config, *folders], ["format", "--check", *config, *folders]):
        result = subprocess.run([ruff, *command], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
