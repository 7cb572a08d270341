"""Delivery: one worker per destination reads the log through its own cursor, filters, batches,
sends, retries and dead-letters; replays read a range again through a cursor of their own.

May import the log (through gateway.log only), the privacy classifier, and what lies below them
(config, plugins, components, metrics, the base modules); never http or ingest, its sibling stages.
"""
