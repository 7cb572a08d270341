"""gateway.testing and the destination contract it exercises: partial refusals (SendResult),
error samples (DeliveryError.exchange), flushing a batch now, and a type's delivery defaults."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gateway import (
    ComponentConfig,
    DeliveryError,
    Destination,
    DestinationContext,
    DestinationType,
    Exchange,
    Record,
    SendResult,
    hookimpl,
)
from gateway.testing import run_gateway

KEY = "testing-kit-write-key"

RECORDING = f"""
[sources.web]
write_key = "{KEY}"

[destinations.rec]
type = "recording"
batch_max_wait_secs = 0.0
retry_initial_secs = 0.01
retry_max_secs = 0.02
"""


async def test_messages_sent_reach_a_recording_destination(tmp_path: Path) -> None:
    async with run_gateway(RECORDING, data_dir=tmp_path) as gw:
        response = await gw.send("track", {"userId": "u1", "event": "Signed Up", "messageId": "m-1"}, write_key=KEY)
        assert response.status_code == 200, response.text
        response = await gw.batch(
            [{"type": "identify", "userId": "u1", "messageId": "m-2", "traits": {"plan": "pro"}}], write_key=KEY
        )
        assert response.status_code == 200, response.text
        [first, second] = await gw.wait_recorded("rec", 2)
        assert (first["messageId"], first["event"]) == ("m-1", "Signed Up")
        assert (second["type"], second["traits"]) == ("identify", {"plan": "pro"})
        await gw.wait_delivered("rec")
        assert gw.statistics("rec")["delivered"] == 2


async def test_a_partly_refused_batch_dead_letters_only_the_refused_records(tmp_path: Path) -> None:
    async with run_gateway(RECORDING, data_dir=tmp_path) as gw:
        gw.recorder("rec").reject("bad", "invalid event name")
        batch = [{"type": "track", "userId": "u", "event": "E", "messageId": m} for m in ("ok-1", "bad", "ok-2")]
        assert (await gw.batch(batch, write_key=KEY)).status_code == 200
        await gw.wait_delivered("rec")
        assert [m["messageId"] for m in gw.recorded("rec")] == ["ok-1", "ok-2"]
        assert len(gw.recorder("rec").batches) == 1  # one send: the good ones were not sent again
        [letter] = await gw.dead_letters("rec")
        assert letter["error"] == "invalid event name"
        assert '"messageId":"bad"' in letter["message"]
        stats = gw.statistics("rec")
        assert (stats["delivered"], stats["dead_lettered"]) == (2, 1)


class _Refusing(Destination):
    """Refuses every batch with a 401 and an exchange holding its API key."""

    def __init__(self, config: ComponentConfig, context: DestinationContext) -> None:
        pass

    async def send(self, batch: Sequence[Record]) -> None:
        exchange = Exchange.of(
            "POST",
            "https://api.example.com/track?key=SECRET-KEY",
            headers={"Authorization": "Bearer SECRET-KEY", "Content-Type": "application/json"},
            body=b'{"events": []}',
            status=401,
            response_body=b'{"error": "bad key"}',
            secrets=["SECRET-KEY"],
        )
        raise DeliveryError("401 Unauthorized", retryable=False, kind="http_401", exchange=exchange)


class _RefusingPlugin:
    @hookimpl
    def gateway_destination_types(self) -> list[DestinationType]:
        return [
            DestinationType(
                name="refusing",
                config_type=ComponentConfig,
                factory=_Refusing,
                delivery_defaults={"batch_max_wait_secs": 0.0, "max_attempts": 1},
            )
        ]


async def test_error_samples_are_kept_per_kind_with_credentials_redacted(tmp_path: Path) -> None:
    config = f"""
[admin]
token = "an-admin-token-of-enough-length"

[sources.web]
write_key = "{KEY}"

