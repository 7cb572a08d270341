"""Transformation functions through the real daemon: at a source and at a destination, a failing
function dead-letters the event (nothing is lost, the rest flows), and after the function is
fixed and the config reloaded, one redrive delivers what failed; the books stay balanced."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.gatewayproc import (
    WRITE_KEY,
    GatewayProcess,
    audit_log,
    config_text,
    gateway_cli,
    read_jsonl,
    reload,
    wait_booked,
)
from tests.sink import free_port

TOKEN = "admin-token-for-function-tests-0123"
BROKEN = """
def transform(event):
    if event["properties"].get("fail_at_{stage}"):
        raise RuntimeError("cannot handle this one")
    event["properties"]["{stage}_seen"] = True
    return event
"""
FIXED = """
def transform(event):
    event["properties"]["{stage}_seen"] = True
    event["properties"]["fixed_{stage}"] = "yes"
    return event
"""


def cli(config: Path, *args: str) -> str:
    done = gateway_cli(config, *args, env={"GW_TEST_ADMIN_TOKEN": TOKEN})
    assert done.returncode == 0, done.stderr
    return done.stdout


def write_functions(folder: Path, template: str) -> None:
    for stage in ("source", "destination"):
        (folder / f"at_{stage}.py").write_text(template.replace("{stage}", stage))


def test_failing_functions_dead_letter_and_redrive_after_a_fix(tmp_path: Path) -> None:
    functions = tmp_path / "functions"
    functions.mkdir()
    write_functions(functions, BROKEN)
    config = tmp_path / "gateway.toml"
    text = (
        config_text(tmp_path)
        .replace(f'write_key = "{WRITE_KEY}"', f'write_key = "{WRITE_KEY}"\nfilters = ["at_source"]')
        .replace("batch_max_wait_secs = 0.05", 'batch_max_wait_secs = 0.05\nfilters = ["at_destination"]')
        + f'\n[admin]\nlisten = "127.0.0.1:{free_port()}"\ntoken = {{ env = "GW_TEST_ADMIN_TOKEN" }}\n'
        + "".join(
            f'\n[filters.at_{stage}]\ntype = "function"\nfunction = "at_{stage}:transform"\npath = "{functions}"\n'
            for stage in ("source", "destination")
        )
    )
    config.write_text(text)
    events = [
        {"type": "track", "userId": "u", "event": "e", "messageId": mid, "properties": props}
        for mid, props in (("ok", {}), ("bad-src", {"fail_at_source": True}), ("bad-dst", {"fail_at_destination": 1}))
    ]
    with GatewayProcess(config, env={"GW_TEST_ADMIN_TOKEN": TOKEN}) as gateway:
        response = httpx.post(f"{gateway.url}/v1/batch", auth=(WRITE_KEY, ""), json={"batch": events})
        assert response.status_code == 200
        wait_booked(gateway, "archive", token=TOKEN)  # bad-dst: dead-lettered, booked (bad-src: before the 200)
        letters = cli(config, "dead-letters", "list")
        assert letters.count("\n") == 2, letters
        by_destination = {line.split("\t")[1]: line for line in letters.splitlines()}
        assert set(by_destination) == {"source:web", "archive"}
        assert "stage=source" in by_destination["source:web"]
        assert "at_source:transform: RuntimeError: cannot handle this one" in by_destination["source:web"]
        assert "stage=filter" in by_destination["archive"]
        [delivered] = read_jsonl(tmp_path / "archive")
        assert delivered["messageId"] == "ok"
        assert delivered["properties"] == {"source_seen": True, "destination_seen": True}

        # Fix the functions, reload (the modules are imported afresh), redrive both stages.
        write_functions(functions, FIXED)
        assert reload(gateway)["event"] == "config_reloaded"
        mark = len(gateway.lines)
        assert "1 dead letter(s) marked for redrive" in cli(
            config, "dead-letters", "redrive", "--destination", "source:web"
        )
        assert "1 dead letter(s) marked for redrive" in cli(
            config, "dead-letters", "redrive", "--destination", "archive"
        )
        assert gateway.wait_logged("source_dead_letters_redriven", after=mark)["taken"] == 1  # stored again
        assert gateway.wait_logged("dead_letters_redriven", after=mark)["delivered"] == 1  # sent again
        wait_booked(gateway, "archive", token=TOKEN)  # and bad-src, stored again, delivered
        delivered = read_jsonl(tmp_path / "archive")
        assert len(delivered) == 3
        assert cli(config, "dead-letters", "list") == ""
        metrics = httpx.get(f"{gateway.url}/metrics").text
    assert not [line for line in gateway.lines if "function_budget_not_enforced" in line]  # the loop is on main
    by_id = {m["messageId"]: m["properties"] for m in delivered}
    # bad-src failed at the source, before anything was stored: fixed function at both stages now
    assert by_id["bad-src"] == {
        "fail_at_source": True,
        "source_seen": True,
        "fixed_source": "yes",
        "destination_seen": True,
        "fixed_destination": "yes",
    }
    # bad-dst passed the source's old function and was stored; the destination's fixed one ran on redrive
    assert by_id["bad-dst"] == {
        "fail_at_destination": 1,
        "source_seen": True,
        "destination_seen": True,
        "fixed_destination": "yes",
    }
    assert 'gateway_messages_filtered_total{reason="function_error",stage="source",target="web"} 1.0' in metrics
    # the filters' own counters, since the reload rebuilt them: one event each through the fixed functions
    assert 'gateway_filter_events_total{counter="passed",filter="at_source"} 1.0' in metrics
    assert 'gateway_filter_events_total{counter="passed",filter="at_destination"} 2.0' in metrics
    [books] = audit_log(tmp_path).destinations
    assert books.unaccounted == 0 and books.dead_lettered == 1 and books.redriven == 1
    assert books.by_source["web"]["delivered"] == 2
