"""The options of a tracking-API source (keys of ``[sources.<id>]`` beyond ``write_key``)."""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from gateway import ComponentConfig

TYPE_NAME = "tracking_api"

_ORIGIN = re.compile(r"^\*$|^https?://(\*\.)?[A-Za-z0-9.-]+(:\d{1,5})?$")
_API_HOST = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?(/[^\s?#]*)?$")
_HOST = re.compile(r"^\.?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$")


class TrackingApiConfig(ComponentConfig):
    """``[sources.<id>]`` options of the Segment HTTP Tracking API source."""

    #: Browser origins whose requests are answered with CORS headers and stored: ``"*"``, an
    #: exact origin (``"https://shop.example.com"``) or a subdomain pattern
    #: (``"https://*.example.com"``). Requests from other origins are refused (403).
    allowed_origins: list[str] = msgspec.field(default_factory=lambda: ["*"])
    #: What analytics.js posts to, without scheme: this gateway's public host and path, e.g.
    #: ``"events.example.com/v1"``. By default the Host the settings request came to, + ``/v1``.
    api_host: str | None = None
    #: ``"http"`` or ``"https"`` for ``api_host``; by default the scheme the settings request used
    #: (``X-Forwarded-Proto`` counts when it comes from a trusted proxy).
    protocol: Literal["http", "https"] | None = None
    #: Hosts ``/v1/qs/r`` may redirect to: exact (``"shop.example.com"``) or, with a leading dot,
    #: a domain and its subdomains (``".example.com"``). Empty: every redirect is refused.
    redirect_allowlist: list[str] = []

    def __post_init__(self) -> None:
        for origin in self.allowed_origins:
            if not _ORIGIN.match(origin):
                raise ValueError(
                    f"allowed_origins: {origin!r} must be '*', 'https://host[:port]' or 'https://*.domain'"
                )
        if self.api_host is not None and (not _API_HOST.match(self.api_host) or "://" in self.api_host):
            raise ValueError(f"api_host must be host[:port]/path without a scheme, got {self.api_host!r}")
        for host in self.redirect_allowlist:
            if not _HOST.match(host):
                raise ValueError(f"redirect_allowlist: {host!r} must be a host name, e.g. 'shop.example.com'")
