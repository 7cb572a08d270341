"""The per-user-agent verdict cache: bounded, and the same verdicts as the detector itself."""

from __future__ import annotations

from crawlerdetect import CrawlerDetect
from gateway_filter_bots import is_bot

AGENTS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
    "curl/8.5.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Version/17.0 Mobile/15E148",
]


def test_cached_verdicts_are_the_detectors() -> None:
    detector = CrawlerDetect()
    for agent in AGENTS * 2:  # the second round is answered from the cache
        assert is_bot(agent) is bool(detector.isCrawler(agent))


def test_the_cache_is_bounded() -> None:
    maxsize = is_bot.cache_info().maxsize
    assert maxsize is not None
    for n in range(maxsize + 10):
        is_bot(f"agent {n}")
    assert is_bot.cache_info().currsize == maxsize
