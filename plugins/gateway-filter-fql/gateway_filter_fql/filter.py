"""The ``fql`` filter: a Segment destination filter (an FQL condition and its actions)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, cast

import msgspec
import structlog
from msgspec import Meta

from gateway import ComponentConfig, Filter, FilterContext, InlinePass, ThrottledWarning, Verdict
from gateway_filter_fql.actions import (
    allow_fields,
    compile_fields,
    drop_fields,
    drop_items,
    make_sampler,
    split_field_path,
)
from gateway_filter_fql.fql import FQLSyntaxError, compile_expression, object_path_code

log = structlog.get_logger("gateway_filter_fql")
#: Drop reasons besides ``filtered_by_rules`` (the ``drop`` action): the sample left the event
#: out, or the condition could not be evaluated on it (fail closed).
_SAMPLED_OUT = Verdict(reason="sampled")
_EVALUATION_FAILED = Verdict(reason="filter_evaluation_error")

Fraction = Annotated[float, Meta(ge=0.0, le=1.0)]
FieldName = Annotated[str, Meta(min_length=1)]
#: Segment's ``fields``: parent path (``""`` for the top level) -> keys inside it. (A table value
#: is accepted by the type only to refuse it with a hint: it comes from an unquoted dotted key.)
Fields = dict[str, list[FieldName] | dict[str, Any]]
_KeyLists = dict[str, list[str]] | None


class SampleConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """``sample = { percent = 0.1, path = "userId" }``: keep this fraction of the matching events."""

    #: Fraction of the matching events to keep, 0 to 1 (Segment's ``percent``: 0.25 is 25%).
    percent: Fraction
    #: Dot-separated path of the value that decides (``userId``): the same value is always in or
    #: always out. Without it every event draws at random.
    path: str | None = None

    def __post_init__(self) -> None:
        if self.path is not None:
            if not self.path:
                raise ValueError("path: empty; leave path out to sample at random")
            try:
                split_field_path(self.path)
            except ValueError as error:
                raise ValueError(f"path: {error}") from None


class FQLFilterConfig(ComponentConfig, frozen=True, kw_only=True):
    """``[filters.<id>]`` keys of an ``fql`` filter.

    The actions apply, in Segment's order (sample, drop, drop_properties, allow_properties), to
    the events for which ``if`` is true; other events pass unchanged.
    """

    #: The FQL condition (TOML key ``if``); ``"all"`` matches every event.
    condition: str = msgspec.field(name="if")
    sample: SampleConfig | None = None
    drop: bool = False
    drop_properties: Fields | None = None
    allow_properties: Fields | None = None

    def __post_init__(self) -> None:
        try:
            compile_expression(self.condition)
        except FQLSyntaxError as error:
            raise ValueError(f"if: {error}") from None
        for name in ("drop_properties", "allow_properties"):
            fields = getattr(self, name)
            if fields is None:
                continue
            if not fields:
                raise ValueError(f'{name}: name at least one parent ("" for the top level)')
            for parent, names in fields.items():
                if isinstance(names, dict):
                    raise ValueError(
                        f"{name}.{parent}: a table, not a list of keys; write a nested parent as one "
                        f'quoted key, e.g. "{parent}.{next(iter(names), "child")}" = ["key"]'
                    )
            try:
                compile_fields(fields)
            except ValueError as error:
                raise ValueError(f"{name}: {error}") from None
        others = [name for name in ("sample", "drop_properties", "allow_properties") if getattr(self, name) is not None]
        if self.drop and others:
            raise ValueError(f"drop = true drops every matching event, so {', '.join(others)} would never apply")
        if not self.drop and not others:
            raise ValueError("no action: set sample, drop = true, drop_properties or allow_properties")


class FQLFilter(Filter):
    """Runs one destination filter on each message. Not thread-safe (counters), like the core.

    Counters (since the filter was built): ``matched`` events the condition was true for,
    ``dropped`` events the filter dropped by its actions (drop or sample), ``errors`` events
    dropped because the condition could not be evaluated (fail closed, as Segment does).
    """

    #: At most one warning per this many seconds about evaluation errors.

    drop_reason = "filtered_by_rules"

    def __init__(self, config: FQLFilterConfig) -> None:
        self.config = config
        self.program = compile_expression(config.condition)
        self._matches = self.program.matches
        sample = config.sample
        self._sample = make_sampler(sample.percent, sample.path) if sample is not None else None
        self._drop = config.drop
        # __post_init__ refused table values, so every value is a list of keys here.
        drop, allow = cast(_KeyLists, config.drop_properties), cast(_KeyLists, config.allow_properties)
        self._drop_rules = compile_fields(drop) if drop else ()
        self._allow_rules = compile_fields(allow) if allow else ()
        self.matched = 0
        self.dropped = 0
        self.errors = 0
        self._warning = ThrottledWarning(log, "fql_evaluation_failed")
        self._in_place: Callable[[dict[str, Any]], bool] | None = None
        generated = self._generated_apply(drop)
        if generated is not None:
            self.apply, self._in_place = generated  # type: ignore[method-assign]

    def _generated_apply(
        self, drop: _KeyLists
    ) -> tuple[Callable[..., dict[str, Any] | Verdict], Callable[[dict[str, Any]], bool]] | None:
        """:meth:`apply` as one generated function, for the usual filter that only drops keys
        of objects (``drop_properties``, parents of object keys) on a condition compiled to
        code: no call for the condition, the parents or the drops; and the same as
        :meth:`in_place` (True where apply returns the event, False where the condition
        raised). None for any other filter."""
        misses = self.program.misses_code
        if misses is None or not drop or self._sample is not None or self._drop or self._allow_rules:
            return None
        expression, namespace = misses
        namespace = {**namespace, "_filter": self, "_failed": self._failed, "_drop_items": drop_items}
        body = ["    _filter.matched += 1"]
        for n, (parent, names) in enumerate(drop.items()):
            keys = split_field_path(parent)
            if any(key.isascii() and key.isdigit() for key in keys):
                return None  # a step that may index a list: drop_fields() decides
            code = object_path_code(keys)
            namespace[f"_fql_names{n}"] = frozenset(names)
            # Reading the parent and popping from it cannot raise (dicts, string keys).
            body += [
                f"    _fql_parent{n} = {code}",
                f"    if type(_fql_parent{n}) is dict:",
                *(f"        _fql_parent{n}.pop({name!r}, None)" for name in sorted(set(names))),
                f"    elif type(_fql_parent{n}) is list:",
                f"        _drop_items(_fql_parent{n}, _fql_names{n})",
            ]
        lines = [
            "def apply(event, context=None):",
            "    try:",
            f"        if {expression}: return event",
            "    except Exception as error:",
            "        return _failed(error, event)",
            *body,
            "    return event",
            "",
            "def in_place(event):",
            "    try:",
            f"        if {expression}: return True",
            "    except Exception:",
            "        return False",  # not sure, nothing done: apply() counts and reports the error
            *body,
            "    return True",
        ]
        try:
            # Only our own code and the condition's (values from the config enter as repr() of str).
            exec(compile("\n".join(lines), "<fql filter>", "exec"), namespace)
        except (SyntaxError, RecursionError, MemoryError):
            return None  # parents nested past what Python compiles: apply() as written walks them
        return namespace["apply"], namespace["in_place"]

    def _failed(self, error: Exception, message: Any) -> Verdict:
        self._evaluation_failed(error, message)
        return _EVALUATION_FAILED

    def process(self, message: dict[str, Any]) -> dict[str, Any] | None:
        result = self.apply(message)
        return None if type(result) is Verdict else result  # type: ignore[return-value]

    def apply(self, message: dict[str, Any], context: FilterContext | None = None) -> dict[str, Any] | Verdict | None:
        """The message (changed by the actions) or None (dropped by ``drop``), or a Verdict
        naming why it was dropped otherwise (``sampled``, ``filter_evaluation_error``)."""
        try:
            if not self._matches(message):
                return message
        except Exception as error:
            self._evaluation_failed(error, message)
            return _EVALUATION_FAILED
        self.matched += 1
        if self._sample is not None and not self._sample(message):
            self.dropped += 1
            return _SAMPLED_OUT
        if self._drop:
            self.dropped += 1
            return None
        if self._drop_rules:
            drop_fields(message, self._drop_rules)
        if self._allow_rules:
            allow_fields(message, self._allow_rules)
        return message

    def statistics(self) -> dict[str, int]:
        return {"matched": self.matched, "dropped": self.dropped, "errors": self.errors}

    def fast_pass(self) -> Callable[[dict[str, Any]], bool]:
        """The condition's negation: an event it does not match passes unchanged, uncounted.
        As code a filter chain writes into its own when the condition compiles to code."""
        if self.program.misses_code is not None:
            return InlinePass(*self.program.misses_code)
        return self.program.misses

    def in_place(self) -> Callable[[dict[str, Any]], bool] | None:
        """For a filter that only drops keys of objects: apply it in place, as the generated
        :meth:`apply` does (a chain then runs it in its own code, with no dispatch)."""
        return self._in_place

    @property
    def warn_interval_secs(self) -> float:
        """The least time between two ``fql_evaluation_failed`` lines."""
        return self._warning.interval_secs

    @warn_interval_secs.setter
    def warn_interval_secs(self, seconds: float) -> None:
        self._warning.interval_secs = seconds

    def _evaluation_failed(self, error: Exception, message: Any) -> None:
        self.errors += 1
        self._warning(
            error=f"{type(error).__name__}: {error}",
            condition=self.config.condition[:200],
            message_id=message.get("messageId") if isinstance(message, dict) else None,
        )
