"""Color providers: the built-in one, and the HTTP one against a real local vendor server."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator, Sequence
from ipaddress import ip_network
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cartag.errors import ConfigError
from cartag.models.classifier import Prediction, make_prediction
from cartag.models.color_providers import (
    BuiltinColorProvider,
    ColorAnswer,
    ColorProvider,
    ColorQuery,
    HttpColorConfig,
    HttpColorProvider,
    LabelMap,
    build_color_provider,
    json_path,
)
from cartag.net.guard import Resolver, StaticResolver
from cartag.settings import Settings
from cartag.vocab import COLORS
from tests.support.color_vendor import COLOR_PATH, CONFIDENCE_PATH, ColorVendor
from tests.support.http_server import ImageServer

LOOPBACK = [ip_network("127.0.0.0/8")]
SECRET = "s3cret-key-value"


def _prediction(image_type: str = "Dealer", color: str = "Red") -> Prediction:
    types = {"Dealer": [0.8, 0.1, 0.1], "Stock": [0.1, 0.8, 0.1], "Placeholder": [0.1, 0.1, 0.8]}
    colors = np.full(len(COLORS), 0.01)
    colors[COLORS.index(color)] = 1.0
    return make_prediction(np.array(types[image_type]), colors)


DEALER = _prediction()
PLACEHOLDER = _prediction("Placeholder")


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer() as srv:
        yield srv


@pytest.fixture
def vendor(server: ImageServer) -> ColorVendor:
    return ColorVendor(server)


def _settings(url: str, **overrides: Any) -> Settings:
    """The HTTP provider at ``url``: loopback allowed, one quick retry, vendor paths."""
    values: dict[str, Any] = {
        "allowed_networks": LOOPBACK,
        "retries": 1,
        "retry_backoff_s": 0.0,
        "color_provider": "http",
        "color_http_url": url,
        "color_http_timeout_s": 2.0,
        "color_http_color_path": COLOR_PATH,
        "color_http_confidence_path": CONFIDENCE_PATH,
    }
    return Settings(**(values | overrides))


def _ask(
    settings: Settings, queries: Sequence[ColorQuery], resolver: Resolver | None = None
) -> list[ColorAnswer]:
    async def go() -> list[ColorAnswer]:
        provider = build_color_provider(settings, resolver=resolver)
        try:
            return await provider.colors(queries)
        finally:
            await provider.aclose()

    return asyncio.run(go())


def _queries(*urls: str) -> list[ColorQuery]:
    return [ColorQuery(url, None, DEALER) for url in urls]


# --- the built-in provider ------------------------------------------------------------


def test_builtin_provider_passes_the_models_color_through() -> None:
    blue = _prediction(color="Blue")
    answers = asyncio.run(
        BuiltinColorProvider().colors(
            [ColorQuery("u1", None, blue), ColorQuery("u2", None, PLACEHOLDER)]
        )
    )
    assert answers[0] == ColorAnswer("Blue", blue.color_scores)
    # A Placeholder has no color, and that is no failure; the scores are kept.
    assert answers[1] == ColorAnswer(None, PLACEHOLDER.color_scores, None)


def test_build_defaults_to_the_builtin_provider() -> None:
    provider = build_color_provider(Settings())
    assert isinstance(provider, BuiltinColorProvider) and provider.name == "builtin"


# --- mapping and paths ---------------------------------------------------------------


def test_label_map_is_case_insensitive_and_falls_back_to_the_vocabulary() -> None:
    labels = LabelMap({"Navy ": "blue", "ANTHRACITE": "gray"})
    assert labels.lookup("navy") == "Blue"
    assert labels.lookup(" anthracite") == "Grey"
    assert labels.lookup("SILVER") == "Grey"  # vocab alias
    assert labels.lookup("white") == "White"
    assert labels.lookup("champagne") is None
    assert labels.lookup("unknown") is None  # a null marker is no color either


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("data.color.name", "Red"),
        ("results.1.label", "blue"),
        ("results.2.label", None),
        ("results.x.label", None),
        ("data.missing", None),
        ("data.color.name.deeper", None),
    ],
)
def test_json_path(path: str, expected: object) -> None:
    document = {
        "data": {"color": {"name": "Red"}},
        "results": [{"label": "red"}, {"label": "blue"}],
    }
    assert json_path(document, path) == expected


def test_vendor_labels_are_mapped_onto_cartag_colors(vendor: ColorVendor) -> None:
    urls = [f"http://cdn.example/{i}.jpg" for i in range(5)]
    vendor.labels = dict(zip(urls, ["SILVER", "Navy", "gray", "red", "Champagne"], strict=True))
    settings = _settings(vendor.url, color_http_label_map='{"navy": "Blue"}')
    answers = _ask(settings, _queries(*urls))
    assert [a.color for a in answers] == ["Grey", "Blue", "Grey", "Red", None]
    assert answers[0].scores == {"Grey": pytest.approx(0.87)}
    assert [a.reason for a in answers] == [None] * 4 + ["color_unmapped:Champagne"]
    # The default body names the image URL.
    bodies = [json.loads(r.body) for r in vendor.requests()]
    assert sorted(b["image_url"] for b in bodies) == sorted(urls)
    assert all(r.headers["content-type"] == "application/json" for r in vendor.requests())


def test_body_template_and_list_paths(server: ImageServer) -> None:
    def respond(request: Any) -> tuple[int, bytes, dict[str, str]]:
        received.append(json.loads(request.body))
        return 200, b'{"results": [{"label": "purple", "p": 0.5}]}', {}

    received: list[Any] = []
    server.add_responder("/classify", respond)
    settings = _settings(
        server.url("/classify"),
        color_http_body_template='{"input": {"source": "{url}"}, "tags": ["{url}", 1]}',
        color_http_color_path="results.0.label",
        color_http_confidence_path="results.0.p",
    )
    # A quote in the URL must not break the JSON body.
    url = 'http://cdn.example/a"b.jpg'
    answers = _ask(settings, _queries(url))
    assert answers == [ColorAnswer("Purple", {"Purple": 0.5})]
    assert received == [{"input": {"source": url}, "tags": [url, 1]}]


def test_missing_confidence_leaves_scores_empty(vendor: ColorVendor) -> None:
    settings = _settings(vendor.url, color_http_confidence_path="data.nothing")
    assert _ask(settings, _queries("http://cdn.example/1.jpg")) == [ColorAnswer("Grey")]


# --- requests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "name", "value"),
    [
        (f"X-Api-Key: {SECRET}", "x-api-key", SECRET),
        (f"Authorization: Bearer {SECRET}", "authorization", f"Bearer {SECRET}"),
    ],
)
def test_auth_header_is_sent(vendor: ColorVendor, header: str, name: str, value: str) -> None:
    settings = _settings(vendor.url, color_http_auth_header=header)
    assert _ask(settings, _queries("http://cdn.example/1.jpg"))[0].color == "Grey"
    assert vendor.requests()[0].headers[name] == value


def test_auth_header_never_shows_in_reprs_or_logs(
    vendor: ColorVendor, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(vendor.url, color_http_auth_header=f"X-Api-Key: {SECRET}")
    assert SECRET not in repr(settings) and SECRET not in repr(
        HttpColorConfig.from_settings(settings)
    )
    vendor.status = 401
    with caplog.at_level(logging.DEBUG):
        answers = _ask(settings, _queries("http://cdn.example/1.jpg"))
    assert answers[0].reason == "color_provider_http_401"
    assert "color_provider_http_401" in caplog.text and SECRET not in caplog.text


def test_bytes_mode_posts_the_image_as_jpeg(vendor: ColorVendor) -> None:
    vendor.default = "burgundy"
    settings = _settings(vendor.url, color_http_mode="bytes")
    image = Image.new("RGB", (64, 48), (120, 10, 30))
    answers = _ask(settings, [ColorQuery("http://cdn.example/1.jpg", image, DEALER)])
    assert answers[0].color == "Burgundy"
    (request,) = vendor.requests()
    assert request.headers["content-type"] == "image/jpeg"
    sent = Image.open(io.BytesIO(request.body))
    assert sent.format == "JPEG" and sent.size == (64, 48)


def test_bytes_mode_without_an_image(vendor: ColorVendor) -> None:
    settings = _settings(vendor.url, color_http_mode="bytes")
    answers = _ask(settings, _queries("http://cdn.example/1.jpg"))
    assert answers == [ColorAnswer(None, reason="color_provider_no_image")]
    assert vendor.requests() == []


def test_placeholders_are_not_sent(vendor: ColorVendor) -> None:
    queries = [
        ColorQuery("http://cdn.example/p.png", None, PLACEHOLDER),
        ColorQuery("http://cdn.example/car.jpg", None, DEALER),
    ]
    answers = _ask(_settings(vendor.url), queries)
    assert answers == [ColorAnswer(None), ColorAnswer("Grey", {"Grey": pytest.approx(0.87)})]
    assert vendor.image_urls() == ["http://cdn.example/car.jpg"]


def test_concurrency_is_bounded(vendor: ColorVendor, server: ImageServer) -> None:
    vendor.delay_s = 0.05
    urls = [f"http://cdn.example/{i}.jpg" for i in range(12)]
    answers = _ask(_settings(vendor.url, color_http_concurrency=3), _queries(*urls))
    assert all(a.color == "Grey" for a in answers)
    assert server.max_concurrent <= 3


# --- failures ------------------------------------------------------------------------


def test_timeout_is_retried_then_reported(vendor: ColorVendor) -> None:
    vendor.delay_s = 1.0
    settings = _settings(vendor.url, color_http_timeout_s=0.2)
    answers = _ask(settings, _queries("http://cdn.example/1.jpg"))
    assert answers == [ColorAnswer(None, reason="color_provider_timeout")]
    assert len(vendor.requests()) == 2  # retries=1


def test_5xx_is_retried_then_reported(vendor: ColorVendor, server: ImageServer) -> None:
    server.add_status(vendor.path, 503)
    answers = _ask(_settings(vendor.url), _queries("http://cdn.example/1.jpg"))
    assert answers == [ColorAnswer(None, reason="color_provider_http_503")]
    assert len(vendor.requests()) == 2


def test_one_5xx_is_retried_successfully(vendor: ColorVendor, server: ImageServer) -> None:
    server.add_status(vendor.path, 502, times=1)
    answers = _ask(_settings(vendor.url), _queries("http://cdn.example/1.jpg"))
    assert answers[0].color == "Grey"
    assert len(vendor.requests()) == 2


def test_4xx_is_not_retried(vendor: ColorVendor) -> None:
    vendor.status = 422
    answers = _ask(_settings(vendor.url), _queries("http://cdn.example/1.jpg"))
    assert answers == [ColorAnswer(None, reason="color_provider_http_422")]
    assert len(vendor.requests()) == 1


@pytest.mark.parametrize(
    "raw",
    [
        b"<html>oops</html>",
        b'{"data": {"color": {}}}',
        b'{"data": {"color": {"name": 7}}}',
        b"\xff\xfe",
    ],
)
def test_bad_response(vendor: ColorVendor, raw: bytes) -> None:
    vendor.raw = raw
    answers = _ask(_settings(vendor.url), _queries("http://cdn.example/1.jpg"))
    assert answers == [ColorAnswer(None, reason="color_provider_bad_response")]
    assert len(vendor.requests()) == 1  # not retried


def test_redirects_are_not_followed(vendor: ColorVendor, server: ImageServer) -> None:
    server.add_redirect("/old", vendor.url)
    answers = _ask(_settings(server.url("/old")), _queries("http://cdn.example/1.jpg"))
    assert answers == [ColorAnswer(None, reason="color_provider_http_302")]
    assert vendor.requests() == []


def test_vendor_down(vendor: ColorVendor, server: ImageServer) -> None:
    url = vendor.url
    server.stop()
    answers = _ask(_settings(url), _queries("http://cdn.example/1.jpg", "http://cdn.example/2.jpg"))
    assert {a.reason for a in answers} == {"color_provider_connection_error"}
    assert all(a.color is None for a in answers)


def test_a_failing_vendor_trips_the_breaker(vendor: ColorVendor) -> None:
    vendor.status = 500
    urls = [f"http://cdn.example/{i}.jpg" for i in range(20)]
    settings = _settings(vendor.url, retries=0, color_http_concurrency=1)
    answers = _ask(settings, _queries(*urls))
    assert [a.reason for a in answers] == ["color_provider_http_500"] * 20
    assert len(vendor.requests()) == 5  # then the rest fail fast


def test_blocked_vendor_address_without_allow_list(
    vendor: ColorVendor, server: ImageServer
) -> None:
    resolver = StaticResolver({"vendor.test": ["127.0.0.1"]})
    url = server.url(vendor.path, host="vendor.test")
    answers = _ask(
        _settings(url, allowed_networks=[]), _queries("http://cdn.example/1.jpg"), resolver
    )
    assert answers == [ColorAnswer(None, reason="color_provider_blocked_address")]
    assert vendor.requests() == []
    # Allow-listed, the name is pinned to the checked address and sent as Host.
    answers = _ask(_settings(url), _queries("http://cdn.example/1.jpg"), resolver)
    assert answers[0].color == "Grey"
    assert vendor.requests()[0].headers["host"] == f"vendor.test:{server.port}"


def test_blocked_vendor_ip_is_a_config_error(vendor: ColorVendor) -> None:
    with pytest.raises(ConfigError, match="CARTAG_ALLOWED_NETWORKS"):
        build_color_provider(_settings(vendor.url, allowed_networks=[]))


def test_provider_contract_is_an_abstract_base() -> None:
    with pytest.raises(TypeError):
        ColorProvider()  # type: ignore[abstract]


# --- configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"color_http_url": None}, "needs CARTAG_COLOR_HTTP_URL"),
        ({"color_http_url": "ftp://vendor.example/x"}, "CARTAG_COLOR_HTTP_URL"),
        ({"color_http_label_map": "{navy: Blue}"}, "CARTAG_COLOR_HTTP_LABEL_MAP is not JSON"),
        ({"color_http_label_map": '["Blue"]'}, "must map labels to color names"),
        ({"color_http_label_map": '{"navy": "Teal"}'}, "unknown color 'Teal'"),
        ({"color_http_label_map": '{"tbd": "n/a"}'}, "which is no color; expected one of"),
        ({"color_http_auth_header": "just-a-token"}, "'Name: value'"),
        ({"color_http_auth_header": "X-Api-Key:"}, "'Name: value'"),
        ({"color_http_auth_header": "Bad Name: v"}, "'Name: value'"),
        ({"color_http_auth_header": "X-Api-Key: a\r\nX-Evil: 1"}, "'Name: value'"),
        ({"color_http_body_template": '{"image": "x"}'}, "must contain {url}"),
        ({"color_http_body_template": "{url}"}, "is not JSON"),
        ({"color_http_color_path": "data..name"}, "CARTAG_COLOR_HTTP_COLOR_PATH"),
        ({"color_http_confidence_path": ""}, "CARTAG_COLOR_HTTP_CONFIDENCE_PATH"),
    ],
)
def test_invalid_configuration(overrides: dict[str, Any], message: str) -> None:
    settings = _settings("http://127.0.0.1:9/color", **overrides)
    with pytest.raises(ConfigError, match=message) as caught:
        build_color_provider(settings)
    assert "a\r\n" not in caught.value.message  # the header value is never repeated


def test_bytes_mode_ignores_the_body_template() -> None:
    settings = _settings(
        "http://127.0.0.1:9/color", color_http_mode="bytes", color_http_body_template="x"
    )
    provider = build_color_provider(settings)
    assert isinstance(provider, HttpColorProvider) and provider.name == "http"
    asyncio.run(provider.aclose())
