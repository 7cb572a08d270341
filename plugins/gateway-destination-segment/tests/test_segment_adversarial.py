"""Adversarial checks of the segment relay (issue 16 review), end to end through real gateways."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway import epoch_ms
from gateway.testing import open_loopback_server, run_gateway

from .test_segment import CLOUD_SERVER_KEY, CLOUD_WEB_KEY, PEER, WEB_KEY, SegmentAPI, relay_config


async def test_a_relayed_event_keeps_the_time_the_edge_gave_it(tmp_path: Path) -> None:
    # A device whose clock is an hour behind: it stamps the event and sends it at once, both by
    # its clock. The edge corrects the skew (timestamp = receivedAt - (sentAt - timestamp)), so
    # its timestamp is now. Relayed to a peer gateway, the event must keep that time: the
    # client's sentAt rides along in each message and the peer corrects the skew a second
    # time, moving the event an hour into the future (Segment applies the same rule).
    behind = datetime.now(UTC) - timedelta(hours=1)
    stamp = behind.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    async with (
        run_gateway(PEER.format(key=CLOUD_WEB_KEY), data_dir=tmp_path / "peer") as peer,
        run_gateway(relay_config(peer.url), data_dir=tmp_path / "edge") as edge,
    ):
        event = {"type": "track", "userId": "u1", "event": "Skewed", "messageId": "skew-1", "timestamp": stamp}
        response = await edge.request("POST", "/v1/batch", json={"batch": [event], "sentAt": stamp}, auth=(WEB_KEY, ""))
        assert response.status_code == 200
        await edge.wait_delivered("cloud")
        [at_peer] = await peer.wait_recorded("rec", 1)
    edge_ms = epoch_ms(at_peer["originalTimestamp"])  # the edge's corrected time, sent as the timestamp
    assert edge_ms is not None and abs(edge_ms - epoch_ms(stamp)) > 3_000_000  # the edge moved it to now
    assert abs(epoch_ms(at_peer["timestamp"]) - edge_ms) < 60_000, (at_peer["timestamp"], at_peer["originalTimestamp"])


async def test_an_event_that_picks_its_cloud_destinations_still_reaches_segment(tmp_path: Path) -> None:
    # {"All": false, "Mixpanel": true} asks Segment to send the event to Mixpanel alone; the
    # per-event All: false never blocks the Segment.io plugin (segment-api.md 2.4), so the
    # relay in front of the workspace must pass the event on, integrations unchanged, for
    # Segment to route it. The core matches the relay's display name "Segment" against All:
    # false and filters the event out: it never reaches the workspace or Mixpanel.
    api = SegmentAPI({CLOUD_WEB_KEY, CLOUD_SERVER_KEY})
    async with open_loopback_server(api) as server, run_gateway(relay_config(server.url), data_dir=tmp_path) as gw:
        [sent] = await gw.python_client(
            WEB_KEY,
            lambda c: [
                c.track("u1", "Order Completed", {"order_id": "o1"}, integrations={"All": False, "Mixpanel": True})
            ],
        )
        await gw.wait_delivered("cloud")
        assert gw.statistics("cloud")["filtered"] == 0
    relayed = [m for m in api.received.get(CLOUD_WEB_KEY, []) if m["messageId"] == sent["messageId"]]
    assert [m["integrations"] for m in relayed] == [{"All": False, "Mixpanel": True}]


async def test_the_relays_write_keys_are_not_shown_by_get_config(tmp_path: Path) -> None:
    # Keys named like key, secret or token are shown as *** by GET /config (README, Write a
    # destination): the relay's write_keys, a table of the cloud workspace's write keys by
    # source, is shown in clear (its write_key is not).
    async with run_gateway(relay_config("http://127.0.0.1:9"), data_dir=tmp_path) as gw:
        response = await gw.admin("GET", "/config")
    assert response.status_code == 200
    assert CLOUD_WEB_KEY not in response.text and CLOUD_SERVER_KEY not in response.text
