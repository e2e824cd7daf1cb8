"""A fake third-party color API, served by the local :class:`ImageServer`.

It answers ``POST <path>`` like a typical vendor::

    {"data": {"color": {"name": "SILVER", "score": 0.87}}}

The label is looked up by the image URL found anywhere in a JSON request body
(``labels``), else ``default``. ``status``, ``delay_s`` and ``raw`` make it fail.

Usage::

    vendor = ColorVendor(server, labels={image_url: "navy"})
    Settings(color_provider="http", color_http_url=vendor.url,
             color_http_color_path="data.color.name", ...)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from tests.support.http_server import ImageServer, RecordedRequest

COLOR_PATH = "data.color.name"
CONFIDENCE_PATH = "data.color.score"
_JSON = {"Content-Type": "application/json"}


@dataclass
class ColorVendor:
    """The fake vendor's behaviour; change the fields between requests as needed.

    Attributes:
        server: Where it is served.
        path: Its endpoint path.
        labels: Image URL to the label to answer.
        default: Label for other requests (bytes mode, unknown URLs).
        score: The confidence to answer.
        status: Answer this status with an error body instead.
        delay_s: Wait this long before answering (timeouts).
        raw: Answer these bytes verbatim (bad JSON).
    """

    server: ImageServer
    path: str = "/v1/color"
    labels: dict[str, str] = field(default_factory=dict)
    default: str = "silver"
    score: float = 0.87
    status: int = 200
    delay_s: float = 0.0
    raw: bytes | None = None

    def __post_init__(self) -> None:
        self.server.add_responder(self.path, self._respond)

    @property
    def url(self) -> str:
        """The endpoint URL on the loopback address."""
        return self.server.url(self.path)

    def requests(self) -> list[RecordedRequest]:
        """The requests received so far, oldest first."""
        return self.server.requests(self.path)

    def image_urls(self) -> list[str]:
        """The image URLs named by the JSON requests received so far."""
        found = []
        for request in self.requests():
            url = _find_url(json.loads(request.body or b"null"))
            if url is not None:
                found.append(url)
        return found

    def _respond(self, request: RecordedRequest) -> tuple[int, bytes, dict[str, str]]:
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.status != 200:
            return self.status, b'{"error": "unavailable"}', _JSON
        if self.raw is not None:
            return 200, self.raw, _JSON
        label = self.default
        if request.headers.get("content-type") == "application/json":
            url = _find_url(json.loads(request.body))
            label = self.labels.get(url or "", self.default)
        body = {"data": {"color": {"name": label, "score": self.score}}, "model": "fake-1"}
        return 200, json.dumps(body).encode(), _JSON


def _find_url(document: object) -> str | None:
    """The first string that looks like an http(s) URL, anywhere in ``document``."""
    if isinstance(document, str):
        return document if document.startswith(("http://", "https://")) else None
    if isinstance(document, dict):
        document = list(document.values())
    if isinstance(document, list):
        for value in document:
            found = _find_url(value)
            if found is not None:
                return found
    return None
