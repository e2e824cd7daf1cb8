"""Color providers: who names the vehicle color of a newly classified image.

The built-in model answers by default (:class:`BuiltinColorProvider`). A deployment
that keeps a vendor's color model plugs it in with ``CARTAG_COLOR_PROVIDER=http``
and the ``CARTAG_COLOR_HTTP_*`` settings (:class:`HttpColorProvider`).
:func:`build_color_provider` makes the configured one; :func:`check_color_settings`
validates the settings at startup (parsing lives in :mod:`cartag.models.color_config`).

A provider never raises for an image. When it cannot name a color, the answer has
``color=None`` and a machine-readable ``reason``:

* ``color_provider_timeout``, ``color_provider_connection_error``,
  ``color_provider_dns_error``, ``color_provider_blocked_address``: the vendor
  could not be reached (``blocked_address``: its address is not allow-listed).
* ``color_provider_http_<status>``: the vendor answered an error, e.g. ``_503``.
* ``color_provider_bad_response``: not JSON, too large, or no label at the color path.
* ``color_provider_no_image``: bytes mode, but there is no decoded image.
* ``color_unmapped:<label>``: the vendor's label is no cartag color.
* ``color_provider_error``: an unexpected failure in cartag (logged with its traceback).

A Placeholder has no vehicle, hence no color, and no reason either.
"""

from __future__ import annotations

import abc
import asyncio
import io
import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import httpx
from PIL import Image

from cartag.errors import FetchError
from cartag.models.classifier import Prediction
from cartag.models.color_config import HttpColorConfig, LabelMap, json_path
from cartag.net.guard import Resolver
from cartag.net.post import GuardedPoster
from cartag.settings import Settings

__all__ = [
    "BuiltinColorProvider",
    "ColorAnswer",
    "ColorProvider",
    "ColorQuery",
    "HttpColorConfig",
    "HttpColorProvider",
    "LabelMap",
    "build_color_provider",
    "check_color_settings",
    "json_path",
]

log = logging.getLogger(__name__)

# After this many provider failures in a row within one call, the rest of the call
# fails fast: a vendor that is down must not cost every image its full timeout.
_TRIP_AFTER: Final[int] = 5
_MAX_LABEL_IN_REASON: Final[int] = 64
_JPEG_QUALITY: Final[int] = 90


@dataclass(frozen=True)
class ColorQuery:
    """One newly classified image to name the color of.

    Attributes:
        url: The image's URL (what ``url`` mode sends to a vendor).
        image: The decoded RGB image (what ``bytes`` mode sends), if at hand.
        prediction: The built-in model's answer for it, if at hand.
    """

    url: str
    image: Image.Image | None = None
    prediction: Prediction | None = None


@dataclass(frozen=True)
class ColorAnswer:
    """A provider's answer for one image.

    Attributes:
        color: One of ``COLORS``, or None.
        scores: Scores behind ``color`` keyed by cartag color, if the provider has any.
        reason: Why ``color`` is None when that is a failure (see the module doc).
    """

    color: str | None
    scores: dict[str, float] | None = None
    reason: str | None = None


class ColorProvider(abc.ABC):
    """Names vehicle colors. Implementations are used from one event loop.

    Attributes:
        name: Short identifier, e.g. ``builtin`` or ``http``.
    """

    name: str

    @abc.abstractmethod
    async def colors(self, items: Sequence[ColorQuery]) -> list[ColorAnswer]:
        """Answer every query; failures are answers with a ``reason``, never exceptions.

        Returns:
            One answer per query, in order.
        """

    async def aclose(self) -> None:  # noqa: B027 - a provider without resources needs nothing
        """Release connections and other resources."""


class BuiltinColorProvider(ColorProvider):
    """The built-in model's color: the query's prediction, as it is."""

    name = "builtin"

    async def colors(self, items: Sequence[ColorQuery]) -> list[ColorAnswer]:
        answers = []
        for query in items:
            p = query.prediction
            if p is None:
                answers.append(ColorAnswer(None, reason="color_provider_no_prediction"))
                continue
            color = None if p.image_type == "Placeholder" else p.color
            answers.append(ColorAnswer(color, dict(p.color_scores)))
        return answers


