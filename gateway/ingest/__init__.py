"""Ingest: what happens to a message between a source plugin and the log (authentication,
validation, server fields, rate limits, source filters, privacy at ingest, the durable append)."""