[destinations.vendor]
type = "refusing"
"""
    async with run_gateway(config, data_dir=tmp_path, plugins=[_RefusingPlugin()]) as gw:
        assert (await gw.send("track", {"userId": "u", "event": "E"}, write_key=KEY)).status_code == 200
        await gw.wait_delivered("vendor")
        status = (await gw.admin("GET", "/status")).json()
        [sample] = status["destinations"]["vendor"]["errors"]
        assert (sample["kind"], sample["count"], sample["retryable"]) == ("http_401", 1, False)
        assert "SECRET-KEY" not in str(sample)
        assert sample["exchange"]["request"].startswith("POST https://api.example.com/track?key=***")
        assert "Authorization: ***" in sample["exchange"]["request"]
        assert sample["exchange"]["response"].startswith("401")
        described = (await gw.admin("GET", "/destinations/vendor")).json()
        assert described["dead_lettered"] == 1
        assert (await gw.admin("GET", "/destinations/nope")).status_code == 404


async def test_a_type_sets_defaults_of_core_delivery_keys_and_the_config_wins(tmp_path: Path) -> None:
    config = f"""
[sources.web]
write_key = "{KEY}"

[destinations.a]
type = "refusing"

[destinations.b]
type = "refusing"
max_attempts = 3
"""
    async with run_gateway(config, data_dir=tmp_path, plugins=[_RefusingPlugin()]) as gw:
        core = gw.config.destinations
        assert (core["a"].core.max_attempts, core["a"].core.batch_max_wait_secs) == (1, 0.0)
        assert core["b"].core.max_attempts == 3


async def test_flush_sends_a_waiting_batch_now(tmp_path: Path) -> None:
    slow = RECORDING.replace("batch_max_wait_secs = 0.0", "batch_max_wait_secs = 3600.0").replace(
        "[sources.web]", '[admin]\ntoken = "an-admin-token-of-enough-length"\n\n[sources.web]'
    )
    async with run_gateway(slow, data_dir=tmp_path) as gw:
        assert (
            await gw.send("track", {"userId": "u", "event": "E", "messageId": "f-1"}, write_key=KEY)
        ).status_code == 200
        answer = (await gw.admin("POST", "/destinations/rec/flush?wait_secs=20")).json()
        assert answer["done"] is True
        assert [m["messageId"] for m in gw.recorded("rec")] == ["f-1"]


class _Options(ComponentConfig):
    sync_interval_secs: float = 60.0


class _DerivedPlugin:
    @hookimpl
    def gateway_destination_types(self) -> list[DestinationType]:
        return [
            DestinationType(
                name="derived",
                config_type=_Options,
                factory=_Refusing,
                delivery_defaults=lambda options: {"batch_max_wait_secs": options.sync_interval_secs},
            )
        ]


async def test_delivery_defaults_may_derive_from_the_types_own_keys(tmp_path: Path) -> None:
    config = f"""
[sources.web]
write_key = "{KEY}"

[destinations.a]
type = "derived"
sync_interval_secs = 7.5

[destinations.b]
type = "derived"
"""
    async with run_gateway(config, data_dir=tmp_path, plugins=[_DerivedPlugin()]) as gw:
        core = gw.config.destinations
        assert (core["a"].core.batch_max_wait_secs, core["b"].core.batch_max_wait_secs) == (7.5, 60.0)


class _Unauthorized(Destination):
    """Refuses every batch: credentials refused, for every record alike."""

    sends = 0

    def __init__(self, config: ComponentConfig, context: DestinationContext) -> None:
        pass

    async def send(self, batch: Sequence[Record]) -> None:
        type(self).sends += 1
        raise DeliveryError("401 Unauthorized", retryable=False, kind="http_401", every_record=True)


class _UnauthorizedPlugin:
    @hookimpl
    def gateway_destination_types(self) -> list[DestinationType]:
        return [DestinationType(name="unauthorized", config_type=ComponentConfig, factory=_Unauthorized)]


async def test_a_refusal_of_every_record_dead_letters_the_batch_in_one_send(tmp_path: Path) -> None:
    config = f"""
