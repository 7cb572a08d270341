"""The filter contract: what a filter type provides, how a running filter answers (the message,
None, or a :class:`Verdict`), and how the core runs a chain of them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from gateway.components.base import ComponentConfig, JSONObject


@dataclass(frozen=True, slots=True)
class FilterContext:
    """Where a filter runs: the source a message came from and, before a send, the destination.

    Attributes:
        source: The id of the message's source.
        destination: The destination's id when the filter is in its ``filters`` list, None
            when the filter runs at the source, before the message is stored.
    """

    source: str
    destination: str | None = None


@dataclass(frozen=True, slots=True)
class Forward:
    """A message a filter sends into another source (e.g. a blocked event, or a ``Violation
    Generated`` report). It is stored in the same commit as the message that caused it,
    acknowledged with it, and delivered like any message of ``source``; the filters of that
    source do not see it (forwarded events are never blocked again). Give it a messageId that
    depends only on what caused it, so a redelivery forwards a duplicate the log drops."""

    source: str
    message: JSONObject


@dataclass(frozen=True, slots=True)
class Verdict:
    """A filter's answer when "the message, or None" says too little.

    Attributes:
        message: The message to pass on, or None when it is dropped.
        reason: Why it was dropped, a short code (``unplanned``, ``sampled``...): counted per
            source and destination, and written into the delivery books as ``filtered:<reason>``.
        failure: The filter failed on this message: it goes to the dead-letter table with this
            error (``gateway dead-letters redrive`` runs it through the filters again later);
            ``message`` is then ignored.
        forward: Messages to store into other sources (see :class:`Forward`).
    """

    message: JSONObject | None = None
    reason: str | None = None
    failure: str | None = None
    forward: tuple[Forward, ...] = ()


class Filter:
    """Base class of a running filter: sees one message, returns it (changed or not) or None.

    Filters listed in a source's ``filters`` run before the message is stored; filters listed in
    a destination's ``filters`` run before it is sent there. Returning None drops the message
    for that stage, counted under :attr:`drop_reason` (or, when that is None, the filter's id).

    A filter that needs to know where it runs, name finer drop reasons, dead-letter a message or
    forward messages to another source overrides :meth:`apply` instead and may return a
    :class:`Verdict`.
    """

    #: The reason counted when :meth:`process` returns None (e.g. ``bot``); None: the filter id.
    drop_reason: str | None = None

    def process(self, message: JSONObject) -> JSONObject | None:
        """Return the message to pass on, or None to drop it."""
        raise NotImplementedError

    def apply(self, message: JSONObject, context: FilterContext) -> JSONObject | Verdict | None:
        """What the core calls: by default :meth:`process`."""
        return self.process(message)

    def statistics(self) -> dict[str, int]:
        """The filter's own counters (exported as ``gateway_filter_events_total``); none by default."""
        return {}

    def fast_pass(self) -> Callable[[JSONObject], bool] | None:
        """A cheap predicate the core tries before :meth:`apply`, or None (the default): always
        call :meth:`apply`. Asked once, when a :class:`FilterChain` is built.

        The predicate's True promises that :meth:`apply` would return this very message,
        unchanged, with no side effect at all (no counter, no forward, no log line), so the core
        skips :meth:`apply`. False means "not sure": the core calls :meth:`apply`. It may raise:
        the core then calls :meth:`apply`, whose error policy decides. Most messages pass most
        filters, and this is what a pass then costs.
        """
        return None

    def in_place(self) -> Callable[[JSONObject], bool] | None:
        """:meth:`apply` for the messages its fast pass is not sure of, as a function the core
        calls in the chain's own code, or None (the default: the core calls :meth:`apply`).
        Asked once, when a :class:`FilterChain` is built.

        True promises that the filter was applied: :meth:`apply` would have returned this very
        message object (changed in place, or not at all), with the side effects it has now had
        (counters). False means "not sure", with no side effect at all: the core calls
        :meth:`apply`. It must not raise once it changed anything. For a filter that changes
        many messages in place (one that drops a key on a condition), this saves the core's
        dispatch of :meth:`apply` and the fast passes asked again after it.
        """
        return None

    def plan_status(self, call: str, event: str | None) -> str | None:
        """What this filter does with every call of type ``call`` named ``event`` (a track
        event, a page or screen name, None for the others), for the console's Schema view:
        ``"allowed"`` (a tracking plan's planned event), ``"omitted"`` (not in the plan, let
        through), ``"blocked"`` (never stored), or None (the default: the filter has no such
        rule, or its verdict depends on more than the name). Must not raise or change state.
        """
        return None


class InlinePass:
    """A fast pass (see :meth:`Filter.fast_pass`) given as one Python expression of ``event``
    (the message) and the names it uses: a :class:`FilterChain` writes it into its own code
    instead of calling it (a call per filter and message costs about what a simple condition
    does). Called, it evaluates the expression. Local names the expression binds (``:=``)
    must not be read before they are bound in it."""

    __slots__ = ("_evaluate", "expression", "names")

    def __init__(self, expression: str, names: Mapping[str, Any]) -> None:
        self.expression = expression
        self.names = dict(names)
        namespace = dict(self.names)
        exec(compile(f"def passes(event):\n    return {expression}\n", "<inline pass>", "exec"), namespace)
        self._evaluate: Callable[[JSONObject], bool] = namespace["passes"]

    def __call__(self, message: JSONObject) -> bool:
        return self._evaluate(message)


class FilterOutcome(NamedTuple):
    """What a chain of filters made of one message. ``message`` is None when it was dropped
    (``reason`` says why) or failed (``failure`` is the error: dead-letter it; ``reason`` is
    then the kind of failure, e.g. ``function_error``)."""

    message: JSONObject | None
    reason: str | None = None
    failure: str | None = None
    forward: tuple[Forward, ...] = ()


#: The reason counted for a message a filter failed on (raised, or said so without a reason of its own).
FILTER_ERROR_REASON = "filter_error"


class FilterChain(tuple[tuple[str, Filter], ...]):
    """``(filter id, filter)`` pairs in order, as sources and destination workers hold them,
    with each filter's :meth:`Filter.fast_pass` asked once (when the chain is built), so that
    :func:`apply_filters` does not ask it per message.

    ``first_unsure(message)`` runs the fast passes in order, in one call: the index of the first
    filter whose fast pass is not sure of the message (False, raised, or it has none) and that
    could not apply itself in place (:meth:`Filter.in_place`), or the number of filters when
    every one passed the message (unchanged, or changed in place as its ``apply`` would have).
    ``unsure_from[k](message)`` does the same from filter ``k`` on (``first_unsure`` is
    ``unsure_from[0]``): once a filter ran, the fast passes after it are asked in one call too."""

    steps: tuple[tuple[str, Filter, Callable[[JSONObject], bool] | None, bool], ...]
    unsure_from: tuple[Callable[[JSONObject], int], ...]
    first_unsure: Callable[[JSONObject], int]

    def __new__(cls, filters: Iterable[tuple[str, Filter]]) -> FilterChain:
        chain = super().__new__(cls, filters)
        chain.steps = tuple(
            (filter_id, message_filter, _fast_pass_of(message_filter), type(message_filter).apply is _BASE_APPLY)
            for filter_id, message_filter in chain
        )
        fast_passes = [step[2] for step in chain.steps]
        in_place = [_in_place_of(message_filter) for _, message_filter in chain]
        chain.unsure_from = tuple(_first_unsure(fast_passes, in_place, start) for start in range(len(chain) + 1))
        chain.first_unsure = chain.unsure_from[0]
        return chain


def _first_unsure(
    fast_passes: Sequence[Callable[[JSONObject], bool] | None],
    in_place: Sequence[Callable[[JSONObject], bool] | None],
    start: int = 0,
) -> Callable[[JSONObject], int]:
    """:attr:`FilterChain.first_unsure` from filter ``start`` on, as straight-line code: most
    messages pass most filters, and a loop over the chain costs as much again as the fast passes
    themselves. Each :class:`InlinePass` is written in, unless the names of two clash (then each
    is called); a filter's :meth:`Filter.in_place` is called when its fast pass is not sure."""
    first_unsure = _write_first_unsure(fast_passes, in_place, start, inline=True)
    if first_unsure is None:
        first_unsure = _write_first_unsure(fast_passes, in_place, start, inline=False)
        assert first_unsure is not None
    return first_unsure


def _write_first_unsure(
    fast_passes: Sequence[Callable[[JSONObject], bool] | None],
    in_place: Sequence[Callable[[JSONObject], bool] | None],
    start: int,
    *,
    inline: bool,
) -> Callable[[JSONObject], int] | None:
    namespace: dict[str, Any] = {}
    lines = ["def first_unsure(event):"]
    for index in range(start, len(fast_passes)):
        fast_pass = fast_passes[index]
        if fast_pass is None:
            break
        if inline and isinstance(fast_pass, InlinePass):
            if any(namespace.get(n, v) is not v or n == "event" for n, v in fast_pass.names.items()):
                return None
            test = f"({fast_pass.expression})"
            namespace.update(fast_pass.names)
        else:
            test = f"_pass{index}(event)"
            if f"_pass{index}" in namespace:
                return None
            namespace[f"_pass{index}"] = fast_pass
        if in_place[index] is None:
            unsure = f"return {index}"
        else:
            # Applied here, or not sure (then nothing was done): apply() decides.
            namespace[f"_in_place{index}"] = in_place[index]
            unsure = f"if not _in_place{index}(event): return {index}"
        lines += [
            "    try:",
            f"        if not {test}:",
            f"            {unsure}",
            "    except Exception:",  # not sure: apply() decides, under its own error policy
            f"        return {index}",
        ]
    else:
        index = len(fast_passes)
    lines.append(f"    return {index}")
    # Our own code, and the expressions of fast passes that chose to be written in (plugins run
    # in this process anyway); the other fast passes enter as bound names, indexes as literals.
    try:
        exec(compile("\n".join(lines), "<filter chain>", "exec"), namespace)
    except (SyntaxError, RecursionError, MemoryError):
        return None  # an expression nested past what Python compiles once written in: called
    first_unsure: Callable[[JSONObject], int] = namespace["first_unsure"]
    if set(first_unsure.__code__.co_varnames) & namespace.keys():
        return None  # a name one expression binds (:=) is one another reads
    return first_unsure


def _fast_pass_of(message_filter: Filter) -> Callable[[JSONObject], bool] | None:
    try:
        return message_filter.fast_pass()
    except Exception:  # a plugin's bug costs it its fast pass, never the chain
        return None


def _in_place_of(message_filter: Filter) -> Callable[[JSONObject], bool] | None:
    try:
        return message_filter.in_place()
    except Exception:  # a plugin's bug costs it its in-place apply, never the chain
        return None


def apply_filters(
    filters: Sequence[tuple[str, Filter]],
    message: JSONObject,
    context: FilterContext,
    on_error: Callable[[str, Exception], None] | None = None,
    start: int | None = None,
) -> FilterOutcome:
    """Run ``filters`` in order, collecting what they forward, until one drops or fails the
    message. A filter that raises, or returns something that is not a message (a dict with a
    string ``messageId``), None or a :class:`Verdict`, fails the message like a Verdict with a
    ``failure``: it is dead-lettered (nothing goes on, nothing is lost, a redrive retries it once
    the filter is fixed), and a broken filter never stops the pipeline. ``on_error(filter_id,
    error)`` hears of each such error (the caller logs it, throttled).

    Given a :class:`FilterChain`, each filter's fast pass is tried first (see
    :meth:`Filter.fast_pass`); the result is the same either way. ``start``: what the chain's
    ``first_unsure(message)`` returned, when the caller asked it already (it may have applied
    filters in place: they must not run again)."""
    forward: tuple[Forward, ...] = ()
    unsure_from: tuple[Callable[[JSONObject], int], ...] | None = None
    if type(filters) is FilterChain:
        steps = filters.steps
        unsure_from = filters.unsure_from
        # The filter at ``index`` was not passed: it runs (its fast pass is not asked again),
        # then the fast passes after it are asked, in one call.
        index = unsure_from[0](message) if start is None else start
    else:
        steps = tuple((fid, f, None, type(f).apply is _BASE_APPLY) for fid, f in filters)
        index = 0
    end = len(steps)
    while index < end:
        filter_id, message_filter, _, plain = steps[index]
        index += 1
        try:
            # Most filters only have process(): call it directly (this runs per filter per event).
            result = message_filter.process(message) if plain else message_filter.apply(message, context)
            if type(result) is dict:
                message = result
                if unsure_from is not None:
                    index = unsure_from[index](message)
                continue
            if result is None:
                return FilterOutcome(None, message_filter.drop_reason or filter_id, None, forward)
            if not isinstance(result, Verdict):
                raise TypeError(f"returned {type(result).__name__}, not a message, None or a Verdict")
            if result.forward:
                forward += tuple(result.forward)
            if result.failure is not None:
                reason = result.reason or FILTER_ERROR_REASON
                return FilterOutcome(None, reason, f"{filter_id}: {result.failure}", forward)
            if result.message is None:
                return FilterOutcome(None, result.reason or message_filter.drop_reason or filter_id, None, forward)
            if type(result.message) is not dict:
                raise TypeError(f"its Verdict holds {type(result.message).__name__}, not a message")
            message = result.message
            if unsure_from is not None:
                index = unsure_from[index](message)
        except Exception as error:
            if on_error is not None:
                on_error(filter_id, error)
            return FilterOutcome(None, FILTER_ERROR_REASON, f"{filter_id}: {type(error).__name__}: {error}", forward)
    if type(message.get("messageId")) is not str:
        failure = "the filters returned a message without a string messageId"
        return FilterOutcome(None, FILTER_ERROR_REASON, failure, forward)
    # Every message that passes ends here: tuple.__new__ skips the named tuple's Python
    # __new__, which cost about a tenth of a chain of seven fast passes.
    return _new_tuple(FilterOutcome, (message, None, None, forward))


_BASE_APPLY = Filter.apply
_new_tuple = tuple.__new__


@dataclass(frozen=True, slots=True)
class FilterType:
    """A kind of filter.

    Attributes:
        name: The ``type`` value in ``[filters.<id>]``.
        config_type: Validates the filter's own keys.
        factory: ``factory(config)`` returns a :class:`Filter`.
        description: One line for ``gateway plugins``.
        forward_targets: For filters that forward messages (:class:`Forward`):
            ``forward_targets(config)`` returns the sources a filter with this config forwards
            to, by the config key that names each (``{"forward_violations_to": "protocols"}``).
            The core refuses a config where one is not a source, or where such a filter is in
            a destination's ``filters`` (forwarding happens at ingest only).
    """

    name: str
    config_type: type[ComponentConfig]
    factory: Callable[[Any], Filter]
    description: str = ""
    forward_targets: Callable[[Any], Mapping[str, str]] | None = None


class FilterErrorLog:
    """Throttled ``filter_failed`` warnings, one stream per filter id, for a caller of
    :func:`apply_filters` (the ingest hub, a destination worker); its owner drops it with its
    filters, so nothing outlives a reload."""

    def __init__(self, logger: Any) -> None:
        self._logger = logger
        self._warnings: dict[str, Any] = {}

    def __call__(self, filter_id: str, error: Exception) -> None:
        from gateway.telemetry import ThrottledWarning

        warning = self._warnings.get(filter_id)
        if warning is None:
            warning = self._warnings[filter_id] = ThrottledWarning(self._logger, "filter_failed")
        warning(filter=filter_id, error_type=type(error).__name__, error=str(error))
