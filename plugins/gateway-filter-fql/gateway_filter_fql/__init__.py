"""The ``fql`` filter type: Segment destination filters, an FQL condition plus actions.

```toml
[filters.no_email_in_ads]
type = "fql"
if = "type = 'track' and event = 'Order Completed'"
drop_properties = { properties = ["email"], context = ["ip"] }
```

See the README of the distribution for the language and the actions.
"""

from __future__ import annotations

from gateway import FilterType, hookimpl
from gateway_filter_fql.filter import FQLFilter, FQLFilterConfig, SampleConfig
from gateway_filter_fql.fql import FQLEvaluationError, FQLSyntaxError, Program, compile_expression

__all__ = [
    "FQLEvaluationError",
    "FQLFilter",
    "FQLFilterConfig",
    "FQLSyntaxError",
    "Program",
    "SampleConfig",
    "compile_expression",
    "gateway_filter_types",
]


@hookimpl
def gateway_filter_types() -> list[FilterType]:
    return [
        FilterType(
            name="fql",
            config_type=FQLFilterConfig,
            factory=FQLFilter,
            description="Segment destination filter: an FQL condition with sample, drop and property actions",
        )
    ]
