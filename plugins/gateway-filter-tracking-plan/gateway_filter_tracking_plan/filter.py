"""The ``tracking_plan`` filter: Segment Protocols enforcement at the door (segment-api.md §7.2)."""

from __future__ import annotations

import contextlib
import itertools
import weakref
from typing import Annotated, Any, Literal

import msgspec
import structlog

from gateway import ComponentConfig, Filter, FilterContext, Forward, InlinePass, ThrottledWarning, Verdict
from gateway_filter_tracking_plan.forwarding import violation_reports
from gateway_filter_tracking_plan.plan import Plan, PlanError, Rule, Versions, load_plan
from gateway_filter_tracking_plan.quick import QuickCheck, compile_all_of
from gateway_filter_tracking_plan.violations import violations_of

log = structlog.get_logger("gateway_filter_tracking_plan")

AllowBlock = Literal["allow", "block"]
AllowOmit = Literal["allow", "omit"]
ViolationMode = Literal["allow", "block", "omit"]

#: Drop reasons, Segment's discard codes (segment-api.md §7.2).
UNPLANNED = "unplanned"
SCHEMA_VIOLATION = "schema_violation"
COMMON_SCHEMA_VIOLATION = "common_schema_violation"
_CHECK_FAILED = Verdict(reason="tracking_plan_error")

#: Plans compiled by TrackingPlanConfig.__post_init__, by id() of the config (dropped with it),
#: so the factory uses exactly what was validated and nothing is compiled twice.
_COMPILED: dict[int, Plan] = {}


def _forget(key: int) -> None:
    _COMPILED.pop(key, None)


class TrackingPlanConfig(ComponentConfig, frozen=True, kw_only=True, weakref=True):
    """``[filters.<id>]`` keys of a ``tracking_plan`` filter (Segment's "Schema Configuration")."""

    #: Path of the plan file, ``.json`` or ``.toml`` (relative paths: from the working directory).
    plan: Annotated[str, msgspec.Meta(min_length=1)]
    #: Track calls whose ``event`` has no TRACK rule: keep them or block them.
    unplanned_events: AllowBlock = "allow"
    #: Keys of ``properties`` (track, page, screen) the event's rule does not declare.
    unplanned_properties: AllowOmit = "allow"
    #: Keys of ``traits`` (identify, group) the IDENTIFY/GROUP rule does not declare.
    unplanned_traits: AllowOmit = "allow"
    #: JSON Schema violations of track, page and screen rules (omit = remove offending properties).
    violations: ViolationMode = "allow"
    #: Violations of the IDENTIFY / GROUP rule (omit = remove offending traits); default: ``violations``.
    identify_violations: ViolationMode | None = None
    group_violations: ViolationMode | None = None
    #: Violations of the COMMON rule, checked after the standard controls (omit = remove the field).
    common_violations: ViolationMode = "allow"
    #: What an unexpected error while checking a message does: block it (default) or let it through.
    on_error: AllowBlock = "block"
    #: A source id: blocked events are stored there instead, as they came (with
    #: ``context.protocols`` saying why), so they are kept and can be delivered elsewhere.
    forward_blocked_to: str | None = None
    #: A source id: each violation becomes a ``Violation Generated`` track event stored there
    #: (segment-api.md §7.3), whatever the violation mode.
    forward_violations_to: str | None = None

    def __post_init__(self) -> None:
        try:
            plan = load_plan(self.plan)
        except PlanError as error:
            raise ValueError(f"plan: {error}") from None
        key = id(self)
        _COMPILED[key] = plan
        weakref.finalize(self, _forget, key)

    def forward_targets(self) -> dict[str, str]:
        """The sources this filter forwards to, by config key (the core checks they exist)."""
        keys = {"forward_blocked_to": self.forward_blocked_to, "forward_violations_to": self.forward_violations_to}
        return {key: source for key, source in keys.items() if source}

    def compiled_plan(self) -> Plan:
        """The plan compiled when this config was validated (loaded again only if it was not)."""
        plan = _COMPILED.get(id(self))
        return plan if plan is not None else load_plan(self.plan)


