"""The Segment HTTP Tracking API as a gateway source: single calls and batches (server and
mobile libraries, analytics.js), the Pixel and querystring APIs (emails, landing pages), and
what analytics.js loads from its CDN, all with CORS done for browsers."""

from __future__ import annotations

from quart import Blueprint

from gateway import Ingest, SourceType, hookimpl

from ._browser import add_browser_routes
from ._common import Routes
from ._config import TYPE_NAME, TrackingApiConfig
from ._fast import TrackingFastPath
from ._pixel import add_pixel_routes
from ._tracking import add_tracking_routes

__all__ = ["TYPE_NAME", "TrackingApiConfig", "make_blueprint"]


def make_fast_path(ingest: Ingest) -> TrackingFastPath:
    """The plain server-library calls, answered without Quart (see ``_fast``)."""
    return TrackingFastPath(Routes(ingest))


def make_blueprint(ingest: Ingest) -> Blueprint:
    """Every route of this source type, bound to the core's ``ingest``."""
    bp = Blueprint(TYPE_NAME, __name__)
    routes = Routes(ingest)
    routes.install_cors(bp)
    add_tracking_routes(bp, routes)
    add_browser_routes(bp, routes)
    add_pixel_routes(bp, routes)
    return bp


@hookimpl
def gateway_source_types() -> list[SourceType]:
    return [
        SourceType(
            name=TYPE_NAME,
            config_type=TrackingApiConfig,
            blueprint=make_blueprint,
            fast_path=make_fast_path,
            description="Segment Tracking API (/v1/track, /v1/batch...), Pixel and querystring APIs, analytics.js",
        )
    ]
