"""A time budget for synchronous Python code on the event loop's thread.

A transformation runs inline, between two awaits, so trio cannot cancel it. A real-time interval
timer (``SIGALRM``) can: its handler runs between two bytecodes of the running function (and
interrupts a blocking ``time.sleep`` or socket call) and raises :class:`BudgetExceeded` there. That
is a ``BaseException``, so a function's own ``except Exception`` cannot swallow it.

Signals are only delivered to the main thread, which is where ``gateway run`` runs the event loop.
Elsewhere (a test runner's worker thread) :func:`enforceable` is false and the budget is not enforced.
C code that never returns to the interpreter (a long regex match) is only stopped when it does.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any


class BudgetExceeded(BaseException):
    """The running function used up its time budget."""


#: After the budget, the timer fires again this often until the function gives up.
REFIRE_SECS = 0.005


_armed = False
_previous: Any = None
_installed = False


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    if _armed:
        raise BudgetExceeded
    if callable(_previous):  # someone else's alarm: theirs to handle
        _previous(signum, frame)


def enforceable() -> bool:
    """Whether budgets can be enforced here: on the main thread of a platform with SIGALRM."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def _install() -> None:
    global _installed, _previous
    if not _installed:
        _previous = signal.signal(signal.SIGALRM, _on_alarm)
        _installed = True


def call_within(budget_secs: float, function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)``, interrupted with :class:`BudgetExceeded` after ``budget_secs``
    (when :func:`enforceable`; otherwise it simply runs).

    The timer fires again every :data:`REFIRE_SECS` until the call returns, so a function that
    swallows one interruption (a bare ``except:``) gets the next; and a call that returns after
    its budget anyway (it swallowed them all) raises :class:`BudgetExceeded` too.
    """
    global _armed
    if _armed or not enforceable():  # a budget inside a budget: the outer one holds
        return function(*args)
    _install()
    started = time.monotonic()
    try:
        _armed = True
        signal.setitimer(signal.ITIMER_REAL, budget_secs, REFIRE_SECS)
        result = function(*args)
    finally:
        # Disarm first: an alarm that fires between these two lines is ignored.
        _armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
    if time.monotonic() - started > budget_secs:
        raise BudgetExceeded
    return result
