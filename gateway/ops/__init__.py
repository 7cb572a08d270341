"""Operating the gateway: the admin API, the audit of the books, and systemd integration."""
