"""The label vocabulary shared by the API, the store and the models.

The order of each tuple is the order of the score vectors the models emit,
so it must never be reordered (append only).
"""

from __future__ import annotations

import re
from typing import Final, Literal, get_args

from cartag.errors import InputError

ImageType = Literal["Dealer", "Stock", "Placeholder"]
Color = Literal[
    "Black",
    "Blue",
    "Brown",
    "Burgundy",
    "Green",
    "Grey",
    "Orange",
    "Pink",
    "Purple",
    "Red",
    "White",
    "Yellow",
]

# Derived from the Literals so the two can never disagree.
IMAGE_TYPES: Final[tuple[str, ...]] = get_args(ImageType)
COLORS: Final[tuple[str, ...]] = get_args(Color)

# Spellings seen in scraper feeds and legacy rows, mapped onto the vocabulary.
_COLOR_ALIASES: Final[dict[str, str]] = {
    "silver": "Grey",
    "gray": "Grey",
    "maroon": "Burgundy",
    "violet": "Purple",
    "gold": "Yellow",
    "beige": "Brown",
    "tan": "Brown",
}

# Legacy rows store "no color" as one of these strings; they read as null.
_NULL_COLORS: Final[frozenset[str]] = frozenset({"", "n/a", "na", "none", "null", "unknown"})


def normalize_color(value: str | None) -> str | None:
    """Map a color string onto the vocabulary.

    Args:
        value: A color name in any case, an alias such as "silver", or a legacy
            null marker such as "N/A".

    Returns:
        The canonical color name, or None for null markers.

    Raises:
        ValueError: If the value is neither a known color nor a null marker.
    """
    if value is None:
        return None
    key = value.strip().lower()
    if key in _NULL_COLORS:
        return None
    for color in COLORS:
        if color.lower() == key:
            return color
    if key in _COLOR_ALIASES:
        return _COLOR_ALIASES[key]
    raise ValueError(f"unknown color {value!r}; expected one of {', '.join(COLORS)}")


# Why a scraper's color was ignored (the result's color_reason).
UNKNOWN_SCRAPE_COLOR: Final[str] = "scrape_color_unknown"


def parse_scrape_color(value: str | None) -> tuple[str | None, str | None]:
    """Read a scraper's color leniently: one unknown name must not fail its batch.

    Returns:
        ``(color, reason)``: the canonical color and None; None and None for a null
        marker such as "N/A"; None and :data:`UNKNOWN_SCRAPE_COLOR` for anything else
        ("Rouge", an emoji): the color is then ignored, as a null marker is.
    """
    try:
        return normalize_color(value), None
    except ValueError:
        return None, UNKNOWN_SCRAPE_COLOR


def read_stored_color(value: str | None) -> str | None:
    """Read a color column leniently: legacy 'N/A' and unknown strings become None."""
    try:
        return normalize_color(value)
    except ValueError:
        return None


def normalize_image_type(value: str) -> str:
    """Map an image type string (any case) onto the vocabulary.

    Raises:
        ValueError: If the value is not Dealer, Stock or Placeholder.
    """
    key = value.strip().lower()
    for image_type in IMAGE_TYPES:
        if image_type.lower() == key:
            return image_type
    raise ValueError(f"unknown image type {value!r}; expected one of {', '.join(IMAGE_TYPES)}")


# An advertiser id: what the scraper calls the dealer, 1-128 of these characters (a slash
# is allowed: "group/dealer-7"). The API, the CLI and API keys' scopes take the same ids.
# Its slash-separated parts are never empty, "." or "..": pages put the id in their path
# (/fix/<id>), where a browser would resolve "a/../b" to another advertiser's page.
# "~" is in no id: /fix/~/<id> is the fix page's address that no id can shadow.
_ID_PART: Final[str] = (
    r"(?:[A-Za-z0-9_:@-][A-Za-z0-9._:@-]*|\.[A-Za-z0-9_:@-][A-Za-z0-9._:@-]*|\.\.[A-Za-z0-9._:@-]+)"
)
ADVERTISER_ID_BODY: Final[str] = rf"{_ID_PART}(?:/{_ID_PART})*"
ADVERTISER_ID_PATTERN: Final[str] = rf"^{ADVERTISER_ID_BODY}$"
# An advertiser id, or empty (none): query filters.
ADVERTISER_ID_OR_EMPTY_PATTERN: Final[str] = rf"^(?:{ADVERTISER_ID_BODY})?$"
ADVERTISER_ID_MAX: Final[int] = 128
_ADVERTISER_ID: Final = re.compile(ADVERTISER_ID_PATTERN)
# The pattern in words, for error messages.
ADVERTISER_ID_RULE: Final[str] = (
    f"1-{ADVERTISER_ID_MAX} letters, digits or . _ : @ / -, with no empty, '.' or '..' part "
    "between slashes"
)


def check_advertiser_id(value: str, field: str = "advertiser_id") -> str:
    """``value`` if it is an advertiser id.

    Raises:
        InputError: Naming ``field``: empty, longer than 128 characters, or a character
            other than letters, digits and ``. _ : @ / -``.
    """
    if not value.strip():
        raise InputError(
            f"{field} is empty: give the advertiser's id (an unset shell variable?)", field=field
        )
    if len(value) > ADVERTISER_ID_MAX or not _ADVERTISER_ID.match(value):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise InputError(
            f"{field} {shown!r} is not an advertiser id: {ADVERTISER_ID_RULE}", field=field
        )
    return value
