"""The gateway's error hierarchy: one base class, one subclass per failure the caller handles."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.components import Exchange


class GatewayError(Exception):
    """Base class of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The config file cannot be used: unreadable, not TOML, or not valid for its types.

    Args:
        path: The config file.
        where: The TOML path of the offending value, e.g. ``destinations.crm.url``.
        problem: What is wrong with it.
    """

    def __init__(self, path: str, where: str, problem: str) -> None:
        self.path = path
        self.where = where
        self.problem = problem
        location = f"{path}: {where}" if where else path
        super().__init__(f"{location}: {problem}")


class PluginError(GatewayError):
    """A plugin is missing, broken, or registers a name another plugin already took."""


class LogUnavailableError(GatewayError):
    """The ingest log cannot take writes right now (disk full, size bound, overload, closed).

    The HTTP layer turns this into 503 with ``Retry-After`` so that clients send the data again.

    Args:
        reason: A stable snake_case code (``log_full``, ``overloaded``, ``disk_full``, ``closed``).
        detail: Text for the operator.
    """

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class RateLimitedError(GatewayError):
    """A source's rate limit refused a request: nothing was taken from it, stored or counted.
    The HTTP layer answers 429 with ``Retry-After``, which every official client honours.

    Args:
        wait_secs: Whole seconds after which the request would pass.
        source_id: The source whose limit refused it.
        events_per_sec: That source's rate.
    """

    def __init__(self, wait_secs: int, source_id: str, events_per_sec: float) -> None:
        self.wait_secs = wait_secs
        self.source_id = source_id
        self.events_per_sec = events_per_sec
        super().__init__(f"source {source_id} accepts {events_per_sec:g} events/s; retry in {wait_secs}s")


class CursorLostError(LogUnavailableError):
    """Another gateway holds the cursor this one tried to move (it took the destination over
    while this one could not renew its hold); the worker stops and waits to hold it again.

    Args:
        cursor: The cursor's name.
        holder: The gateway that holds it now.
    """

    def __init__(self, cursor: str, holder: str) -> None:
        self.cursor = cursor
        self.holder = holder
        super().__init__("cursor_lost", f"another gateway ({holder}) holds the cursor {cursor!r} now")


class LogUnreadableError(GatewayError):
    """The ingest log's storage cannot be read: a corrupt or foreign file, or an engine error.

    Args:
        detail: What the engine said.
    """

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"the log cannot be read: {detail}")


class DeliveryError(GatewayError):
    """A destination could not take a batch. Raised by destination plugins.

    Args:
        message: What went wrong, for the log and the dead-letter table. Never put credentials
            in it.
        retryable: True for trouble that may pass (timeouts, 429, 5xx); False sends the batch to
            the dead-letter table at once.
        retry_after: Seconds the destination asked us to wait (``Retry-After``), if any.
        kind: A short stable code that groups errors of one kind for operators (``http_401``,
            ``invalid_event``, ``timeout``); by default ``retryable`` or ``permanent``.
        exchange: The request and answer that failed (a :class:`gateway.Exchange`), as a sample.
        every_record: The refusal holds for every record of the batch whatever it holds
            (credentials refused, the endpoint gone): a permanent error then dead-letters the
            whole batch at once, instead of sending its records one by one to find the bad one.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        kind: str | None = None,
        exchange: Exchange | None = None,
        every_record: bool = False,
    ) -> None:
        self.retryable = retryable
        self.retry_after = retry_after
        self.kind = kind or ("retryable" if retryable else "permanent")
        self.exchange = exchange
        self.every_record = every_record
        super().__init__(message)


def exception_leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside ``error``'s exception groups, in order (``[error]`` when it is none):
    trio's nurseries wrap what failed in them."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in exception_leaves(inner)]
    return [error]
