"""Plugin discovery through the ``gateway`` entry points, built-in and third-party alike, and
each hook exercised through a plugin of its own (``test_hook_<name>``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pluggy
import pytest

from gateway import DestinationType, SourceType, hookimpl
from gateway.components import ComponentConfig
from gateway.errors import PluginError
from gateway.plugins import build_registry, make_plugin_manager
from tests.gatewayproc import WRITE_KEY, GatewayProcess, config_text, read_jsonl, wait_booked

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
            admin=True,
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
        wait_booked(gateway, "mine")
        assert out.read_text() == "> mine identify tp-1\n"


def test_a_third_party_source_hands_its_messages_to_the_core(third_party_site: Path, tmp_path: Path) -> None:
    """A source written only against gateway.__all__: the core validates, completes, rate-limits
    and stores what it hands over, and the answer follows what the core did."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(third_party_site), os.environ.get("PYTHONPATH", "")])}
    config = tmp_path / "gateway.toml"
    config.write_text(
        config_text(
            tmp_path,
            admin=True,
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
        wait_booked(gateway, "archive")
        [first, second] = read_jsonl(tmp_path / "archive")
    assert first["type"] == "track" and first["event"] == "Signed Up"
    assert (first["userId"], first["anonymousId"]) == ("ada@example.com", "v-1")
    assert first["properties"] == {"plan": "pro"}
    assert first["context"]["userAgent"] == "form-test" and first["context"]["ip"] == "127.0.0.1"
    assert first["messageId"] and first["receivedAt"] and first["timestamp"]  # the core's server fields
    assert first["messageId"] != second["messageId"]


# -- Each hook, exercised through a plugin of its own (tests/test_hookspecs.py checks there is one) --

HOOK_KEY = "hook-test-write-key"


async def test_hook_gateway_source_types(tmp_path: Path) -> None:
    """A source type's routes are served on the gateway's listener and store through the hub."""
    from quart import Blueprint, request

    from gateway import Candidate, ComponentConfig, Ingest, success_response
    from gateway.testing import run_gateway

    def blueprint(ingest: Ingest) -> Blueprint:
        bp = Blueprint("poke_source", __name__)

        @bp.post("/poke/<write_key>")
        async def poke(write_key: str) -> Any:
            source = ingest.authenticate(write_key, "poke")
            if source is None:
                return {"error": "unknown key"}, 401
            message = {"userId": request.args["user"], "event": "Poked"}
            await ingest.ingest([Candidate(message, "track")], ingest.arrival(request.remote_addr), source=source)
            return success_response()

        return bp

    class PokePlugin:
        @hookimpl
        def gateway_source_types(self) -> list[SourceType]:
            return [SourceType(name="poke", config_type=ComponentConfig, blueprint=blueprint)]

    config = f"""
[sources.pokes]
type = "poke"
write_key = "{HOOK_KEY}"

[destinations.rec]
type = "recording"
batch_max_wait_secs = 0.0
"""
    async with run_gateway(config, data_dir=tmp_path, plugins=[PokePlugin()]) as gw:
        assert (await gw.request("POST", "/poke/nope?user=u1")).status_code == 401
        assert (await gw.request("POST", f"/poke/{HOOK_KEY}?user=u1")).status_code == 200
        [message] = await gw.wait_recorded("rec", 1)
        assert (message["type"], message["event"], message["userId"]) == ("track", "Poked", "u1")


async def test_hook_gateway_destination_types(tmp_path: Path) -> None:
    """A destination type's destinations are built from their config and sent every message."""
    from gateway import Destination, DestinationContext, Record
    from gateway.testing import run_gateway

    class TagConfig(ComponentConfig):
        tag: str

    sent: list[tuple[str, str]] = []

    class Tagging(Destination):
        def __init__(self, config: TagConfig, context: DestinationContext) -> None:
            self.tag = config.tag

        async def send(self, batch: Any) -> None:
            sent.extend((self.tag, record.message()["messageId"]) for record in batch if isinstance(record, Record))

    class TagPlugin:
        @hookimpl
        def gateway_destination_types(self) -> list[DestinationType]:
            return [DestinationType(name="tagging", config_type=TagConfig, factory=Tagging)]

    config = f"""
[sources.web]
write_key = "{HOOK_KEY}"

[destinations.tagged]
type = "tagging"
tag = "blue"
batch_max_wait_secs = 0.0
"""
    async with run_gateway(config, data_dir=tmp_path, plugins=[TagPlugin()]) as gw:
        for message_id in ("d-1", "d-2"):
            response = await gw.send(
                "track", {"userId": "u", "event": "E", "messageId": message_id}, write_key=HOOK_KEY
            )
            assert response.status_code == 200
        await gw.wait_delivered("tagged")
    assert sent == [("blue", "d-1"), ("blue", "d-2")]


async def test_hook_gateway_filter_types(tmp_path: Path) -> None:
    """A filter type's filters run where the config lists them, with their own keys."""
    from gateway import Filter, FilterType
    from gateway.testing import run_gateway

    class DropEventConfig(ComponentConfig):
        event: str

    class DropEvent(Filter):
        def __init__(self, config: DropEventConfig) -> None:
            self.event = config.event

        def process(self, message: dict[str, Any]) -> dict[str, Any] | None:
            return None if message.get("event") == self.event else message

    class DropPlugin:
        @hookimpl
        def gateway_filter_types(self) -> list[FilterType]:
            return [FilterType(name="drop_event", config_type=DropEventConfig, factory=DropEvent)]

    config = f"""
[sources.web]
write_key = "{HOOK_KEY}"
filters = ["no_pings"]

[filters.no_pings]
type = "drop_event"
event = "Ping"

[destinations.rec]
type = "recording"
batch_max_wait_secs = 0.0
"""
    async with run_gateway(config, data_dir=tmp_path, plugins=[DropPlugin()]) as gw:
        batch = [{"type": "track", "userId": "u", "event": e, "messageId": e} for e in ("Ping", "Signed Up")]
        assert (await gw.batch(batch, write_key=HOOK_KEY)).status_code == 200
        await gw.wait_delivered("rec")
        assert [m["event"] for m in gw.recorded("rec")] == ["Signed Up"]


async def test_hook_gateway_matcher_types(tmp_path: Path) -> None:
    """A matcher type's matcher classifies fields for the privacy stage: here a Red one that a
    source with ``block_red`` removes before storage."""
    from gateway import MatcherType
    from gateway.testing import run_gateway

    class BadgePlugin:
        @hookimpl
        def gateway_matcher_types(self) -> list[MatcherType]:
            return [MatcherType(name="badge", default_class="red", match_key=lambda key: key == "badge_number")]

    config = f"""
[sources.web]
write_key = "{HOOK_KEY}"
block_red = true

[destinations.rec]
type = "recording"
batch_max_wait_secs = 0.0
"""
    async with run_gateway(config, data_dir=tmp_path, plugins=[BadgePlugin()]) as gw:
        traits = {"badge_number": "B-1234", "plan": "pro"}
        response = await gw.send("identify", {"userId": "u", "traits": traits}, write_key=HOOK_KEY)
        assert response.status_code == 200
        [message] = await gw.wait_recorded("rec", 1)
        assert message["traits"] == {"plan": "pro"}


async def test_hook_gateway_custom_matcher(tmp_path: Path) -> None:
    """The first plugin that builds a ``[privacy.matchers]`` entry gives its matcher: here one
    that goes by value only, which a source with ``block_red`` then applies."""
    from gateway import CustomMatcher, MatcherType
    from gateway.testing import run_gateway

    built: list[str] = []

    class PrefixPlugin:
        @hookimpl
        def gateway_custom_matcher(self, name: str, config: CustomMatcher) -> MatcherType:
            built.append(name)
            prefix = (config.pattern or "").rstrip(".*")
            return MatcherType(
                name=name,
                default_class=config.class_,
                match_key=None,
                match_value=lambda value: isinstance(value, str) and value.startswith(prefix),
            )

    config = f"""
[sources.web]
write_key = "{HOOK_KEY}"
block_red = true

[privacy.matchers.ticket]
class = "red"
pattern = "TKT-.*"

[destinations.rec]
type = "recording"
batch_max_wait_secs = 0.0
"""
    async with run_gateway(config, data_dir=tmp_path, plugins=[PrefixPlugin()]) as gw:
        traits = {"support": "TKT-99", "plan": "pro"}
        assert (await gw.send("identify", {"userId": "u", "traits": traits}, write_key=HOOK_KEY)).status_code == 200
        [message] = await gw.wait_recorded("rec", 1)
        assert message["traits"] == {"plan": "pro"}
    assert built == ["ticket"]
