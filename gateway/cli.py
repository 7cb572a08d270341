"""The ``gateway`` command: run the daemon, check a config, list plugins, inspect dead letters."""

from __future__ import annotations

import signal
import sys

if sys.argv[1:2] == ["run"]:
    # First, before the imports: SIGHUP's default action ends the process, and importing the
    # web stack and the plugins takes a second or more. A reload asked for meanwhile is moot
    # (the config is being read now): ignore it until the daemon's own receiver takes over.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

import argparse
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from gateway.config import DEFAULT_CONFIG_PATH, iso_to_ms, load_config
from gateway.errors import GatewayError, LogUnreadableError, exception_leaves
from gateway.plugins import build_registry, make_plugin_manager, plugin_distribution
from gateway.telemetry import LEVELS, configure_logging
from gateway.warehouse_commands import add_warehouse_commands, format_details

if TYPE_CHECKING:
    from gateway.log import LogReader

T = TypeVar("T")


def _run(args: argparse.Namespace) -> int:
    from gateway.runtime.daemon import run

    configure_logging(args.log_level)
    run(args.config)
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from gateway.runtime.gateway import build_filters

    registry = build_registry(make_plugin_manager())
    config = load_config(args.config, registry)
    build_filters(config, registry)  # what only building finds: a function that does not import
    print(
        f"{args.config}: ok ({len(config.sources)} sources, {len(config.destinations)} destinations, "
        f"{len(config.filters)} filters)"
    )
    return 0


def _plugins(args: argparse.Namespace) -> int:
    pm = make_plugin_manager()
    registry = build_registry(pm)
    kinds: tuple[tuple[str, dict[str, Any]], ...] = (
        ("source", registry.sources),
        ("destination", registry.destinations),
        ("filter", registry.filters),
        ("matcher", registry.matchers),
    )
    for kind, types in kinds:
        for name, component_type in sorted(types.items()):
            plugin = registry.provided_by[(kind, name)]
            print(f"{kind:<12} {name:<16} {plugin_distribution(pm, plugin):<40} {component_type.description}")
    return 0


def _admin(config_path: str, method: str, path: str, body: dict[str, Any] | None = None, *, timeout: float = 30) -> Any:
    """Call the running daemon's admin API (address and token from the config file)."""
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


def _status(args: argparse.Namespace) -> int:
    status = _admin(args.config, "GET", "/status")
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    readiness = status["ready"]
    ready = "ready" if readiness["ready"] else "NOT READY (" + "; ".join(readiness["reasons"]) + ")"
    print(
        f"gateway {status['version']}, up {status['uptime_secs']}s, {ready}, listening on {', '.join(status['listen'])}"
    )
    print(f"log: head seq {status['log']['head_seq']}, {status['log']['disk_bytes']} bytes on disk")
    print(f"reloads: {status['reloads']['ok']} ok, {status['reloads']['failed']} refused")
    for did, d in sorted(status["destinations"].items()):
        print(
            f"  {did} ({d['type']}): delivered {d['delivered']}, filtered {d['filtered']}, dead-lettered "
            f"{d['dead_lettered']}, retries {d['retries']}, backlog {d['backlog_messages']} messages"
            + (f", last error: {d['last_error']}" if d["last_error"] else "")
        )
        for line in format_details(d.get("details")):
            print(f"    {line}")
        for name, r in sorted(d.get("replays", {}).items()):
            span = f"{r['start_seq'] + 1}..{r['end_seq']}"
            print(f"    {name}: at seq {r['cursor']} of {span}, delivered {r['delivered']}")
    return 0


def _destinations(args: argparse.Namespace) -> int:
    name = urllib.parse.quote(args.destination, safe="")
    if args.action == "flush":
        answer = _admin(
            args.config, "POST", f"/destinations/{name}/flush?wait_secs={args.wait}", timeout=args.wait + 30
        )
        state = "done" if answer["done"] else f"still under way after {args.wait}s (see `gateway status`)"
        print(
            f"{args.destination}: flushed up to seq {answer['upto_seq']}: {state}; delivered {answer['delivered']}, "
            f"dead-lettered {answer['dead_lettered']}"
            + (f", last error: {answer['last_error']}" if answer["last_error"] else "")
        )
        return 0 if answer["done"] else 1
    answer = _admin(args.config, "GET", f"/destinations/{name}")
    print(json.dumps(answer, indent=2))
    return 0


def _dead_letters(args: argparse.Namespace) -> int:
    if args.action == "list":
        query = urllib.parse.urlencode(
            {k: v for k, v in (("destination", args.destination), ("limit", args.limit)) if v}
        )
        for letter in _admin(args.config, "GET", f"/dead-letters?{query}"):
            when = datetime.fromtimestamp(letter["failed_at"], UTC).isoformat(timespec="seconds")
            print(
                f"{letter['id']}\t{letter['destination']}\tseq={letter['seq']}\t{when}\t{letter['state']}"
                f"\tstage={letter['stage']}\tattempts={letter['attempts']}\t{letter['error']}"
            )
            if args.bodies:
                print(f"\t{letter['message']}")
        return 0
    if not args.ids and not args.destination:
        raise GatewayError(f"dead-letters {args.action}: name --destination or one or more ids")
    body = {"ids": args.ids} if args.ids else {"destination": args.destination}
    changed = _admin(args.config, "POST", f"/dead-letters/{args.action}", body)["changed"]
    verb = "marked for redrive" if args.action == "redrive" else "discarded"
    print(f"{changed} dead letter(s) {verb}")
    return 0


