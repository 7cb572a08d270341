"""What plugin authors build with beyond the contracts: an HTTP client for destinations that
maps answers to the delivery error policy, Segment-spec mapping helpers, a loopback server for
vendor fakes in tests, and the ``gateway new-plugin`` scaffold."""
