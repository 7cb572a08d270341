"""What plugin authors build with beyond the contracts: an HTTP client for destinations that
maps answers to the delivery error policy, Segment-spec mapping helpers, a loopback server for
vendor fakes in tests, and the ``gateway new-plugin`` scaffold.

Plugins reach it through gateway.__all__ (and gateway.testing). May import what lies below the
log (config, plugins, components, metrics, the base modules); never the log or a stage.
"""
