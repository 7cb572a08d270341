"""gateway.HttpDelivery against a loopback server: answers classified into the core's retryable
and permanent failures, Retry-After read, samples redacted; and the mapping helpers."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from urllib.parse import quote_plus, urlencode

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import (
    DeliveryError,
    HttpDelivery,
    check_http_url,
    chunk_encoded,
    epoch_ms,
    first_time_ms,
    integration_options,
    number,
    parse_retry_after,
    products_of,
    stable_uuid,
)
from gateway.kit.http_delivery import _form_quote, _urlencode_form
from gateway.testing import Answer, ReceivedRequest, open_loopback_server

SECRET = "sk-very-secret-key"


def echo(request: ReceivedRequest) -> Answer:
    return Answer(200, {"got": request.json()})


async def test_posts_json_and_returns_every_answer() -> None:
    async with open_loopback_server(echo) as server:
        http = HttpDelivery(headers={"User-Agent": "t"}, secrets=[SECRET])
        try:
            response = await http.post(f"{server.url}/e", json={"a": 1}, params={"k": "v"}, gzip=True)
            assert response.json() == {"got": {"a": 1}}
            [request] = server.requests
            assert (request.path, request.query, request.headers["content-encoding"]) == ("/e", {"k": "v"}, "gzip")
            assert request.raw_size == len(gzip.compress(b'{"a":1}', compresslevel=5))
            server.script(Answer(400, {"error": "bad"}))
            response = await http.post(f"{server.url}/e", form={"data": "x"})
            assert response.status_code == 400
            assert server.requests[1].form() == {"data": "x"}
        finally:
            await http.aclose()


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(429, True), (500, True), (503, True), (408, True), (400, False), (401, False), (403, False), (501, False)],
)
async def test_status_classification_with_redacted_sample(status: int, retryable: bool) -> None:
    async with open_loopback_server(echo) as server:
        server.script(Answer(status, f"refused key {SECRET}", {"Retry-After": "7"}))
        http = HttpDelivery(headers={"Authorization": f"Bearer {SECRET}"}, secrets=[SECRET])
        try:
            response = await http.post(f"{server.url}/x?api_key={SECRET}", json={"key": SECRET})
            with pytest.raises(DeliveryError) as raised:
                http.raise_for_status(response)
        finally:
            await http.aclose()
    error = raised.value
    assert (error.retryable, error.kind) == (retryable, f"http_{status}")
    assert error.retry_after == (7 if retryable else None)
    assert SECRET not in str(error)
    assert error.exchange is not None
    assert SECRET not in error.exchange.request + error.exchange.response
    assert "authorization: ***" in error.exchange.request.lower()
    assert error.exchange.response.startswith(str(status))


async def test_no_answer_is_a_retryable_connection_error() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    http = HttpDelivery(secrets=[SECRET])
    try:
        with pytest.raises(DeliveryError) as raised:
            await http.post(f"http://127.0.0.1:{port}/?key={SECRET}", json={})
    finally:
        await http.aclose()
    assert (raised.value.retryable, raised.value.kind) == (True, "connection")
    assert SECRET not in str(raised.value)


async def test_a_stalled_request_is_left_to_the_callers_timeout() -> None:
    async with open_loopback_server(echo) as server:
        server.stall()
        http = HttpDelivery()
        try:
            with trio.move_on_after(0.5) as scope:
                await http.post(server.url, json={})
            assert scope.cancelled_caught
            assert len(server.requests) == 1
        finally:
            await http.aclose()


def test_form_encoding_is_quote_plus() -> None:
    printable = "".join(map(chr, range(0x20, 0x7F)))
    texts = [
        "",
        "x",
        printable,
        printable[::-1],
        '[{"$token":"t","$distinct_id":"u 1","$set":{"$email":"a+b@example.com","pct":"100%","q":"a=b&c"}}]',
        "%2B+ %",
        "tab\there",
        "é ü 🎉 % +",
        "\x00\x7f\x80",
    ]
    for text in texts:
        assert _form_quote(text) == quote_plus(text), text
    assert _urlencode_form({"data": printable, "k y": "v"}) == urlencode({"data": printable, "k y": "v"})


@settings(max_examples=500, deadline=None)
@given(st.text(st.characters(exclude_categories=["Cs"])) | st.text(st.characters(max_codepoint=0x7F)))
def test_form_encoding_is_quote_plus_for_any_text(text: str) -> None:
    assert _form_quote(text) == quote_plus(text)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@settings(max_examples=500, deadline=None)
@given(
    st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30)),
    st.integers(0, 9),
    st.sampled_from(["Z", "", "+00:00", "-05:30", "+14:00", "z"]),
)
def test_epoch_ms_is_the_floor_of_fromisoformat_on_both_paths(moment: datetime, digits: int, zone: str) -> None:
    # The gateway's own format ("...T10:11:12.123Z") is read from a memo of seconds the second
    # time: both reads agree with fromisoformat, floored to the millisecond, for any time,
    # fraction of 0-9 digits and offset (and None where fromisoformat refuses the text).
    fraction = f".{moment.microsecond:06d}789"[: digits + 1] if digits else ""
    text = f"{moment.year:04d}{moment.strftime('-%m-%dT%H:%M:%S')}{fraction}{zone}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        expected = None
    else:
        aware = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
        expected = (aware - _EPOCH) // timedelta(milliseconds=1)
    assert epoch_ms(text) == epoch_ms(text) == expected


def test_retry_after_forms() -> None:
    assert parse_retry_after("12") == 12
    assert parse_retry_after("100000") == 300  # capped
    assert parse_retry_after(None) is None
    assert parse_retry_after("garbage") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0


def test_mapping_helpers() -> None:
    assert epoch_ms("2024-01-02T03:04:05.678Z") == 1704164645678
    assert epoch_ms("not a time") is None
    # Whole milliseconds, not through a float (int(timestamp() * 1000) gave ...172 here), the
    # same whether the gateway wrote the time (its second kept from call to call) or not.
    for _ in range(2):
        assert epoch_ms("2039-08-16T08:49:33.173Z") == 2197097373173
        assert epoch_ms("2039-08-16T08:49:33.173000+00:00") == 2197097373173
    assert epoch_ms("2026-12-07T12:00:00.000+02:00") == epoch_ms("2026-12-07T10:00:00") == 1796637600000
    assert epoch_ms("1969-12-31T23:59:59.999Z") == -1
    # Shaped like the gateway's times, but not times: None on either path.
    odd = ("2026-02-30T10:00:00.000Z", "2026-12-07T10:00:00.00xZ", "2026-12-07T10:00:00.000z")
    assert [epoch_ms(t) for t in odd] == [None, None, None]
    assert epoch_ms("\uff12\uff10\uff12\uff16-12-07T10:00:00.000Z") is None  # fullwidth digits
    assert first_time_ms(7, None, 12345, "", "soon", "1970-01-01T00:00:00.001Z") == 1
    assert first_time_ms(7, None, "later") == 7
    assert stable_uuid("m-1") == stable_uuid("m-1") != stable_uuid("m-1", 1)
    assert len(stable_uuid("m-1")) == 36
    message = {"integrations": {"All": True, "Actions Amplitude": {"session_id": 5}}}
    assert integration_options(message, "Amplitude", "Actions Amplitude") == {"session_id": 5}
    assert integration_options({}, "Amplitude") == {}
    assert products_of("Product Viewed", {"product_id": "p"}) == [{"product_id": "p"}]
    assert products_of("Order Completed", {"products": [{"product_id": "p"}, "junk"]}) == [{"product_id": "p"}]
    assert (number("12"), number("1.5"), number(True), number("x")) == (12, 1.5, None, None)


def test_a_number_is_finite() -> None:
    # "NaN", "inf" and a string past a float's range are floats to float(), not numbers a vendor
    # takes: JSON has no such number (msgspec writes null, which GA4 drops the event for), and
    # Amplitude's int() of a session id or a rounded quantity raised on them.
    assert [number(text) for text in ("nan", "NaN", "inf", "-Infinity", "1e999", "-1e400")] == [None] * 6
    assert [number(value) for value in (float("nan"), float("inf"), -float("inf"))] == [None] * 3
    assert (number("1e3"), number("-0.5"), number(10**30)) == (1000.0, -0.5, 10**30)


def test_a_number_of_each_kind_whether_read_by_its_exact_type_or_not() -> None:
    # int, float and None are read by their exact type first; bools and subclasses the long way.
    class Count(int):
        pass

    class Amount(float):
        pass

    values = (7, 2.5, None, False, True, Count(3), Amount(1.5), Amount("inf"), [1], {"a": 1})
    assert [number(value) for value in values] == [7, 2.5, None, None, None, 3, 1.5, None, None, None]


def test_chunk_encoded_keeps_each_request_within_both_limits_and_every_item_once() -> None:
    items = [b'{"i":%d,"pad":"%s"}' % (i, b"x" * (i % 7) * 100) for i in range(50)]
    owners = [i // 3 for i in range(50)]  # three items per record
    chunks = chunk_encoded(items, owners, max_items=8, max_bytes=2_500)
    assert [item for chunk, _ in chunks for item in chunk] == items
    assert [owner for _, chunk_owners in chunks for owner in chunk_owners] == owners
    for chunk, chunk_owners in chunks:
        assert 1 <= len(chunk) <= 8 and len(chunk) == len(chunk_owners)
        assert len(b"[" + b",".join(chunk) + b"]") <= 2_500 - 1000 + 1
    assert chunk_encoded([], [], max_items=8, max_bytes=2_500) == []
    # What fits in one request is one chunk, to the byte of the limit.
    small = items[:7]
    limit = sum(len(item) + 1 for item in small) + 1000
    assert chunk_encoded(small, owners[:7], max_items=7, max_bytes=limit) == [(small, owners[:7])]
    assert len(chunk_encoded(small, owners[:7], max_items=7, max_bytes=limit - 1)) == 2
    assert len(chunk_encoded(small, owners[:7], max_items=6, max_bytes=limit)) == 2


@pytest.mark.parametrize("url", ["http://", "https:///v1", "ftp://example.com", "example.com/path", "http:example.com"])
def test_a_url_without_a_host_is_refused_when_the_config_is_read(url: str) -> None:
    # A hostless endpoint used to pass and fail at the first send, its error (the URL, with
    # any api_secret in its query) logged with a traceback (found by review).
    with pytest.raises(ValueError, match="must be an http:// or https:// URL with a host"):
        check_http_url("endpoint", url)


def test_an_http_url_with_a_host_or_none_is_taken() -> None:
    for url in ("http://127.0.0.1:9/x?api_secret=s", "https://www.google-analytics.com/mp/collect", None):
        check_http_url("endpoint", url)
