"""Privacy: classifying fields Red, Yellow or Green (with the matchers plugins provide) and
applying a policy (allow, block, redact, hash) at ingest and per destination.

Two layers: ``config`` (the ``[privacy]`` tables and per-destination policies) sits low, beside
gateway.components, so the config can name them without the engine; ``classifier`` (with
``shape_plans``, its compiled per-shape plans) sits beside the log and may import gateway.components
and ``privacy.config``. The matching engines themselves live in the matcher plugin.
"""
