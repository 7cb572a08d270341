"""Ingest: what happens to a message between a source plugin and the log (authentication,
validation, server fields, rate limits, source filters, privacy at ingest, the durable append).

May import the log (through gateway.log only), the privacy classifier, and what lies below them
(config, plugins, components, metrics, the base modules); never http or delivery, its sibling stages.
"""
