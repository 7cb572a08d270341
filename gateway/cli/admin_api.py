"""How the commands that act on a running daemon reach it: its admin API, at the address and
with the token its config file gives."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from gateway.config import load_config
from gateway.errors import GatewayError
from gateway.plugins import build_registry, make_plugin_manager


def call_admin(
    config_path: str, method: str, path: str, body: dict[str, Any] | None = None, *, timeout: float = 30
) -> Any:
    """Call the running daemon's admin API (address and token from the config file); returns
    the decoded JSON answer.

    Raises:
        GatewayError: the admin API is off in the config, cannot be reached, or answered an error.
    """
    config = load_config(config_path, build_registry(make_plugin_manager()))
    if not config.admin.token:
        raise GatewayError(f"{config_path}: admin.token is not set, so the admin API is off")
    request = urllib.request.Request(
        f"http://{config.admin.listen}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {config.admin.token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", "replace")
        raise GatewayError(f"admin API answered {error.code}: {detail}") from None
    except urllib.error.URLError as error:
        raise GatewayError(f"cannot reach the admin API at {config.admin.listen}: {error.reason}") from None


def flush_destination(config_path: str, destination: str, wait_secs: float) -> Any:
    """Have ``destination`` send its batch now and wait up to ``wait_secs`` for it to be booked;
    returns the admin API's answer (``done``, ``upto_seq``, ``delivered``, ``last_error``...)."""
    name = urllib.parse.quote(destination, safe="")
    return call_admin(config_path, "POST", f"/destinations/{name}/flush?wait_secs={wait_secs}", timeout=wait_secs + 30)


def describe_destination(config_path: str, destination: str) -> Any:
    """What a running destination says of itself (its type, statistics and ``describe()``)."""
    return call_admin(config_path, "GET", f"/destinations/{urllib.parse.quote(destination, safe='')}")
