"""``gateway new-plugin KIND NAME``: writes a plugin distribution that works as generated (a
pyproject with the entry point, a config Struct, the component, a README and tests on
:mod:`gateway.testing` that pass), for an author to turn into the real thing."""

from __future__ import annotations

import re
from pathlib import Path

#: What ``new-plugin`` can write, with the hook each kind implements.
KINDS = ("destination", "filter", "source")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_TEMPLATES = Path(__file__).with_name("_scaffold")

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "{title} {kind} for the gateway."
requires-python = ">=3.11"
dependencies = ["gateway-core"{extra_deps}]

[project.optional-dependencies]
test = ["gateway-core[test]"]

[project.entry-points.gateway]
{name} = "{module}"

[tool.setuptools]
packages = ["{module}"]

[tool.pytest.ini_options]
trio_mode = true
addopts = "--import-mode=importlib"
"""

_README = """\
# {dist}

{title} {kind} for the gateway (`type = "{name}"`).

```toml
{example}
```

| key | default | |
| --- | --- | --- |
{keys}

Install it next to the gateway (`pip install -e .`; `gateway plugins` lists it), and run its
tests with `python -m pytest` (they start a real gateway with `gateway.testing`{fake}).
"""

_EXAMPLES = {
    "destination": (
        '[destinations.{name}]\ntype = "{name}"\nendpoint = "https://api.example.com"\n'
        'api_key = {{ env = "{upper}_API_KEY" }}',
        "| `endpoint` | required | base URL; events go to `<endpoint>/events` |\n"
        "| `api_key` | required | sent as `Authorization: Bearer`, shown as `***` |",
    ),
    "filter": (
        '[filters.quiet]\ntype = "{name}"\ndrop_events = ["Heartbeat"]\n\n[destinations.archive]\nfilters = ["quiet"]',
        "| `drop_events` | `[]` | track events with these names are dropped (counted as `{name}`) |",
    ),
    "source": (
        '[sources.hooks]\ntype = "{name}"\nwrite_key = {{ env = "{upper}_WRITE_KEY" }}\n'
        'event_name = "Webhook Received"',
        "| `event_name` | `Webhook Received` | the track event each posted object becomes |\n"
        "| `user_id_key` | `user_id` | the key holding the user id |",
    ),
}


def _render(template: str, **values: str) -> str:
    return (_TEMPLATES / template).read_text().format(**values)


def new_plugin(kind: str, name: str, into: Path) -> Path:
    """Write the distribution ``gateway-<kind>-<name>`` under ``into``; returns its folder.

    Raises:
        ValueError: an unknown kind, a name that is not lower-case snake_case, or a folder that
            already exists.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not _NAME.match(name):
        raise ValueError(f"name must be lower-case snake_case of at most 40 characters, got {name!r}")
    dist = f"gateway-{kind}-{name.replace('_', '-')}"
    module = f"gateway_{kind}_{name}"
    title = name.replace("_", " ").title()
    values = {
        "name": name,
        "module": module,
        "dist": dist,
        "kind": kind,
        "title": title,
        "cls": title.replace(" ", ""),
        "upper": name.upper(),
    }
    folder = into / dist
    if folder.exists():
        raise ValueError(f"{folder} already exists")
    (folder / module).mkdir(parents=True)
    (folder / "tests").mkdir()
    example, keys = _EXAMPLES[kind]
    (folder / "pyproject.toml").write_text(
        _PYPROJECT.format(extra_deps=', "quart-trio>=0.11"' if kind == "source" else "", **values)
    )
    (folder / "README.md").write_text(
        _README.format(
            example=example.format(**values),
            keys=keys.format(**values),
            fake=" and, for a destination, a loopback server playing the vendor's API" if kind == "destination" else "",
            **values,
        )
    )
    (folder / module / "__init__.py").write_text(_render(f"{kind}.py.tmpl", **values))
    (folder / "tests" / f"test_{name}.py").write_text(_render(f"test_{kind}.py.tmpl", **values))
    return folder
