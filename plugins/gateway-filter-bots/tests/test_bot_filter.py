"""Bot filtering on real user agents."""

from __future__ import annotations

import pytest
from gateway_filter_bots import BotFilter, BotsConfig

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.0 Mobile/15E148 Safari/604.1"
)
BOTS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36",
    "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
    "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
]


def event(user_agent: str | None) -> dict:
    return {"type": "page", "context": {"userAgent": user_agent} if user_agent else {}}


@pytest.mark.parametrize("user_agent", BOTS)
def test_bots_are_dropped_or_flagged(user_agent: str) -> None:
    assert BotFilter(BotsConfig()).process(event(user_agent)) is None
    flagged = BotFilter(BotsConfig(action="flag")).process(event(user_agent))
    assert flagged is not None and flagged["context"]["isBot"] is True


@pytest.mark.parametrize("user_agent", [CHROME, IPHONE, None])
def test_people_pass_untouched(user_agent: str | None) -> None:
    assert BotFilter(BotsConfig()).process(event(user_agent)) == event(user_agent)


def test_allow_list_lets_your_own_monitor_through() -> None:
    f = BotFilter(BotsConfig(allow=["UptimeRobot"]))
    assert f.process(event(BOTS[2])) is not None
    assert f.process(event(BOTS[0])) is None


@pytest.mark.parametrize(
    "message",
    [
        event(CHROME),
        event(IPHONE),
        event(None),
        event(""),
        *(event(agent) for agent in BOTS),
        {"type": "track", "context": {"userAgent": 42}},
        {"type": "track", "context": "not an object"},
        {"type": "track"},
    ],
)
@pytest.mark.parametrize("config", [BotsConfig(), BotsConfig(action="flag"), BotsConfig(allow=["UptimeRobot"])])
def test_the_fast_pass_passes_only_what_process_returns_unchanged(message: dict, config: BotsConfig) -> None:
    bot_filter = BotFilter(config)
    fast_pass = bot_filter.fast_pass()
    assert fast_pass is not None
    expected = dict(message, context=dict(message["context"])) if isinstance(message.get("context"), dict) else message
    if fast_pass(message):
        assert bot_filter.process(message) is message
        assert message == expected
    else:
        assert message.get("context", {}).get("userAgent") in BOTS


@pytest.mark.parametrize("action", ["drop", "flag"])
def test_the_fast_pass_passes_only_what_the_filter_returns_unchanged(action: str) -> None:
    """The fast pass (an expression a filter chain writes into its code) is True only where
    process() returns the very message unchanged, in both actions and two filters at once."""
    filters = [BotFilter(BotsConfig(action=action)), BotFilter(BotsConfig(action=action, allow=["Googlebot"]))]
    messages: list[dict] = [
        {},
        {"context": None},
        {"context": "x"},
        {"context": {}},
        {"context": {"userAgent": ""}},
        {"context": {"userAgent": 42}},
        {"context": {"userAgent": CHROME}},
        {"context": {"userAgent": IPHONE}},
        *({"context": {"userAgent": agent}} for agent in BOTS),
    ]
    for bot_filter in filters:
        fast_pass = bot_filter.fast_pass()
        for message in messages:
            if fast_pass(message):
                before = repr(message)
                assert bot_filter.process(message) is message and repr(message) == before, message
            else:
                assert message["context"]["userAgent"] in BOTS, message
