"""HTTP: the quart-trio app that mounts the source types' routes, the fast-path middleware, and
the helpers every source shares (body limits, gzip, write keys, the JSON error shape)."""
