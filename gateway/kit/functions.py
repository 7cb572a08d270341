"""Operator-written Python functions (``module:callable``): importing them, and running them on
the event loop's thread within a time budget. The ``function`` filter and the ``function``
source share these, so both import, reload and stop an operator's code the same way.

The time budget: a transformation runs inline, between two awaits, so trio cannot cancel it. A
real-time interval timer (``SIGALRM``) can: its handler runs between two bytecodes of the
running function (and interrupts a blocking ``time.sleep`` or socket call) and raises
:class:`BudgetExceeded` there. That is a ``BaseException``, so a function's own ``except
Exception`` cannot swallow it.

Signals are only delivered to the main thread, which is where ``gateway run`` runs the event loop.
Elsewhere (a test runner's worker thread) :func:`budget_enforceable` is false and the budget is not enforced.
C code that never returns to the interpreter (a long regex match) is only stopped when it does.
"""

from __future__ import annotations

import importlib
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
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


def budget_enforceable() -> bool:
    """Whether budgets can be enforced here: on the main thread of a platform with SIGALRM."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def _install() -> None:
    global _installed, _previous
    if not _installed:
        _previous = signal.signal(signal.SIGALRM, _on_alarm)
        _installed = True


def call_within(budget_secs: float, function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)``, interrupted with :class:`BudgetExceeded` after ``budget_secs``
    (when :func:`budget_enforceable`; otherwise it simply runs).

    The timer fires again every :data:`REFIRE_SECS` until the call returns, so a function that
    swallows one interruption (a bare ``except:``) gets the next; and a call that returns after
    its budget anyway (it swallowed them all) raises :class:`BudgetExceeded` too.
    """
    global _armed
    if _armed or not budget_enforceable():  # a budget inside a budget: the outer one holds
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


def load_callable(spec: str, path: str | None = None) -> Callable[..., Any]:
    """Import ``module:attribute`` (from ``path`` first, when given). A module that lives in
    ``path`` is imported afresh each time, so a config reload picks up an edited function (and
    a module of the same name imported before from elsewhere is replaced by ``path``'s); others
    (installed packages, the standard library) are imported once.

    Raises:
        ValueError: a bad spec, a module that fails to import, or an attribute that is missing
            or not callable (the message says which).
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"function: {spec!r} is not 'module:callable'")
    folder = str(Path(path).resolve()) if path is not None else None
    if folder is not None:
        if folder in sys.path:
            sys.path.remove(folder)
        sys.path.insert(0, folder)  # first: this folder's module wins over one of the same name
    try:
        module = sys.modules.get(module_name)
        if module is not None and folder is not None:
            if str(getattr(module, "__file__", "")).startswith(folder + "/"):
                module = importlib.reload(module)  # the operator's own module: pick up their edits
            else:  # a module of that name from elsewhere (another folder, before a reload): not this one
                del sys.modules[module_name]
                module = None
        if module is None:
            module = importlib.import_module(module_name)
    except Exception as error:
        raise ValueError(f"function: cannot import {module_name!r}: {type(error).__name__}: {error}") from None
    target: Any = module
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ValueError(f"function: {module_name!r} has no {attribute!r}")
    if not callable(target):
        raise ValueError(f"function: {spec!r} is not callable")
    return target  # type: ignore[no-any-return]
