"""The bot filter remembers its verdict per user agent: the detector's patterns run once per
distinct agent however many events carry it, and what it remembers is bounded."""

from __future__ import annotations

import uuid
from collections import Counter

import gateway_filter_bots
import pytest
from gateway_filter_bots import VERDICT_CACHE_SIZE, BotFilter, BotsConfig


class CountingDetector:
    """Stands in for CrawlerDetect: counts the agents it is asked about; ``judge`` answers (the
    real detector's verdict, or "bot" when the agent says so)."""

    def __init__(self, judge: object = None) -> None:
        self.asked: Counter[str] = Counter()
        self._judge = judge

    def isCrawler(self, user_agent: str) -> bool:
        self.asked[user_agent] += 1
        if self._judge is not None:
            return bool(self._judge.isCrawler(user_agent))  # type: ignore[attr-defined]
        return "bot" in user_agent


def event(user_agent: str) -> dict:
    return {"type": "page", "context": {"userAgent": user_agent}}


@pytest.fixture
def unique() -> str:
    """A suffix no earlier test used, so that no verdict is remembered from before."""
    return uuid.uuid4().hex


def test_each_user_agent_is_judged_once_however_many_events_carry_it(
    monkeypatch: pytest.MonkeyPatch, unique: str
) -> None:
    detector = CountingDetector(judge=gateway_filter_bots._detector)
    monkeypatch.setattr(gateway_filter_bots, "_detector", detector)
    googlebot = f"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html) {unique}"
    chrome = f"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/156.0.0.0 Safari/537.36 {unique}"
    flagging = BotFilter(BotsConfig(action="flag"))
    for _ in range(50):
        assert flagging.process(event(googlebot))["context"]["isBot"] is True
        assert "isBot" not in flagging.process(event(chrome))["context"]
    # Another filter (another config, or the same after a reload) asks nothing again.
    assert BotFilter(BotsConfig()).process(event(googlebot)) is None
    assert detector.asked == {googlebot: 1, chrome: 1}


def test_what_it_remembers_is_bounded(monkeypatch: pytest.MonkeyPatch, unique: str) -> None:
    detector = CountingDetector()
    monkeypatch.setattr(gateway_filter_bots, "_detector", detector)
    dropping = BotFilter(BotsConfig())
    first = f"first-bot {unique}"
    assert dropping.process(event(first)) is None
    for n in range(VERDICT_CACHE_SIZE):  # as many other agents as it keeps verdicts for
        dropping.process(event(f"agent {n} {unique}"))
    assert dropping.process(event(first)) is None
    assert detector.asked[first] == 2, "the first agent's verdict was kept beyond the bound"
