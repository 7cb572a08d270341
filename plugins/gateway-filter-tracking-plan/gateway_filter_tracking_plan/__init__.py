"""The ``tracking_plan`` filter type: Segment Protocols tracking plans enforced at a source.

```toml
[filters.web_plan]
type = "tracking_plan"
plan = "plans/web.json"
unplanned_events = "block"
unplanned_properties = "omit"
violations = "omit"
```

See the README of the distribution for the plan file format and the options.
"""

from __future__ import annotations

from gateway import FilterType, hookimpl
from gateway_filter_tracking_plan.filter import TrackingPlanConfig, TrackingPlanFilter
from gateway_filter_tracking_plan.plan import Plan, PlanError, Rule, compile_plan, load_plan
from gateway_filter_tracking_plan.violations import violations_of

__all__ = [
    "Plan",
    "PlanError",
    "Rule",
    "TrackingPlanConfig",
    "TrackingPlanFilter",
    "compile_plan",
    "gateway_filter_types",
    "load_plan",
    "violations_of",
]


@hookimpl
def gateway_filter_types() -> list[FilterType]:
    return [
        FilterType(
            name="tracking_plan",
            config_type=TrackingPlanConfig,
            factory=TrackingPlanFilter,
            forward_targets=TrackingPlanConfig.forward_targets,
            description="Segment Protocols tracking plan: unplanned events, unplanned keys, JSON Schema violations",
        )
    ]
