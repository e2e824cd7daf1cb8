"""The settings of the HTTP color provider, parsed and checked at startup.

:meth:`HttpColorConfig.from_settings` turns the ``CARTAG_COLOR_HTTP_*`` settings
into a :class:`HttpColorConfig` or raises :class:`~cartag.errors.ConfigError`
with a message that says how to fix the setting. Also here: :class:`LabelMap`
(vendor labels onto cartag colors) and :func:`json_path` (dotted paths into
the vendor's JSON answer).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from cartag.errors import ConfigError, FetchError
from cartag.net.guard import check_ip, is_ip_literal, parse_target
from cartag.settings import Settings
from cartag.vocab import COLORS, normalize_color

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110)


class LabelMap:
    """Maps vendor labels onto cartag colors, case-insensitively.

    The configured map is tried first, then :func:`cartag.vocab.normalize_color`
    (color names and aliases such as silver -> Grey).

    Args:
        mapping: Vendor label to cartag color (any case or alias).

    Raises:
        ValueError: A target is not a cartag color.
    """

    def __init__(self, mapping: Mapping[str, str] | None = None) -> None:
        self._map: dict[str, str] = {}
        for label, target in (mapping or {}).items():
            color = normalize_color(target)
            if color is None:
                raise ValueError(
                    f"{label!r} maps to {target!r}, which is no color; "
                    f"expected one of {', '.join(COLORS)}"
                )
            self._map[label.strip().lower()] = color

    def lookup(self, label: str) -> str | None:
        """The cartag color for ``label``, or None when it maps to none."""
        mapped = self._map.get(label.strip().lower())
        if mapped is not None:
            return mapped
        try:
            return normalize_color(label)
        except ValueError:
            return None


def json_path(document: object, path: str) -> object | None:
    """Follow a dotted path such as ``data.color.name`` (list items by index: ``results.0``).

    Returns:
        The value found, or None when a step is missing.
    """
    node = document
    for part in path.split("."):
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isascii() and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


@dataclass(frozen=True)
class HttpColorConfig:
    """The ``CARTAG_COLOR_HTTP_*`` settings, parsed and checked (see :meth:`from_settings`)."""

    url: str
    timeout_s: float
    mode: Literal["url", "bytes"]
    body_template: object
    color_path: str
    confidence_path: str | None
    label_map: LabelMap
    concurrency: int
    # repr=False: the credential must not appear in logs or tracebacks.
    auth_header: tuple[str, str] | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpColorConfig:
        """Parse the settings of the HTTP provider.

        Raises:
            ConfigError: A setting is missing or malformed; the message says how to fix it.
        """
        url = (settings.color_http_url or "").strip()
        if not url:
            raise ConfigError(
                "CARTAG_COLOR_PROVIDER=http needs CARTAG_COLOR_HTTP_URL, the vendor endpoint "
                "(e.g. https://colors.vendor.example/v1/color); or set "
                "CARTAG_COLOR_PROVIDER=builtin"
            )
        try:
            target = parse_target(url)
            if is_ip_literal(target.host):
                check_ip(target.host, settings.allowed_networks)
        except FetchError as exc:
            raise ConfigError(f"CARTAG_COLOR_HTTP_URL: {exc.message}") from None
        confidence = settings.color_http_confidence_path
        template: object = None
        if settings.color_http_mode == "url":
            template = _parse_template(settings.color_http_body_template)
        return cls(
            url=url,
            timeout_s=settings.color_http_timeout_s,
            mode=settings.color_http_mode,
            body_template=template,
            color_path=_check_path("CARTAG_COLOR_HTTP_COLOR_PATH", settings.color_http_color_path),
            confidence_path=None
            if confidence is None
            else _check_path("CARTAG_COLOR_HTTP_CONFIDENCE_PATH", confidence),
            label_map=_parse_label_map(settings.color_http_label_map),
            concurrency=settings.color_http_concurrency,
            auth_header=_parse_header(settings),
        )


def _parse_template(text: str) -> object:
    hint = 'e.g. CARTAG_COLOR_HTTP_BODY_TEMPLATE=\'{"image_url": "{url}"}\''
    try:
        template: object = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"CARTAG_COLOR_HTTP_BODY_TEMPLATE is not JSON ({exc}); {hint}") from None
    if "{url}" not in json.dumps(template):
        raise ConfigError(
            f"CARTAG_COLOR_HTTP_BODY_TEMPLATE must contain {{url}} inside a string; {hint}"
        )
    return template


def _parse_label_map(text: str | None) -> LabelMap:
    hint = (
        'set CARTAG_COLOR_HTTP_LABEL_MAP to a JSON object such as {"anthracite": "Grey"} '
        f"whose values are among {', '.join(COLORS)}"
    )
    if text is None or not text.strip():
        return LabelMap()
    try:
        mapping = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"CARTAG_COLOR_HTTP_LABEL_MAP is not JSON ({exc}); {hint}") from None
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise ConfigError(f"CARTAG_COLOR_HTTP_LABEL_MAP must map labels to color names; {hint}")
    try:
        return LabelMap(mapping)
    except ValueError as exc:  # its message lists the colors
        raise ConfigError(f"CARTAG_COLOR_HTTP_LABEL_MAP: {exc}") from None


def _parse_header(settings: Settings) -> tuple[str, str] | None:
    secret = settings.color_http_auth_header
    if secret is None or not secret.get_secret_value().strip():
        return None
    name, colon, value = secret.get_secret_value().partition(":")
    name, value = name.strip(), value.strip()
    # httpx would refuse line breaks and non-ASCII only when the first request is sent.
    if not (colon and _TOKEN.match(name) and value and value.isascii() and value.isprintable()):
        # The message never repeats the value: it holds the credential.
        raise ConfigError(
            "CARTAG_COLOR_HTTP_AUTH_HEADER must be one header as 'Name: value' in printable "
            "ASCII, e.g. 'Authorization: Bearer <token>' or 'X-Api-Key: <key>'"
        )
    return name, value


def _check_path(variable: str, path: str) -> str:
    path = path.strip()
    if not path or any(not part for part in path.split(".")):
        raise ConfigError(
            f"{variable} must be a dotted path to a field of the vendor's JSON answer, "
            f"e.g. data.color.name; got {path!r}"
        )
    return path
