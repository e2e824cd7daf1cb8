"""The self-contained HTML report of an evaluation (``cartag evaluate --report``).

One file, no external assets: the confusion matrices are Pillow-drawn PNG
heatmaps and the worst mistakes are JPEG thumbnails, all inlined as base64 data
URIs, so the report can be mailed or attached to a ticket as is.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from PIL import Image, ImageDraw, ImageFont

from cartag.errors import CartagError
from cartag.imaging.decode import decode_image
from cartag.models.engine import write_atomic
from cartag.training.evaluation.evaluate import Evaluation, TaskResult
from cartag.web import environment as web_environment

TEMPLATE_NAME: Final[str] = "evaluation.html"
# The per-source section (labels CSV with a source column), inserted before </body>;
# it reuses the page's table and figure styles.
SOURCES_TEMPLATE: Final[str] = """
<h2 id="by-source">By source</h2>
<p class="note">The same metrics for each value of the labels file's <code>source</code>
  column: a model can do well on one source and badly on another.</p>
{% for task in source_tasks %}
<h3>{{ task.title }} by source</h3>
<table>
  <thead><tr><th>source</th><th>images</th><th>accuracy</th><th>macro recall</th>
  {% for label in task.classes %}<th>{{ label }}</th>{% endfor %}</tr></thead>
  <tbody>
  {% for row in task.rows %}
    <tr class="num"><td>{{ row.source }}</td><td>{{ row.report.n }}</td>
      <td>{{ "%.3f"|format(row.report.accuracy) }}</td>
      <td>{{ "%.3f"|format(row.report.macro_recall) }}</td>
      {% for recall in row.recalls %}
      <td>{{ "—" if recall is none else "%.3f"|format(recall) }}</td>
      {% endfor %}</tr>
  {% endfor %}
  </tbody>
</table>
<p class="note">Per-class columns are recall; — where the source has no image of that class.</p>
<div class="side">
  {% for row in task.rows %}
  <figure style="border: none">
    <img src="{{ row.confusion_uri }}" style="width: auto; height: auto"
      alt="{{ task.title }} confusion matrix, {{ row.source }}">
    <figcaption class="note">{{ row.source }}: rows true, columns predicted.</figcaption>
  </figure>
  {% endfor %}
</div>
{% endfor %}
"""
TASK_TITLES: Final[dict[str, str]] = {"image_type": "Image type", "color": "Color"}

_CELL: Final[int] = 60
_PAD: Final[int] = 12
_LOW: Final[tuple[int, int, int]] = (247, 251, 255)
_HIGH: Final[tuple[int, int, int]] = (8, 48, 107)
_INK: Final[tuple[int, int, int]] = (33, 37, 41)
_FAINT: Final[tuple[int, int, int]] = (190, 196, 202)
_GRID: Final[tuple[int, int, int]] = (222, 226, 230)

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def _font(size: int) -> Font:
    # Pillow's bundled font scales when FreeType is present; the bitmap fallback doesn't.
    return ImageFont.load_default(size=size)


def _text_size(font: Font, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return int(right - left), int(bottom - top)


def _centered(
    draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str, font: Font, fill: Any
) -> None:
    x0, y0, x1, y1 = box
    draw.text(((x0 + x1) / 2, (y0 + y1) / 2), text, font=font, fill=fill, anchor="mm")


def _rotated_label(text: str, font: Font) -> Image.Image:
    width, height = _text_size(font, text)
    label = Image.new("RGBA", (width + 4, height + 8), (255, 255, 255, 0))
    ImageDraw.Draw(label).text((2, 2), text, font=font, fill=_INK)
    return label.rotate(90, expand=True)


def _shade(fraction: float) -> tuple[int, int, int]:
    r, g, b = (round(lo + (hi - lo) * fraction) for lo, hi in zip(_LOW, _HIGH, strict=True))
    return r, g, b


def confusion_png(labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> bytes:
    """Draw a confusion matrix as a heatmap PNG.

    Each cell shows its count and its share of the row; colours are normalised
    per row (true class), so a rare class's mistakes are as visible as a common
    one's.

    Args:
        labels: K class names, for rows (true) and columns (predicted).
        matrix: K x K counts; row = true class, column = predicted class.

    Returns:
        PNG bytes.
    """
    k = len(labels)
    label_font, count_font, share_font, title_font = _font(14), _font(15), _font(11), _font(15)
    row_label_w = max((_text_size(label_font, t)[0] for t in labels), default=0) + _PAD
    col_labels = [_rotated_label(t, label_font) for t in labels]
    col_label_h = max((im.height for im in col_labels), default=0) + _PAD // 2
    title_h = _text_size(title_font, "predicted")[1] + _PAD
    left = _PAD + title_h + row_label_w
    top = _PAD + title_h + col_label_h
    width, height = left + k * _CELL + _PAD, top + k * _CELL + _PAD
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    _centered(draw, (left, _PAD, left + k * _CELL, _PAD + title_h), "predicted", title_font, _INK)
    true_title = _rotated_label("true", title_font)
    image.paste(true_title, (_PAD, top + (k * _CELL - true_title.height) // 2), true_title)
    for c, label in enumerate(col_labels):
        x = left + c * _CELL + (_CELL - label.width) // 2
        image.paste(label, (x, top - label.height - _PAD // 4), label)
    for r, row in enumerate(matrix):
        y = top + r * _CELL
        draw.text(
            (left - _PAD // 2, y + _CELL / 2), labels[r], font=label_font, fill=_INK, anchor="rm"
        )
        total = sum(row)
        for c, count in enumerate(row):
            x = left + c * _CELL
            fraction = count / total if total else 0.0
            draw.rectangle((x, y, x + _CELL, y + _CELL), fill=_shade(fraction), outline=_GRID)
            ink = "white" if fraction > 0.5 else _INK
            if r == c:
                # Outline the diagonal so the correct answers read at a glance.
                draw.rectangle(
                    (x + 1, y + 1, x + _CELL - 1, y + _CELL - 1), outline=(40, 167, 69), width=2
                )
            if count == 0:
                # Faint zeros keep the eye on the cells that hold images.
                _centered(draw, (x, y, x + _CELL, y + _CELL), "0", count_font, _FAINT)
                continue
            _centered(draw, (x, y, x + _CELL, y + _CELL - 14), str(count), count_font, ink)
            # Rounded down so that only a row without mistakes reads 100%.
            share = f"{int(100 * fraction)}%" if fraction >= 0.01 else "<1%"
            _centered(draw, (x, y + _CELL - 22, x + _CELL, y + _CELL - 6), share, share_font, ink)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def thumbnail_uri(path: Path, *, max_side: int = 200, max_pixels: int = 64_000_000) -> str | None:
    """A JPEG thumbnail of an image file as a data URI, or None if it can't be read."""
    try:
        decoded = decode_image(path.read_bytes(), max_pixels=max_pixels, target_size=max_side)
    except (CartagError, OSError):
        return None
    image = decoded.image
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return _data_uri(buffer.getvalue(), "image/jpeg")