class TrackingPlanFilter(Filter):
    """Enforces one tracking plan. Not thread-safe (counters), like the core.

    Counters: ``blocked_unplanned``, ``blocked_violation`` (track/page/screen/identify/group
    rule), ``blocked_common``, ``errors`` (unexpected failures, handled by ``on_error``).
    """

    def __init__(self, config: TrackingPlanConfig) -> None:
        self.config = config
        self.plan = config.compiled_plan()
        self._block_unplanned = config.unplanned_events == "block"
        self._omit_properties = config.unplanned_properties == "omit"
        self._omit_traits = config.unplanned_traits == "omit"
        self._modes = {
            "track": config.violations,
            "page": config.violations,
            "screen": config.violations,
            "identify": config.identify_violations or config.violations,
            "group": config.group_violations or config.violations,
        }
        self._common_mode = config.common_violations
        self._fail_open = config.on_error == "allow"
        self.blocked_unplanned = 0
        self.blocked_violation = 0
        self.blocked_common = 0
        self.errors = 0
        self._warning = ThrottledWarning(log, "tracking_plan_check_failed")
        self._forward_blocked = config.forward_blocked_to
        self._forward_violations = config.forward_violations_to

    def statistics(self) -> dict[str, int]:
        return {
            "blocked_unplanned": self.blocked_unplanned,
            "blocked_violation": self.blocked_violation,
            "blocked_common": self.blocked_common,
            "errors": self.errors,
        }

    def fast_pass(self) -> InlinePass:
        """True for a message the plan lets through as it is: its rule and the COMMON rule hold
        and, where unplanned keys are omitted, it has none. One generated function per rule
        checks all of it (see :func:`~gateway_filter_tracking_plan.quick.compile_all_of`); a
        message of a rule with several versions, or of a schema the quick check does not
        mirror, gets False and :meth:`apply` decides. A track call's rule is found by an
        expression the filter chain writes into its own code (most calls are track calls)."""
        return _FastPass(self).inline()

    def process(self, message: dict[str, Any]) -> dict[str, Any] | None:
        result = self.apply(message)
        return result.message if type(result) is Verdict else result  # type: ignore[return-value]

    def apply(self, message: dict[str, Any], context: FilterContext | None = None) -> dict[str, Any] | Verdict | None:
        """The message (annotated, with omitted data removed), or a Verdict: blocked with its
        reason (``unplanned``, ``schema_violation``, ``common_schema_violation``), and what is
        forwarded (the blocked event, ``Violation Generated`` reports)."""
        try:
            kept, reason, violations = self._check(message)
        except Exception as error:  # never raise: the documented fail policy decides
            self.errors += 1
            with contextlib.suppress(Exception):  # a message that breaks even the warning changes nothing
                self._warn(error, message)
            return message if self._fail_open else _CHECK_FAILED
        forward_violations = self._forward_violations if violations else None
        if kept is not None and forward_violations is None:
            return kept
        source = context.source if context is not None else ""
        forward: list[Forward] = []
        if kept is None and self._forward_blocked:
            forward.append(Forward(self._forward_blocked, _blocked_copy(message, source, reason, violations)))
        if forward_violations:
            forward.extend(
                Forward(forward_violations, report)
                for report in violation_reports(message, violations, source, self.plan.name or self.config.plan)
            )
        return Verdict(message=kept, reason=reason, forward=tuple(forward))

    def plan_status(self, call: str, event: str | None) -> str | None:
        """Planned events are allowed; unplanned track events blocked or let through
        (``omitted`` from the plan) as ``unplanned_events`` says."""
        plan = self.plan
        if call == "track":
            if event is not None and event in plan.track:
                return "allowed"
            return "blocked" if self._block_unplanned else "omitted"
        if call == "page" or call == "screen":
            table = plan.page if call == "page" else plan.screen
            return "allowed" if event in table or None in table else "omitted"
        if call == "identify" or call == "group":
            return "allowed" if (plan.identify if call == "identify" else plan.group) is not None else "omitted"
        return None

    def _rule_for(self, call: Any, message: dict[str, Any]) -> tuple[Rule | None, bool]:
        """The rule of the message's call, and whether it is an unplanned track event."""
        plan = self.plan
        versions: Versions | None
        if call == "track":
            event = message.get("event")
            versions = plan.track.get(event) if isinstance(event, str) else None
            if versions is None:
                return None, True
        elif call == "identify":
            versions = plan.identify
        elif call == "group":
            versions = plan.group
        elif call == "page" or call == "screen":
            table = plan.page if call == "page" else plan.screen
            name = message.get("name")
            versions = (table.get(name) if isinstance(name, str) else None) or table.get(None)
        else:
            versions = None
        return (versions.select(message) if versions is not None else None), False

    def _check(self, message: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None, list[dict[str, str]]]:
        """``(message to pass on, None, violations)``, or ``(None, reason, violations)`` when
        the message is blocked."""
        call = message.get("type")
        rule, unplanned = self._rule_for(call, message)
        if unplanned and self._block_unplanned:
            self.blocked_unplanned += 1
            return None, UNPLANNED, []
        current = message  # copied on write: ``message`` itself is never changed
        omitted: list[str] = []
        omitted_on_violation: list[str] = []
        violations: list[dict[str, str]] = []
        if rule is not None and rule.container is not None:
            container = rule.container
            omit_unplanned = self._omit_traits if container == "traits" else self._omit_properties
            values = current.get(container)
            if omit_unplanned and isinstance(values, dict):
                omitted = rule.unplanned(values)
                if omitted:
                    current = _without(current, container, omitted)
            errors = rule.errors(current)
            if errors:
                mode = self._modes[str(call)]
                offending: list[str] = []
                for error in errors:
                    for violation, at in violations_of(error):
                        violations.append(violation)
                        if at is not None and len(at) >= 2 and at[0] == container and at[1] not in offending:
                            offending.append(at[1])
                if mode == "block":
                    self.blocked_violation += 1
                    return None, SCHEMA_VIOLATION, violations
                if mode == "omit" and offending:
                    values = current.get(container)
                    if isinstance(values, dict):
                        omitted_on_violation = [k for k in offending if k in values]
                        current = _without(current, container, omitted_on_violation)
        common = self.plan.common
        if common is not None:
            errors = common.select(current).errors(current)
            if errors:
                paths: list[list[str]] = []
                for error in errors:
                    for violation, at in violations_of(error):
                        violations.append(violation)
                        if at is not None:
                            paths.append(at)
                if self._common_mode == "block":
                    self.blocked_common += 1
                    return None, COMMON_SCHEMA_VIOLATION, violations
                if self._common_mode == "omit":
                    for at in paths:
                        current, removed = _remove_path(current, at)
                        if removed is not None and removed not in omitted_on_violation:
                            omitted_on_violation.append(removed)
        if omitted or omitted_on_violation or violations:
            current = _annotate(current, omitted, omitted_on_violation, violations)
        return current, None, violations

    def _warn(self, error: Exception, message: Any) -> None:
        self._warning(
            error=f"{type(error).__name__}: {error}",
            plan=self.config.plan,
            on_error=self.config.on_error,
            message_id=dict.get(message, "messageId") if isinstance(message, dict) else None,
        )


