"""Browser and email collection in process: CORS, settings, the first-party bundle, the Pixel and
querystring APIs, click redirects, and per-source rate limits."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from gateway_source_tracking_api._pixel import GIF, querystring_messages, raw_params, redirect_target

from gateway.plugins import Registry
from tests.conftest import App, open_app
from tests.gatewayproc import WRITE_KEY
from tests.test_http import AUTH, stored

PAGE = "http://shop.example"
OTHER = "http://evil.example"


@pytest.fixture
def app_config_extra() -> str:
    return """allowed_origins = ["http://shop.example", "https://*.example.org"]
redirect_allowlist = ["shop.example", ".example.org"]
"""


async def request(app: App, method: str, path: str, **kwargs: Any):
    kwargs.setdefault("scope_base", {"client": ("127.0.0.1", 50000)})
    return await app.client().open(path, method=method, **kwargs)


# -- CORS ---------------------------------------------------------------------------------------


async def test_preflight_allows_what_analytics_js_sends(gateway_app: App) -> None:
    response = await request(
        gateway_app,
        "OPTIONS",
        "/v1/t",
        headers={
            "Origin": PAGE,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,x-retry-count",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == PAGE
    assert response.headers["Access-Control-Allow-Headers"] == "authorization,x-retry-count"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert response.headers["Access-Control-Max-Age"] == "86400"
    default = await request(
        gateway_app, "OPTIONS", "/v1/b", headers={"Origin": PAGE, "Access-Control-Request-Method": "POST"}
    )
    assert default.headers["Access-Control-Allow-Headers"] == "authorization, x-retry-count, content-type"


@pytest.mark.parametrize(
    ("body", "status"),
    [({"userId": "u", "event": "e"}, 200), ({"userId": "u"}, 400), (b"{bad", 400)],
)
async def test_every_post_answer_carries_cors_headers(gateway_app: App, body: Any, status: int) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await request(gateway_app, "POST", "/v1/t", data=data, headers={**AUTH, "Origin": PAGE})
    assert response.status_code == status
    assert response.headers["Access-Control-Allow-Origin"] == PAGE
    assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]


async def test_unknown_key_answer_still_readable_by_an_allowed_origin(gateway_app: App) -> None:
    response = await request(
        gateway_app, "POST", "/v1/t", data=b'{"writeKey":"nope","userId":"u","event":"e"}', headers={"Origin": PAGE}
    )
    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] == PAGE


async def test_subdomain_pattern_origin(gateway_app: App) -> None:
    response = await request(
        gateway_app,
        "POST",
        "/v1/t",
        data=b'{"userId":"u","event":"e"}',
        headers={**AUTH, "Origin": "https://blog.example.org"},
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://blog.example.org"


async def test_a_disallowed_origin_gets_no_cors_and_nothing_is_stored(gateway_app: App) -> None:
    for path, body in (
        ("/v1/t", {"userId": "u", "event": "e"}),
        ("/v1/b", {"batch": [{"type": "page", "userId": "u"}]}),
    ):
        response = await request(
            gateway_app, "POST", path, data=json.dumps(body).encode(), headers={**AUTH, "Origin": OTHER}
        )
        assert response.status_code == 403
        assert (await response.get_json())["code"] == "origin_not_allowed"
        assert "Access-Control-Allow-Origin" not in response.headers
    preflight = await request(
        gateway_app, "OPTIONS", "/v1/t", headers={"Origin": OTHER, "Access-Control-Request-Method": "POST"}
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers
    assert (await stored(gateway_app)) == []


async def test_a_preflight_another_source_allows_does_not_let_the_post_through(
    tmp_path: Path, registry: Registry
) -> None:
    """A preflight has no write key, so it is answered for an origin any source allows; the POST
    that follows names its source, which still refuses an origin it does not allow (README)."""
    extra = f'allowed_origins = ["{PAGE}"]\n\n[sources.other]\nwrite_key = "other-key"\nallowed_origins = ["{OTHER}"]\n'
    async with open_app(tmp_path, registry, extra) as app:
        preflight = await request(
            app, "OPTIONS", "/v1/t", headers={"Origin": OTHER, "Access-Control-Request-Method": "POST"}
        )
        assert preflight.headers["Access-Control-Allow-Origin"] == OTHER
        response = await request(
            app, "POST", "/v1/t", data=b'{"userId":"u","event":"e"}', headers={**AUTH, "Origin": OTHER}
        )
        assert response.status_code == 403
        assert (await response.get_json())["code"] == "origin_not_allowed"
        assert (await stored(app)) == []


async def test_server_clients_without_origin_are_unaffected(gateway_app: App) -> None:
    response = await request(gateway_app, "POST", "/v1/track", data=b'{"userId":"u","event":"e"}', headers=AUTH)
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers


# -- settings and bundle ------------------------------------------------------------------------


async def test_settings_point_analytics_js_at_the_gateway(gateway_app: App) -> None:
    response = await request(
        gateway_app,
        "GET",
        f"/v1/projects/{WRITE_KEY}/settings",
        headers={"Origin": PAGE, "Host": "events.shop.example:8443"},
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == PAGE
    settings = await response.get_json()
    assert settings["integrations"]["Segment.io"] == {
        "apiKey": WRITE_KEY,
        "apiHost": "events.shop.example:8443/v1",
        "protocol": "http",
    }
    assert settings["metrics"] == {"sampleRate": 0}
    missing = await request(gateway_app, "GET", "/v1/projects/nope/settings")
    assert missing.status_code == 404
    assert (await missing.get_json())["code"] == "unknown_write_key"


async def test_settings_use_the_configured_public_host(tmp_path: Path, registry) -> None:
    from tests.conftest import open_app

    async with open_app(tmp_path, registry, 'api_host = "events.example.com/collect/v1"\nprotocol = "https"\n') as app:
        settings = await (await request(app, "GET", f"/v1/projects/{WRITE_KEY}/settings")).get_json()
    assert settings["integrations"]["Segment.io"]["apiHost"] == "events.example.com/collect/v1"
    assert settings["integrations"]["Segment.io"]["protocol"] == "https"


async def test_bundle_is_served_with_the_key_an_etag_and_caching(gateway_app: App) -> None:
    folder = gateway_app.config.data_dir / "assets" / "analytics-next"
    folder.mkdir(parents=True)
    (folder / "standalone.js").write_text('window.analyticsWriteKey="__WRITE_KEY__";')
    (folder / "queryString.bundle.abc.js").write_text("/* chunk */")
    path = f"/analytics.js/v1/{WRITE_KEY}/analytics.min.js"
    response = await request(gateway_app, "GET", path)
    assert response.status_code == 200
    assert await response.get_data() == f'window.analyticsWriteKey="{WRITE_KEY}";'.encode()
    assert response.headers["Content-Type"].startswith("application/javascript")
    assert "max-age" in response.headers["Cache-Control"]
    etag = response.headers["ETag"]
    again = await request(gateway_app, "GET", path, headers={"If-None-Match": etag})
    assert again.status_code == 304
    chunk = await request(gateway_app, "GET", "/analytics-next/bundles/queryString.bundle.abc.js")
    assert await chunk.get_data() == b"/* chunk */"
    for bad in ("../log.sqlite3", "..%2Flog.sqlite3", ".hidden.js", "x.map"):
        assert (await request(gateway_app, "GET", f"/analytics-next/bundles/{bad}")).status_code == 404
    assert (await request(gateway_app, "GET", "/analytics.js/v1/nope/analytics.min.js")).status_code == 404


async def test_bundle_not_installed_says_how_to_install_it(gateway_app: App) -> None:
    response = await request(gateway_app, "GET", f"/analytics.js/v1/{WRITE_KEY}/analytics.min.js")
    assert response.status_code == 404
    assert "gateway_source_tracking_api.analytics_js" in (await response.get_json())["message"]


# -- pixel --------------------------------------------------------------------------------------


def b64(payload: dict[str, Any], *, urlsafe: bool, padded: bool) -> str:
    raw = json.dumps(payload).encode()
    text = (base64.urlsafe_b64encode(raw) if urlsafe else base64.b64encode(raw)).decode()
    return text if padded else text.rstrip("=")


@pytest.mark.parametrize(
    "properties",
    [
        '{"s":"\\ud800"}',  # a lone surrogate
        '{"n":' + "9" * 5000 + "}",
        '{"n":NaN}',
        "[" * 3000 + "1" + "]" * 3000,
    ],
)
async def test_pixel_data_the_api_refuses_is_a_gif_and_nothing_stored(gateway_app: App, properties: str) -> None:
    # The pixel decoded with the stdlib's json, which takes these; the store then failed (a 503
    # in JSON, not a GIF).
    data = f'{{"writeKey":"{WRITE_KEY}","userId":"u","event":"e","properties":{properties}}}'
    encoded = quote(base64.b64encode(data.encode()).decode(), safe="")
    response = await request(gateway_app, "GET", f"/v1/pixel/track?data={encoded}")
    assert (response.status_code, await response.get_data()) == (200, GIF)
    deep = "a." * 5000 + "b=1"
    dotted = await request(gateway_app, "GET", f"/v1/pixel/track?writeKey={WRITE_KEY}&event=e&userId=u&{deep}")
    assert (dotted.status_code, await dotted.get_data()) == (200, GIF)
    assert (await stored(gateway_app)) == []


@pytest.mark.parametrize(("urlsafe", "padded"), [(False, True), (True, True), (True, False), (False, False)])
async def test_pixel_accepts_every_base64_form(gateway_app: App, urlsafe: bool, padded: bool) -> None:
    payload = {"writeKey": WRITE_KEY, "userId": "u", "event": "Email Opened", "properties": {"subject": "Hi ÿ?>"}}
    response = await request(
        gateway_app, "GET", f"/v1/pixel/track?data={quote(b64(payload, urlsafe=urlsafe, padded=padded), safe='')}"
    )
    assert response.status_code == 200
    assert await response.get_data() == GIF
    assert response.headers["Content-Type"] == "image/gif"
    assert "no-store" in response.headers["Cache-Control"]
    [message] = await stored(gateway_app)
    assert (message["type"], message["event"], message["properties"]) == (
        "track",
        "Email Opened",
        {"subject": "Hi ÿ?>"},
    )
    assert "writeKey" not in message


async def test_pixel_standard_base64_with_unescaped_plus(gateway_app: App) -> None:
    # A "+" left unescaped in a query string arrives as a space; it must still decode.
    payload = {"writeKey": WRITE_KEY, "userId": "u", "event": "e", "properties": {"x": "~~~>>>"}}
    data = base64.b64encode(json.dumps(payload).encode()).decode()
    assert "+" in data
    await request(gateway_app, "GET", f"/v1/pixel/track?data={data}")
    assert (await stored(gateway_app))[0]["properties"] == {"x": "~~~>>>"}


async def test_pixel_dotted_form(gateway_app: App) -> None:
    await request(
        gateway_app,
        "GET",
        f"/v1/pixel/page?writeKey={WRITE_KEY}&userId=u&name=Home&properties.subject=Hello+there&context.campaign.name=nov",
    )
    [message] = await stored(gateway_app)
    assert message["type"] == "page" and message["name"] == "Home"
    assert message["properties"] == {"subject": "Hello there"}
    assert message["context"]["campaign"] == {"name": "nov"}


@pytest.mark.parametrize(
    "query",
    [
        "data=!!!",
        "data=" + base64.b64encode(b"[1]").decode(),
        "data=" + base64.b64encode(b"{nope").decode(),
        f"writeKey={WRITE_KEY}&event=e",
        "writeKey=wrong&userId=u&event=e",
        f"writeKey={WRITE_KEY}&a=1&a.b=2",
        "",
    ],
)
async def test_bad_pixels_still_get_the_gif_and_store_nothing(gateway_app: App, query: str) -> None:
    response = await request(gateway_app, "GET", f"/v1/pixel/track?{query}")
    assert response.status_code == 200
    assert await response.get_data() == GIF
    assert (await stored(gateway_app)) == []
    rejected = gateway_app.hub.metrics.rejected.collect()[0].samples
    assert sum(sample.value for sample in rejected if sample.name.endswith("_total")) == 1


# -- querystring --------------------------------------------------------------------------------


def test_querystring_semantics_match_analytics_js() -> None:
    # The example of segment-api.md §4, plus repeats (last wins) and undecoded names.
    params = raw_params(
        b"ajs_uid=123&ajs_event=Clicked%20Email&ajs_aid=abc&ajs_prop_emailCampaign=First+Touch"
        b"&ajs_trait_name=Karl+Jr.&ajs_uid=456&ajs_prop_a%20b=%zz&utm_source=x"
    )
    assert querystring_messages(params) == [
        ("identify", {"anonymousId": "abc", "userId": "456", "traits": {"name": "Karl Jr."}}),
        (
            "track",
            {
                "anonymousId": "abc",
                "userId": "456",
                "event": "Clicked Email",
                "properties": {"emailCampaign": "First Touch", "a%20b": "%zz"},
            },
        ),
    ]
    assert querystring_messages(raw_params(b"ajs_uid=&ajs_event=&ajs_aid=abc")) == []


async def test_qs_endpoint_stores_identify_then_track(gateway_app: App) -> None:
    response = await request(
        gateway_app,
        "GET",
        f"/v1/qs?writeKey={WRITE_KEY}&ajs_event=Signed+Up&ajs_uid=u1&ajs_trait_plan=pro&ajs_prop_n=1",
    )
    assert await response.get_data() == GIF
    assert [(m["type"], m["userId"]) for m in (await stored(gateway_app))] == [("identify", "u1"), ("track", "u1")]
    assert (await stored(gateway_app))[1]["properties"] == {"n": "1"}
    beacon = await request(gateway_app, "POST", f"/v1/qs?writeKey={WRITE_KEY}&ajs_aid=a9&ajs_event=Beacon")
    assert beacon.status_code == 200
    assert (await stored(gateway_app))[-1]["anonymousId"] == "a9"


async def test_qs_js_is_served(gateway_app: App) -> None:
    response = await request(gateway_app, "GET", f"/v1/qs.js?writeKey={WRITE_KEY}")
    assert response.headers["Content-Type"].startswith("application/javascript")
    assert b"sendBeacon" in await response.get_data()


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://shop.example/landing?x=1", True),
        ("http://blog.example.org/", True),
        ("https://example.org", True),
        ("https://evil.example/", False),
        ("//evil.example/", False),
        ("javascript:alert(1)", False),
        ("https://shop.example@evil.example/", False),
        ("https://evil.example\\@shop.example/", False),
        ("https://evil.example%2F@shop.example/", False),
        ("https://shop.example.evil.example/", False),
        ("https://evilexample.org/", False),
        ("https:/shop.example/", False),
        (" https://shop.example/", False),
        ("https://shop.example/\r\nSet-Cookie:x", False),
        ("", False),
        ("https://shop.example\uff0f@evil.example", False),  # NFKC trick: urlsplit raises
        ("https://[shop.example/", False),
        ("https://shop.example:evil.example/", False),
        ("https://shop.example:99999/", False),
        ("https://evil.example%23.example.org/", False),
        ("https://evil.example%2F.example.org/", False),
    ],
)
def test_redirect_allowlist(url: str, allowed: bool) -> None:
    allowlist = ["shop.example", ".example.org"]
    if allowed:
        assert redirect_target(url, allowlist) == url
    else:
        with pytest.raises(Exception, match=r"url|redirect"):
            redirect_target(url, allowlist)


async def test_click_redirect_records_and_redirects_only_to_allowed_hosts(gateway_app: App) -> None:
    target = "https://shop.example/sale"
    response = await request(
        gateway_app, "GET", f"/v1/qs/r?writeKey={WRITE_KEY}&ajs_uid=u&ajs_event=Clicked&url={quote(target, safe='')}"
    )
    assert response.status_code == 302
    assert response.headers["Location"] == target
    assert [m["type"] for m in (await stored(gateway_app))] == ["identify", "track"]
    refused = await request(
        gateway_app,
        "GET",
        f"/v1/qs/r?writeKey={WRITE_KEY}&ajs_uid=u&ajs_event=Clicked&url={quote('//evil.example', safe='')}",
    )
    assert refused.status_code == 400
    assert "Location" not in refused.headers
    assert len(await stored(gateway_app)) == 2


# -- rate limits --------------------------------------------------------------------------------


async def test_rate_limit_answers_429_with_retry_after(tmp_path: Path, registry) -> None:
    from tests.conftest import open_app

    async with open_app(tmp_path, registry, "rate_limit_events_per_sec = 2\nrate_limit_burst = 3\n") as app:
        statuses = []
        for i in range(5):
            response = await request(
                app,
                "POST",
                "/v1/track",
                data=json.dumps({"userId": "u", "event": f"e{i}"}).encode(),
                headers={**AUTH, "Origin": "http://a.example"},
            )
            statuses.append(response.status_code)
        assert statuses[:3] == [200, 200, 200]
        assert 429 in statuses[3:]
        assert response.headers["Retry-After"] == "1"
        assert response.headers["Access-Control-Allow-Origin"] == "http://a.example"
        assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]
        assert len(await stored(app)) == statuses.count(200)


async def test_a_batch_larger_than_the_burst_passes_but_leaves_the_bucket_in_debt(tmp_path: Path, registry) -> None:
    # A batch took no more than the burst from the bucket: 2,500-event batches passed 1,100
    # events/s against a limit of 5 (an adversarial test).
    from tests.conftest import open_app

    async with open_app(tmp_path, registry, "rate_limit_events_per_sec = 5\nrate_limit_burst = 10\n") as app:
        batch = {"batch": [{"type": "track", "userId": "u", "event": f"e{i}"} for i in range(100)]}

        async def send() -> Any:
            return await request(app, "POST", "/v1/batch", data=json.dumps(batch).encode(), headers=AUTH)

        assert (await send()).status_code == 200  # a full bucket lets a big batch through...
        refused = await send()  # ...and the 90 events over the burst are owed: 18 s at 5/s
        assert refused.status_code == 429 and 18 <= int(refused.headers["Retry-After"]) <= 20
        assert len(await stored(app)) == 100


async def test_a_rate_limited_querystring_request_counts_every_call_it_drops(tmp_path: Path, registry) -> None:
    # An <img> is never sent again: what the rate limit refuses is lost, and the rejected
    # counter is of messages, so a request with an identify and a track that is refused counts two.
    from tests.conftest import open_app

    async with open_app(tmp_path, registry, "rate_limit_events_per_sec = 0.01\nrate_limit_burst = 2\n") as app:
        for _ in range(2):
            response = await request(app, "GET", f"/v1/qs?writeKey={WRITE_KEY}&ajs_uid=u&ajs_event=Opened")
            assert (response.status_code, await response.get_data()) == (200, GIF)
        assert [m["type"] for m in await stored(app)] == ["identify", "track"]
        metrics = app.hub.metrics.render().decode()
        assert 'gateway_messages_rejected_total{code="rate_limited"} 2.0' in metrics