def _privacy(args: argparse.Namespace) -> int:
    if args.action == "suppressions":
        for user_id in _admin(args.config, "GET", "/privacy/suppressions"):
            print(user_id)
        return 0
    if args.action == "inventory":
        return _inventory(args)
    if not args.user_id:
        raise GatewayError(f"privacy {args.action}: give the USER_ID")
    if args.action == "delete":
        return _delete(args)
    answer = _admin(args.config, "POST", f"/privacy/{args.action}", {"userId": args.user_id})
    state = "suppressed" if answer["suppressed"] else "no longer suppressed"
    print(f"{args.user_id}: {state}" + ("" if answer["changed"] else " (already so)"))
    return 0


def _delete(args: argparse.Namespace) -> int:
    answer = _admin(
        args.config,
        "POST",
        "/privacy/delete",
        {"userId": args.user_id, "keepCollecting": args.keep_collecting},
        timeout=600,  # a full scan of a large log, then every destination's own deletion
    )
    removed = answer["messages_deleted"] + answer["tombstoned"]
    parts = [f"{removed} messages removed from the log, {answer['dead_letters_deleted']} dead letters"]
    failed = False
    for did, result in sorted(answer["destinations"].items()):
        if result.get("error"):
            failed = True
            text = f"FAILED: {result['error']}"
        elif result.get("supported", True) is False:
            text = "no delete hook"
        else:
            text = f"{result.get('removed', 0)} removed"
        if result.get("settled", True) is False:
            text += " (batches read before the deletion were still in flight: run it again later)"
        parts.append(f"{did}: {text}")
    parts.append(
        "later events are dropped (suppressed)"
        if answer["suppressed"]
        else "later events are still collected (--keep-collecting)"
    )
    print(f"{args.user_id}: " + "; ".join(parts))
    return 1 if failed else 0


def _read_log(config_path: str, read: Callable[[LogReader], Awaitable[T]]) -> T:
    """``read`` the log of the config's data_dir, read-only (with the daemon up or down)."""
    from gateway.log import open_log_reader

    config = load_config(config_path, build_registry(make_plugin_manager()))

    async def main() -> T:
        async with open_log_reader(config.log, config.data_dir) as reader:
            return await read(reader)

    return trio.run(main)


