"""Plugin discovery through the ``gateway`` entry points, built-in and third-party alike."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pluggy
import pytest

from gateway import DestinationType, SourceType, hookimpl
from gateway.components import ComponentConfig
from gateway.errors import PluginError
from gateway.plugins import build_registry, make_plugin_manager
from tests.gatewayproc import WRITE_KEY, GatewayProcess, config_text, read_jsonl, wait_until

HERE = Path(__file__).resolve().parent


def test_builtin_plugins_are_discovered_through_entry_points() -> None:
    registry = build_registry(make_plugin_manager())
    assert {"tracking_api"} <= set(registry.sources)
    assert {"file", "http"} <= set(registry.destinations)
    assert registry.provided_by[("destination", "file")] == "file"


def test_a_bare_manager_knows_no_concrete_plugin() -> None:
    registry = build_registry(make_plugin_manager(load_entry_points=False))
    assert not registry.sources and not registry.destinations


def test_two_plugins_with_one_type_name_are_refused() -> None:
    class One:
        @hookimpl
        def gateway_destination_types(self) -> list[DestinationType]:
            return [DestinationType(name="dup", config_type=ComponentConfig, factory=lambda c, x: None)]  # type: ignore[arg-type,return-value]

    pm = make_plugin_manager(load_entry_points=False)
    pm.register(One(), name="one")
    pm.register(One(), name="two")
    with pytest.raises(PluginError, match="'dup' is provided by both 'one' and 'two'"):
        build_registry(pm)


def test_a_hook_the_specs_do_not_know_is_refused() -> None:
    class Typo:
        @hookimpl
        def gateway_destination_typez(self) -> list[SourceType]:
            return []

    pm = make_plugin_manager(load_entry_points=False)
    pm.register(Typo())
    with pytest.raises(pluggy.PluginValidationError):
        pm.check_pending()


@pytest.fixture(scope="module")
def third_party_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin distributions of tests/third_party_plugin (a destination) and
    tests/third_party_source (a source), pip-installed into a folder."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(HERE / "third_party_plugin"),
            str(HERE / "third_party_source"),
        ],
        check=True,
    )
    return target


def test_a_third_party_plugin_is_listed_and_used_from_config(third_party_site: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(third_party_site), os.environ.get("PYTHONPATH", "")])}
    listing = subprocess.run(
        [sys.executable, "-m", "gateway", "plugins"], env=env, capture_output=True, text=True, check=True
    )
    assert any(
        line.split()[:4] == ["destination", "lines", "gateway-destination-lines", "1.2.3"]
        for line in listing.stdout.splitlines()
    ), listing.stdout

    out = tmp_path / "lines.txt"
    config = tmp_path / "gateway.toml"
    config.write_text(
        config_text(
            tmp_path,
            archive=False,
            extra=f"""
[destinations.mine]
type = "lines"
file = "{out}"
prefix = "> "
batch_max_wait_secs = 0.01
""",
        )
    )
    with GatewayProcess(config, env=env) as gateway:
        response = httpx.post(
            f"{gateway.url}/v1/identify", auth=(WRITE_KEY, ""), json={"userId": "u", "messageId": "tp-1"}
        )
        assert response.status_code == 200
        assert wait_until(lambda: out.exists() and out.read_text()) == "> mine identify tp-1\n"


def test_a_third_party_source_hands_its_messages_to_the_core(third_party_site: Path, tmp_path: Path) -> None:
    """A source written only against gateway.__all__: the core validates, completes, rate-limits
    and stores what it hands over, and the answer follows what the core did."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(third_party_site), os.environ.get("PYTHONPATH", "")])}
    config = tmp_path / "gateway.toml"
    config.write_text(
        config_text(
            tmp_path,
            extra="""
[sources.signup]
type = "forms"
write_key = "form-token-1"
event = "Signed Up"
rate_limit_events_per_sec = 0.01
rate_limit_burst = 2
""",
        )
    )
    with GatewayProcess(config, env=env) as gateway:
        url = f"{gateway.url}/forms/signup"
        form = {"token": "form-token-1", "email": "ada@example.com", "plan": "pro", "visitor": "v-1"}
        answer = httpx.post(url, data=form, headers={"User-Agent": "form-test"})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"success": True, "stored": 1, "duplicates": 0}
        assert httpx.post(url, data={**form, "token": "wrong"}).status_code == 401
        # The core validates: a form with neither id is refused by the core's rule, counted.
        bad = httpx.post(url, data={"token": "form-token-1", "plan": "pro"})
        assert (bad.status_code, bad.json()["code"]) == (400, "no_user_anon_id")
        # The core's rate limit applies to every source type: the burst of 2 is spent (the bad
        # one took nothing), the third is refused with Retry-After.
        assert httpx.post(url, data=form).status_code == 200
        limited = httpx.post(url, data=form)
        assert (limited.status_code, limited.json()["code"]) == (429, "rate_limited")
        assert int(limited.headers["Retry-After"]) >= 1
        [first, second] = wait_until(
            lambda: len(read_jsonl(tmp_path / "archive")) >= 2 and read_jsonl(tmp_path / "archive")
        )
    assert first["type"] == "track" and first["event"] == "Signed Up"
    assert (first["userId"], first["anonymousId"]) == ("ada@example.com", "v-1")
    assert first["properties"] == {"plan": "pro"}
    assert first["context"]["userAgent"] == "form-test" and first["context"]["ip"] == "127.0.0.1"
    assert first["messageId"] and first["receivedAt"] and first["timestamp"]  # the core's server fields
    assert first["messageId"] != second["messageId"]
