"""The ``function`` filter: a Python callable that changes or drops each event.

```toml
[filters.enrich]
type = "function"
function = "transforms:enrich"   # module:callable
path = "/etc/gateway/functions"  # optional: a folder to import the module from
budget_ms = 50                   # time budget per event
settings = { plan = "pro" }      # optional: passed as the second argument
```

The callable gets a copy of the event (a dict) and returns it changed (or a new dict), or None to
drop it. An exception, a timeout or a result that is not a JSON object sends the event, as it was,
to the dead-letter table with the error; the pipeline goes on. ``gateway dead-letters redrive``
runs the event through the filters again (fix the function, reload the config, redrive).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import structlog

from gateway import (
    BudgetExceeded,
    ComponentConfig,
    Filter,
    FilterContext,
    FilterType,
    Verdict,
    budget_enforceable,
    call_within,
    hookimpl,
    load_callable,
)

log = structlog.get_logger("gateway_filter_function")

__all__ = ["FunctionConfig", "FunctionFilter", "gateway_filter_types", "load_callable"]

#: Drop reason for an event the function returned None for.
DROPPED_REASON = "dropped_by_function"
#: The failure kind: the event is dead-lettered.
ERROR_REASON = "function_error"

_encode = msgspec.json.encode
_decode = msgspec.json.decode


class FunctionConfig(ComponentConfig, frozen=True, kw_only=True):
    """``[filters.<id>]`` keys of a ``function`` filter."""

    #: ``module:callable``; ``callable(event)`` or, with ``settings``, ``callable(event, settings)``.
    function: Annotated[str, msgspec.Meta(min_length=3)]
    #: A folder to import the module from (before the rest of the import path).
    path: str | None = None
    #: Time budget per event, in milliseconds; past it the event is dead-lettered.
    budget_ms: Annotated[float, msgspec.Meta(gt=0, le=60_000)] = 50.0
    #: Passed as the callable's second argument when given.
    settings: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        module_name, sep, attribute = self.function.partition(":")
        if not sep or not module_name or not attribute:
            raise ValueError(f"function: {self.function!r} is not 'module:callable'")


class FunctionFilter(Filter):
    """Runs the operator's callable on each event, within ``budget_ms``.

    Counters: ``passed`` (returned an event), ``dropped`` (None), ``failed`` (dead-lettered).
    """

    drop_reason = DROPPED_REASON

    def __init__(self, config: FunctionConfig) -> None:
        self.config = config
        # Imported when the filter is built (at start, or when a reload applies its config),
        # not when the config is validated: validation runs off the event loop, and events in
        # flight must never meet a module half re-imported.
        self._function = load_callable(config.function, config.path)
        self._budget_secs = config.budget_ms / 1000
        self._args: tuple[Any, ...] = (config.settings,) if config.settings is not None else ()
        self.passed = self.dropped = self.failed = 0
        if not budget_enforceable():
            log.warning("function_budget_not_enforced", function=config.function, reason="not on the main thread")

    def statistics(self) -> dict[str, int]:
        return {"passed": self.passed, "dropped": self.dropped, "failed": self.failed}

    def process(self, message: dict[str, Any]) -> dict[str, Any] | None:
        result = self.apply(message)
        return result if type(result) is dict else None

    def apply(self, message: dict[str, Any], context: FilterContext | None = None) -> dict[str, Any] | Verdict | None:
        # Its own copy: a function that fails half-way leaves the event to dead-letter intact.
        event = _decode(_encode(message))
        try:
            result = call_within(self._budget_secs, self._function, event, *self._args)
        except BudgetExceeded:
            return self._failed(f"timed out after {self.config.budget_ms:g} ms")
        except (Exception, SystemExit) as error:  # sys.exit() in a function ends the event, not the gateway
            return self._failed(f"{type(error).__name__}: {error}")
        if result is None:
            self.dropped += 1
            return None
        if type(result) is not dict:
            return self._failed(f"returned {type(result).__name__}, not an event (dict) or None")
        if not isinstance(result.get("messageId"), str) or not result["messageId"]:
            return self._failed("the returned event has no messageId")
        try:
            _encode(result)
        except (TypeError, ValueError) as error:
            return self._failed(f"the returned event is not JSON: {error}")
        self.passed += 1
        return result

    def _failed(self, error: str) -> Verdict:
        self.failed += 1
        return Verdict(reason=ERROR_REASON, failure=f"{self.config.function}: {error}")


@hookimpl
def gateway_filter_types() -> list[FilterType]:
    return [
        FilterType(
            name="function",
            config_type=FunctionConfig,
            factory=FunctionFilter,
            description="a Python callable (module:function) changes or drops each event, within a time budget",
        )
    ]