class HttpColorProvider(ColorProvider):
    """Asks a vendor's HTTP API, one POST per image (see :class:`HttpColorConfig`).

    ``url`` mode POSTs the body template with the image URL filled in; ``bytes`` mode
    POSTs the decoded image as ``image/jpeg``. The label at ``color_path`` of the JSON
    answer is mapped through the label map; the number at ``confidence_path``, if
    any, becomes the score. Placeholders are not sent. Requests go through the SSRF
    guard of :class:`~cartag.net.post.GuardedPoster`.

    Args:
        config: The parsed settings.
        settings: The allow-list, retry policy and User-Agent.
        transport: Replaces the network (tests).
        resolver: Name resolution (tests map names with a StaticResolver).
    """

    name = "http"

    def __init__(
        self,
        config: HttpColorConfig,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self._config = config
        self._slots = asyncio.Semaphore(config.concurrency)
        self._poster = GuardedPoster(
            settings,
            timeout_s=config.timeout_s,
            max_connections=config.concurrency,
            transport=transport,
            resolver=resolver,
        )
        self._auth = dict([config.auth_header]) if config.auth_header else {}
        # Logs name the host only: some vendors put a key in the URL's query.
        self._host = httpx.URL(config.url).host

    async def aclose(self) -> None:
        await self._poster.aclose()

    async def colors(self, items: Sequence[ColorQuery]) -> list[ColorAnswer]:
        breaker = _Breaker()
        answers = list(await asyncio.gather(*(self._color(q, breaker) for q in items)))
        failures = Counter(a.reason for a in answers if a.reason is not None)
        if failures:
            log.warning(
                "color vendor %s: %d of %d images without color (%s)",
                self._host,
                failures.total(),
                len(answers),
                ", ".join(f"{reason}: {n}" for reason, n in failures.most_common(5)),
            )
        return answers

    async def _color(self, query: ColorQuery, breaker: _Breaker) -> ColorAnswer:
        if query.prediction is not None and query.prediction.image_type == "Placeholder":
            return ColorAnswer(None)
        async with self._slots:
            # Checked once a slot is free: queued queries of a dead vendor fail fast.
            if breaker.reason is not None:
                return ColorAnswer(None, reason=breaker.reason)
            try:
                answer = await self._ask(query)
            except Exception:  # a bug here must cost one color, not the classify batch
                log.exception("color vendor %s: unexpected failure", self._host)
                answer = ColorAnswer(None, reason="color_provider_error")
        breaker.record(answer)
        return answer

    async def _ask(self, query: ColorQuery) -> ColorAnswer:
        if self._config.mode == "bytes":
            if query.image is None:
                return ColorAnswer(None, reason="color_provider_no_image")
            content = await asyncio.to_thread(_jpeg, query.image)
            headers = {"Content-Type": "image/jpeg"}
        else:
            content = json.dumps(_render(self._config.body_template, query.url)).encode()
            headers = {"Content-Type": "application/json"}
        try:
            body = await self._poster.post(self._config.url, content, headers | self._auth)
        except FetchError as exc:
            reason = "bad_response" if exc.reason == "too_large" else exc.reason
            return ColorAnswer(None, reason=f"color_provider_{reason}")
        return self._read(body)

    def _read(self, body: bytes) -> ColorAnswer:
        try:
            document = json.loads(body)
        except ValueError:  # also UnicodeDecodeError
            return ColorAnswer(None, reason="color_provider_bad_response")
        label = json_path(document, self._config.color_path)
        if not isinstance(label, str):
            return ColorAnswer(None, reason="color_provider_bad_response")
        color = self._config.label_map.lookup(label)
        if color is None:
            shown = "".join(c if c.isprintable() else "?" for c in label.strip())
            return ColorAnswer(None, reason=f"color_unmapped:{shown[:_MAX_LABEL_IN_REASON]}")
        scores = None
        if self._config.confidence_path is not None:
            value = json_path(document, self._config.confidence_path)
            # bool is an int to Python, but "true" is no confidence.
            if isinstance(value, int | float) and not isinstance(value, bool):
                if math.isfinite(value):
                    scores = {color: float(value)}
        return ColorAnswer(color, scores)


def check_color_settings(settings: Settings) -> None:
    """Validate the color-provider settings without building anything (startup check).

    Raises:
        ConfigError: A setting is missing or malformed.
    """
    if settings.color_provider == "http":
        HttpColorConfig.from_settings(settings)


def build_color_provider(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    resolver: Resolver | None = None,
) -> ColorProvider:
    """Make the provider ``settings.color_provider`` names.

    Args:
        settings: Runtime settings.
        transport: For the HTTP provider: replaces the network (tests).
        resolver: For the HTTP provider: name resolution.

    Raises:
        ConfigError: The HTTP provider's settings are missing or malformed.
    """
    if settings.color_provider == "http":
        config = HttpColorConfig.from_settings(settings)
        return HttpColorProvider(config, settings, transport=transport, resolver=resolver)
    return BuiltinColorProvider()


class _Breaker:
    """Counts provider failures in a row within one :meth:`HttpColorProvider.colors` call."""

    def __init__(self) -> None:
        self.failures = 0
        self.reason: str | None = None

    def record(self, answer: ColorAnswer) -> None:
        reason = answer.reason
        if reason is None or not reason.startswith("color_provider_"):
            self.failures = 0  # the vendor answered
            return
        if reason == "color_provider_no_image":
            return  # says nothing about the vendor
        self.failures += 1
        if self.failures >= _TRIP_AFTER:
            self.reason = answer.reason


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=_JPEG_QUALITY)
    return buffer.getvalue()


def _render(template: object, url: str) -> object:
    """The template with ``{url}`` replaced in every string (keys too); JSON-safe by design."""
    if isinstance(template, str):
        return template.replace("{url}", url)
    if isinstance(template, list):
        return [_render(item, url) for item in template]
    if isinstance(template, dict):
        return {_render(k, url): _render(v, url) for k, v in template.items()}
    return template
