"""Every hook is documented, and every hook is exercised by a plugin the suite uses: each
hookspec has a ``test_hook_<name>`` test somewhere in the suite (datasette's rule)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from gateway import hookspecs
from gateway.plugins import make_plugin_manager

REPO = Path(__file__).resolve().parent.parent


def hook_functions() -> list:
    return [f for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("gateway_")]


def suite_test_names() -> set[str]:
    """The names of the test functions in every test module of the core and of the plugins."""
    names: set[str] = set()
    for path in [*REPO.glob("tests/**/test_*.py"), *REPO.glob("plugins/*/tests/**/test_*.py")]:
        tree = ast.parse(path.read_text(), str(path))
        names.update(
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
        )
    return names


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


def test_every_hookspec_has_a_test_hook_named_after_it() -> None:
    names = suite_test_names()
    missing = [f"test_hook_{hook.__name__}" for hook in hook_functions() if f"test_hook_{hook.__name__}" not in names]
    assert missing == [], f"hooks without a test exercising them through a plugin: {missing}"
