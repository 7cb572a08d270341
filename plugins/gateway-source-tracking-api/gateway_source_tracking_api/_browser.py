"""What analytics.js loads from its "CDN", served first-party: the source settings, the
standalone bundle and its lazy chunks (segment-api.md §10, clients.md §4.1)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import trio
from quart import Blueprint, Response, request

from gateway import error_response, json_response

from ._common import Routes

BUNDLE_NAME = "standalone.js"
WRITE_KEY_PLACEHOLDER = b"__WRITE_KEY__"
BUNDLE_MAX_AGE_SECS = 3600
SETTINGS_MAX_AGE_SECS = 60


@dataclass(frozen=True)
class _Asset:
    body: bytes
    etag: str


class _AssetCache:
    """Files read once per (path, mtime), with the write key substituted and an ETag."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Path, str], tuple[float, _Asset]] = {}

    async def get(self, path: Path, write_key: str | None) -> _Asset | None:
        def load() -> tuple[float, bytes] | None:
            try:
                return path.stat().st_mtime, path.read_bytes()
            except OSError:
                return None

        key = (path, write_key or "")
        loaded = await trio.to_thread.run_sync(load)
        if loaded is None:
            return None
        mtime, body = loaded
        cached = self._cache.get(key)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        if write_key is not None:
            body = body.replace(WRITE_KEY_PLACEHOLDER, write_key.encode())
        asset = _Asset(body=body, etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"')
        self._cache[key] = (mtime, asset)
        return asset


def analytics_js_dir(data_dir: Path) -> Path:
    """Where ``python -m gateway_source_tracking_api.analytics_js`` puts the bundle."""
    return data_dir / "assets" / "analytics-next"


def _asset_response(asset: _Asset) -> Response:
    if request.headers.get("If-None-Match") == asset.etag:
        response = Response(b"", status=304)
    else:
        response = Response(asset.body, status=200, content_type="application/javascript; charset=utf-8")
    response.headers["ETag"] = asset.etag
    response.headers["Cache-Control"] = f"public, max-age={BUNDLE_MAX_AGE_SECS}"
    return response


def add_browser_routes(bp: Blueprint, routes: Routes) -> None:
    ingest = routes.ingest
    assets = _AssetCache()

    def bundle_path(name: str) -> Path:
        return analytics_js_dir(ingest.data_dir) / name

    def public_scheme() -> str:
        forwarded = request.headers.get("X-Forwarded-Proto")
        if forwarded in ("http", "https") and ingest.is_trusted_proxy(request.remote_addr):
            return str(forwarded)
        return request.scheme

    @bp.get("/v1/projects/<write_key>/settings")
    async def settings(write_key: str) -> Response:
        source = routes.source_for(write_key)
        if source is None:
            return error_response(404, "unknown_write_key", "no source has this write key")
        routes.check_origin(source)
        options = source.options
        response = json_response(
            {
                "integrations": {
                    "Segment.io": {
                        "apiKey": write_key,
                        "apiHost": options.api_host or f"{request.host}/v1",
                        "protocol": options.protocol or public_scheme(),
                    }
                },
                "plan": {},
                "edgeFunction": {},
                "analyticsNextEnabled": True,
                # 0: no browser ever posts telemetry to the vendor's servers (clients.md §4.1).
                "metrics": {"sampleRate": 0},
            }
        )
        response.headers["Cache-Control"] = f"public, max-age={SETTINGS_MAX_AGE_SECS}"
        return response

    @bp.get("/analytics.js/v1/<write_key>/analytics.min.js")
    async def bundle(write_key: str) -> Response:
        source = routes.source_for(write_key)
        if source is None:
            return error_response(404, "unknown_write_key", "no source has this write key")
        asset = await assets.get(bundle_path(BUNDLE_NAME), write_key)
        if asset is None:
            return error_response(
                404,
                "analytics_js_not_installed",
                "analytics.js is not installed on this gateway: "
                "run `python -m gateway_source_tracking_api.analytics_js --data-dir DATA_DIR`",
            )
        return _asset_response(asset)

    @bp.get("/analytics-next/bundles/<name>")
    async def chunk(name: str) -> Response:
        # Lazy chunks are the same for every source; names are plain file names (no paths).
        if "/" in name or "\\" in name or name.startswith(".") or not name.endswith(".js"):
            return error_response(404, "not_found", "no such bundle")
        asset = await assets.get(bundle_path(name), None)
        if asset is None:
            return error_response(404, "not_found", "no such bundle")
        return _asset_response(asset)