[sources.web]
write_key = "{KEY}"

[destinations.vendor]
type = "unauthorized"
batch_max_wait_secs = 0.0
"""
    async with run_gateway(config, data_dir=tmp_path, plugins=[_UnauthorizedPlugin()]) as gw:
        batch = [{"type": "track", "userId": "u", "event": "E", "messageId": f"x-{i}"} for i in range(20)]
        assert (await gw.batch(batch, write_key=KEY)).status_code == 200
        await gw.wait_delivered("vendor")
        assert gw.statistics("vendor")["dead_lettered"] == 20
        assert _Unauthorized.sends == 1  # not 1 + 20 tries of one record each


def test_check_config_refuses_what_gateway_check_config_refuses(tmp_path: Path) -> None:
    # A function that does not import is found when the filter is built, not when its config
    # is validated: check_config promises the command's verdict, so it builds the filters too.
    import pytest

    from gateway import ConfigError
    from gateway.testing import check_config

    (tmp_path / "broken_fn.py").write_text('raise RuntimeError("boom")\n')
    text = f"""
[sources.web]
write_key = "{KEY}"
filters = ["f"]
[filters.f]
type = "function"
function = "broken_fn:go"
path = "{tmp_path}"
"""
    with pytest.raises(ConfigError, match=r"filters\.f: cannot be built: .*cannot import 'broken_fn'"):
        check_config(text)


async def test_a_redriven_letter_refused_again_keeps_its_own_reason(tmp_path: Path) -> None:
    # A SendResult gives each refused record its own reason; a redrive that is refused again
    # must record each letter's, not the last one's for all of them.
    async with run_gateway(RECORDING, data_dir=tmp_path) as gw:
        gw.recorder("rec").reject("a", "reason a")
        gw.recorder("rec").reject("b", "reason b")
        batch = [{"type": "track", "userId": "u", "event": "E", "messageId": m} for m in ("a", "b")]
        assert (await gw.batch(batch, write_key=KEY)).status_code == 200
        await gw.wait_delivered("rec")
        assert sorted(x["error"] for x in await gw.dead_letters("rec")) == ["reason a", "reason b"]
        assert await gw.redrive("rec") == 2
        letters = await gw.dead_letters("rec")
        assert all(x["attempts"] == 2 and x["state"] == "dead" for x in letters)
        assert {x["message"].split('"messageId":"')[1][0]: x["error"] for x in letters} == {
            "a": "reason a",
            "b": "reason b",
        }


class _Miscounting(Destination):
    """Names a record that is not in the batch (a plugin bug) among its refusals."""

    def __init__(self, config: ComponentConfig, context: DestinationContext) -> None:
        pass

    async def send(self, batch: Sequence[Record]) -> SendResult:
        return SendResult(rejected={batch[0].seq: "bad", 10_000_000: "not in the batch"})


class _MiscountingPlugin:
    @hookimpl
    def gateway_destination_types(self) -> list[DestinationType]:
        return [DestinationType(name="miscounting", config_type=ComponentConfig, factory=_Miscounting)]


async def test_refusals_of_records_not_in_the_batch_are_logged(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    config = f"""
[sources.web]
write_key = "{KEY}"

[destinations.vendor]
type = "miscounting"
batch_max_wait_secs = 0.0
"""
    async with run_gateway(config, data_dir=tmp_path, plugins=[_MiscountingPlugin()]) as gw:
        with capture_logs() as logs:
            batch = [{"type": "track", "userId": "u", "event": "E", "messageId": f"y-{i}"} for i in range(3)]
            assert (await gw.batch(batch, write_key=KEY)).status_code == 200
            await gw.wait_delivered("vendor")
        stats = gw.statistics("vendor")
        assert (stats["delivered"], stats["dead_lettered"]) == (2, 1)
    [warning] = [e for e in logs if e["event"] == "send_result_names_unknown_records"]
    assert warning["unknown_seqs"] == [10_000_000]
