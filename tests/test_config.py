"""Config validation: errors name the TOML path; every shipped config file is valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import load_config, parse_config
from gateway.errors import ConfigError
from gateway.plugins import Registry

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", sorted(REPO.glob("config/**/*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path: Path, registry: Registry) -> None:
    config = load_config(path, registry)
    assert config.sources


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ("[server]\nlisten = 8080\n", "server.listen", "Expected `str`"),
        ('[server]\nlisten = "nohost"\n', "server", "HOST:PORT"),
        ("[server]\nmax_request_bytes = 10\n", "server.max_request_bytes", ">= 1048576"),
        ("[server]\nbogus = 1\n", "server.bogus", "unknown field"),
        ("[server]\nmax_connections = 0\n", "server.max_connections", ">= 1"),
        ("[server]\nrequest_head_timeout_secs = 0\n", "server.request_head_timeout_secs", "> 0"),
        ("[server]\nkeep_alive_timeout_secs = 86400\n", "server.keep_alive_timeout_secs", "<= 3600"),
        ('[sources.web]\ntype = "tracking_api"\n', "sources.web.write_key", "missing required field"),
        ('[sources.web]\nwrite_key = "k"\ncolour = "red"\n', "sources.web.colour", "unknown field"),
        ('[sources.a]\nwrite_key = "k"\n[sources.b]\nwrite_key = "k"\n', "sources.b.write_key", "same write key"),
        ('[destinations.crm]\ntype = "http"\n', "destinations.crm.url", "missing required field"),
        (
            '[destinations.crm]\ntype = "http"\nurl = "ftp://x"\n',
            "destinations.crm",
            "url must be an http:// or https:// URL",
        ),
        ('[destinations.crm]\ntype = "nope"\n', "destinations.crm.type", "unknown destination type 'nope'"),
        ('[destinations.crm]\ntype = "file"\npath = "x"\nconcurrency = 0\n', "destinations.crm.concurrency", ">= 1"),
        (
            '[destinations.crm]\ntype = "file"\npath = "x"\nfilters = ["f"]\n',
            "destinations.crm.filters[0]",
            "no filter 'f'",
        ),
        ('[log]\nsynchronous = "off"\n', "log.synchronous", "Invalid enum value 'off'"),
        ("[server\n", "", "not valid TOML"),
    ],
)
def test_config_errors_name_the_toml_path(text: str, where: str, problem: str, registry: Registry) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(text, registry, path="g.toml")
    assert raised.value.where == where
    assert problem in raised.value.problem
    assert str(raised.value).startswith(f"g.toml: {where}" if where else "g.toml")


def test_delivery_keys_go_to_the_core_and_the_rest_to_the_plugin(registry: Registry) -> None:
    config = parse_config(
        '[sources.web]\nwrite_key = "k"\n[destinations.crm]\ntype = "http"\nurl = "http://h/x"\n'
        'headers = { X-Token = "t" }\nconcurrency = 4\n',
        registry,
    )
    crm = config.destinations["crm"]
    assert crm.core.concurrency == 4
    assert crm.options.headers == {"X-Token": "t"}
    assert config.sources["web"].core.type == "tracking_api"


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[destinations.crm]\ntype = "http"\n')
    assert main(["check-config", str(bad)]) == 2
    assert f"{bad}: destinations.crm.url: Object missing required field `url`" in capsys.readouterr().err
    assert main(["check-config", str(REPO / "config" / "gateway.toml")]) == 0
    assert ": ok (" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "where", "problem"),
    [
        (
            '[sources.web]\nwrite_key = "k"\nfilters = ["plan"]\n',
            "filters.plan.forward_violations_to",
            "no source 'nope'",
        ),
        (
            '[sources.web]\nwrite_key = "k"\n[sources.nope]\nwrite_key = "k2"\n'
            '[destinations.crm]\ntype = "file"\npath = "x"\nfilters = ["plan"]\n',
            "destinations.crm.filters",
            "only a source's filters",
        ),
    ],
)
def test_forwarding_filters_name_real_sources_and_run_at_sources(
    extra: str, where: str, problem: str, registry: Registry, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text('{"rules": []}')
    text = f'[filters.plan]\ntype = "tracking_plan"\nplan = "{plan}"\nforward_violations_to = "nope"\n' + extra
    with pytest.raises(ConfigError) as raised:
        parse_config(text, registry, path="g.toml")
    assert (raised.value.where, problem in raised.value.problem) == (where, True)


@pytest.mark.parametrize("text", ["", "\n# only a comment\n"], ids=["empty", "comments"])
def test_an_empty_config_is_refused_saying_what_it_needs(registry: Registry, text: str) -> None:
    with pytest.raises(ConfigError, match=r"the config is empty: it needs at least one \[sources.<id>\]"):
        parse_config(text, registry)


def test_custom_matchers_need_a_plugin_that_builds_them() -> None:
    from gateway.plugins import build_registry, make_plugin_manager

    text = '[sources.web]\nwrite_key = "k"\n[privacy.matchers.employee]\nclass = "red"\nkeys = ["employee id"]\n'
    with pytest.raises(ConfigError, match=r"privacy\.matchers\.employee: no installed plugin builds custom matchers"):
        parse_config(text, build_registry(make_plugin_manager(load_entry_points=False)))


def test_the_builtin_matcher_plugin_builds_custom_matchers_by_segments_rule(registry: Registry) -> None:
    text = (
        '[sources.web]\nwrite_key = "k"\n[privacy.matchers.employee]\nclass = "red"\n'
        'keys = ["employee id"]\nprecision = "similar"\npattern = "E\\\\d{6}"\n'
    )
    [matcher] = parse_config(text, registry).custom_matchers
    assert (matcher.name, matcher.default_class) == ("employee", "red")
    assert matcher.match_key is not None
    assert matcher.match_key("employeeId") and matcher.match_key("employe_id") and not matcher.match_key("plan")
    assert matcher.match_value is not None
    assert matcher.match_value("E123456") and not matcher.match_value("E1234567")


def test_a_custom_matcher_its_plugin_cannot_build_is_a_config_error(registry: Registry) -> None:
    # The plugin's refusal names the table, as every other config problem: a raw ValueError
    # here was a traceback from check-config, and ended the daemon on a reload.
    text = '[sources.web]\nwrite_key = "k"\n[privacy.matchers.odd]\nclass = "red"\nkeys = ["_"]\n'
    with pytest.raises(ConfigError) as raised:
        parse_config(text, registry, path="g.toml")
    assert raised.value.where == "privacy.matchers.odd"
    assert "a key term needs a letter or digit" in raised.value.problem
