"""Bot filtering by ``context.userAgent``, with the maintained CrawlerDetect patterns."""

from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Any, Literal

from crawlerdetect import CrawlerDetect

from gateway import ComponentConfig, Filter, FilterType, InlinePass, hookimpl

_detector = CrawlerDetect()
#: How many user agents' verdicts are remembered (least recently seen forgotten first): the
#: detector's hundreds of patterns then run once per distinct agent, not once per event.
VERDICT_CACHE_SIZE = 16384


@lru_cache(maxsize=VERDICT_CACHE_SIZE)
def is_bot(user_agent: str) -> bool:
    """Whether a user agent is a crawler, headless browser or monitoring agent (cached: user
    agents repeat across events)."""
    return bool(_detector.isCrawler(user_agent))


class BotsConfig(ComponentConfig):
    """``[filters.<id>]`` keys of a bot filter."""

    action: Literal["drop", "flag"] = "drop"
    #: Substrings of user agents that pass even when they look like bots (your own monitors).
    allow: list[str] = []


class BotFilter(Filter):
    drop_reason = "bot"

    def __init__(self, config: BotsConfig) -> None:
        self._drop = config.action == "drop"
        self._allow = tuple(config.allow)

    def process(self, message: dict[str, Any]) -> dict[str, Any] | None:
        context = message.get("context")
        user_agent = context.get("userAgent") if isinstance(context, dict) else None
        if not isinstance(user_agent, str) or not user_agent or not is_bot(user_agent):
            return message
        if any(allowed in user_agent for allowed in self._allow):
            return message
        if self._drop:
            return None
        assert isinstance(context, dict)
        context["isBot"] = True
        return message

    def fast_pass(self) -> InlinePass:
        """True for a message whose user agent is missing or not a bot's (cached per agent), as
        an expression the filter chain writes into its own code."""
        n = next(_inline_numbers)
        context, agent = f"_bots{n}_context", f"_bots{n}_agent"
        return InlinePass(
            f"not isinstance({agent} := ({context}.get('userAgent') if isinstance({context} := event.get('context'), "
            f"dict) else None), str) or not {agent} or not _bots_is_bot({agent})",
            {"_bots_is_bot": is_bot},
        )


#: Numbers the names each inline fast pass binds, so that two bot filters in one chain never clash.
_inline_numbers = itertools.count()


@hookimpl
def gateway_filter_types() -> list[FilterType]:
    return [
        FilterType(
            name="bots",
            config_type=BotsConfig,
            factory=BotFilter,
            description="drop or flag crawlers, headless browsers and monitors (CrawlerDetect)",
        )
    ]