class _FastPass:
    """The fast pass of one filter: a compiled check per rule, found as :meth:`_rule_for` finds
    the rule (None where there is none to trust: the message is "not sure")."""

    def __init__(self, plan_filter: TrackingPlanFilter) -> None:
        plan = plan_filter.plan
        self._filter = plan_filter
        self._common: list[Rule] | None = []
        if plan.common is not None:
            self._common = [plan.common.oldest] if len(plan.common.by_version) == 1 else None
        self._none = self._checks(None)  # no rule (any call type but the planned ones)
        self._track = {event: self._single(versions) for event, versions in plan.track.items()}
        self._unplanned = None if plan_filter._block_unplanned else self._none
        self._identify = self._single(plan.identify) if plan.identify is not None else self._none
        self._group = self._single(plan.group) if plan.group is not None else self._none
        self._named = {call: self._by_name(table) for call, table in (("page", plan.page), ("screen", plan.screen))}

    def _single(self, versions: Versions) -> QuickCheck | None:
        return self._checks(versions.oldest) if len(versions.by_version) == 1 else None

    def _by_name(self, table: dict[str | None, Versions]) -> tuple[dict[str, QuickCheck | None], QuickCheck | None]:
        unnamed = table.get(None)
        default = self._single(unnamed) if unnamed is not None else self._none
        return {name: self._single(v) for name, v in table.items() if name is not None}, default

    def _checks(self, rule: Rule | None) -> QuickCheck | None:
        """The rule's and the COMMON rule's checks in one function, counting the container's
        keys when unplanned ones are omitted; None when it cannot be trusted."""
        if self._common is None:
            return None
        rules = [rule] if rule is not None and rule.container is not None else []
        rules += self._common
        if any(r.quick_check is None for r in rules):
            return None
        count: Any = None
        if rules and rules[0] is rule and rule is not None:
            plan_filter = self._filter
            if plan_filter._omit_traits if rule.container == "traits" else plan_filter._omit_properties:
                described = rule.schema.get("properties") if isinstance(rule.schema, dict) else None
                section = described.get(rule.container) if isinstance(described, dict) else None
                if not isinstance(section, dict) or rule.planned_patterns:
                    return None
                count = section
        regexes = {pattern: regex for r in rules for pattern, regex in r.regexes.items()}
        return compile_all_of([r.schema for r in rules], regexes, count_keys_of=count)

    def inline(self) -> InlinePass:
        """:meth:`passes` as an expression: a track call's check is found and called in it,
        any other call goes to :meth:`passes`."""
        n = next(_inline_numbers)
        track, unplanned, other, event = f"_plan{n}_track", f"_plan{n}_unplanned", f"_plan{n}_other", f"_plan{n}_event"
        check = f"_plan{n}_check"
        expression = (
            f"((({check} := {track}.get({event}, {unplanned})) is not None and {check}(event)) "
            f"if type({event} := event.get('event')) is str else False) "
            f"if event.get('type') == 'track' else {other}(event)"
        )
        return InlinePass(expression, {track: self._track, unplanned: self._unplanned, other: self.passes})

    def passes(self, message: dict[str, Any]) -> bool:
        call = message.get("type")
        check: QuickCheck | None
        if call == "track":
            event = message.get("event")
            if type(event) is not str:
                return False
            check = self._track.get(event, _UNPLANNED)
            if check is _UNPLANNED:
                check = self._unplanned
        elif call == "identify":
            check = self._identify
        elif call == "group":
            check = self._group
        elif call == "page" or call == "screen":
            named, default = self._named[call]
            name = message.get("name")
            check = named.get(name, default) if type(name) is str else default
        else:
            check = self._none
        return check is not None and check(message)


