"""Privacy: classifying fields Red, Yellow or Green (with the matchers plugins provide) and
applying a policy (allow, block, redact, hash) at ingest and per destination."""
