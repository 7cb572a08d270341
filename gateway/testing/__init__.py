"""Helpers for testing plugins against a real gateway: run one in-process from a TOML string,
send it calls over HTTP, and wait for delivery on events, never on the clock.

    from gateway.testing import run_gateway

    async def test_my_destination(tmp_path):
        config = '''
        [sources.web]
        write_key = "key"
        [destinations.mine]
        type = "my_destination"
        url = "http://127.0.0.1:9999"
        '''
        async with run_gateway(config, data_dir=tmp_path) as gw:
            response = await gw.send("track", {"userId": "u", "event": "Signed Up"}, write_key="key")
            assert response.status_code == 200
            await gw.wait_delivered("mine")

It serves on loopback ports chosen by the system, with its log in ``data_dir``, the installed
plugins (entry points) and any ``plugins`` given. A ``type = "recording"`` destination keeps
what it receives in memory (:meth:`TestGateway.recorded`), and can be told to fail.
:func:`open_loopback_server` serves a vendor API a test writes (one handler that enforces the
vendor's schema) on loopback, records its requests and scripts faults. Needs the
test extras (``httpx``, ``pytest-trio``): ``pip install 'gateway-core[test]'``.

Plugins' tests import these names, never a module of this package. May import every package
below it, the daemon (gateway.runtime) included, to run one.
"""

from __future__ import annotations

from gateway.kit.loopback import Answer, LoopbackServer, ReceivedRequest, open_loopback_server
from gateway.testing._components import check_config, plugin_registry, run_filters
from gateway.testing._files import read_jsonl
from gateway.testing._in_process import TestGateway, run_gateway
from gateway.testing._process import GatewayProcess

# ``name as name``: importable from here as they always were, though outside ``__all__``.
from gateway.testing._recording import RecordingConfig as RecordingConfig
from gateway.testing._recording import RecordingDestination
from gateway.testing._waiting import DEFAULT_WAIT_SECS as DEFAULT_WAIT_SECS

__all__ = [
    "Answer",
    "GatewayProcess",
    "LoopbackServer",
    "ReceivedRequest",
    "RecordingDestination",
    "TestGateway",
    "check_config",
    "open_loopback_server",
    "plugin_registry",
    "read_jsonl",
    "run_filters",
    "run_gateway",
]