#: Numbers the names each inline fast pass binds, so that two plans in one chain never clash.
_inline_numbers = itertools.count()


def _unplanned_marker(message: Any) -> bool:
    return False  # never called: marks an event without a rule


_UNPLANNED: QuickCheck = _unplanned_marker


def _blocked_copy(
    message: dict[str, Any], source: str, reason: str | None, violations: list[dict[str, str]]
) -> dict[str, Any]:
    """The blocked event as it came, with ``context.protocols`` saying where and why it was
    blocked (``sourceId``, ``blocked``, ``violations``), for the source it is forwarded to."""
    copy = _annotate(message, [], [], violations)
    context = copy.get("context")
    if isinstance(context, dict) and isinstance(context.get("protocols"), dict):
        context["protocols"].update(sourceId=source, blocked=reason)  # _annotate made both copies
    return copy


def _without(message: dict[str, Any], container: str, keys: list[str]) -> dict[str, Any]:
    """A shallow copy of ``message`` whose ``container`` lacks ``keys``."""
    drop = set(keys)
    return {**message, container: {k: v for k, v in message[container].items() if k not in drop}}


def _remove_path(message: dict[str, Any], at: list[str]) -> tuple[dict[str, Any], str | None]:
    """Remove the object key the error path ``at`` points into (array indices count as part of
    the key that holds the array), copying what it changes. Returns the new message and the
    dotted path removed, or None when nothing could be removed (the message itself, a path that
    is no longer there)."""
    nodes: list[Any] = [message]
    for segment in at:
        node = nodes[-1]
        if isinstance(node, dict) and segment in node:
            nodes.append(node[segment])
        elif isinstance(node, list) and segment.isdigit() and int(segment) < len(node):
            nodes.append(node[int(segment)])
        else:
            return message, None
    # the deepest segment whose parent is an object
    cut = max((i for i in range(len(at)) if isinstance(nodes[i], dict)), default=None)
    if cut is None:
        return message, None
    copies: list[Any] = [None] * (cut + 1)
    for i in range(cut + 1):
        node = nodes[i]
        copies[i] = dict(node) if isinstance(node, dict) else list(node)
        if i:
            parent_key: Any = at[i - 1] if isinstance(copies[i - 1], dict) else int(at[i - 1])
            copies[i - 1][parent_key] = copies[i]
    del copies[cut][at[cut]]
    return copies[0], ".".join(at[: cut + 1])


def _annotate(
    message: dict[str, Any], omitted: list[str], omitted_on_violation: list[str], violations: list[dict[str, str]]
) -> dict[str, Any]:
    """Write what was done into ``context.protocols`` (copies context and protocols)."""
    context = message.get("context")
    if context is None:
        context = {}
    elif not isinstance(context, dict):
        return message  # nowhere to write; the message is otherwise unchanged
    protocols = context.get("protocols")
    protocols = dict(protocols) if isinstance(protocols, dict) else {}
    if omitted:
        protocols["omitted"] = [*(protocols.get("omitted") or []), *omitted]
    if omitted_on_violation:
        protocols["omitted_on_violation"] = [*(protocols.get("omitted_on_violation") or []), *omitted_on_violation]
    if violations:
        protocols["violations"] = [*(protocols.get("violations") or []), *violations]
    return {**message, "context": {**context, "protocols": protocols}}
