"""HTTP: the quart-trio app that mounts the source types' routes, the fast-path middleware, and
the helpers every source shares (body limits, gzip, write keys, the JSON error shape).

May import what lies below the stages; it needs only the base modules (gateway.messages,
gateway.telemetry, gateway.errors). Never ingest or delivery, its sibling stages: the source
types' routes it serves reach ingest through the ``Ingest`` protocol of gateway.components.
"""
