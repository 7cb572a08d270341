"""The function filter: changes, drops, failures (exceptions, timeouts, bad results) and config."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from gateway_filter_function import FunctionConfig, FunctionFilter

from gateway import FilterContext
from gateway.testing import run_filters as apply_filters

AT_SOURCE = FilterContext("web")


def make(tmp_path: Path, body: str, **options: Any) -> FunctionFilter:
    module = f"fn_{abs(hash(body))}"
    (tmp_path / f"{module}.py").write_text(body)
    config = msgspec.convert({"function": f"{module}:transform", "path": str(tmp_path), **options}, FunctionConfig)
    return FunctionFilter(config)


def run(f: FunctionFilter, message: dict[str, Any]) -> Any:
    return apply_filters([("fn", f)], message, AT_SOURCE)


def event(**fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Signed Up", "messageId": "m1", "properties": {"plan": "pro"}, **fields}


def test_a_function_changes_the_event(tmp_path: Path) -> None:
    f = make(
        tmp_path, "def transform(e):\n    e['properties']['plan'] = e['properties']['plan'].upper()\n    return e\n"
    )
    outcome = run(f, event())
    assert outcome.message["properties"] == {"plan": "PRO"} and outcome.failure is None


def test_none_drops_with_its_reason(tmp_path: Path) -> None:
    f = make(tmp_path, "def transform(e):\n    return None if e['event'] == 'Signed Up' else e\n")
    assert (run(f, event()).message, run(f, event()).reason) == (None, "dropped_by_function")
    assert run(f, event(event="Other")).message["event"] == "Other"


def test_settings_are_the_second_argument(tmp_path: Path) -> None:
    f = make(
        tmp_path, "def transform(e, settings):\n    e['tier'] = settings['tier']\n    return e\n", settings={"tier": 3}
    )
    assert run(f, event()).message["tier"] == 3


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("def transform(e):\n    raise ValueError('no plan')\n", "ValueError: no plan"),
        ("import sys\ndef transform(e):\n    sys.exit(3)\n", "SystemExit: 3"),
        ("def transform(e):\n    return [e]\n", "returned list, not an event (dict) or None"),
        ("def transform(e):\n    return {'type': 'track'}\n", "the returned event has no messageId"),
        ("def transform(e):\n    e['x'] = object()\n    return e\n", "the returned event is not JSON"),
    ],
)
def test_a_failure_dead_letters_the_event_unchanged(tmp_path: Path, body: str, error: str) -> None:
    f = make(tmp_path, "def half(e):\n    e['properties'].clear()\n" + body.replace("(e):\n", "(e):\n    half(e)\n", 1))
    original = event()
    outcome = run(f, original)
    assert outcome.message is None and outcome.reason == "function_error"
    assert outcome.failure.startswith("fn: ") and error in outcome.failure
    assert original == event()  # what gets dead-lettered is the event as it came
    assert f.statistics()["failed"] == 1


@pytest.mark.parametrize(
    "body",
    [
        "def transform(e):\n    while True:\n        pass\n",
        # its own `except Exception` cannot swallow the timeout
        "def transform(e):\n    while True:\n        try:\n            sum(range(1000))\n"
        "        except Exception:\n            pass\n",
        "import time\ndef transform(e):\n    time.sleep(30)\n",
        # swallows every interruption and returns late: still over budget
        "import time\ndef transform(e):\n    for _ in range(3):\n        try:\n            time.sleep(0.1)\n"
        "        except BaseException:\n            pass\n    return e\n",
    ],
    ids=["busy-loop", "swallowing-loop", "sleep", "swallowing-everything"],
)
def test_a_function_over_its_budget_is_stopped_and_dead_lettered(tmp_path: Path, body: str) -> None:
    f = make(tmp_path, body, budget_ms=30)
    started = time.monotonic()
    outcome = run(f, event())
    assert time.monotonic() - started < 2
    assert outcome.message is None and outcome.failure == f"fn: {f.config.function}: timed out after 30 ms"
    # the pipeline goes on: the next event is processed normally by another filter
    ok = make(tmp_path, "def transform(e):\n    return e\n")
    assert run(ok, event()).message == event()


def test_a_function_within_budget_is_not_disturbed_by_a_late_alarm(tmp_path: Path) -> None:
    """The budget's timer runs during each call and is disarmed at its end: nothing is left to
    fire later, and an alarm that arrives just after a call (the timer's tick racing the disarm)
    is ignored. (A budget with room to spare: on a busy machine a call may take many ms.)"""
    f = make(
        tmp_path,
        "import signal\narmed = []\ndef transform(e):\n"
        "    armed.append(signal.getitimer(signal.ITIMER_REAL)[0] > 0)\n    return e\n",
        budget_ms=5_000,
    )
    for _ in range(5):
        assert run(f, event()).failure is None
    assert f._function.__globals__["armed"] == [True] * 5, "no budget was in force during the calls"
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0), "a timer is left to fire after the calls"
    assert callable(signal.getsignal(signal.SIGALRM))  # the budget's handler: a late alarm reaches it
    signal.raise_signal(signal.SIGALRM)  # raises BudgetExceeded here if the handler still thinks it is armed
    assert f.statistics() == {"passed": 5, "dropped": 0, "failed": 0}


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"function": "no_colon"}, "is not 'module:callable'"),
        ({"function": "json:dumps", "budget_ms": 0}, "Expected `float` > 0.0"),
    ],
)
def test_config_errors(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=problem.replace("(", r"\(")):
        msgspec.convert(options, FunctionConfig)


@pytest.mark.parametrize(
    ("function", "problem"),
    [
        ("module_that_does_not_exist_zz:f", "cannot import 'module_that_does_not_exist_zz'"),
        ("json:no_such_thing", "'json' has no 'no_such_thing'"),
        ("json:__doc__", "is not callable"),
    ],
)
def test_a_function_that_cannot_be_imported_fails_the_build_not_the_validation(function: str, problem: str) -> None:
    config = msgspec.convert({"function": function}, FunctionConfig)  # validation imports nothing
    with pytest.raises(ValueError, match=problem):
        FunctionFilter(config)