def _inventory(args: argparse.Namespace) -> int:
    everything = _read_log(args.config, lambda reader: reader.load_inventory())
    rows = [row for row in everything if args.source in (None, row.source)]
    if not rows:
        print("no fields recorded yet (set inventory = true on a source)", file=sys.stderr)
        return 0

    def when(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    table = [(r.source, r.path, r.cls, ",".join(r.hits) or "-", when(r.first_seen), when(r.last_seen)) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for source, path, cls, hits, first, last in table:
        cells = (source, path, cls, hits)
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + f"  first {first}  last {last}")
    return 0


def _time_argument(option: str, value: str) -> int:
    try:
        return iso_to_ms(value)
    except ValueError:
        raise GatewayError(f"{option}: {value!r} is not an ISO-8601 time (e.g. 2026-11-28T09:00:00Z)") from None


def _replay(args: argparse.Namespace) -> int:
    if args.cancel:
        cancelled = _admin(args.config, "POST", "/replays/cancel", {"destination": args.destination})["cancelled"]
        print(f"{cancelled} replay(s) of {args.destination} cancelled")
        return 0
    if not args.since:
        raise GatewayError("replay: give --since (or --cancel)")
    body: dict[str, Any] = {"destination": args.destination, "since_ms": _time_argument("--since", args.since)}
    if args.until:
        body["until_ms"] = _time_argument("--until", args.until)
    answer = _admin(args.config, "POST", "/replays", body)
    if answer["replay"] is None:
        print(f"nothing to replay: no stored message was received in that time for {args.destination}")
        return 0
    replay = answer["replay"]
    print(
        f"replaying up to {replay['end_seq'] - replay['start_seq']} messages (seq {replay['start_seq'] + 1}.."
        f"{replay['end_seq']}) to {args.destination} as {replay['name']}; `gateway status` shows its progress"
    )
    return 0


def _audit(args: argparse.Namespace) -> int:
    from gateway.ops.audit import audit, format_report

    since_ms = _time_argument("--since", args.since) if args.since else None
    report = audit(_read_log(args.config, lambda reader: reader.books(since_ms)))
    print(format_report(report))
    return 0 if report.balanced else 3


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value


def _new_plugin(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gateway.kit.scaffold import new_plugin

    try:
        folder = new_plugin(args.kind, args.name, Path(args.into))
    except ValueError as error:
        raise GatewayError(str(error)) from None
    print(f"wrote {folder}: pip install -e {folder} && python -m pytest {folder}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Self-hosted Segment-compatible event gateway.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("--config", default=DEFAULT_CONFIG_PATH, help=f"config file (default {DEFAULT_CONFIG_PATH})")
    run.add_argument("--log-level", default="info", choices=LEVELS)
    run.set_defaults(handler=_run)

    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config", nargs="?", default=DEFAULT_CONFIG_PATH)
    check.set_defaults(handler=_check_config)

    plugins = commands.add_parser("plugins", help="list the plugins and component types found")
    plugins.set_defaults(handler=_plugins)

    status = commands.add_parser("status", help="what the running daemon is doing (admin API)")
    status.add_argument("--config", default=DEFAULT_CONFIG_PATH)
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    status.set_defaults(handler=_status)

    destinations = commands.add_parser(
        "destinations", help="flush a destination's batch now, or print what it says of itself (admin API)"
    )
    destinations.add_argument("action", choices=("flush", "describe"))
    destinations.add_argument("destination")
    destinations.add_argument("--config", default=DEFAULT_CONFIG_PATH)
    destinations.add_argument(
        "--wait", type=float, default=300.0, help="flush: seconds to wait for the batch to be booked (default 300)"
    )
    destinations.set_defaults(handler=_destinations)
    add_warehouse_commands(commands, _admin)

    dead = commands.add_parser(
        "dead-letters", help="inspect, redrive or discard messages destinations refused (admin API)"
    )
    dead.add_argument("action", choices=("list", "redrive", "discard"))
    dead.add_argument("ids", nargs="*", type=int, help="dead letter ids (redrive/discard)")
    dead.add_argument("--config", default=DEFAULT_CONFIG_PATH)
    dead.add_argument(
        "--destination", help="only this destination (list), or all of its dead letters (redrive/discard)"
    )
    dead.add_argument("--limit", type=_at_least_one, default=100, help="list at most this many (default 100)")
    dead.add_argument("--bodies", action="store_true", help="print each message too")
    dead.set_defaults(handler=_dead_letters)

    privacy = commands.add_parser(
        "privacy",
        help="suppress or delete a userId's events (admin API), or print the field inventory (from the log file)",
    )
    privacy.add_argument("action", choices=("suppress", "unsuppress", "suppressions", "delete", "inventory"))
    privacy.add_argument("user_id", nargs="?", metavar="USER_ID")
    privacy.add_argument("--config", default=DEFAULT_CONFIG_PATH)
    privacy.add_argument(
        "--keep-collecting", action="store_true", help="delete: do not suppress the user's later events"
    )
    privacy.add_argument("--source", help="inventory: only this source")
    privacy.set_defaults(handler=_privacy)

    replay = commands.add_parser(
        "replay",
        help="send a destination again what the log received in a time range, beside live delivery (admin API)",
    )
    replay.add_argument("destination")
    replay.add_argument("--since", help="ISO time: the first messages received at or after it")
    replay.add_argument("--until", help="ISO time: up to the messages received before it (default: now)")
    replay.add_argument("--cancel", action="store_true", help="stop and forget the destination's replays")
    replay.add_argument("--config", default=DEFAULT_CONFIG_PATH)
    replay.set_defaults(handler=_replay)

    audit = commands.add_parser(
        "audit", help="prove every accepted message is delivered, filtered, dead-lettered or pending"
    )
    audit.add_argument("--config", default=DEFAULT_CONFIG_PATH)
    audit.add_argument("--since", help="ISO time: reconcile from each destination's position at that time")
    audit.set_defaults(handler=_audit)

    scaffold = commands.add_parser("new-plugin", help="write a plugin distribution to start from (tests included)")
    scaffold.add_argument("kind", choices=("destination", "filter", "source"))
    scaffold.add_argument("name", help="lower-case snake_case: the type name in the config")
    scaffold.add_argument("--into", default=".", help="folder to write gateway-<kind>-<name>/ in (default: here)")
    scaffold.set_defaults(handler=_new_plugin)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; startup failures end with one line on stderr and a non-zero status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return 130
    except (GatewayError, OSError, BaseExceptionGroup) as error:
        # Errors from inside the daemon's nurseries arrive wrapped in exception groups.
        leaves = exception_leaves(error)
        if not all(isinstance(leaf, GatewayError | OSError) for leaf in leaves):
            raise
        leaf = leaves[0]
        if isinstance(leaf, LogUnreadableError):  # a corrupt or foreign log file
            print(f"gateway: {leaf}", file=sys.stderr)
            return 1
        print(f"gateway: {leaf}", file=sys.stderr)
        return 2 if isinstance(leaf, GatewayError) else 1


if __name__ == "__main__":
    sys.exit(main())
