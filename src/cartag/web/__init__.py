"""Server-rendered pages and reports: Jinja2 templates and static files (package data)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import jinja2

TEMPLATE_DIR: Final[Path] = Path(__file__).resolve().parent / "templates"
STATIC_DIR: Final[Path] = Path(__file__).resolve().parent / "static"


def environment() -> jinja2.Environment:
    """A fresh Jinja2 environment over :data:`TEMPLATE_DIR` (callers may add filters).

    Autoescaping is on and an undefined name is an error, so a template typo fails a test
    instead of rendering an empty string.
    """
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
