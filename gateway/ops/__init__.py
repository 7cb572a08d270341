"""Operating the gateway: the admin API and who may call it (gateway.ops.auth), the console
on it (gateway.ops.console), the audit of the books, and systemd integration.

May import the stages (http, ingest, delivery), the log through gateway.log, and everything
below them; never gateway.runtime, which builds the admin app and hands it what to operate.
"""
