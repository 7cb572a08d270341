"""Config: the plugin is found through its entry point, and bad filters are config errors that
name the TOML path (and, for FQL, the column)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from gateway_filter_fql import FQLFilter, FQLFilterConfig

from gateway import ConfigError, Filter, Record
from gateway.testing import check_config, plugin_registry


def run_filters(filters: list[Filter], message: dict[str, Any]) -> dict[str, Any] | None:
    """What the delivery worker does with a destination's filters: in order, None drops."""
    result: dict[str, Any] | None = message
    for message_filter in filters:
        result = message_filter.process(result)
        if result is None:
            return None
    return result


@pytest.fixture(scope="module")
def registry() -> Any:
    return plugin_registry()


BASE = """
[sources.web]
write_key = "k"

[destinations.ads]
type = "file"
path = "var/test-ads"
filters = ["pii", "sampled"]
"""

FILTERS = """
[filters.pii]
type = "fql"
if = "type = 'track' and match(context.library.name, 'analytics*')"
drop_properties = { properties = ["email"], "context.traits" = ["email"], "" = ["anonymousId"] }

[filters.sampled]
type = "fql"
if = '''event = "Page Scrolled"'''

[filters.sampled.sample]
percent = 0.5
path = "userId"
"""


def test_the_fql_type_is_discovered_and_configured_through_the_real_parser(registry: Any) -> None:
    assert registry.provided_by[("filter", "fql")] == "fql"  # the entry point's name
    config = check_config(BASE + FILTERS)
    assert config.destinations["ads"].core.filters == ["pii", "sampled"]
    options = config.filters["pii"].options
    assert isinstance(options, FQLFilterConfig)
    assert options.drop_properties == {"properties": ["email"], "context.traits": ["email"], "": ["anonymousId"]}
    assert config.filters["sampled"].options.sample.percent == 0.5

    filters = [
        registry.filters[config.filters[fid].core.type].factory(config.filters[fid].options)
        for fid in config.destinations["ads"].core.filters
    ]
    assert all(isinstance(f, FQLFilter) for f in filters)
    message = {
        "type": "track",
        "event": "Order Completed",
        "userId": "u1",
        "anonymousId": "a1",
        "context": {"library": {"name": "analytics.js"}, "traits": {"email": "x@y.z", "plan": "pro"}},
        "properties": {"email": "x@y.z", "total": 3},
    }
    record = Record(seq=1, source="web", body=json.dumps(message).encode())
    out = run_filters(filters, record.message())
    assert out == {
        "type": "track",
        "event": "Order Completed",
        "userId": "u1",
        "context": {"library": {"name": "analytics.js"}, "traits": {"plan": "pro"}},
        "properties": {"total": 3},
    }
    scrolled = [
        run_filters(filters, {"type": "track", "event": "Page Scrolled", "userId": f"u{i}"}) for i in range(400)
    ]
    assert 100 < sum(m is not None for m in scrolled) < 300


@pytest.mark.parametrize(
    ("table", "where", "problem"),
    [
        ("if = \"type = = 'track'\"\ndrop = true", "filters.f", "if: FQL syntax error at column 8: unexpected '='"),
        ('if = "properties.total > 1 and"\ndrop = true', "filters.f", "column 25: unexpected end of expression"),
        ('if = "lenght(userId) > 0"\ndrop = true', "filters.f", "column 1: unknown function 'lenght'"),
        ('if = "userId = oops\'"\ndrop = true', "filters.f", "column 14: unterminated string"),
        ("if = \"event in 'x'\"\ndrop = true", "filters.f", "column 10: the right side of 'in' must be a list"),
        ("drop = true", "filters.f.if", "missing required field"),
        ('if = "all"', "filters.f", "no action"),
        ('if = "all"\ndrop = false', "filters.f", "no action"),
        ('if = "all"\ndrop = true\ndrop_properties = { properties = ["a"] }', "filters.f", "would never apply"),
        ('if = "all"\nsample = { percent = 1.5 }', "filters.f.sample.percent", "<= 1.0"),
        ('if = "all"\nsample = { percent = -0.1 }', "filters.f.sample.percent", ">= 0.0"),
        ('if = "all"\nsample = { percent = 0.5, path = "" }', "filters.f.sample", "path: empty"),
        ('if = "all"\nsample = { percent = 0.5, path = "a..b" }', "filters.f.sample", "empty step"),
        ('if = "all"\nsample = { rate = 0.5 }', "filters.f.sample.rate", "unknown field"),
        ('if = "all"\ndrop_properties = {}', "filters.f", "drop_properties: name at least one parent"),
        ('if = "all"\nallow_properties = { "properties." = ["a"] }', "filters.f", "allow_properties:"),
        ('if = "all"\ndrop_properties = { properties = "email" }', "filters.f.drop_properties[...]", "got `str`"),
        (
            'if = "all"\ndrop_properties.context.traits = ["email"]',
            "filters.f",
            "drop_properties.context: a table, not a list of keys; write a nested parent as one quoted key, "
            'e.g. "context.traits" = ["key"]',
        ),
        ('if = "all"\ndrop_properties = { properties = [""] }', "filters.f.drop_properties[...][0]", "length >= 1"),
        ('if = "all"\ndrop = true\ncondition = "x"', "filters.f.condition", "unknown field"),
    ],
)
def test_config_errors_name_the_toml_path(registry: Any, table: str, where: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_config(f'[filters.f]\ntype = "fql"\n{table}\n')
    assert caught.value.where == where, str(caught.value)
    assert problem in caught.value.problem, str(caught.value)


def test_the_readme_examples_are_valid_config(registry: Any) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", readme, flags=re.DOTALL)
    assert len(blocks) >= 3
    config = check_config("\n".join(blocks))
    assert {"no_pii_for_ads", "only_safe_fields", "only_orders", "sample_pages", "no_staff"} <= set(config.filters)
    no_staff = FQLFilter(config.filters["no_staff"].options)
    assert no_staff.process({"context": {"traits": {"email": "bob@example.com"}}}) is None
    assert no_staff.process({"properties": {"internal flag": True}}) is None
    assert no_staff.process({"properties": {"internal flag": False}}) is not None
