"""Every hook is documented, and every hook is exercised by a plugin the suite uses."""

from __future__ import annotations

import inspect

from gateway import hookspecs
from gateway.plugins import make_plugin_manager


def hook_functions() -> list:
    return [f for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("gateway_")]


def test_every_hookspec_has_a_contract_docstring() -> None:
    hooks = hook_functions()
    assert {f.__name__ for f in hooks} == {
        "gateway_source_types",
        "gateway_destination_types",
        "gateway_filter_types",
        "gateway_matcher_types",
        "gateway_custom_matcher",
    }
    for hook in hooks:
        doc = inspect.getdoc(hook) or ""
        assert ":returns:" in doc and len(doc.splitlines()) >= 3, hook.__name__


def test_every_hookspec_is_registered_on_the_manager() -> None:
    pm = make_plugin_manager(load_entry_points=False)
    for hook in hook_functions():
        assert getattr(pm.hook, hook.__name__).spec is not None