def _task_context(result: TaskResult, max_mistakes: int, max_pixels: int) -> dict[str, Any]:
    confusion = result.report["confusion"]
    mistakes = []
    for mistake in result.mistakes[:max_mistakes]:
        mistakes.append(
            {
                **vars(mistake),
                "name": Path(mistake.path).name,
                "thumbnail": thumbnail_uri(Path(mistake.path), max_pixels=max_pixels),
            }
        )
    return {
        "name": result.task,
        "title": TASK_TITLES.get(result.task, result.task),
        "report": result.report,
        "colorless": result.colorless,
        "confusion_uri": _data_uri(
            confusion_png(confusion["labels"], confusion["rows_true_cols_pred"]), "image/png"
        ),
        "mistakes": mistakes,
        "n_mistakes": len(result.mistakes),
    }


def _sources_html(evaluation: Evaluation) -> str:
    """The per-source section (tables + confusion heatmaps), or "" without sources."""
    if not evaluation.by_source:
        return ""
    tasks = []
    for task in evaluation.tasks:
        reports = {s: r[task] for s, r in evaluation.by_source.items() if task in r}
        classes = list(dict.fromkeys(c for r in reports.values() for c in r["per_class"]))
        rows = [
            {
                "source": source,
                "report": report,
                "recalls": [report["per_class"].get(c, {}).get("recall") for c in classes],
                "confusion_uri": _data_uri(
                    confusion_png(
                        report["confusion"]["labels"], report["confusion"]["rows_true_cols_pred"]
                    ),
                    "image/png",
                ),
            }
            for source, report in reports.items()
        ]
        tasks.append({"title": TASK_TITLES.get(task, task), "classes": classes, "rows": rows})
    return web_environment().from_string(SOURCES_TEMPLATE).render(source_tasks=tasks)


def render_report(
    evaluation: Evaluation,
    *,
    source: str = "",
    max_mistakes: int = 24,
    max_pixels: int = 64_000_000,
) -> str:
    """Render the evaluation as one self-contained HTML page.

    Args:
        evaluation: The result of :func:`cartag.training.evaluation.evaluate.evaluate`.
        source: What was evaluated (folder, labels file), shown in the header.
        max_mistakes: Worst mistakes shown per task.
        max_pixels: Decompression-bomb limit for the thumbnails.
    """
    env = web_environment()
    html = env.get_template(TEMPLATE_NAME).render(
        evaluation=evaluation,
        source=source,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        n_evaluated=evaluation.n_labelled - len(evaluation.unreadable),
        tasks=[_task_context(r, max_mistakes, max_pixels) for r in evaluation.tasks.values()],
    )
    head, body_end, tail = html.rpartition("</body>")
    return head + _sources_html(evaluation) + body_end + tail if body_end else html


def write_report(
    evaluation: Evaluation,
    out: Path,
    *,
    source: str = "",
    max_mistakes: int = 24,
    max_pixels: int = 64_000_000,
) -> Path:
    """Write :func:`render_report` to ``out`` (parent folders are created).

    Through a temporary file renamed over ``out``: an earlier report stays whole until the
    new one replaces it (a link is followed: its target is replaced).

    Returns:
        ``out``.
    """
    html = render_report(
        evaluation, source=source, max_mistakes=max_mistakes, max_pixels=max_pixels
    )
    write_atomic(out.resolve() if out.is_symlink() else out, html.encode("utf-8"))
    return out
