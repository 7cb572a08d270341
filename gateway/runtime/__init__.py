"""The running daemon, one concept a module: ``daemon`` (the root nursery, upkeep, signals),
``gateway`` (the running components and applying a config to them), ``destinations`` (a
destination's worker and replays), ``listeners`` (the HTTP listeners), ``deletion`` (a user's
deletion at the destinations) and ``reload`` (the config file watcher and SIGHUP).

May import every stage and ops, and everything below them; only gateway.cli and gateway.testing
import it.
"""
